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

/// RPM's version ordering of `[epoch:]version[-release]`: epochs
/// numerically, then version and release by rpmvercmp (alternating digit
/// and letter segments, digits newer than letters, `~` older than anything
/// and `^` newer than the end but older than anything else).
pub fn rpm_version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((version, release)) => (epoch, version, release),
            None => (epoch, rest, ""),
        }
    }
    fn vercmp(a: &str, b: &str) -> Ordering {
        if a == b {
            return Ordering::Equal;
        }
        let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
        let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
        loop {
            while a.first().is_some_and(separator) {
                a = &a[1..];
            }
            while b.first().is_some_and(separator) {
                b = &b[1..];
            }
            for mark in [b'~', b'^'] {
                let (ma, mb) = (a.first() == Some(&mark), b.first() == Some(&mark));
                if ma || mb {
                    if ma && mb {
                        a = &a[1..];
                        b = &b[1..];
                        return vercmp(
                            std::str::from_utf8(a).unwrap_or_default(),
                            std::str::from_utf8(b).unwrap_or_default(),
                        );
                    }
                    return match (mark, ma) {
                        (b'~', true) => Ordering::Less,
                        (b'~', false) => Ordering::Greater,
                        // A caret sorts after the end of the other, before anything else.
                        (_, true) if b.is_empty() => Ordering::Greater,
                        (_, true) => Ordering::Less,
                        (_, false) if a.is_empty() => Ordering::Less,
                        (_, false) => Ordering::Greater,
                    };
                }
            }
            if a.is_empty() || b.is_empty() {
                break;
            }
            let numeric = a[0].is_ascii_digit();
            let take = |s: &[u8]| {
                s.iter()
                    .position(|c| {
                        if numeric {
                            !c.is_ascii_digit()
                        } else {
                            !c.is_ascii_alphabetic()
                        }
                    })
                    .unwrap_or(s.len())
            };
            let (na, nb) = (take(a), take(b));
            let (sa, sb) = (&a[..na], &b[..nb]);
            if sb.is_empty() {
                // Different kinds of segment: the numeric one is newer.
                return if numeric { Ordering::Greater } else { Ordering::Less };
            }
            let order = if numeric {
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (x, y) = (trim(sa), trim(sb));
                x.len().cmp(&y.len()).then_with(|| x.cmp(&y))
            } else {
                sa.cmp(sb)
            };
            if order != Ordering::Equal {
                return order;
            }
            a = &a[na..];
            b = &b[nb..];
        }
        match (a.is_empty(), b.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        }
    }
    let (ea, va, ra) = split(a.trim());
    let (eb, vb, rb) = split(b.trim());
    ea.cmp(&eb).then_with(|| vercmp(va, vb)).then_with(|| {
        // A version without a release matches any release.
        if ra.is_empty() || rb.is_empty() {
            Ordering::Equal
        } else {
            vercmp(ra, rb)
        }
    })
}

/// Debian's version ordering (`[epoch:]upstream[-revision]`, `~` before
/// anything, letters before other characters, digit runs numerically), as
/// dpkg compares versions.
pub fn deb_version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a, b);
        while !a.is_empty() || !b.is_empty() {
            // Non-digit prefixes, character by character.
            let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
            let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
            let (sa, sb) = (&a[..na], &b[..nb]);
            let (mut ca, mut cb) = (sa.chars(), sb.chars());
            loop {
                let (x, y) = (ca.next(), cb.next());
                if x.is_none() && y.is_none() {
                    break;
                }
                match order(x).cmp(&order(y)) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
            a = &a[na..];
            b = &b[nb..];
            // Digit runs, numerically.
            let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let (x, y) = (a[..da].trim_start_matches('0'), b[..db].trim_start_matches('0'));
            match x.len().cmp(&y.len()).then_with(|| x.cmp(y)) {
                Ordering::Equal => {}
                other => return other,
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

/// Winget's version order: dot-separated parts, each a number then any
/// text; numbers compare as numbers, a part without text after its number
/// is newer than one with ("1.0" after "1.0-beta"), texts compare ignoring
/// case; trailing zero parts do not count ("1.2.0" equals "1.2").
pub fn winget_version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<(u64, String)> {
        let mut out: Vec<(u64, String)> = v
            .trim()
            .trim_start_matches(['v', 'V'])
            .split('.')
            .map(|p| {
                let digits = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
                (p[..digits].parse().unwrap_or(0), p[digits..].to_ascii_lowercase())
            })
            .collect();
        while out.last().is_some_and(|(n, s)| *n == 0 && s.is_empty()) && out.len() > 1 {
            out.pop();
        }
        out
    }
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let zero = (0, String::new());
        let (x, y) = (a.get(i).unwrap_or(&zero), b.get(i).unwrap_or(&zero));
        let ord = x.0.cmp(&y.0).then_with(|| match (x.1.is_empty(), y.1.is_empty()) {
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => x.1.cmp(&y.1),
        });
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    std::cmp::Ordering::Equal
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
