//! Identifiers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

/// The id of an update. Microsoft knowledge-base articles are written
/// `KB<number>` whatever the source wrote (`5021233`, `kb5021233`, `Q147222`);
/// GUIDs (WSUS update ids) are lower case; anything else is kept as given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct UpdateId(Arc<str>);

impl UpdateId {
    /// Normalises `raw` as described on the type.
    pub fn new(raw: &str) -> Self {
        let raw = raw.trim();
        // Already `KB<number>` (as every stored id is): kept without
        // writing it anew, which reading a store does for every record.
        if let Some(digits) = raw.strip_prefix("KB")
            && (1..=9).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return UpdateId(raw.into());
        }
        if let Some(kb) = kb_number(raw) {
            return UpdateId(format!("KB{kb}").into());
        }
        if is_guid(raw) {
            return UpdateId(raw.to_ascii_lowercase().into());
        }
        UpdateId(raw.into())
    }

    /// The id of knowledge-base article `number`.
    pub fn kb(number: u64) -> Self {
        UpdateId(format!("KB{number}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The knowledge-base number, when this id is one.
    pub fn kb_number(&self) -> Option<u64> {
        self.0.strip_prefix("KB").and_then(|n| n.parse().ok())
    }
}

impl<'de> Deserialize<'de> for UpdateId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom("an update id may not be empty"));
        }
        Ok(UpdateId::new(&s))
    }
}

impl fmt::Display for UpdateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `5021233`, `KB5021233`, `kb5021233`, `KB893803v2` and `Q147222` all name
/// a knowledge-base article; the number is returned.
pub fn kb_number(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    // Byte slicing is safe only on ASCII prefixes: `get` refuses a cut
    // inside a character (an id may hold anything a file carried).
    let digits = match raw.get(..2) {
        Some(prefix) if raw.len() > 2 && prefix.eq_ignore_ascii_case("kb") => &raw[2..],
        _ if raw.len() > 1 && (raw.starts_with('Q') || raw.starts_with('q')) => &raw[1..],
        _ => raw,
    };
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    if end == 0 || end > 9 {
        return None;
    }
    // A revision suffix such as "v2" is allowed after the number; anything
    // else means this is not a KB id.
    let rest = &digits[end..];
    let suffix_ok = rest.is_empty()
        || (rest.len() > 1
            && (rest.starts_with('v') || rest.starts_with('V'))
            && rest.chars().skip(1).all(|c| c.is_ascii_digit()));
    if !suffix_ok || (digits.len() == raw.len() && !rest.is_empty()) {
        return None;
    }
    digits[..end].parse().ok()
}

/// Every `(KB<number>)` or `KB<number>` written in `text`, in order.
pub fn kb_numbers_in(text: &str) -> Vec<u64> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if starts_word && bytes[i].eq_ignore_ascii_case(&b'k') && bytes[i + 1].eq_ignore_ascii_case(&b'b') {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end > start
                && end - start <= 9
                && let Ok(n) = text[start..end].parse()
            {
                found.push(n);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// `8-4-4-4-12` hexadecimal, as WSUS writes update ids.
pub fn is_guid(raw: &str) -> bool {
    let groups: Vec<&str> = raw.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_with_characters_of_any_width_do_not_break_kb_parsing() {
        for raw in ["\u{feff}", "\u{feff}KB1", "ké5", "KB5021233v\u{e9}", "Q\u{feff}", "kb"] {
            let _ = super::kb_number(raw);
        }
        assert_eq!(super::kb_number("\u{feff}KB1"), None);
    }

    use super::*;

    #[test]
    fn normalises_kb_forms() {
        for raw in ["5021233", "KB5021233", "kb5021233", " KB5021233 "] {
            assert_eq!(UpdateId::new(raw).as_str(), "KB5021233", "{raw}");
        }
        assert_eq!(UpdateId::new("KB893803v2").as_str(), "KB893803");
        assert_eq!(UpdateId::new("Q147222").as_str(), "KB147222");
        assert_eq!(
            UpdateId::new("56309036-4C77-4DD9-951A-99EE9C246A94").as_str(),
            "56309036-4c77-4dd9-951a-99ee9c246a94"
        );
        assert_eq!(UpdateId::new("File 1").as_str(), "File 1");
        assert_eq!(UpdateId::new("SP81X64").as_str(), "SP81X64");
        assert_eq!(UpdateId::new("12345abc").as_str(), "12345abc");
        // The quick path for ids already written as kept agrees with the rest.
        assert_eq!(UpdateId::new("KB0021233").as_str(), "KB21233");
        assert_eq!(UpdateId::new("KB1234567890").as_str(), "KB1234567890");
        assert_eq!(UpdateId::new("KB1").as_str(), "KB1");
        assert_eq!(UpdateId::new("KB").as_str(), "KB");
    }

    #[test]
    fn finds_kbs_in_titles() {
        assert_eq!(
            kb_numbers_in("2023-04 Cumulative Update for Windows 11 (KB5025239) UUP"),
            vec![5025239]
        );
        assert_eq!(kb_numbers_in("no kb here, nor kbx"), Vec::<u64>::new());
    }
}
