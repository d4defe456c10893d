//! Dotted numeric versions as vendors write them (`10.0.19044.2364`).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dotted numeric version. Missing trailing components compare as zero,
/// so `10.0.19044` equals `10.0.19044.0`.
#[derive(Clone, Debug, Default, Eq)]
pub struct Version(Vec<u64>);

impl Version {
    pub fn new(parts: impl Into<Vec<u64>>) -> Self {
        Version(parts.into())
    }

    pub fn parts(&self) -> &[u64] {
        &self.0
    }

    /// The component at `index`, zero when absent.
    pub fn part(&self, index: usize) -> u64 {
        self.0.get(index).copied().unwrap_or(0)
    }

    /// Number of components written.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the first `n` components of both versions are equal.
    pub fn same_prefix(&self, other: &Version, n: usize) -> bool {
        (0..n).all(|i| self.part(i) == other.part(i))
    }

    /// The longest leading dotted-number run of `text`, if any:
    /// `"6.1.7601 Service Pack 1"` gives `6.1.7601`.
    pub fn leading(text: &str) -> Option<Version> {
        let text = text.trim_start();
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        text[..end].trim_end_matches('.').parse().ok()
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let significant = self.0.iter().rposition(|p| *p != 0).map_or(0, |i| i + 1);
        self.0[..significant].hash(state);
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        for i in 0..n {
            match self.part(i).cmp(&other.part(i)) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dotted numeric version: {0:?}")]
pub struct VersionParseError(pub String);

impl FromStr for Version {
    type Err = VersionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VersionParseError(s.to_owned()));
        }
        s.split('.')
            .map(|p| p.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map(Version)
            .map_err(|_| VersionParseError(s.to_owned()))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Version {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)*$",
            "description": "Dotted numeric version; missing trailing parts count as 0."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_with_implicit_zeros() {
        let a: Version = "10.0.19044".parse().unwrap();
        let b: Version = "10.0.19044.0".parse().unwrap();
        let c: Version = "10.0.19044.2364".parse().unwrap();
        assert_eq!(a, b);
        assert!(a < c);
        assert!("1.459.547.0".parse::<Version>().unwrap() > "1.459.543.0".parse().unwrap());
    }

    #[test]
    fn leading_run() {
        assert_eq!(
            Version::leading("6.1.7601 Service Pack 1 Build 7601").unwrap(),
            "6.1.7601".parse().unwrap()
        );
        assert!(Version::leading("N/A").is_none());
        assert!("".parse::<Version>().is_err());
        assert!("1..2".parse::<Version>().is_err());
    }
}
