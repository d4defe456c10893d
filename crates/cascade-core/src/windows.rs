//! What Windows versions, builds and Microsoft's product names mean.

use crate::rule::{Cmp, IndexKey, Rule};
use crate::version::Version;

/// `x64-based PC`, `AMD64`, `x64-based Systems`, `32-bit` and the like, as
/// one of `x86`, `x64`, `arm64`, `arm`, `ia64`.
pub fn normalize_arch(raw: &str) -> &str {
    let lower = raw.trim().to_ascii_lowercase();
    if lower.starts_with("arm64") || lower.starts_with("aarch64") {
        "arm64"
    } else if lower.starts_with("x64")
        || lower.starts_with("amd64")
        || lower.starts_with("x86_64")
        || lower.starts_with("x86-64")
        || lower == "64-bit"
    {
        "x64"
    } else if lower.starts_with("x86")
        || lower.starts_with("32-bit")
        || lower.starts_with("i386")
        || lower.starts_with("i686")
    {
        "x86"
    } else if lower.starts_with("itanium") || lower.starts_with("ia64") {
        "ia64"
    } else if lower.starts_with("arm") {
        "arm"
    } else {
        raw.trim()
    }
}

/// The product a Windows version is. `server` may be unknown; the reported
/// name then decides (it says "Server" on every server release).
pub fn product_for(version: &Version, server: Option<bool>, name: &str) -> Option<&'static str> {
    let server = server.unwrap_or_else(|| name.to_ascii_lowercase().contains("server"));
    let build = version.part(2);
    Some(match (version.part(0), version.part(1), server) {
        (5, 0, false) => "Windows 2000",
        (5, 0, true) => "Windows 2000 Server",
        (5, 1, _) => "Windows XP",
        (5, 2, false) => "Windows XP",
        (5, 2, true) => "Windows Server 2003",
        (6, 0, false) => "Windows Vista",
        (6, 0, true) => "Windows Server 2008",
        (6, 1, false) => "Windows 7",
        (6, 1, true) => "Windows Server 2008 R2",
        (6, 2, false) => "Windows 8",
        (6, 2, true) => "Windows Server 2012",
        (6, 3, false) => "Windows 8.1",
        (6, 3, true) => "Windows Server 2012 R2",
        (10, 0, false) if build >= 22000 => "Windows 11",
        (10, 0, false) => "Windows 10",
        (10, 0, true) => match build {
            14393 => "Windows Server 2016",
            17763 => "Windows Server 2019",
            20348 => "Windows Server 2022",
            26100 => "Windows Server 2025",
            // Semi-annual channel releases: "Windows Server, version 20H2".
            _ => "Windows Server",
        },
        _ => return None,
    })
}

/// Windows 10 and 11 feature releases by build, as Microsoft names them in
/// catalogs ("Windows 10 Version 21H2"); the servers of the same builds.
const RELEASES: &[(&str, u64, &str)] = &[
    ("Windows 10", 10240, "1507"),
    ("Windows 10", 10586, "1511"),
    ("Windows 10", 14393, "1607"),
    ("Windows 10", 15063, "1703"),
    ("Windows 10", 16299, "1709"),
    ("Windows 10", 17134, "1803"),
    ("Windows 10", 17763, "1809"),
    ("Windows 10", 18362, "1903"),
    ("Windows 10", 18363, "1909"),
    ("Windows 10", 19041, "2004"),
    ("Windows 10", 19042, "20H2"),
    ("Windows 10", 19043, "21H1"),
    ("Windows 10", 19044, "21H2"),
    ("Windows 10", 19045, "22H2"),
    ("Windows 11", 22000, "21H2"),
    ("Windows 11", 22621, "22H2"),
    ("Windows 11", 22631, "23H2"),
    ("Windows 11", 26100, "24H2"),
    ("Windows 11", 26200, "25H2"),
    ("Windows Server", 16299, "1709"),
    ("Windows Server", 17134, "1803"),
    ("Windows Server", 18362, "1903"),
    ("Windows Server", 18363, "1909"),
    ("Windows Server", 19041, "2004"),
    ("Windows Server", 19042, "20H2"),
    ("Windows Server", 25398, "23H2"),
    ("Windows Server 2016", 14393, "1607"),
    ("Windows Server 2019", 17763, "1809"),
    ("Windows Server 2022", 20348, "21H2"),
    ("Windows Server 2025", 26100, "24H2"),
];

/// The feature release of `product` at `build` ("21H2" for Windows 10 build 19044).
pub fn release_for(product: &str, build: u64) -> Option<&'static str> {
    RELEASES
        .iter()
        .find(|(p, b, _)| p.eq_ignore_ascii_case(product) && *b == build)
        .map(|(_, _, r)| *r)
}

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

/// The edition in an OS name as `systeminfo` reports it:
/// "Microsoft Windows 10 Pro for Workstations" gives "Pro for Workstations".
pub fn edition_from_name(name: &str, product: &str) -> Option<String> {
    let cleaned = clean_os_name(name);
    let lower = cleaned.to_ascii_lowercase();
    let core = product.trim_start_matches("Windows ").to_ascii_lowercase();
    let after = lower.find(&core).map(|i| i + core.len())?;
    let edition = cleaned[after..]
        .trim_start_matches([',', ' '])
        .trim_start_matches("R2 ")
        .trim();
    (!edition.is_empty()).then(|| edition.to_owned())
}

/// Removes trade marks, including the mangled forms old consoles print
/// ("Microsoftr Windows VistaT").
pub fn clean_os_name(name: &str) -> String {
    let mut s = name
        .replace("(R)", "")
        .replace("(TM)", "")
        .replace(['®', '™', '\u{a0}', '\u{ff}'], " ");
    for (mangled, plain) in [
        ("Microsoftr", "Microsoft"),
        ("Serverr", "Server"),
        ("VistaT", "Vista"),
        ("Windowsr", "Windows"),
    ] {
        s = s.replace(mangled, plain);
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(name: &str) -> OsTarget {
        match parse_product_name(name) {
            ProductName::Os(t) => t,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn names_with_other_text_where_a_product_would_end() {
        // Found by hostile_input.rs: slicing at the product's length panicked.
        for name in ["product \u{feff}10379", "Windows \u{feff}10", "Windows 1\u{e9}"] {
            assert!(matches!(parse_product_name(name), ProductName::Other(_)), "{name}");
        }
    }

    #[test]
    fn microsoft_product_names() {
        let t = os("Windows 10 Version 21H2 for x64-based Systems");
        assert_eq!(
            (t.product.as_str(), t.release.as_deref(), t.arch.as_deref()),
            ("Windows 10", Some("21H2"), Some("x64"))
        );
        let t = os("Windows 11 version 21H2 for ARM64-based Systems");
        assert_eq!(
            (t.product.as_str(), t.release.as_deref(), t.arch.as_deref()),
            ("Windows 11", Some("21H2"), Some("arm64"))
        );
        let t = os("Windows 10 for 32-bit Systems");
        assert_eq!((t.release.as_deref(), t.arch.as_deref()), (Some("1507"), Some("x86")));
        let t = os("Windows Server 2008 R2 for x64-based Systems Service Pack 1 (Server Core installation)");
        assert_eq!(t.product, "Windows Server 2008 R2");
        assert_eq!((t.service_pack, t.server_core), (Some(1), Some(true)));
        let t = os("Windows Server 2022");
        assert_eq!(
            (t.product.as_str(), t.server_core),
            ("Windows Server 2022", Some(false))
        );
        let t = os("Windows Server 2022, 23H2 Edition (Server Core installation)");
        assert_eq!((t.release.as_deref(), t.server_core), (Some("23H2"), Some(true)));
        let t = os("Windows 8.1 for x64-based systems");
        assert_eq!((t.product.as_str(), t.arch.as_deref()), ("Windows 8.1", Some("x64")));
        let t = os("Windows RT 8.1");
        assert_eq!((t.product.as_str(), t.arch.as_deref()), ("Windows 8.1", Some("arm")));
        for other in [
            "Windows Terminal for Windows 10",
            "Windows Sysmon",
            "Windows Subsystem for Linux (WSL2)",
            "Microsoft Office 2019 for 32-bit editions",
        ] {
            assert_eq!(parse_product_name(other), ProductName::Other(other.to_owned()));
        }
    }

    #[test]
    fn products_and_releases_by_build() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert_eq!(product_for(&v("10.0.22000"), Some(false), ""), Some("Windows 11"));
        assert_eq!(
            product_for(&v("6.1.7601"), None, "Microsoft Windows Server 2008 R2 Standard"),
            Some("Windows Server 2008 R2")
        );
        assert_eq!(product_for(&v("5.2.3790"), Some(false), ""), Some("Windows XP"));
        assert_eq!(release_for("Windows 10", 19044), Some("21H2"));
        assert_eq!(release_for("Windows 11", 26100), Some("24H2"));
        assert_eq!(release_for("Windows 7", 7601), None);
    }

    #[test]
    fn editions() {
        assert_eq!(
            edition_from_name("Microsoft Windows 10 Pro for Workstations", "Windows 10").as_deref(),
            Some("Pro for Workstations")
        );
        assert_eq!(
            edition_from_name(
                "Microsoft(R) Windows(R) Server 2003, Standard Edition",
                "Windows Server 2003"
            )
            .as_deref(),
            Some("Standard Edition")
        );
        assert_eq!(
            edition_from_name("Microsoftr Windows VistaT Enterprise ", "Windows Vista").as_deref(),
            Some("Enterprise")
        );
        assert_eq!(
            edition_from_name("Microsoft Windows Server 2008 R2 Standard ", "Windows Server 2008 R2").as_deref(),
            Some("Standard")
        );
    }
}
