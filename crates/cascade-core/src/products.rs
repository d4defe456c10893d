//! From installed software to the product names vendors' catalogs use, by
//! the product map in `data/product-map.json`, and back: which installed
//! products a catalog's product name stands for.
//!
//! Two sides meet on one set of names. The installed side turns a
//! computer's software list into product names ([`derive()`]); the catalog
//! side reads a vendor's name as the installed products it covers
//! ([`covered_by`]): "Microsoft .NET Framework 3.5 AND 4.8" is any computer
//! with the .NET Framework 4.8, "... (CU 27)" of SQL Server any instance on
//! the cumulative-update train.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::software::{Software, SoftwareSource};
use crate::version::Version;
use crate::windows::normalize_arch;

/// A product installed on a computer, as the inventory lists it or as it is
/// derived from the software list here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstalledProduct {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

#[derive(Debug, Deserialize)]
struct MapFile {
    other_platforms: Vec<String>,
    products: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    products: Vec<String>,
    names: Vec<String>,
    #[serde(default)]
    source: Option<SoftwareSource>,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default)]
    from: Option<Version>,
    #[serde(default)]
    below: Option<Version>,
}

// Embedded at build time and parsed by the tests below: a bad file fails
// the build's tests, not a running node.
#[allow(clippy::expect_used)]
static MAP: LazyLock<MapFile> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../data/product-map.json")).expect("data/product-map.json is well formed")
});

/// The map's entries by the first word of their names, lower case: a
/// software name is compared only with the entries its first word names.
static BY_FIRST_WORD: LazyLock<std::collections::HashMap<String, Vec<usize>>> = LazyLock::new(|| {
    let mut index: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    for (i, entry) in MAP.products.iter().enumerate() {
        for name in &entry.names {
            let list = index.entry(first_word(name)).or_default();
            if !list.contains(&i) {
                list.push(i);
            }
        }
    }
    index
});

/// The first word of a name, where [`name_matches`] allows a name to end.
fn first_word(name: &str) -> String {
    let mut word = String::new();
    first_word_into(name, &mut word);
    word
}

/// [`first_word`] into a buffer the caller reuses.
fn first_word_into(name: &str, word: &mut String) {
    word.clear();
    word.extend(
        name.trim()
            .split([' ', '-', '(', ','])
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| c.to_ascii_lowercase()),
    );
}

/// Whether `name` is the software's name, whole or followed by a space, a
/// dash or a parenthesis ("Microsoft Office LTSC Professional Plus 2021 -
/// en-us"), ignoring case.
fn name_matches(software: &str, name: &str) -> bool {
    let software = software.trim();
    software
        .get(..name.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(name))
        && software[name.len()..]
            .chars()
            .next()
            .is_none_or(|c| matches!(c, ' ' | '-' | '(' | ','))
}

/// The installed products a software list shows. `os_arch` is the
/// architecture of entries found in the OS's own view.
pub fn derive(software: &[Software], os_arch: Option<&str>) -> Vec<InstalledProduct> {
    let mut out = Vec::new();
    let mut word = String::new();
    for s in software {
        // The .NET Framework and .NET runtimes are named as catalogs name them
        // by their collectors ("Microsoft .NET Framework 4.8", ".NET 6.0").
        if matches!(s.source, SoftwareSource::DotnetFramework | SoftwareSource::Dotnet) {
            out.push(InstalledProduct {
                name: s.name.clone(),
                version: s.version.as_deref().and_then(Version::leading),
            });
            continue;
        }
        first_word_into(&s.name, &mut word);
        let Some(entries) = BY_FIRST_WORD.get(&word) else {
            continue;
        };
        let version = s.version.as_deref().and_then(Version::leading);
        let arch = s.arch.as_deref().or(os_arch).map(normalize_arch);
        for entry in entries.iter().map(|&i| &MAP.products[i]) {
            if entry.source.is_some_and(|src| src != s.source) {
                continue;
            }
            let Some(matched) = entry.names.iter().find(|n| name_matches(&s.name, n)) else {
                continue;
            };
            if let Some(want) = &entry.arch
                && arch != Some(normalize_arch(want))
            {
                continue;
            }
            if entry.from.is_some() || entry.below.is_some() {
                let Some(v) = &version else { continue };
                if entry.from.as_ref().is_some_and(|f| v < f) || entry.below.as_ref().is_some_and(|b| v >= b) {
                    continue;
                }
            }
            for template in &entry.products {
                if let Some(name) = fill(&template.replace("{name}", matched), arch, version.as_ref()) {
                    out.push(InstalledProduct {
                        name,
                        version: version.clone(),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A product name template with its placeholders filled; `None` when one
/// cannot be (a {bits} product on an unknown architecture).
fn fill(template: &str, arch: Option<&str>, version: Option<&Version>) -> Option<String> {
    let mut out = template.to_owned();
    if out.contains("{bits}") {
        let bits = match arch? {
            "x64" | "arm64" => "64",
            "x86" | "arm" => "32",
            _ => return None,
        };
        out = out.replace("{bits}", bits);
    }
    if out.contains("{major}") || out.contains("{minor}") {
        let v = version?;
        out = out
            .replace("{major}", &v.part(0).to_string())
            .replace("{minor}", &v.part(1).to_string());
    }
    Some(out)
}

/// Whether `name` (a template's output) can come from `template`.
fn template_matches(template: &str, name: &str) -> bool {
    let mut rest = name;
    let mut parts = template.split('{');
    let Some(first) = parts.next() else { return false };
    let Some(after) = rest.get(..first.len()).filter(|h| h.eq_ignore_ascii_case(first)) else {
        return false;
    };
    rest = &rest[after.len()..];
    for part in parts {
        let Some((placeholder, literal)) = part.split_once('}') else {
            return false;
        };
        let value_len = match placeholder {
            "bits" => {
                if rest.starts_with("32") || rest.starts_with("64") {
                    2
                } else {
                    return false;
                }
            }
            _ => rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()),
        };
        if value_len == 0 {
            return false;
        }
        rest = &rest[value_len..];
        match rest.get(..literal.len()) {
            Some(head) if head.eq_ignore_ascii_case(literal) => rest = &rest[literal.len()..],
            _ => return false,
        }
    }
    rest.is_empty()
}

/// The installed product names a vendor's product name stands for: the
/// name itself (an inventory may list it as written) and what it covers.
pub fn covered_by(vendor_name: &str) -> Vec<String> {
    let mut out = vec![vendor_name.to_owned()];
    if let Some(versions) = vendor_name.strip_prefix("Microsoft .NET Framework ") {
        out.extend(dotnet_framework(versions));
    }
    // SQL Server security updates name the train and its latest update:
    // "(CU 27)" covers every instance on the cumulative-update train.
    if vendor_name.starts_with("Microsoft SQL Server ")
        && let Some(open) = vendor_name.rfind("(CU ")
        && vendor_name.ends_with(')')
    {
        out.push(format!("{}(CU)", &vendor_name[..open]));
    }
    out.dedup();
    out
}

/// "3.5 AND 4.8", "4.6.2/4.7/4.7.1/4.7.2", "4.6/4.6.2", "2.0 Service Pack 2":
/// where a 4.x version is named, the installed 4.x decides (3.5 updates come
/// with it); otherwise the older versions named. "4.6/4.6.2" spans 4.6.1.
fn dotnet_framework(versions: &str) -> Vec<String> {
    let mut named: Vec<String> = Vec::new();
    for part in versions.split(" AND ").flat_map(|p| p.split('/')) {
        let v = part.split(" Service Pack").next().unwrap_or(part).trim();
        if !v.is_empty() {
            named.push(v.to_owned());
        }
    }
    let four: Vec<&String> = named.iter().filter(|v| v.starts_with("4.")).collect();
    let chosen: Vec<String> = if four.is_empty() {
        named.clone()
    } else {
        let mut out: Vec<String> = Vec::new();
        for (i, v) in four.iter().enumerate() {
            out.push((*v).clone());
            // "4.6" followed by "4.6.2": the patch versions between.
            if let (Some(next), Ok(base)) = (four.get(i + 1), v.parse::<Version>())
                && base.len() == 2
                && let Ok(n) = next.parse::<Version>()
                && n.len() == 3
                && n.same_prefix(&base, 2)
            {
                for patch in 1..n.part(2) {
                    out.push(format!("{v}.{patch}"));
                }
            }
        }
        out
    };
    let mut out: Vec<String> = chosen
        .into_iter()
        // Windows 7 calls the .NET Framework 3.5 SP1 "3.5.1".
        .flat_map(|v| {
            if v == "3.5.1" {
                vec!["3.5.1".to_owned(), "3.5".to_owned()]
            } else {
                vec![v]
            }
        })
        .map(|v| format!("Microsoft .NET Framework {v}"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether a vendor's product name stands for more installed products
/// than the one of its own name (see [`covered_by`]).
pub fn expands(vendor_name: &str) -> bool {
    vendor_name.starts_with("Microsoft .NET Framework ") || vendor_name.starts_with("Microsoft SQL Server ")
}

/// Whether a product of this name can only be for another platform than
/// Windows ("Microsoft Office 2019 for Mac").
pub fn other_platform(vendor_name: &str) -> bool {
    let name = vendor_name.as_bytes();
    MAP.other_platforms.iter().any(|p| {
        let p = p.as_bytes();
        p.len() <= name.len() && name.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
    })
}

/// Whether a complete software list shows whether `installed_name` (one of
/// [`covered_by`]'s names) is installed: the map or a collector produces it.
pub fn detectable(installed_name: &str) -> bool {
    if installed_name.starts_with("Microsoft .NET Framework ")
        || installed_name.starts_with(".NET ")
        || installed_name.starts_with("ASP.NET Core ")
    {
        return true;
    }
    MAP.products
        .iter()
        .flat_map(|e| e.products.iter().map(move |t| (e, t)))
        .any(|(e, t)| {
            if t.contains("{name}") {
                e.names
                    .iter()
                    .any(|n| template_matches(&t.replace("{name}", n), installed_name))
            } else {
                template_matches(t, installed_name)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(name: &str, version: &str, arch: Option<&str>, source: SoftwareSource) -> Software {
        Software {
            name: name.into(),
            version: Some(version.into()),
            arch: arch.map(str::to_owned),
            source,
            ..Software::default()
        }
    }

    fn names(products: &[InstalledProduct]) -> Vec<&str> {
        products.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn the_map_is_well_formed() {
        assert!(MAP.products.len() > 30);
        for e in &MAP.products {
            assert!(!e.products.is_empty() && !e.names.is_empty(), "{e:?}");
            if let (Some(f), Some(b)) = (&e.from, &e.below) {
                assert!(f < b, "{e:?}");
            }
        }
    }

    #[test]
    fn office_by_name_platform_and_build() {
        let list = [
            sw(
                "Microsoft Office LTSC Professional Plus 2021 - en-us",
                "16.0.14332.20447",
                Some("x64"),
                SoftwareSource::Uninstall,
            ),
            sw(
                "ProPlus2019Volume",
                "16.0.10394.20020",
                Some("x86"),
                SoftwareSource::ClickToRun,
            ),
            sw(
                "Microsoft Visio Professional 2016",
                "16.0.4266.1001",
                None,
                SoftwareSource::Uninstall,
            ),
            // Office 2010 without a service pack is no product MSRC names any more.
            sw(
                "Microsoft Office Professional Plus 2010",
                "14.0.4763.1000",
                None,
                SoftwareSource::Uninstall,
            ),
        ];
        let got = derive(&list, Some("x64"));
        assert_eq!(
            names(&got),
            [
                "Microsoft Office 2019 for 32-bit editions",
                "Microsoft Office LTSC 2021 for 64-bit editions",
                "Microsoft Visio 2016 (64-bit edition)",
            ]
        );
        // An Office 2016 named like a newer one is not matched by a prefix of it.
        assert!(
            derive(
                &[sw(
                    "Microsoft Office Professional Plus 20160",
                    "16.0.4266",
                    None,
                    SoftwareSource::Uninstall
                )],
                Some("x64")
            )
            .is_empty()
        );
    }

    #[test]
    fn versions_pick_the_product() {
        let got = derive(
            &[
                sw(
                    "Microsoft Exchange Server 2019",
                    "15.2.1118.7",
                    None,
                    SoftwareSource::Exchange,
                ),
                sw("PowerShell 7-x64", "7.2.7.0", Some("x64"), SoftwareSource::Uninstall),
                sw(
                    "Microsoft SQL Server 2019",
                    "15.0.4261.1",
                    None,
                    SoftwareSource::SqlServer,
                ),
                sw(
                    "Microsoft .NET Framework 4.8",
                    "4.8.04084",
                    None,
                    SoftwareSource::DotnetFramework,
                ),
            ],
            Some("x64"),
        );
        assert_eq!(
            names(&got),
            [
                "Microsoft .NET Framework 4.8",
                "Microsoft Exchange Server 2019 Cumulative Update 12",
                "Microsoft SQL Server 2019 for x64-based Systems (CU)",
                "PowerShell 7.2",
            ]
        );
    }

    #[test]
    fn vendor_names_read_as_installed_products() {
        // Each list starts with the name itself.
        let c = |n: &str| covered_by(n)[1..].to_vec();
        assert_eq!(
            covered_by("Microsoft Visio 2016 (32-bit edition)"),
            ["Microsoft Visio 2016 (32-bit edition)"]
        );
        assert_eq!(
            c("Microsoft .NET Framework 3.5 AND 4.8"),
            ["Microsoft .NET Framework 4.8"]
        );
        assert_eq!(
            c("Microsoft .NET Framework 4.6.2/4.7/4.7.1/4.7.2"),
            [
                "Microsoft .NET Framework 4.6.2",
                "Microsoft .NET Framework 4.7",
                "Microsoft .NET Framework 4.7.1",
                "Microsoft .NET Framework 4.7.2"
            ]
        );
        assert_eq!(
            c("Microsoft .NET Framework 3.5 AND 4.6/4.6.2"),
            [
                "Microsoft .NET Framework 4.6",
                "Microsoft .NET Framework 4.6.1",
                "Microsoft .NET Framework 4.6.2"
            ]
        );
        assert_eq!(
            c("Microsoft .NET Framework 2.0 Service Pack 2"),
            ["Microsoft .NET Framework 2.0"]
        );
        assert_eq!(
            c("Microsoft .NET Framework 3.5.1"),
            ["Microsoft .NET Framework 3.5", "Microsoft .NET Framework 3.5.1"]
        );
        assert_eq!(
            c("Microsoft SQL Server 2019 for x64-based Systems (CU 18)"),
            ["Microsoft SQL Server 2019 for x64-based Systems (CU)"]
        );
    }

    #[test]
    fn what_a_software_list_can_show() {
        for name in [
            "Microsoft Visio 2016 (32-bit edition)",
            "PowerShell 7.3",
            "Microsoft Visual Studio 2022 version 17.4",
            "Microsoft .NET Framework 4.8",
            ".NET 7.0",
            "Microsoft SharePoint Foundation 2013 Service Pack 1",
        ] {
            assert!(detectable(name), "{name}");
        }
        for name in [
            "Azure Network Watcher VM Extension",
            "Raw Image Extension",
            "PowerShell 7.x",
        ] {
            assert!(!detectable(name), "{name}");
        }
        assert!(other_platform("Microsoft Office LTSC for Mac 2021"));
        assert!(other_platform("Microsoft Edge for iOS"));
        assert!(!other_platform("Microsoft Office LTSC 2021 for 64-bit editions"));
    }
}
