//! Exports: the rows of a read operation as CSV or as JSON lines, page
//! after page, so that a report of a million rows streams in bounded
//! memory. Used by the HTTPS API (`Accept: text/csv` or
//! `application/x-ndjson`) and by `cascade ctl call --csv`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Access, ApiError, Authorized};
use crate::Node;

/// The most pages one export reads.
pub const MAX_PAGES: usize = 100_000;

/// Rows per page unless the caller asked for fewer.
pub const PAGE_ROWS: u64 = 5_000;

/// Rows per page of a node's own export through a listing that goes on
/// from its last row (`next`): small pages keep both of a node's jobs busy,
/// one page being made while the one before is written. A listing that
/// goes on by offset sorts every row for each page, so it reads
/// [`PAGE_ROWS`] at a time.
pub const KEYSET_PAGE_ROWS: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// The export an `Accept` header asks for, if any.
    pub fn from_accept(accept: &str) -> Option<Format> {
        accept.split(',').find_map(|part| {
            match part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "text/csv" => Some(Format::Csv),
                "application/x-ndjson" | "application/jsonl" => Some(Format::JsonLines),
                _ => None,
            }
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/x-ndjson",
        }
    }
}

/// The rows of one result: its `items`, the array it is, or the result
/// itself as one row.
pub fn rows(result: &Value) -> std::borrow::Cow<'_, [Value]> {
    use std::borrow::Cow;
    match result {
        Value::Object(map) => match map.get("items").or_else(|| map.get("computers")) {
            Some(Value::Array(items)) => Cow::Borrowed(items.as_slice()),
            _ => Cow::Owned(vec![result.clone()]),
        },
        Value::Array(items) => Cow::Borrowed(items.as_slice()),
        other => Cow::Owned(vec![other.clone()]),
    }
}

/// The parameters of the page after `result`, when it says there is one
/// (`next` goes on as `after`, `next_offset` as `offset`).
pub fn next_page(params: &Value, result: &Value) -> Option<Value> {
    let mut next = match params {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match (result.get("next"), result.get("next_offset")) {
        (Some(Value::String(token)), _) => {
            next.insert("after".into(), Value::String(token.clone()));
        }
        (_, Some(Value::Number(offset))) => {
            next.insert("offset".into(), Value::Number(offset.clone()));
        }
        _ => return None,
    }
    Some(Value::Object(next))
}

/// The first page's parameters: a page of `rows`, unless the caller asked
/// for a size.
pub fn first_page(params: &Value, rows: u64) -> Value {
    let mut map = match params {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    map.entry("limit").or_insert(Value::from(rows));
    Value::Object(map)
}

/// A row's cells by column: nested objects as `outer.inner`, lists as JSON.
pub fn flatten(row: &Value) -> Vec<(std::borrow::Cow<'_, str>, &Value)> {
    use std::borrow::Cow;
    fn walk<'a>(prefix: Option<&str>, value: &'a Value, out: &mut Vec<(Cow<'a, str>, &'a Value)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    match prefix {
                        None => match v {
                            Value::Object(inner) if !inner.is_empty() => walk(Some(k), v, out),
                            _ => out.push((Cow::Borrowed(k.as_str()), v)),
                        },
                        Some(p) => walk(Some(&format!("{p}.{k}")), v, out),
                    }
                }
            }
            other => out.push((Cow::Owned(prefix.unwrap_or("value").to_owned()), other)),
        }
    }
    let mut out = Vec::new();
    walk(None, row, &mut out);
    out
}

/// One CSV cell (RFC 4180), written to `out`. Text that a spreadsheet
/// would run as a formula (=, +, -, @, tab, CR at its start) is led by a
/// quote mark.
fn cell(value: &Value, out: &mut String) {
    use std::fmt::Write;
    let owned;
    let (lead, text): (&str, &str) = match value {
        Value::Null => return,
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => ("'", s),
        Value::String(s) => ("", s),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
            return;
        }
        Value::Bool(b) => {
            out.push_str(if *b { "true" } else { "false" });
            return;
        }
        other => {
            owned = other.to_string();
            ("", &owned)
        }
    };
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(lead);
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(lead);
        out.push_str(text);
    }
}

/// The columns that lead a CSV export, when a report has them.
const LEADING: [&str; 8] = [
    "computer", "site", "update", "title", "severity", "state", "reason", "code",
];

/// CSV of the pages of one export: the columns are those of the first
/// page's rows (those that name a row first, then by name), written once
/// at the top.
#[derive(Debug, Default)]
pub struct Csv {
    columns: Option<Vec<String>>,
    /// The cell names of the last row and the column of each: the rows of
    /// one report name the same cells, so most rows are placed without a
    /// lookup.
    last: Vec<(String, Option<usize>)>,
}

impl Csv {
    /// The text of one page's rows (and the header, on the first page).
    pub fn page(&mut self, rows: &[Value]) -> String {
        let flat: Vec<Vec<(std::borrow::Cow<'_, str>, &Value)>> = rows.iter().map(flatten).collect();
        let mut out = String::new();
        if self.columns.is_none() {
            let mut columns: Vec<String> = Vec::new();
            for row in &flat {
                for (name, _) in row {
                    if !columns.iter().any(|c| c == name) {
                        columns.push(name.to_string());
                    }
                }
            }
            // What names a row first, then the rest by name.
            columns.sort_by_key(|c| (LEADING.iter().position(|l| l == c).unwrap_or(LEADING.len()), c.clone()));
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                cell(&Value::String(c.clone()), &mut out);
            }
            out.push_str("\r\n");
            self.columns = Some(columns);
        }
        let columns = self.columns.as_deref().unwrap_or_default();
        let mut cells: Vec<Option<&Value>> = vec![None; columns.len()];
        for row in &flat {
            cells.iter_mut().for_each(|c| *c = None);
            let same = row.len() == self.last.len() && row.iter().zip(&self.last).all(|((a, _), (b, _))| a == b);
            if !same {
                self.last = row
                    .iter()
                    .map(|(name, _)| (name.to_string(), columns.iter().position(|c| c == name)))
                    .collect();
            }
            for ((_, value), (_, place)) in row.iter().zip(&self.last) {
                if let Some(i) = place {
                    cells[*i] = Some(value);
                }
            }
            for (i, c) in cells.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(v) = c {
                    cell(v, &mut out);
                }
            }
            out.push_str("\r\n");
        }
        out
    }
}

/// One page's rows as JSON lines.
pub fn json_lines(rows: &[Value]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.to_string());
        out.push('\n');
    }
    out
}

impl Node {
    /// Every page of a read operation in `format`, sent to `tx` as it is
    /// made; the first page is made before this returns, so that a refused
    /// request gets its error as the reply. Only reports export: an
    /// operation that changes something is never called more than once.
    pub async fn export(
        self: &Arc<Self>,
        authorized: Authorized,
        params: Value,
        format: Format,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<String, ApiError>>, ApiError> {
        if authorized.operation().access != Access::Read {
            return Err(ApiError::Invalid(format!(
                "{} changes things: only reading operations export as CSV or JSON lines",
                authorized.operation().name
            )));
        }
        // Pages of the export's size, unless the caller chose one (or the
        // operation takes none).
        let chosen = params.get("limit").is_some();
        let sized = first_page(&params, KEYSET_PAGE_ROWS);
        let mut params = if (authorized.operation().check)(sized.clone()).is_ok() {
            sized
        } else {
            params
        };
        let first = self.invoke(authorized.clone(), params.clone()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let node = self.clone();
        tokio::spawn(async move {
            let mut csv = Csv::default();
            let mut result = first;
            for _ in 0..MAX_PAGES {
                // The next page is made while this one is written out.
                let next = next_page(&params, &result)
                    .filter(|_| !rows(&result).is_empty())
                    .map(|mut next| {
                        if !chosen && result.get("next_offset").is_some_and(|o| !o.is_null()) {
                            next["limit"] = Value::from(PAGE_ROWS);
                        }
                        next
                    });
                let fetch = next.clone().map(|p| {
                    let (node, authorized) = (node.clone(), authorized.clone());
                    tokio::spawn(async move { node.invoke(authorized, p).await })
                });
                let text;
                (csv, text) = crate::blocking(move || {
                    let text = match format {
                        Format::Csv => csv.page(&rows(&result)),
                        Format::JsonLines => json_lines(&rows(&result)),
                    };
                    (csv, text)
                })
                .await;
                if tx.send(Ok(text)).await.is_err() {
                    if let Some(f) = fetch {
                        f.abort();
                    }
                    return;
                }
                let (Some(fetch), Some(next)) = (fetch, next) else {
                    return;
                };
                params = next;
                result = match fetch.await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::Internal(e.to_string()))).await;
                        return;
                    }
                };
            }
            let _ = tx
                .send(Err(ApiError::Invalid(format!(
                    "the export stopped after {MAX_PAGES} pages"
                ))))
                .await;
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let mut csv = Csv::default();
        let text = csv.page(&[
            json!({"computer": "pc-1", "reason": "failed, code \"1603\"", "code": -1, "note": "=cmd()"}),
            json!({"computer": "pc-2", "extra": 1}),
        ]);
        assert_eq!(
            text,
            "computer,reason,code,extra,note\r\npc-1,\"failed, code \"\"1603\"\"\",-1,,'=cmd()\r\npc-2,,,1,\r\n"
        );
        // Later pages keep the first page's columns.
        assert_eq!(
            csv.page(&[json!({"code": 5, "computer": "pc-3", "new": 1})]),
            "pc-3,,5,,\r\n"
        );
    }

    #[test]
    fn nested_rows_flatten_and_pages_go_on() {
        let row = json!({"a": {"b": 1, "c": [1, 2]}, "d": null});
        let flat: Vec<(String, Value)> = flatten(&row)
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.clone()))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a.b".to_owned(), json!(1)),
                ("a.c".to_owned(), json!([1, 2])),
                ("d".to_owned(), Value::Null)
            ]
        );
        let params = json!({"site": "s"});
        assert_eq!(
            next_page(&params, &json!({"items": [], "next": "ab"})),
            Some(json!({"site": "s", "after": "ab"}))
        );
        assert_eq!(
            next_page(&params, &json!({"items": [], "next_offset": 10})),
            Some(json!({"site": "s", "offset": 10}))
        );
        assert_eq!(next_page(&params, &json!({"items": [], "next": null})), None);
        assert_eq!(
            Format::from_accept("application/json, text/csv;q=0.9"),
            Some(Format::Csv)
        );
        assert_eq!(Format::from_accept("application/json"), None);
    }
}
