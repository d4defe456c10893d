//! Linux inventories: `/etc/os-release` and the dpkg status database, and
//! Debian's version ordering (`deb:<package>` facts compare with it).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::ImportError;
use crate::inventory::{Inventory, OsFamily, OsInfo};
use crate::version::Version;

/// Whether `text` is an os-release file.
pub fn looks_like_os_release(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("ID="))
        && text
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#') || l.contains('='))
}

/// Whether `text` is a dpkg status database.
pub fn looks_like_dpkg_status(text: &str) -> bool {
    text.starts_with("Package: ") && text.contains("\nStatus: ")
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
        .to_owned()
}

/// `/etc/os-release`: the distribution is the OS product (`debian`), its
/// VERSION_ID the version, its codename the release.
pub fn parse_os_release(source: &str, text: &str) -> Result<Inventory, ImportError> {
    let fields: BTreeMap<&str, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), unquote(v)))
        .collect();
    let id = fields
        .get("ID")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ImportError::Format {
            source_name: source.to_owned(),
            message: "os-release without an ID line".to_owned(),
        })?;
    let mut inv = Inventory {
        os: OsInfo {
            family: OsFamily::Linux,
            name: fields
                .get("PRETTY_NAME")
                .or(fields.get("NAME"))
                .cloned()
                .unwrap_or_default(),
            product: Some(id.clone()),
            version: fields.get("VERSION_ID").and_then(|v| v.parse::<Version>().ok()),
            release: fields.get("VERSION_CODENAME").filter(|c| !c.is_empty()).cloned(),
            ..OsInfo::default()
        },
        ..Inventory::default()
    };
    inv.normalize();
    Ok(inv)
}

/// The installed packages of a dpkg status database, as `deb:<package>`
/// facts holding their version (and `deb-arch:<package>`).
pub fn parse_dpkg_status(source: &str, text: &str) -> Result<Inventory, ImportError> {
    let mut facts = BTreeMap::new();
    for (n, stanza) in text.split("\n\n").enumerate() {
        let mut package = None;
        let mut version = None;
        let mut arch = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                package = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Architecture: ") {
                arch = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if stanza.trim().is_empty() {
            continue;
        }
        let Some(package) = package else {
            return Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!("stanza {} has no Package field", n + 1),
            });
        };
        if !installed {
            continue;
        }
        let version = version.ok_or_else(|| ImportError::Format {
            source_name: source.to_owned(),
            message: format!("installed package {package} has no Version field"),
        })?;
        facts.insert(format!("deb:{package}"), version.to_owned());
        if let Some(arch) = arch {
            facts.insert(format!("deb-arch:{package}"), arch.to_owned());
        }
    }
    Ok(Inventory {
        facts,
        ..Inventory::default()
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

#[cfg(test)]
mod tests {
    use super::deb_version_cmp;
    use std::cmp::Ordering::*;

    #[test]
    fn debian_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1:0.9", "2.0", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u7", Less),
            ("2.36-9+deb12u10", "2.36-9+deb12u9", Greater),
            ("1.2.3-1", "1.2.3-1.1", Less),
            ("1.0a", "1.0", Greater),
            ("1.0", "1.0+b1", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("5.2.15-2+b8", "5.2.15-2+b7", Greater),
            ("20230311+deb12u1", "20230311", Greater),
            ("1.01", "1.1", Equal),
        ] {
            assert_eq!(deb_version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(deb_version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
