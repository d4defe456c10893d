//! Inventory importers against real systeminfo and wmic qfe outputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cascade_core::import::{self, ImportError, InventoryFormat};
use cascade_core::{Inventory, UpdateId};
use common::{fixture, inventory};

/// (file, product, release, arch, installation, service pack, edition,
/// number of installed updates, first installed update)
type Expected = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
    &'static str,
    usize,
    &'static str,
);

const SYSTEMINFO: &[Expected] = &[
    (
        "10_1803_x64_education_en-us_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Education",
        5,
        "KB4100347",
    ),
    (
        "10_1803_x64_enterprise_es-ar_20190307_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Enterprise",
        6,
        "KB4456655",
    ),
    (
        "10_1803_x64_pro_it_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Pro",
        10,
        "KB4100347",
    ),
    (
        "10_1803_x64_proforworkstations_en-us_A_20190305_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Pro for Workstations",
        4,
        "KB4462930",
    ),
    (
        "10_1803_x64_proforworkstations_en-us_B_20190306_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Pro for Workstations",
        0,
        "",
    ),
    (
        "10_1803_x64_proforworkstations_en-us_systeminfo.txt",
        "Windows 10",
        "1803",
        "x64",
        "client",
        0,
        "Pro for Workstations",
        0,
        "",
    ),
    (
        "10_1803_x86_enterprise_nl_systeminfo.txt",
        "Windows 10",
        "1803",
        "x86",
        "client",
        0,
        "Enterprise",
        4,
        "KB4230204",
    ),
    (
        "10_1809_x64_education_en-us_20190306_systeminfo.txt",
        "Windows 10",
        "1809",
        "x64",
        "client",
        0,
        "Education",
        9,
        "KB2693643",
    ),
    (
        "10_1809_x64_education_en-us_systeminfo.txt",
        "Windows 10",
        "1809",
        "x64",
        "client",
        0,
        "Education",
        6,
        "KB4465477",
    ),
    (
        "10_1809_x64_education_es_systeminfo.txt",
        "Windows 10",
        "1809",
        "x64",
        "client",
        0,
        "Education",
        9,
        "KB4465477",
    ),
    (
        "10_1809_x64_pro_en-us_20190307_systeminfo.txt",
        "Windows 10",
        "1809",
        "x64",
        "client",
        0,
        "Pro",
        5,
        "KB4470788",
    ),
    (
        "10_21H1_x64_enterprise_systeminfo.txt",
        "Windows 10",
        "21H1",
        "x64",
        "client",
        0,
        "Enterprise",
        4,
        "KB4601554",
    ),
    (
        "10_rtm_x64_pro_en-us_systeminfo.txt",
        "Windows 10",
        "1507",
        "x64",
        "client",
        0,
        "Pro",
        2,
        "KB3074665",
    ),
    (
        "11_21H2_x64_enterprise_systeminfo.txt",
        "Windows 11",
        "21H2",
        "x64",
        "client",
        0,
        "Enterprise",
        4,
        "KB5004342",
    ),
    (
        "11_24H2_x64_enterprise_systeminfo.txt",
        "Windows 11",
        "24H2",
        "x64",
        "client",
        0,
        "Enterprise LTSC",
        3,
        "KB5037589",
    ),
    (
        "7_sp1_x64_enterprise_en-us_20190305_systeminfo.txt",
        "Windows 7",
        "",
        "x64",
        "client",
        1,
        "Enterprise",
        245,
        "KB2479943",
    ),
    (
        "7_sp1_x64_enterprise_en-us_A_systeminfo.txt",
        "Windows 7",
        "",
        "x64",
        "client",
        1,
        "Enterprise",
        219,
        "KB2479943",
    ),
    (
        "7_sp1_x64_enterprise_en-us_B_systeminfo.txt",
        "Windows 7",
        "",
        "x64",
        "client",
        1,
        "Enterprise",
        245,
        "KB2479943",
    ),
    (
        "7_sp1_x64_enterprise_fr_systeminfo_cmd.txt",
        "Windows 7",
        "",
        "x64",
        "client",
        1,
        "Entreprise N",
        73,
        "KB2491683",
    ),
    (
        "7_sp1_x64_ultimaten_de_systeminfo.txt",
        "Windows 7",
        "",
        "x64",
        "client",
        1,
        "Ultimate N",
        242,
        "KB2479943",
    ),
    (
        "7_sp1_x86_enterprise_en-us_systeminfo.txt",
        "Windows 7",
        "",
        "x86",
        "client",
        1,
        "Enterprise",
        2,
        "KB2534111",
    ),
    (
        "8.1_u1_x64_enterprise_en-us_systeminfo.txt",
        "Windows 8.1",
        "",
        "x64",
        "client",
        0,
        "Enterprise",
        6,
        "KB2919355",
    ),
    (
        "srv_2003_rtm_x86_standard_en-us_systeminfo.txt",
        "Windows Server 2003",
        "",
        "x86",
        "server",
        0,
        "Standard Edition",
        2,
        "KB147222",
    ),
    (
        "srv_2003_sp1_x64_standard_en-us_systeminfo.txt",
        "Windows Server 2003",
        "",
        "x64",
        "server",
        1,
        "Standard x64 Edition",
        1,
        "KB147222",
    ),
    (
        "srv_2003r2_sp2_rtm_x64_standard_en-us_systeminfo.txt",
        "Windows Server 2003",
        "",
        "x64",
        "server",
        2,
        "Standard x64 Edition",
        1,
        "KB147222",
    ),
    (
        "srv_2003r2_sp2_x86_standard_en-us_systeminfo.txt",
        "Windows Server 2003",
        "",
        "x86",
        "server",
        2,
        "Standard Edition",
        58,
        "KB147222",
    ),
    (
        "srv_2008_rtm_x64_standard_en-us_systeminfo.txt",
        "Windows Server 2008",
        "",
        "x64",
        "server",
        1,
        "Standard",
        1,
        "KB956250",
    ),
    (
        "srv_2008_rtm_x86_standard_en-us_systeminfo.txt",
        "Windows Server 2008",
        "",
        "x86",
        "server",
        1,
        "Standard",
        1,
        "KB956250",
    ),
    (
        "srv_2008r2_sp1_x64_standard_en-us_systeminfo.txt",
        "Windows Server 2008 R2",
        "",
        "x64",
        "server",
        1,
        "Standard",
        2,
        "KB958488",
    ),
    (
        "srv_2012r2_u1_systeminfo.txt",
        "Windows Server 2012 R2",
        "",
        "x64",
        "server",
        0,
        "Standard",
        154,
        "KB2894852",
    ),
    (
        "srv_2012r2_u1_systeminfo2.txt",
        "Windows Server 2012 R2",
        "",
        "x64",
        "server",
        0,
        "Standard",
        156,
        "KB2894852",
    ),
    (
        "srv_2016_1607_datacenter_en-us_systeminfo.txt",
        "Windows Server 2016",
        "1607",
        "x64",
        "server",
        0,
        "Datacenter",
        5,
        "KB4049065",
    ),
    (
        "vista_x64_sp0_systeminfo.txt",
        "Windows Vista",
        "",
        "x64",
        "client",
        0,
        "Enterprise",
        104,
        "KB925902",
    ),
    (
        "vista_x64_sp1_systeminfo.txt",
        "Windows Vista",
        "",
        "x64",
        "client",
        1,
        "Enterprise",
        173,
        "KB2079403",
    ),
    (
        "xp_rtm_x86_professional_en-us_systeminfo.txt",
        "Windows XP",
        "",
        "x86",
        "client",
        0,
        "Professional",
        2,
        "KB147222",
    ),
    (
        "xp_sp1_x86_systeminfo.txt",
        "Windows XP",
        "",
        "x86",
        "client",
        1,
        "Professional",
        2,
        "KB147222",
    ),
    (
        "xp_sp2_x64_systeminfo.txt",
        "Windows XP",
        "",
        "x64",
        "client",
        2,
        "Professional x64 Edition",
        68,
        "KB147222",
    ),
    (
        "xp_sp3_x86_professional_en-us_systeminfo.txt",
        "Windows XP",
        "",
        "x86",
        "client",
        3,
        "Professional",
        80,
        "KB147222",
    ),
];

#[test]
fn every_real_systeminfo_output() {
    for &(file, product, release, arch, installation, sp, edition, count, first) in SYSTEMINFO {
        let rel = format!("windows-inventory/{file}");
        let (format, inv) = import::import_inventory(&rel, &fixture(&rel)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format, InventoryFormat::Systeminfo, "{file}");
        let os = &inv.os;
        assert_eq!(os.product.as_deref(), Some(product), "{file}");
        assert_eq!(os.release.as_deref().unwrap_or(""), release, "{file}");
        assert_eq!(os.arch.as_deref(), Some(arch), "{file}");
        assert_eq!(os.installation.map(|i| i.as_str()), Some(installation), "{file}");
        assert_eq!(os.service_pack, Some(sp), "{file}");
        assert_eq!(os.edition.as_deref(), Some(edition), "{file}");
        assert_eq!(inv.installed_updates.len(), count, "{file}");
        assert_eq!(
            inv.installed_updates.iter().next().map(|u| u.as_str()).unwrap_or(""),
            first,
            "{file}"
        );
    }
    let files = std::fs::read_dir(common::fixture_path("windows-inventory")).unwrap();
    let on_disk = files
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().contains("systeminfo"))
        .count();
    assert_eq!(on_disk, SYSTEMINFO.len(), "every systeminfo fixture has a row");
}

#[test]
fn localised_output_keeps_host_and_version() {
    let it = inventory("windows-inventory/10_1803_x64_pro_it_systeminfo.txt");
    assert_eq!(it.computer.as_deref(), Some("PC044"));
    assert_eq!(
        it.os.version.as_ref().map(ToString::to_string).as_deref(),
        Some("10.0.17134")
    );
    let de = inventory("windows-inventory/7_sp1_x64_ultimaten_de_systeminfo.txt");
    assert_eq!(de.computer.as_deref(), Some("OLI7-PC"));
    assert!(de.installed_updates.contains(&UpdateId::new("KB2849697")));
}

fn ids(inv: &Inventory) -> Vec<&str> {
    inv.installed_updates.iter().map(UpdateId::as_str).collect()
}

#[test]
fn hotfix_lists() {
    let utf16 = inventory("windows-inventory/10_1803_x64_proforworkstations_en-us_A_20190305_qfe.txt");
    assert_eq!(ids(&utf16), ["KB4462930", "KB4485449", "KB4487017", "KB4487038"]);
    // "File 1" is not an update; Q147222 is KB147222; KB893803v2 is KB893803.
    let xp = inventory("windows-inventory/xp_rtm_x86_professional_en-us_qfe.txt");
    assert_eq!(ids(&xp), ["KB147222", "KB893803"]);
    // Console text in one encoding, then UTF-16 without a BOM.
    let mixed = inventory("windows-inventory/xp_sp2_x64_qfe.txt");
    assert!(mixed.installed_updates.len() > 50, "{}", mixed.installed_updates.len());
    assert!(mixed.installed_updates.contains(&UpdateId::new("KB147222")));
}

#[test]
fn systeminfo_and_qfe_merge() {
    let mut inv = inventory("windows-inventory/10_1809_x64_education_en-us_20190306_systeminfo.txt");
    let before = inv.installed_updates.len();
    inv.merge(inventory(
        "windows-inventory/10_1809_x64_education_en-us_20190306_qfe.txt",
    ));
    assert!(inv.installed_updates.len() >= before);
    assert_eq!(inv.os.release.as_deref(), Some("1809"));
}

#[test]
fn native_inventory_and_its_errors() {
    let inv = common::windows(serde_json::json!({
        "computer": "ws-1",
        "os": {"family": "windows", "version": "10.0.19044.2364", "installation": "client", "arch": "AMD64"},
        "installed_updates": ["5019959", "kb5020000"],
        "products": [{"name": "Microsoft Office 2019", "version": "16.0.10394"}]
    }));
    assert_eq!(inv.os.product.as_deref(), Some("Windows 10"));
    assert_eq!(inv.os.release.as_deref(), Some("21H2"));
    assert_eq!(inv.os.arch.as_deref(), Some("x64"));
    assert_eq!(ids(&inv), ["KB5019959", "KB5020000"]);

    let err = import::import_inventory(
        "bad.json",
        b"{\n  \"os\": {\"family\": \"windows\"},\n  \"colour\": 1\n}",
    )
    .unwrap_err();
    match err {
        ImportError::Json {
            source_name,
            line,
            message,
            ..
        } => {
            assert_eq!((source_name.as_str(), line), ("bad.json", 3));
            assert!(message.contains("colour"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = import::import_inventory("notes.txt", b"just some text\n").unwrap_err();
    assert!(err.to_string().starts_with("notes.txt: not an inventory"), "{err}");
}

#[test]
fn a_debian_machine_from_os_release_and_dpkg_status() {
    let (format, mut inv) = import::import_inventory("os-release", &fixture("linux/os-release")).unwrap();
    assert_eq!(format, InventoryFormat::OsRelease);
    let (format, packages) = import::import_inventory("dpkg-status", &fixture("linux/dpkg-status")).unwrap();
    assert_eq!(format, InventoryFormat::DpkgStatus);
    inv.merge(packages);
    assert_eq!(inv.fact("os.family").as_deref(), Some("linux"));
    assert_eq!(inv.fact("os.product").as_deref(), Some("debian"));
    assert_eq!(inv.fact("os.release").as_deref(), Some("bookworm"));
    assert_eq!(inv.fact("os.version").as_deref(), Some("12"));
    assert_eq!(inv.fact("deb:openssl").as_deref(), Some("3.0.19-1~deb12u2"));
    assert_eq!(inv.facts.keys().filter(|k| k.starts_with("deb:")).count(), 19);

    // A security fix for openssl in bookworm, as a rule over the package's
    // version in Debian's ordering.
    use cascade_core::rule::{Cmp, Rule, Truth};
    let needs = |fixed: &str| {
        Rule::and(vec![
            Rule::fact("os.product", Cmp::Eq, "debian"),
            Rule::fact("os.release", Cmp::Eq, "bookworm"),
            Rule::fact("deb:openssl", Cmp::Lt, fixed),
        ])
        .eval(&inv)
    };
    assert_eq!(needs("3.0.19-1~deb12u3"), Truth::True);
    assert_eq!(needs("3.0.19-1~deb12u2"), Truth::False);
    assert_eq!(
        needs("3.0.19-1"),
        Truth::True,
        "~deb12u2 sorts before the plain revision"
    );
    // The package list was collected: a package not in it is not installed.
    assert_eq!(Rule::fact("deb:not-installed", Cmp::Lt, "1.0").eval(&inv), Truth::False);
    let mut no_packages = inv.clone();
    no_packages.facts.retain(|k, _| !k.starts_with("deb:"));
    assert!(matches!(
        Rule::fact("deb:openssl", Cmp::Lt, "1.0").eval(&no_packages),
        Truth::Unknown(_)
    ));
}

/// `systeminfo` in each display language's legacy code page (see
/// tests/fixtures/systeminfo-codepages/make.py): the code page is found from
/// the text, names come out as written, and the facts are the same as in English.
#[test]
fn systeminfo_in_every_console_code_page() {
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a [&'a str],
    );
    #[rustfmt::skip]
    let table: &[Row] = &[
        // file, computer, OS name, version, product, release, edition, hotfixes
        ("zh-cn_cp936_10_22H2_pro.txt", "DESKTOP-7K2M1QF", "Microsoft Windows 10 专业版", "10.0.19045", "Windows 10", "22H2", "专业版", &["KB5011048", "KB5032005", "KB5033372"]),
        ("zh-tw_cp950_11_23H2_pro.txt", "LAPTOP-TW0314", "Microsoft Windows 11 專業版", "10.0.22631", "Windows 11", "23H2", "專業版", &["KB5033375", "KB5034467"]),
        ("ja_cp932_11_23H2_pro.txt", "PC-TOKYO-07", "Microsoft Windows 11 Pro", "10.0.22631", "Windows 11", "23H2", "Pro", &["KB5033375", "KB5034467"]),
        ("ko_cp949_10_22H2_pro.txt", "DESKTOP-SEOUL1", "Microsoft Windows 10 Pro", "10.0.19045", "Windows 10", "22H2", "Pro", &["KB5032005", "KB5033372"]),
        ("ru_cp866_10_22H2_enterprise.txt", "WS-MOSCOW-12", "Майкрософт Windows 10 Корпоративная", "10.0.19045", "Windows 10", "22H2", "Корпоративная", &["KB5032005", "KB5033372"]),
        ("ru_cp1251_server_2019.txt", "SRV-FS-01", "Microsoft Windows Server 2019 Standard", "10.0.17763", "Windows Server 2019", "1809", "Standard", &["KB5032336", "KB5033371"]),
        ("cs_cp852_10_22H2_pro.txt", "PC-PRAHA-3", "Microsoft Windows 10 Pro", "10.0.19045", "Windows 10", "22H2", "Pro", &["KB5032005", "KB5033372"]),
        ("pl_cp1250_11_23H2_pro.txt", "LAPTOP-WAW-5", "Microsoft Windows 11 Pro", "10.0.22631", "Windows 11", "23H2", "Pro", &["KB5033375", "KB5034467"]),
        ("de_cp850_10_22H2_pro.txt", "PC-MÜNCHEN-2", "Microsoft Windows 10 Pro", "10.0.19045", "Windows 10", "22H2", "Pro", &["KB5032005", "KB5033372"]),
        ("en-us_cp437_server_2022.txt", "SRV-CAFÉ-01", "Microsoft Windows Server 2022 Datacenter", "10.0.20348", "Windows Server 2022", "21H2", "Datacenter", &["KB5032198", "KB5034129"]),
    ];
    for (file, computer, name, version, product, release, edition, hotfixes) in table {
        let (format, inv) = import::import_inventory(file, &fixture(&format!("systeminfo-codepages/{file}"))).unwrap();
        assert_eq!(format, InventoryFormat::Systeminfo, "{file}");
        assert_eq!(inv.computer.as_deref(), Some(*computer), "{file}");
        assert_eq!(inv.os.name, *name, "{file}");
        assert_eq!(
            inv.os.version.as_ref().map(ToString::to_string).as_deref(),
            Some(*version),
            "{file}"
        );
        assert_eq!(inv.os.product.as_deref(), Some(*product), "{file}");
        assert_eq!(inv.os.release.as_deref(), Some(*release), "{file}");
        assert_eq!(inv.os.edition.as_deref(), Some(*edition), "{file}");
        assert_eq!(inv.os.arch.as_deref(), Some("x64"), "{file}");
        assert_eq!(ids(&inv), *hotfixes, "{file}");
    }
}
