//! Vendor detection expressions (WSUS `bar:` rules) evaluated against the
//! inventory. Anything the inventory cannot answer is unknown, never a
//! guessed true or false.

use std::collections::BTreeMap;

use super::{Cmp, Truth};
use crate::inventory::{Inventory, Lookup};
use crate::version::Version;

/// The WSUS comparison words.
pub fn comparison(word: &str) -> Option<Cmp> {
    Some(match word {
        "EqualTo" => Cmp::Eq,
        "LessThan" => Cmp::Lt,
        "LessThanOrEqualTo" => Cmp::Le,
        "GreaterThan" => Cmp::Gt,
        "GreaterThanOrEqualTo" => Cmp::Ge,
        "Contains" => Cmp::Contains,
        "BeginsWith" => Cmp::StartsWith,
        "EndsWith" => Cmp::EndsWith,
        _ => return None,
    })
}

pub fn eval(kind: &str, attrs: &BTreeMap<String, String>, inv: &Inventory) -> Truth {
    let attr = |name: &str| attrs.get(name).map(String::as_str);
    let cmp = || attr("Comparison").and_then(comparison);
    match kind {
        "WindowsVersion" => windows_version(attrs, inv),
        "RegDword" | "RegQword" | "RegSz" | "RegExpandSz" | "RegSzToVersion" => {
            let Some(cmp) = cmp() else {
                return bad(kind, "Comparison");
            };
            let Some(data) = attr("Data") else {
                return bad(kind, "Data");
            };
            match registry(attrs, inv) {
                Err(why) => Truth::Unknown(why),
                // A missing value fails every comparison, as the Windows Update agent does.
                Ok(None) => Truth::False,
                Ok(Some(actual)) => {
                    let numeric = matches!(kind, "RegDword" | "RegQword");
                    Truth::from_bool(if numeric {
                        match (parse_number(actual), parse_number(data)) {
                            (Some(a), Some(d)) => cmp.accepts(a.cmp(&d)),
                            _ => false,
                        }
                    } else {
                        cmp.holds(actual, data)
                    })
                }
            }
        }
        "RegValueExists" => match registry(attrs, inv) {
            Err(why) => Truth::Unknown(why),
            Ok(found) => Truth::from_bool(found.is_some()),
        },
        "RegKeyExists" => {
            let Some(key) = reg_key(attrs) else {
                return bad(kind, "Key");
            };
            match &inv.registry {
                None => Truth::Unknown(format!("registry key {key} is not in the inventory")),
                Some(map) => {
                    let prefix = crate::inventory::normalize_path(&format!("{key}\\"));
                    Truth::from_bool(map.keys().any(|k| k.starts_with(&prefix)))
                }
            }
        }
        "FileVersion" | "FileExists" | "FileVersionPrependRegSz" | "FileExistsPrependRegSz" => file(kind, attrs, inv),
        "LicenseDword" => {
            let Some(value) = attr("Value") else {
                return bad(kind, "Value");
            };
            fact_compare(inv, &format!("license:{value}"), cmp(), attr("Data"))
        }
        "DeviceAttribute" => {
            let Some(name) = attr("Name") else {
                return bad(kind, "Name");
            };
            let fact = if name.eq_ignore_ascii_case("OSVersion") {
                "os.version".to_owned()
            } else {
                format!("device:{name}")
            };
            fact_compare(inv, &fact, cmp(), attr("Value"))
        }
        "ProductReleaseInstalled" => {
            let Some(name) = attr("Name") else {
                return bad(kind, "Name");
            };
            fact_compare(inv, &format!("release:{name}"), Some(Cmp::Ge), attr("Version"))
        }
        "CbsPackageInstalled" | "CbsPackageInstallable" => match attr("Package") {
            Some(package) => match inv.facts.get(&format!("cbs:{package}")) {
                Some(state) => Truth::from_bool(if kind == "CbsPackageInstalled" {
                    state.eq_ignore_ascii_case("installed")
                } else {
                    !state.eq_ignore_ascii_case("installed") && !state.eq_ignore_ascii_case("absent")
                }),
                None => Truth::Unknown(format!("CBS package {package} is not in the inventory")),
            },
            None => Truth::Unknown(format!("{kind} names no package identity")),
        },
        _ => Truth::Unknown(format!("the detection expression {kind} is not evaluated by Cascade")),
    }
}

fn bad(kind: &str, attr: &str) -> Truth {
    Truth::Unknown(format!("{kind} lacks a valid {attr} attribute"))
}

fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn fact_compare(inv: &Inventory, fact: &str, cmp: Option<Cmp>, expected: Option<&str>) -> Truth {
    let (Some(cmp), Some(expected)) = (cmp, expected) else {
        return Truth::Unknown(format!("a comparison on {fact} lacks its operator or value"));
    };
    match inv.fact(fact) {
        Some(actual) => Truth::from_bool(cmp.holds(&actual, expected)),
        None => Truth::Unknown(format!("the inventory has no fact {fact}")),
    }
}

fn reg_key(attrs: &BTreeMap<String, String>) -> Option<String> {
    let key = attrs.get("Key")?;
    Some(match attrs.get("Subkey") {
        Some(sub) if !sub.is_empty() => format!("{key}\\{sub}"),
        _ => key.clone(),
    })
}

fn registry<'a>(attrs: &BTreeMap<String, String>, inv: &'a Inventory) -> Result<Option<&'a str>, String> {
    let key = reg_key(attrs).ok_or_else(|| "a registry rule lacks its Key attribute".to_owned())?;
    let path = match attrs.get("Value") {
        Some(v) => format!("{key}\\{v}"),
        None => format!("{key}\\(default)"),
    };
    match inv.registry_value(&path) {
        Lookup::Present(v) => Ok(Some(v)),
        Lookup::Absent => Ok(None),
        Lookup::NotCollected => Err(format!("registry value {path} is not in the inventory")),
    }
}

fn file(kind: &str, attrs: &BTreeMap<String, String>, inv: &Inventory) -> Truth {
    let Some(rel) = attrs.get("Path") else {
        return bad(kind, "Path");
    };
    let path = if kind.ends_with("PrependRegSz") {
        match registry(attrs, inv) {
            Err(why) => return Truth::Unknown(why),
            Ok(None) => return Truth::False,
            Ok(Some(dir)) => format!("{}\\{}", dir.trim_end_matches('\\'), rel.trim_start_matches('\\')),
        }
    } else if let Some(csidl) = attrs.get("Csidl") {
        match inv.facts.get(&format!("csidl:{csidl}")) {
            Some(dir) => format!("{}\\{}", dir.trim_end_matches('\\'), rel.trim_start_matches('\\')),
            None => return Truth::Unknown(format!("folder CSIDL {csidl} is not in the inventory")),
        }
    } else {
        rel.clone()
    };
    let found = match inv.file_version(&path) {
        Lookup::NotCollected => {
            return Truth::Unknown(format!("file {path} is not in the inventory"));
        }
        Lookup::Absent => None,
        Lookup::Present(v) => Some(v),
    };
    if kind.starts_with("FileExists") {
        return Truth::from_bool(found.is_some());
    }
    let Some(actual) = found else {
        return Truth::False;
    };
    let (Some(cmp), Some(wanted)) = (
        attrs.get("Comparison").and_then(|c| comparison(c)),
        attrs.get("Version"),
    ) else {
        return bad(kind, "Comparison or Version");
    };
    match (actual.parse::<Version>(), wanted.parse::<Version>()) {
        (Ok(a), Ok(w)) => Truth::from_bool(cmp.accepts(a.cmp(&w))),
        _ => Truth::Unknown(format!("file {path} has no comparable version ({actual})")),
    }
}

/// `bar:WindowsVersion`: the given parts of (major, minor, build, service
/// pack major, service pack minor) are compared in that order; a product type,
/// when given, must match.
fn windows_version(attrs: &BTreeMap<String, String>, inv: &Inventory) -> Truth {
    let Some(version) = inv
        .os
        .version
        .as_ref()
        .filter(|_| inv.os.family == crate::inventory::OsFamily::Windows)
    else {
        return if inv.os.family == crate::inventory::OsFamily::Windows {
            Truth::Unknown("the inventory has no Windows version".to_owned())
        } else {
            Truth::False
        };
    };
    let cmp = match attrs.get("Comparison") {
        Some(c) => match comparison(c) {
            Some(c) => c,
            None => return bad("WindowsVersion", "Comparison"),
        },
        None => Cmp::Eq,
    };
    if let Some(product_type) = attrs.get("ProductType") {
        match inv.fact("os.product_type") {
            None => {
                return Truth::Unknown("the inventory does not say whether this is a server".to_owned());
            }
            // Domain controllers (2) are servers (3) for patching.
            Some(actual) => {
                let wanted = if product_type == "2" {
                    "3"
                } else {
                    product_type.as_str()
                };
                if actual != wanted {
                    return Truth::False;
                }
            }
        }
    }
    let sp_major = inv.os.service_pack.map(u64::from);
    let mut actual = Vec::new();
    let mut wanted = Vec::new();
    for (name, value) in [
        ("MajorVersion", Some(version.part(0))),
        ("MinorVersion", Some(version.part(1))),
        ("BuildNumber", Some(version.part(2))),
        ("ServicePackMajor", sp_major),
        ("ServicePackMinor", sp_major.map(|_| 0)),
    ] {
        let Some(w) = attrs.get(name) else { continue };
        let Ok(w) = w.parse::<u64>() else {
            return bad("WindowsVersion", name);
        };
        let Some(a) = value else {
            return Truth::Unknown("the inventory has no service pack level".to_owned());
        };
        actual.push(a);
        wanted.push(w);
    }
    if attrs.contains_key("SuiteMask") {
        return Truth::Unknown("WindowsVersion SuiteMask is not in the inventory".to_owned());
    }
    Truth::from_bool(cmp.accepts(actual.cmp(&wanted)))
}
