//! The vocabulary of applicability rules: comparisons of facts, and
//! three-valued truth whose unknown says why. A leaf: rules, software
//! matches and anything else that decides applicability use it.

use serde::{Deserialize, Serialize};

use crate::version::Version;

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    StartsWith,
    EndsWith,
    /// The fact is present at all.
    Exists,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Contains => "contains",
            Cmp::StartsWith => "starts-with",
            Cmp::EndsWith => "ends-with",
            Cmp::Exists => "exists",
        }
    }

    /// Compares `actual` to `expected`: as versions when both are dotted
    /// numbers, otherwise as case-insensitive text.
    pub fn holds(self, actual: &str, expected: &str) -> bool {
        match self {
            Cmp::Exists => true,
            Cmp::Contains => contains_ignore_case(actual, expected),
            Cmp::StartsWith => {
                actual.len() >= expected.len()
                    && actual.is_char_boundary(expected.len())
                    && actual[..expected.len()].eq_ignore_ascii_case(expected)
            }
            Cmp::EndsWith => {
                actual.len() >= expected.len()
                    && actual.is_char_boundary(actual.len() - expected.len())
                    && actual[actual.len() - expected.len()..].eq_ignore_ascii_case(expected)
            }
            Cmp::Eq | Cmp::Ne if actual.eq_ignore_ascii_case(expected) => self == Cmp::Eq,
            _ => {
                // Versions where both are ("10.0" equals "10.0.0"), else text
                // ignoring case; only what starts with a digit is tried as a
                // version, so that the common "x64" against "x86" costs no
                // allocation.
                let numeric = |s: &str| s.trim_start().as_bytes().first().is_some_and(u8::is_ascii_digit);
                let as_versions = (numeric(actual) && numeric(expected))
                    .then(|| match (actual.parse::<Version>(), expected.parse::<Version>()) {
                        (Ok(a), Ok(e)) => Some(a.cmp(&e)),
                        _ => None,
                    })
                    .flatten();
                let ordering = as_versions.unwrap_or_else(|| {
                    actual
                        .bytes()
                        .map(|b| b.to_ascii_lowercase())
                        .cmp(expected.bytes().map(|b| b.to_ascii_lowercase()))
                });
                self.accepts(ordering)
            }
        }
    }

    /// Whether an ordering of actual against expected satisfies this comparison.
    pub fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => ordering == Equal,
            Cmp::Ne => ordering != Equal,
            Cmp::Lt => ordering == Less,
            Cmp::Le => ordering != Greater,
            Cmp::Gt => ordering == Greater,
            Cmp::Ge => ordering != Less,
            Cmp::Contains | Cmp::StartsWith | Cmp::EndsWith | Cmp::Exists => ordering == Equal,
        }
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
}

/// Three-valued truth. `Unknown` carries why it could not be decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown(String),
}

impl Truth {
    pub fn from_bool(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }

    pub fn is_true(&self) -> bool {
        matches!(self, Truth::True)
    }

    pub fn is_false(&self) -> bool {
        matches!(self, Truth::False)
    }
}

impl std::ops::Not for Truth {
    type Output = Truth;

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            unknown => unknown,
        }
    }
}
