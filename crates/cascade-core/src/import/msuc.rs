//! Microsoft Update Catalog entries as JSON (one object, or an array of
//! them), as catalog scrapers save them. Entries of one KB (one per
//! architecture) become one update that applies to each.

use serde::Deserialize;

use super::ImportError;
use super::product_names::{self, ProductName};
use crate::ids::{UpdateId, is_guid, kb_number, kb_numbers_in};
use crate::rule::Rule;
use crate::update::{Classification, RestartBehavior, Severity, Target, Update};

#[derive(Debug, Deserialize)]
struct Entry {
    update_id: String,
    title: String,
    #[serde(default)]
    classification: String,
    #[serde(default)]
    msrc_severity: String,
    #[serde(default)]
    kb_article: String,
    #[serde(default)]
    supported_products: String,
    #[serde(default)]
    supersededby: Vec<Superseder>,
    #[serde(default)]
    supersedes: Vec<String>,
    #[serde(default)]
    reboot_behavior: String,
    #[serde(default)]
    last_modified: String,
}

#[derive(Debug, Deserialize)]
struct Superseder {
    title: String,
    #[serde(default)]
    #[allow(dead_code)]
    update_id: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Entry>),
    One(Box<Entry>),
}

pub fn parse(source: &str, text: &str) -> Result<Vec<Update>, ImportError> {
    super::check_json(source, text)?;
    let entries = match serde_json::from_str::<OneOrMany>(text) {
        Ok(OneOrMany::Many(v)) => v,
        Ok(OneOrMany::One(e)) => vec![*e],
        Err(_) => {
            // Parse again strictly to get a useful position and message.
            let strict: Result<Entry, _> = serde_json::from_str(text);
            let e = match strict {
                Err(e) => e,
                Ok(_) => {
                    return Err(ImportError::Format {
                        source_name: source.to_owned(),
                        message: "unreadable Update Catalog JSON".to_owned(),
                    });
                }
            };
            return Err(super::json_error(source, e));
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(n, e)| entry_to_update(source, n, e))
        .collect()
}

fn entry_to_update(source: &str, n: usize, e: Entry) -> Result<Update, ImportError> {
    let bad = |message: String| ImportError::Format {
        source_name: source.to_owned(),
        message: format!("entry {n} ({}): {message}", e.update_id),
    };
    if !is_guid(e.update_id.trim()) {
        return Err(bad(format!("update_id {:?} is not a GUID", e.update_id)));
    }
    let kb = kb_number(&e.kb_article)
        .or_else(|| kb_numbers_in(&e.title).first().copied())
        .ok_or_else(|| bad("no KB number in kb_article or title".to_owned()))?;
    let classification = Classification::from_microsoft(&e.classification).unwrap_or(Classification::Update);
    let mut update = Update::new(UpdateId::kb(kb), e.title.trim(), classification);
    update.product = e.supported_products.trim().to_owned();
    update.severity = Severity::parse(&e.msrc_severity).unwrap_or_default();
    update.restart = RestartBehavior::parse(&e.reboot_behavior).unwrap_or(RestartBehavior::May);
    update.release_date = parse_date(&e.last_modified);
    update.aliases = vec![UpdateId::new(&e.update_id)];
    update.servicing = crate::update::Servicing::from_title(&e.title);
    update.hotpatch = e.title.to_ascii_lowercase().contains("hotpatch");
    update.supersedes = e
        .supersedes
        .iter()
        .filter_map(|t| kb_numbers_in(t).first().copied())
        .filter(|k| *k != kb)
        .map(UpdateId::kb)
        .collect();
    update.superseded_by = e
        .supersededby
        .iter()
        .filter_map(|s| kb_numbers_in(&s.title).first().copied())
        .filter(|k| *k != kb)
        .map(UpdateId::kb)
        .collect();
    update.supersedes.sort();
    update.supersedes.dedup();
    let target = match os_in_title(&e.title) {
        Some((name, os)) => Target {
            product: name,
            rule: os.rule(),
            severity: update.severity,
            fixed_build: None,
        },
        None if !update.product.is_empty() => Target {
            product: update.product.clone(),
            rule: Rule::product(update.product.clone()),
            severity: update.severity,
            fixed_build: None,
        },
        None => {
            return Err(bad(format!("cannot tell what product {:?} is for", e.title)));
        }
    };
    update.targets = vec![target];
    Ok(update)
}

/// The Windows product a catalog title is for: "2023-04 Cumulative Update
/// for Windows 11 Version 22H2 for arm64-based Systems (KB5025239)".
fn os_in_title(title: &str) -> Option<(String, product_names::OsTarget)> {
    let end = title.rfind(" (KB").unwrap_or(title.len());
    let head = &title[..end];
    head.match_indices("Windows ")
        .find_map(|(start, _)| match product_names::parse_product_name(&head[start..]) {
            ProductName::Os(os) => Some((head[start..].to_owned(), os)),
            ProductName::Other(_) => None,
        })
}

/// `4/11/2023` (month first, as the catalog writes) or an ISO date.
fn parse_date(raw: &str) -> Option<jiff::civil::Date> {
    let raw = raw.trim();
    if let Some(iso) = raw.get(..10).and_then(|d| d.parse().ok()) {
        return Some(iso);
    }
    let mut parts = raw.split('/').map(|p| p.trim().parse::<i16>().ok());
    let (m, d, y) = (parts.next()??, parts.next()??, parts.next()??);
    jiff::civil::Date::new(y, m as i8, d as i8).ok()
}
