//! Catalog importers against real vendor metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use cascade_core::import::{self, CatalogFormat, ImportError, NoFragments};
use cascade_core::rule::Truth;
use cascade_core::update::{Classification, RestartBehavior, Severity};
use cascade_core::{Catalog, UpdateId};
use common::{fixture, updates, windows};

const DEC_2022: &str = "cvrf/cvrfDocument-2022-Dec.trimmed.xml";

#[test]
fn cvrf_kb5021233() {
    let catalog = common::december_2022();
    let kb = catalog.get(&UpdateId::new("KB5021233")).expect("KB5021233 imported");
    assert_eq!(&*kb.title, "2022-Dec Security Update for Windows 10 (KB5021233)");
    assert_eq!(kb.supersedes, vec![UpdateId::new("KB5019959")]);
    assert_eq!(kb.restart, RestartBehavior::Always);
    assert_eq!(kb.severity, Severity::Critical);
    assert_eq!(kb.classification, Classification::SecurityUpdate);
    assert_eq!(kb.release_date.map(|d| d.to_string()).as_deref(), Some("2022-12-13"));
    let target = kb
        .targets
        .iter()
        .find(|t| t.product == "Windows 10 Version 21H2 for x64-based Systems")
        .expect("21H2 x64 target");
    assert_eq!(
        target.fixed_build.as_ref().map(ToString::to_string).as_deref(),
        Some("10.0.19044.2364")
    );
    assert_eq!(target.severity, Severity::Critical);
    assert!(kb.cves.len() > 10, "{}", kb.cves.len());
    assert!(
        kb.cves.iter().all(|c| c.starts_with("CVE-") || c.starts_with("ADV")),
        "{:?}",
        kb.cves
    );
}

#[test]
fn cvrf_dotnet_on_windows_10() {
    let catalog = common::december_2022();
    let kb = catalog.get(&UpdateId::new("KB5021088")).expect("KB5021088 imported");
    // "5020687, 5018858, 5018545" on Windows 10 21H2 x64; other products name others.
    for old in ["KB5018545", "KB5018858", "KB5020687"] {
        assert!(
            kb.supersedes.contains(&UpdateId::new(old)),
            "{old}: {:?}",
            kb.supersedes
        );
    }
    assert_eq!(kb.restart, RestartBehavior::May);
    // An application on an OS: the OS must match and the product be installed.
    let inv = windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19044", "installation": "client", "arch": "x64"},
        "products": [{"name": "Microsoft .NET Framework 3.5 AND 4.8"}]
    }));
    assert!(kb.targets.iter().any(|t| t.rule.eval(&inv) == Truth::True));
    let no_dotnet = windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19044", "installation": "client", "arch": "x64"},
        "products": []
    }));
    assert!(kb.targets.iter().all(|t| t.rule.eval(&no_dotnet) == Truth::False));
}

#[test]
fn cvrf_counts_and_skips() {
    let imported = import::import_catalog(DEC_2022, &fixture(DEC_2022), &NoFragments).unwrap();
    assert_eq!(imported.format, CatalogFormat::Cvrf);
    let kbs: Vec<&str> = imported.updates.iter().map(|u| u.id.as_str()).collect();
    assert!(kbs.iter().all(|k| k.starts_with("KB")));
    assert_eq!(kbs.len(), 54, "distinct KBs named by vendor fixes");
    // Edge, Office click-to-run and the like are fixed by a release, not a KB.
    assert!(imported.skipped.iter().any(|s| s.contains("\"Release Notes\"")));
    // Both installations of Windows Server 2022 collapse into one target.
    let server = Catalog::new(imported.updates);
    let kb = server.get(&UpdateId::new("KB5021249")).expect("Server 2022 CU");
    let products: Vec<&str> = kb.targets.iter().map(|t| t.product.as_str()).collect();
    assert_eq!(products, ["Windows Server 2022"], "{products:?}");
}

#[test]
fn update_catalog_entries() {
    let all = common::update_catalog_updates();
    assert_eq!(all.len(), 8);
    let catalog = Catalog::new(all);
    // Two architectures of KB5026446 are one update with two targets.
    assert_eq!(catalog.len(), 7);
    let kb = catalog.get(&UpdateId::new("KB5026446")).unwrap();
    let mut products: Vec<&str> = kb.targets.iter().map(|t| t.product.as_str()).collect();
    products.sort();
    assert_eq!(
        products,
        [
            "Windows 11 Version 22H2 for arm64-based Systems",
            "Windows 11 Version 22H2 for x64-based Systems"
        ]
    );
    assert_eq!(kb.aliases.len(), 2);
    let cu = catalog.get(&UpdateId::new("KB5025239")).unwrap();
    assert_eq!(cu.classification, Classification::SecurityUpdate);
    assert_eq!(cu.severity, Severity::Critical);
    assert_eq!(cu.restart, RestartBehavior::May);
    // 16 titles, two of them the same KB (one with a "UUP" suffix).
    assert_eq!(cu.supersedes.len(), 15);
    assert_eq!(
        cu.superseded_by,
        ["KB5026372", "KB5025305", "KB5026446"].map(UpdateId::new).to_vec()
    );
    let win7 = catalog.get(&UpdateId::new("KB4074598")).unwrap();
    assert_eq!(win7.targets[0].product, "Windows 7 for x86-based Systems");
}

fn wsus_catalog() -> Catalog {
    let mut all = Vec::new();
    // A client receives an update's core and extended fragments together.
    for (core, extended) in [
        ("cbs/cbs-rollupfix-core-reduced.xml", "cbs/cbs-rollupfix-extended.xml"),
        (
            "wusp-reference/dd78b8a1-0b20-45c1-add6-4da72e9364cf-r202.core.xml",
            "wusp-reference/266f6222-c89d-43f2-9f8a-69340271e677-r200.extended.xml",
        ),
    ] {
        let mut text = fixture(&format!("wsus-update-xml/{core}"));
        text.extend(fixture(&format!("wsus-update-xml/{extended}")));
        all.extend(import::import_catalog(core, &text, &NoFragments).unwrap().updates);
    }
    all.extend(updates("wsus-update-xml/cbs/osinstaller-core.xml"));
    for dir in ["wsus-update-xml/wsusss-docs"] {
        let mut names: Vec<String> = std::fs::read_dir(common::fixture_path(dir))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".xml"))
            .collect();
        names.sort();
        for n in names {
            all.extend(updates(&format!("{dir}/{n}")));
        }
    }
    Catalog::new(all)
}

fn installed(catalog: &Catalog, id: &str, inv: &cascade_core::Inventory) -> Truth {
    catalog
        .get(&UpdateId::new(id))
        .unwrap()
        .installed_when
        .as_ref()
        .unwrap()
        .eval(inv)
}

fn installable(catalog: &Catalog, id: &str, inv: &cascade_core::Inventory) -> Truth {
    catalog
        .get(&UpdateId::new(id))
        .unwrap()
        .applicable_when
        .as_ref()
        .unwrap()
        .eval(inv)
}

#[test]
fn wsus_category_chain() {
    let catalog = wsus_catalog();
    let company = catalog
        .get(&UpdateId::new("56309036-4c77-4dd9-951a-99ee9c246a94"))
        .unwrap();
    assert_eq!(
        (&*company.title, company.classification),
        ("Microsoft", Classification::Detectoid)
    );
    let family = catalog
        .get(&UpdateId::new("6964aab4-c5b5-43bd-a17d-ffb4346a8e1d"))
        .unwrap();
    assert_eq!(family.prerequisites[0].any_of, vec![company.id.clone()]);
    assert!(family.prerequisites[0].category);
    let os = |version: &str, installation: &str| {
        windows(serde_json::json!({"os": {"family": "windows", "version": version, "installation": installation}}))
    };
    let zdp = "dd78b8a1-0b20-45c1-add6-4da72e9364cf";
    assert_eq!(installed(&catalog, zdp, &os("10.0.19045", "client")), Truth::True);
    assert_eq!(installed(&catalog, zdp, &os("10.0.20348", "server")), Truth::False);
    assert_eq!(installed(&catalog, zdp, &os("6.1.7601", "client")), Truth::False);
}

fn defender(version: &str, delta_failure: Option<&str>) -> cascade_core::Inventory {
    let sig = "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates";
    let misc = "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Miscellaneous Configuration";
    let dir = "C:\\ProgramData\\Microsoft\\Windows Defender\\Definition Updates\\{X}";
    let mut registry = BTreeMap::from([
        (format!("{sig}\\SignatureLocation"), dir.to_owned()),
        (format!("{misc}\\BddUpdateFailure"), "0".to_owned()),
        (
            "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\InstallLocation".to_owned(),
            "C:\\Program Files\\Windows Defender".to_owned(),
        ),
        (
            "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Diagnostics\\BlockedVersions\\Signatures\\".to_owned(),
            String::new(),
        ),
    ]);
    if let Some(v) = delta_failure {
        registry.insert(format!("{misc}\\DeltaUpdateFailure"), v.to_owned());
    }
    windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19045", "installation": "client", "arch": "x64"},
        "registry": registry,
        "files": {
            format!("{dir}\\mpasdlta.vdm"): version,
            format!("{dir}\\mpavdlta.vdm"): version,
            "C:\\Program Files\\Windows Defender\\mpclient.dll": "4.18.1.0",
        },
        "facts": {"license:CE163B38-1AEC-47AF-854D-FC90ABD6951C": "0"}
    }))
}

#[test]
fn wsus_defender_delta_rules() {
    let catalog = wsus_catalog();
    let delta = "266f6222-c89d-43f2-9f8a-69340271e677";
    let current = defender("1.459.547.0", None);
    assert_eq!(installed(&catalog, delta, &current), Truth::True);
    let in_range = defender("1.459.543.0", None);
    assert_eq!(installed(&catalog, delta, &in_range), Truth::False);
    assert_eq!(
        installable(&catalog, delta, &in_range),
        Truth::False,
        "a smaller delta applies instead"
    );
    let old = defender("1.459.500.0", None);
    assert_eq!(installed(&catalog, delta, &old), Truth::False);
    assert_eq!(installable(&catalog, delta, &old), Truth::True);
    let failed = defender("1.459.547.0", Some("1"));
    assert_eq!(installed(&catalog, delta, &failed), Truth::False);
    assert_eq!(installable(&catalog, delta, &failed), Truth::True);
    // Nothing collected about Defender: undecided, never a guess.
    let bare =
        windows(serde_json::json!({"os": {"family": "windows", "version": "10.0.19045", "installation": "client"}}));
    assert!(matches!(installed(&catalog, delta, &bare), Truth::Unknown(_)));
    let u = catalog.get(&UpdateId::new(delta)).unwrap();
    assert_eq!(u.restart, RestartBehavior::Never);
    assert_eq!(
        u.content[0].sha256,
        "026b74ab29b2e4ab113a2c085e6e1020857be49bb8afe0a5dbc3e0f2068b5d40"
    );
    assert_eq!(u.content[0].size, 11606440);
}

#[test]
fn wsus_bundles_and_cbs_reoffer() {
    let catalog = wsus_catalog();
    let bundle = catalog
        .get(&UpdateId::new("ccb78947-6453-4ecc-9de8-bc0305c98f2d"))
        .unwrap();
    assert_eq!(bundle.bundled.len(), 4);
    // Definition Updates (a classification) is not a prerequisite but what the update is.
    assert_eq!(bundle.classification, Classification::DefinitionUpdate);
    let lcu = "267dd2b4-f9fa-4bcd-bba7-1cb00e0e59d9";
    let cbs = |reoffer: Option<&str>| {
        let key = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Component Based Servicing";
        let mut registry = BTreeMap::from([(format!("{key}\\"), String::new())]);
        if let Some(v) = reoffer {
            registry.insert(format!("{key}\\LCUReoffer"), v.to_owned());
        }
        windows(serde_json::json!({
            "os": {"family": "windows", "version": "10.0.22000.1936", "installation": "client", "arch": "arm64"},
            "registry": registry,
            "facts": {"cbs:Package_for_RollupFix~31bf3856ad364e35~arm64~~22000.1936.1.9": "installed"}
        }))
    };
    assert_eq!(installed(&catalog, lcu, &cbs(None)), Truth::True);
    assert_eq!(installed(&catalog, lcu, &cbs(Some("1"))), Truth::False, "re-offered");
    let u = catalog.get(&UpdateId::new(lcu)).unwrap();
    assert_eq!(u.restart, RestartBehavior::May);
    assert_eq!(u.aliases, Vec::<UpdateId>::new());
}

#[test]
fn wsusscn2_package_with_fragments() {
    struct Dir;
    impl import::Fragments for Dir {
        fn fragment(&self, kind: &str, revision: u64) -> Option<Vec<u8>> {
            ["x_package2.cab", "x_package3.cab"].iter().find_map(|cab| {
                std::fs::read(common::fixture_path(&format!(
                    "wsusscn2/extracted/{cab}/{kind}/{revision}"
                )))
                .ok()
            })
        }
    }
    let rel = "wsusscn2/extracted/x_package.cab/package.xml";
    let imported = import::import_catalog(rel, &fixture(rel), &Dir).unwrap();
    assert_eq!(imported.format, CatalogFormat::WsusScn2Package);
    let catalog = Catalog::new(imported.updates);
    assert_eq!(catalog.len(), 4);
    let not_superseded: Vec<&str> = catalog
        .updates()
        .iter()
        .filter(|u| !catalog.is_superseded(&u.id))
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(
        not_superseded,
        [
            "1c560bb8-276c-41ca-b597-35ae23bf424c",
            "913aa7a4-75d8-4abc-9d66-8ddc163be471"
        ]
    );
    let rollup = catalog
        .get(&UpdateId::new("05a7711a-079e-4fbb-8d1a-9015c92a2ae0"))
        .unwrap();
    assert!(rollup.title.contains("KB4577066"), "{}", rollup.title);
    assert!(
        rollup.aliases.contains(&UpdateId::new("KB765432")),
        "{:?}",
        rollup.aliases
    );
    assert_eq!(rollup.severity, Severity::Important);
    assert!(rollup.supersedes.len() > 40);
    // Without fragments the package alone still gives ids and supersedence.
    let bare = Catalog::new(
        import::import_catalog(rel, &fixture(rel), &NoFragments)
            .unwrap()
            .updates,
    );
    assert!(bare.is_superseded(&UpdateId::new("0a51549b-4e86-4a26-97d4-9e3567f24ea1")));
    let last = bare
        .get(&UpdateId::new("913aa7a4-75d8-4abc-9d66-8ddc163be471"))
        .unwrap();
    assert_eq!(last.classification, Classification::SecurityUpdate);
}

#[test]
fn malformed_catalogs_name_file_line_and_element() {
    let text = String::from_utf8(fixture(DEC_2022)).unwrap();
    let cut = &text[..text.len() / 2];
    match import::import_catalog("dec.xml", cut.as_bytes(), &NoFragments).unwrap_err() {
        ImportError::Xml {
            source_name,
            line,
            message,
            ..
        } => {
            assert_eq!(source_name, "dec.xml");
            assert_eq!(line as usize, cut.lines().count());
            assert!(message.contains("the text ends inside <vuln:"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bad_guid = r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update">
  <upd:UpdateIdentity UpdateID="not-a-guid" RevisionNumber="1" />
</upd:Update>"#;
    let err = import::import_catalog("u.xml", bad_guid.as_bytes(), &NoFragments).unwrap_err();
    assert_eq!(
        err.to_string(),
        "u.xml: line 2: <UpdateIdentity>: UpdateID=\"not-a-guid\" is not a GUID"
    );
    let bad_rule = r#"<Update><UpdateIdentity UpdateID="267dd2b4-f9fa-4bcd-bba7-1cb00e0e59d9" RevisionNumber="1" /><ApplicabilityRules><IsInstalled>
<b.RegDword Key="HKEY_LOCAL_MACHINE" Subkey="X" Value="Y" Comparison="Sideways" Data="1" /></IsInstalled></ApplicabilityRules></Update>"#;
    let err = import::import_catalog("r.xml", bad_rule.as_bytes(), &NoFragments).unwrap_err();
    assert_eq!(
        err.to_string(),
        "r.xml: line 2: <b.RegDword>: unknown Comparison \"Sideways\""
    );
    let err = import::import_catalog(
        "c.json",
        br#"{"format": "cascade-catalog", "version": 9, "updates": []}"#,
        &NoFragments,
    )
    .unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
    let err = import::import_catalog(
        "c.json",
        b"{\"format\": \"cascade-catalog\",\n\"version\": 1, \"updates\": [{\"id\": \"KB1\"}]}",
        &NoFragments,
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Json { line: 2, .. }), "{err}");
    let err = import::import_catalog("x.bin", b"\x00\x01garbage", &NoFragments).unwrap_err();
    assert!(err.to_string().starts_with("x.bin: not a catalog"), "{err}");
}

#[test]
fn native_catalog_round_trip_and_schema() {
    let updates = common::december_2022().updates().to_vec();
    let json = serde_json::to_string_pretty(&import::native::NativeCatalog::new(updates.clone())).unwrap();
    let again = import::import_catalog("native.json", json.as_bytes(), &NoFragments).unwrap();
    assert_eq!(again.format, CatalogFormat::Native);
    assert_eq!(again.updates, updates);

    // docs/*.schema.json are generated from the types; regenerate with
    // CASCADE_WRITE_SCHEMAS=1 when a type changes.
    for (file, schema) in [
        ("catalog.schema.json", import::native::catalog_schema()),
        ("inventory.schema.json", import::native::inventory_schema()),
    ] {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(file);
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if std::env::var_os("CASCADE_WRITE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            on_disk,
            generated,
            "{} is out of date: run with CASCADE_WRITE_SCHEMAS=1",
            path.display()
        );
    }
}
