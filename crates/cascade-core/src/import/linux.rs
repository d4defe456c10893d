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
            .is_none_or(|old: &String| crate::version::rpm_version_cmp(evr, old) == Ordering::Greater);
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

#[cfg(test)]
mod tests {
    use super::parse_rpm_list;
    use crate::version::{deb_version_cmp, rpm_version_cmp};

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
