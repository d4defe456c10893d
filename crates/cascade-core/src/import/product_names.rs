//! Microsoft product names as catalogs write them ("Windows 10 Version
//! 21H2 for x64-based Systems", "Windows Server 2019 (Server Core
//! installation)"), and the rule each Windows one stands for. The facts of
//! Windows releases themselves are in `crate::windows`.

use crate::rule::{Cmp, IndexKey, Rule};
use crate::windows::normalize_arch;

/// What a Microsoft product name in a catalog means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductName {
    /// A Windows release: "Windows 10 Version 21H2 for x64-based Systems".
    Os(OsTarget),
    /// Anything else: an application or component.
    Other(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsTarget {
    pub product: String,
    pub release: Option<String>,
    pub arch: Option<String>,
    pub service_pack: Option<u32>,
    /// `Some(true)` for "(Server Core installation)", `Some(false)` for the
    /// full installation of a server, `None` when it does not matter.
    pub server_core: Option<bool>,
}

/// Windows products by the prefix catalogs use, longest first.
const OS_PRODUCTS: &[&str] = &[
    "Windows Server 2008 R2",
    "Windows Server 2012 R2",
    "Windows Server 2003 R2",
    "Windows Server 2008",
    "Windows Server 2012",
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2025",
    "Windows Server 2003",
    "Windows Server",
    "Windows RT 8.1",
    "Windows 8.1",
    "Windows 10",
    "Windows 11",
    "Windows 7",
    "Windows 8",
    "Windows Vista",
    "Windows XP",
];

/// Parses a Microsoft product name. Only names made wholly of a Windows
/// product, a version, an architecture, a service pack and an installation
/// type are OS names; "Windows Terminal for Windows 10" is not.
pub fn parse_product_name(name: &str) -> ProductName {
    let trimmed = name.trim();
    let mut rest = trimmed.to_owned();
    let lower = rest.to_ascii_lowercase();
    let mut target = OsTarget::default();
    if let Some(pos) = lower.find("(server core installation)") {
        target.server_core = Some(true);
        rest.replace_range(pos..pos + "(server core installation)".len(), "");
    }
    let rest = rest.trim().trim_end_matches(',').trim();
    let Some(product) = OS_PRODUCTS.iter().find(|p| {
        // `get`: a name with other text where the product would end (a BOM
        // inside "Windows 10") has no char boundary there.
        rest.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p))
            && rest[p.len()..].chars().next().is_none_or(|c| c == ' ' || c == ',')
    }) else {
        return ProductName::Other(trimmed.to_owned());
    };
    target.product = match *product {
        "Windows RT 8.1" => "Windows 8.1".to_owned(),
        "Windows Server 2003 R2" => "Windows Server 2003".to_owned(),
        p => p.to_owned(),
    };
    if *product == "Windows RT 8.1" {
        target.arch = Some("arm".to_owned());
    }
    let words: Vec<&str> = rest[product.len()..]
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].to_ascii_lowercase();
        match w.as_str() {
            "version" if i + 1 < words.len() => {
                target.release = Some(words[i + 1].to_ascii_uppercase());
                i += 2;
            }
            "for" if i + 1 < words.len() => {
                let arch = normalize_arch(words[i + 1].trim_end_matches("-based").trim_end_matches("-Based"));
                if !matches!(arch, "x86" | "x64" | "arm64" | "arm" | "ia64") {
                    return ProductName::Other(trimmed.to_owned());
                }
                target.arch = Some(arch.to_owned());
                let next = words.get(i + 2).map(|s| s.to_ascii_lowercase());
                i += if matches!(next.as_deref(), Some("systems") | Some("editions") | Some("edition")) {
                    3
                } else {
                    2
                };
            }
            "service" if words.get(i + 1).is_some_and(|s| s.eq_ignore_ascii_case("pack")) => {
                match words.get(i + 2).and_then(|n| n.parse().ok()) {
                    Some(sp) => target.service_pack = Some(sp),
                    None => return ProductName::Other(trimmed.to_owned()),
                }
                i += 3;
            }
            // "Windows Server 2022, 23H2 Edition"
            r if i + 1 < words.len() && words[i + 1].eq_ignore_ascii_case("edition") && looks_like_release(r) => {
                target.release = Some(r.to_ascii_uppercase());
                i += 2;
            }
            "x64" | "itanium" if words.get(i + 1).is_some_and(|s| s.eq_ignore_ascii_case("edition")) => {
                target.arch = Some(normalize_arch(&w).to_owned());
                i += 2;
            }
            _ => return ProductName::Other(trimmed.to_owned()),
        }
    }
    // "Windows 10 for x64-based Systems" is the first release, 1507.
    if target.product == "Windows 10" && target.release.is_none() {
        target.release = Some("1507".to_owned());
    }
    if target.product == "Windows Server" && target.release.is_none() {
        return ProductName::Other(trimmed.to_owned());
    }
    if target.product.starts_with("Windows Server") && target.server_core.is_none() {
        target.server_core = Some(false);
    }
    ProductName::Os(target)
}

fn looks_like_release(word: &str) -> bool {
    word.len() == 4
        && word.chars().all(|c| c.is_ascii_alphanumeric())
        && word.chars().next().is_some_and(|c| c.is_ascii_digit())
}

impl OsTarget {
    /// The applicability rule for computers that are this product.
    pub fn rule(&self) -> Rule {
        let mut parts = vec![
            Rule::fact("os.family", Cmp::Eq, "windows"),
            Rule::fact("os.product", Cmp::Eq, self.product.clone()),
        ];
        if let Some(release) = &self.release {
            parts.push(Rule::fact("os.release", Cmp::Eq, release.clone()));
        }
        if let Some(arch) = &self.arch {
            parts.push(Rule::fact("os.arch", Cmp::Eq, arch.clone()));
        }
        if let Some(sp) = self.service_pack {
            parts.push(Rule::fact("os.service_pack", Cmp::Eq, sp.to_string()));
        }
        match self.server_core {
            Some(true) => parts.push(Rule::fact("os.installation", Cmp::Eq, "server_core")),
            Some(false) => parts.push(Rule::fact("os.installation", Cmp::Ne, "server_core")),
            None => {}
        }
        Rule::and(parts)
    }

    pub fn index_key(&self) -> IndexKey {
        IndexKey::Os(self.product.to_ascii_lowercase())
    }
}
