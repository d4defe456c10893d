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

/// The output of `rpm -qa --queryformat '%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n'`
/// as `rpm:<package>` facts holding `epoch:version-release` (and
/// `rpm-arch:<package>`).
pub fn parse_rpm_list(source: &str, text: &str) -> Result<Inventory, ImportError> {
    let mut facts = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(name), Some(evr)) = (fields.next(), fields.next()) else {
            return Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!("line {}: expected name<TAB>epoch:version-release<TAB>arch", n + 1),
            });
        };
        if name.is_empty() || evr.is_empty() {
            return Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!("line {}: empty package name or version", n + 1),
            });
        }
        // gpg-pubkey entries are keys, not packages; several of one name
        // (multilib, kernels) keep the newest.
        if name == "gpg-pubkey" {
            continue;
        }
        let key = format!("rpm:{name}");
        let newer = facts
            .get(&key)
            .is_none_or(|old: &String| rpm_version_cmp(evr, old) == Ordering::Greater);
        if newer {
            facts.insert(key, evr.to_owned());
            if let Some(arch) = fields.next().filter(|a| !a.is_empty()) {
                facts.insert(format!("rpm-arch:{name}"), arch.to_owned());
            }
        }
    }
    Ok(Inventory {
        facts,
        ..Inventory::default()
    })
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

#[cfg(test)]
mod tests {
    use super::{deb_version_cmp, parse_rpm_list, rpm_version_cmp};

    #[test]
    fn rpm_ordering() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0", "2.0.0", Less),
            ("2.0a", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.010", "1.9", Greater),
            ("5.5p1", "5.5p10", Less),
            ("1.0a", "1.0b", Less),
            ("1.0a", "1.01", Less),
            ("1:1.0-1", "2.0-1", Greater),
            ("0:3.0.7-24.el9", "3.0.7-25.el9", Less),
            ("2.34-100.el9_4.2", "2.34-100.el9_4.10", Less),
            ("4.18.0-513.el8", "4.18.0", Equal),
        ] {
            assert_eq!(rpm_version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpm_version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rpm_lists_become_facts() {
        let text = "openssl-libs\t1:3.0.7-27.el9\tx86_64\ngpg-pubkey\t0:fd431d51-4ae0493b\t(none)\nkernel-core\t0:5.14.0-362.8.1.el9_3\tx86_64\nkernel-core\t0:5.14.0-427.13.1.el9_4\tx86_64\n";
        let inv = parse_rpm_list("rpm -qa", text).unwrap();
        assert_eq!(inv.facts["rpm:openssl-libs"], "1:3.0.7-27.el9");
        assert_eq!(
            inv.facts["rpm:kernel-core"], "0:5.14.0-427.13.1.el9_4",
            "the newest of two"
        );
        assert!(!inv.facts.contains_key("rpm:gpg-pubkey"));
        let e = parse_rpm_list("rpm -qa", "just-a-name\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
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
