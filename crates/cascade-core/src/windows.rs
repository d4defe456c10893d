//! What Windows versions, builds and Microsoft's product names mean.

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

/// Whether a Windows release is a client or a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Client,
    Server,
}

/// One Windows release of the table in `data/windows-releases.json`.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Release {
    /// As catalogs name the product ("Windows 10", "Windows Server 2022").
    pub product: String,
    pub kind: Kind,
    /// `major.minor`.
    pub version: String,
    pub build: u64,
    /// The feature release ("21H2"), where the product has them.
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub available: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(serde::Deserialize)]
struct ReleaseTable {
    releases: Vec<Release>,
}

// Embedded at build time and parsed by the tests below: a bad file fails
// the build's tests, not a running node.
#[allow(clippy::expect_used)]
static RELEASES: std::sync::LazyLock<Vec<Release>> = std::sync::LazyLock::new(|| {
    serde_json::from_str::<ReleaseTable>(include_str!("../data/windows-releases.json"))
        .map(|t| t.releases)
        .expect("data/windows-releases.json is well formed")
});

/// The table of Windows releases, with its sources in the data file.
pub fn releases() -> &'static [Release] {
    &RELEASES
}

/// The releases a version may be: those of its exact build, else (before
/// Windows 10, whose builds moved with service packs) those of its
/// `major.minor`.
fn releases_of(version: &Version) -> Vec<&'static Release> {
    let major_minor = format!("{}.{}", version.part(0), version.part(1));
    let build = version.part(2);
    let same: Vec<&Release> = releases().iter().filter(|r| r.version == major_minor).collect();
    let exact: Vec<&Release> = same.iter().copied().filter(|r| r.build == build).collect();
    if !exact.is_empty() || version.part(0) >= 10 {
        return exact;
    }
    let mut out: Vec<&Release> = Vec::new();
    for r in same {
        if !out.iter().any(|o| o.product == r.product) {
            out.push(r);
        }
    }
    out
}

/// Whether the OS name says client or server: every server release says
/// "Server" in its name, in every language; a name that names Windows
/// without it is a client.
fn server_from_name(name: &str) -> Option<bool> {
    let lower = name.to_lowercase();
    if lower.contains("server") {
        Some(true)
    } else if lower.contains("windows") {
        Some(false)
    } else {
        None
    }
}

/// The product a Windows version is. `server` is what the inventory says
/// (its installation type); when it says nothing, the reported name
/// decides, and when there is no name either, the build alone: a build
/// that is only a client or only a server release is that, and a build
/// that is both is not guessed. The error says why.
pub fn decide_product(version: &Version, server: Option<bool>, name: &str) -> Result<&'static str, String> {
    let server = server.or_else(|| server_from_name(name));
    let candidates = releases_of(version);
    let shown = || {
        let mut names: Vec<String> = Vec::new();
        for r in &candidates {
            let n = match &r.release {
                Some(rel) => format!("{} {rel}", r.product),
                None => r.product.clone(),
            };
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names.join(" and ")
    };
    let wanted = server.map(|s| if s { Kind::Server } else { Kind::Client });
    let fitting: Vec<&Release> = candidates
        .iter()
        .copied()
        .filter(|r| wanted.is_none_or(|k| r.kind == k))
        .collect();
    let mut products: Vec<&'static str> = fitting.iter().map(|r| r.product.as_str()).collect();
    products.dedup();
    match (products.as_slice(), wanted) {
        ([one], _) => Ok(one),
        ([], _) if candidates.is_empty() => {
            // A build the table does not know yet (a newer release or an
            // Insider build): the family is still clear from the version.
            match (version.part(0), version.part(1), wanted) {
                (10, 0, Some(Kind::Client)) if version.part(2) >= 22000 => Ok("Windows 11"),
                (10, 0, Some(Kind::Client)) => Ok("Windows 10"),
                (10, 0, Some(Kind::Server)) => Ok("Windows Server"),
                (10, 0, None) => Err(format!(
                    "Windows build {version} is not in the table of releases, and the inventory does not say whether it is a client or a server"
                )),
                _ => Err(format!("Windows version {version} is not a release Cascade knows")),
            }
        }
        ([], Some(kind)) => Err(format!(
            "Windows build {version} is {}, but the inventory says it is a {}",
            shown(),
            if kind == Kind::Server { "server" } else { "client" }
        )),
        _ => Err(format!(
            "Windows build {version} is both {}, and the inventory does not say which (no OS name, no installation type)",
            shown()
        )),
    }
}

/// The product a Windows version is, where it can be decided
/// (see [`decide_product`]).
pub fn product_for(version: &Version, server: Option<bool>, name: &str) -> Option<&'static str> {
    decide_product(version, server, name).ok()
}

/// Every product a Windows version may be: the candidates a planner looks
/// at when the product could not be decided.
pub fn possible_products(version: &Version) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = releases_of(version).iter().map(|r| r.product.as_str()).collect();
    if out.is_empty() && version.part(0) == 10 && version.part(1) == 0 {
        out = vec!["Windows 10", "Windows 11", "Windows Server"];
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The feature release of `product` at `build` ("21H2" for Windows 10 build 19044).
pub fn release_for(product: &str, build: u64) -> Option<&'static str> {
    releases()
        .iter()
        .find(|r| r.product.eq_ignore_ascii_case(product) && r.build == build)
        .and_then(|r| r.release.as_deref())
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
    use crate::import::product_names::{OsTarget, ProductName, parse_product_name};

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
        assert_eq!(release_for("Windows 11", 28000), Some("26H1"));
        assert_eq!(release_for("Windows Server", 25398), Some("23H2"));
    }

    #[test]
    fn builds_alone_are_never_guessed() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        // Only ever a server release.
        assert_eq!(
            decide_product(&v("10.0.20348.2113"), None, ""),
            Ok("Windows Server 2022")
        );
        assert_eq!(decide_product(&v("10.0.25398"), None, ""), Ok("Windows Server"));
        // Only ever a client release.
        assert_eq!(decide_product(&v("10.0.19045.3693"), None, ""), Ok("Windows 10"));
        assert_eq!(decide_product(&v("10.0.28000.1"), None, ""), Ok("Windows 11"));
        assert_eq!(decide_product(&v("5.1.2600"), None, ""), Ok("Windows XP"));
        // Both: unknown, with the reason.
        for (build, both) in [
            ("10.0.14393.5582", "Windows 10 1607 and Windows Server 2016 1607"),
            ("10.0.17763.1", "Windows 10 1809 and Windows Server 2019 1809"),
            ("10.0.26100.2314", "Windows 11 24H2 and Windows Server 2025 24H2"),
            ("6.1.7601", "Windows 7 and Windows Server 2008 R2"),
            ("6.3.9600", "Windows 8.1 and Windows Server 2012 R2"),
        ] {
            let e = decide_product(&v(build), None, "").unwrap_err();
            assert!(e.contains(both) && e.contains("does not say which"), "{build}: {e}");
            assert_eq!(product_for(&v(build), None, ""), None);
        }
        // The name or the installation decides.
        assert_eq!(
            decide_product(&v("10.0.26100"), None, "Microsoft Windows 11 Pro"),
            Ok("Windows 11")
        );
        assert_eq!(
            decide_product(&v("10.0.26100"), None, "Microsoft Windows Server 2025 Datacenter"),
            Ok("Windows Server 2025")
        );
        assert_eq!(
            decide_product(&v("10.0.14393"), Some(true), ""),
            Ok("Windows Server 2016")
        );
        // A contradiction is reported, not resolved.
        let e = decide_product(&v("10.0.20348"), Some(false), "").unwrap_err();
        assert!(e.contains("says it is a client"), "{e}");
        // A build newer than the table: the family when the kind is known.
        assert_eq!(decide_product(&v("10.0.29500"), Some(false), ""), Ok("Windows 11"));
        assert!(decide_product(&v("10.0.29500"), None, "").is_err());
        assert_eq!(
            possible_products(&v("10.0.14393")),
            ["Windows 10", "Windows Server 2016"]
        );
    }

    #[test]
    fn the_release_table_is_complete_and_consistent() {
        let table = releases();
        assert!(table.len() >= 50);
        for r in table {
            assert!(r.version.split('.').count() == 2, "{r:?}");
            if r.version == "10.0" {
                assert!(
                    r.release.is_some(),
                    "every Windows 10 and later release is named: {r:?}"
                );
            }
            assert!(
                parse_product_name(&r.product) != ProductName::Other(r.product.clone())
                    || r.product == "Windows Server"
                    || r.product.starts_with("Windows 2000"),
                "{r:?}"
            );
        }
        for (product, release) in [
            ("Windows 10", "22H2"),
            ("Windows 11", "25H2"),
            ("Windows 11", "26H1"),
            ("Windows Server 2025", "24H2"),
            ("Windows Server", "23H2"),
        ] {
            assert!(
                table
                    .iter()
                    .any(|r| r.product == product && r.release.as_deref() == Some(release)),
                "{product} {release}"
            );
        }
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
