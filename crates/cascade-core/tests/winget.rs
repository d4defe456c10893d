//! The winget importer on the real manifests in ../shared/data/winget
//! (MIT, read in place), and detection against real software inventories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use cascade_core::import::{self, CatalogFormat};
use cascade_core::software::{Software, SoftwareList, SoftwareSource};
use cascade_core::update::{ExitMeaning, Package};
use cascade_core::{Catalog, Inventory, UpdateId, planner};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel)
}

fn yaml_files(dir: &PathBuf, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml") {
            let name = p.strip_prefix(shared("winget")).unwrap_or(&p).display().to_string();
            out.push((name, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// Every manifest of the shared data, or `None` (after a note) without it.
fn manifests() -> Option<Vec<(String, String)>> {
    let root = shared("winget/manifests");
    if !root.is_dir() {
        eprintln!("skipped: {} is not here", root.display());
        return None;
    }
    let mut out = Vec::new();
    yaml_files(&root, &mut out);
    Some(out)
}

fn catalog() -> Option<Catalog> {
    Some(Catalog::new(import::import_winget(&manifests()?, &[]).unwrap().updates))
}

#[test]
fn every_real_manifest_imports() {
    let Some(files) = manifests() else { return };
    assert_eq!(files.len(), 81);
    let imported = import::import_winget(&files, &[]).unwrap();
    assert_eq!(imported.format, CatalogFormat::Winget);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    // One update per package version and installer.
    assert_eq!(imported.updates.len(), 134);
    let get = |id: &str| {
        imported
            .updates
            .iter()
            .find(|u| u.id.as_str() == id)
            .unwrap_or_else(|| panic!("{id}"))
    };

    // 7-Zip 23.01, the x64 executable: publisher from the locale, the
    // manifest's silent switch, content with its address and SHA-256.
    let u = get("winget:7zip.7zip@23.01/x64/machine/exe");
    assert_eq!(&*u.title, "7-Zip 23.01 (x64, machine, exe)");
    assert_eq!((u.vendor.as_str(), u.product.as_str()), ("Igor Pavlov", "7zip.7zip"));
    let install = u.install.as_ref().unwrap();
    assert_eq!(
        (install.program.as_str(), install.arguments.clone()),
        ("{content}", vec!["/S".to_owned()])
    );
    assert_eq!(u.content[0].file_name, "7z2301-x64.exe");
    assert_eq!(
        u.content[0].url.as_deref(),
        Some("https://www.7-zip.org/a/7z2301-x64.exe")
    );
    assert_eq!(
        u.content[0].sha256,
        "26cb6e9f56333682122fafe79dbcdfd51e9f47cc7217dccd29ac6fc33b5598cd"
    );
    assert_eq!(
        u.package,
        Some(Package {
            id: "7zip.7zip".into(),
            version: "23.01".into(),
            arch: "x64".into(),
            scope: Some("machine".into()),
            installer_type: "exe".into(),
            locale: None,
        })
    );
    // Its MSI: msiexec with Windows Installer's own codes.
    let msi = get("winget:7zip.7zip@23.01/x64/machine/wix/en-US")
        .install
        .as_ref()
        .unwrap();
    assert_eq!(msi.program, "msiexec.exe");
    assert_eq!(msi.arguments, ["/i", "{content}", "/qn", "/norestart"]);
    assert_eq!(msi.meaning(1618), ExitMeaning::InUse);
    assert_eq!(msi.meaning(3010), ExitMeaning::SuccessRestartRequired);

    // Firefox 156.0.1: nullsoft with the manifest's switches; release notes.
    let u = get("winget:Mozilla.Firefox@156.0.1/x64/machine/nullsoft");
    assert_eq!(
        u.install.as_ref().unwrap().arguments,
        ["/S", "/PreventRebootRequired=true"]
    );
    assert_eq!(
        u.release_notes_url.as_deref(),
        Some("https://www.firefox.com/en-US/firefox/156.0.1/releasenotes/")
    );
    assert_eq!(u.content[0].file_name, "Firefox Setup 156.0.1.exe");
    // Firefox 100.0.1: one update per locale of each installer.
    let locales = imported
        .updates
        .iter()
        .filter(|u| {
            u.id.as_str()
                .starts_with("winget:Mozilla.Firefox@100.0.1/x64/machine/exe/")
        })
        .count();
    assert_eq!(locales, 10);

    // Notepad++ 8.9.8.1: ExpectedReturnCodes mapped (5: packageInUse).
    let u = get("winget:Notepad++.Notepad++@8.9.8.1/x64/machine/nullsoft");
    assert_eq!(u.install.as_ref().unwrap().meaning(5), ExitMeaning::InUse);
    // Its zip with a portable program inside: extracted, then put in place.
    let zip = get("winget:Notepad++.Notepad++@8.9.8.1/x64/zip")
        .install
        .as_ref()
        .unwrap();
    assert_eq!(zip.program, "powershell.exe");
    assert!(
        zip.arguments[3].starts_with("Expand-Archive -LiteralPath '{content}'"),
        "{:?}",
        zip.arguments
    );

    // PowerShell's MSIX: Add-AppxPackage.
    let msix = get("winget:Microsoft.PowerShell@7.6.6.0/x64/msix")
        .install
        .as_ref()
        .unwrap();
    assert_eq!(msix.arguments[3..], ["Add-AppxPackage", "-Path", "{content}"]);
    // The Visual C++ runtime's burn bundle: its manifest's switches and
    // success codes.
    let burn = get("winget:Microsoft.VCRedist.2015+.x64@14.51.36247.0/x64/machine/burn")
        .install
        .as_ref()
        .unwrap();
    assert_eq!(burn.arguments, ["/quiet", "/norestart"]);
    assert_eq!(burn.meaning(3010), ExitMeaning::Success);

    // Java 8 Update 401 needs Windows 10 (MinimumOSVersion).
    let jre = get("winget:Oracle.JavaRuntimeEnvironment@8.0.4010.10/x64/machine/exe");
    let rule = jre.applicable_when.as_ref().unwrap().to_string();
    assert!(rule.contains("os.version >= \"10.0.0.0\""), "{rule}");

    // Third-party updates carry no vendor severity.
    assert!(
        imported
            .updates
            .iter()
            .all(|u| u.severity == cascade_core::Severity::Unspecified)
    );
}

#[test]
fn newer_versions_replace_older_ones() {
    let Some(catalog) = catalog() else { return };
    let said: Vec<String> = catalog.diagnostics().iter().map(ToString::to_string).collect();
    assert!(
        said.iter().any(|d| d
            == "winget:7zip.7zip@26.03/x64/machine/exe contains winget:7zip.7zip@23.01/x64/machine/wix/en-US: 7zip.7zip 26.03 replaces 23.01 of the same package, architecture and scope"),
        "{said:#?}"
    );
    let superseders: Vec<&str> = catalog
        .superseders_of(&UpdateId::new("winget:Google.Chrome@100.0.4896.127/x64/machine/wix"))
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    assert!(
        superseders.contains(&"winget:Google.Chrome@153.0.8010.53/x64/machine/wix"),
        "{superseders:?}"
    );
}

fn windows(version: &str, arch: &str, entries: Vec<Software>) -> Inventory {
    let mut inv = Inventory::windows(version.parse().unwrap(), false, Some(arch));
    inv.software = Some(SoftwareList {
        complete: true,
        entries,
    });
    inv.normalize();
    inv
}

fn entry(name: &str, version: &str, publisher: &str, key: &str, arch: Option<&str>) -> Software {
    Software {
        name: name.into(),
        version: Some(version.into()),
        publisher: Some(publisher.into()),
        key: Some(key.into()),
        arch: arch.map(str::to_owned),
        source: SoftwareSource::Uninstall,
        ..Software::default()
    }
}

fn required(catalog: &Catalog, inv: &Inventory) -> Vec<String> {
    planner::plan(catalog, inv)
        .required
        .iter()
        .map(|e| e.id.to_string())
        .collect()
}

#[test]
fn the_real_windows_xp_export_gets_its_firefox_and_java_patched() {
    let Some(catalog) = catalog() else { return };
    let export = shared("windows-software-inventory/glpi-agent_xp-Uninstall.reg");
    let (_, software) = import::import_inventory("xp-Uninstall.reg", &std::fs::read(export).unwrap()).unwrap();
    let systeminfo = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/windows-inventory/xp_sp3_x86_professional_en-us_systeminfo.txt"),
    )
    .unwrap();
    let (_, mut inv) = import::import_inventory("systeminfo", &systeminfo).unwrap();
    let _ = inv.merge(software);
    // The export holds the Uninstall key only: not every source was read.
    let plan = planner::plan(&catalog, &inv);
    assert!(
        plan.unknown
            .iter()
            .all(|u| u.reason.to_string().contains("software list is not complete")),
        "{:?}",
        plan.unknown
    );
    // Taken as complete: Firefox 10.0.2 (x86 en-US, an executable install)
    // gets the newest x86 Firefox, Java 6 Update 31 the newest Java 8 that
    // still runs on XP; Reader X has no 32-bit package here.
    if let Some(list) = &mut inv.software {
        list.complete = true;
    }
    inv.normalize();
    assert_eq!(
        required(&catalog, &inv),
        // In install order: oldest release first.
        [
            "winget:Oracle.JavaRuntimeEnvironment@8.0.5030.1/x86/machine/exe",
            "winget:Mozilla.Firefox@156.0.1/x86/machine/nullsoft",
        ]
    );
}

#[test]
fn detection_by_name_code_platform_and_version() {
    let Some(catalog) = catalog() else { return };
    // Add/Remove Programs entries as winget-cli recorded them (InputARPData).
    let firefox_x64 = entry(
        "Mozilla Firefox (x64 en-US)",
        "139.0",
        "Mozilla",
        "Mozilla Firefox 139.0 (x64 en-US)",
        Some("x64"),
    );
    let seven_zip_msi = Software {
        product_code: Some("{23170F69-40C1-2702-1900-000001000000}".into()),
        ..entry(
            "7-Zip 19.00 (x64 edition)",
            "19.00.00.0",
            "Igor Pavlov",
            "{23170F69-40C1-2702-1900-000001000000}",
            Some("x64"),
        )
    };
    let inv = windows("10.0.19045", "x64", vec![firefox_x64.clone(), seven_zip_msi]);
    // The newest Firefox of its platform; 7-Zip installed from its MSI gets
    // the newest MSI of its platform, not the executable.
    assert_eq!(
        required(&catalog, &inv),
        [
            "winget:7zip.7zip@26.03/x64/machine/wix",
            "winget:Mozilla.Firefox@156.0.1/x64/machine/nullsoft",
        ]
    );
    // Up to date: installed, nothing offered.
    let current = Software {
        version: Some("156.0.1".into()),
        ..firefox_x64.clone()
    };
    let inv = windows("10.0.19045", "x64", vec![current]);
    let plan = planner::plan(&catalog, &inv);
    assert!(plan.required.is_empty(), "{:?}", plan.required);
    assert!(
        plan.installed
            .iter()
            .any(|i| i.id.as_str() == "winget:Mozilla.Firefox@156.0.1/x64/machine/nullsoft")
    );
    // Absent from a complete list: not applicable; Cascade does not install
    // new software.
    let inv = windows("10.0.19045", "x64", vec![]);
    assert!(required(&catalog, &inv).is_empty());
    // The x86 Firefox on an x64 computer gets the x86 update.
    let x86 = Software {
        arch: Some("x86".into()),
        name: "Mozilla Firefox (x86 en-US)".into(),
        ..firefox_x64
    };
    let inv = windows("10.0.19045", "x64", vec![x86]);
    assert_eq!(
        required(&catalog, &inv),
        ["winget:Mozilla.Firefox@156.0.1/x86/machine/nullsoft"]
    );
}

#[test]
fn a_singleton_manifest_and_a_choice_of_packages() {
    // Notepad++ 8.5.8's values in the singleton form.
    let singleton = "\
PackageIdentifier: Notepad++.Notepad++
PackageVersion: 8.5.8
PackageLocale: en-US
Publisher: Notepad++ Team
PackageName: Notepad++
License: GPL-3.0-only
ShortDescription: Notepad++ is a free source code editor.
Installers:
- Architecture: x64
  InstallerType: nullsoft
  Scope: machine
  InstallerUrl: https://github.com/notepad-plus-plus/notepad-plus-plus/releases/download/v8.5.8/npp.8.5.8.Installer.x64.exe
  InstallerSha256: 7E8A6DE4F5A1A93D52A8D2B4B4DDEA5A5F4F96E6F0B1F5C7F1F0C1D5F6A8B9C0
ManifestType: singleton
ManifestVersion: 1.5.0
";
    let (format, _) = (import::detect_catalog(singleton.as_bytes()), ());
    assert_eq!(format, Some(CatalogFormat::Winget));
    let imported = import::import_catalog("npp.yaml", singleton.as_bytes(), &import::NoFragments).unwrap();
    let ids: Vec<&str> = imported.updates.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["winget:Notepad++.Notepad++@8.5.8/x64/machine/nullsoft"]);
    assert_eq!(imported.updates[0].vendor, "Notepad++ Team");

    // --include: only the packages named.
    let Some(files) = manifests() else { return };
    let chosen = import::import_winget(&files, &["mozilla.firefox".to_owned(), "7zip.7zip".to_owned()]).unwrap();
    assert!(
        chosen
            .updates
            .iter()
            .all(|u| u.product == "Mozilla.Firefox" || u.product == "7zip.7zip")
    );
    assert_eq!(chosen.updates.len(), 15 + 58);
}

#[test]
fn bad_manifests_name_the_file_the_line_and_the_field() {
    let bad = |text: &str| {
        import::import_winget(&[("m/x.yaml".to_owned(), text.to_owned())], &[])
            .unwrap_err()
            .to_string()
    };
    let e = bad("PackageIdentifier: A.B\nPackageVersion: 1.0\nManifestType: installer\nInstallers: [oops\n");
    assert!(e.starts_with("m/x.yaml: line "), "{e}");
    let e = bad("PackageVersion: 1.0\nManifestType: installer\n");
    assert_eq!(e, "m/x.yaml: the manifest has no PackageIdentifier");
    let e = bad("PackageIdentifier: A.B\nPackageVersion: 1.0\nManifestType: merged\n");
    assert!(e.contains("line 3: ManifestType \"merged\""), "{e}");
    let e = bad(
        "PackageIdentifier: A.B\nPackageVersion: 1.0\nInstallers:\n- Architecture: x64\n  InstallerType: exe\n  InstallerUrl: https://a/b.exe\n  InstallerSha256: 1234\nManifestType: installer\n",
    );
    assert!(
        e.contains("A.B 1.0: installer 1: InstallerSha256 \"1234\" is not a SHA-256"),
        "{e}"
    );
    let e = bad(
        "PackageIdentifier: A.B\nPackageVersion: 1.0\nInstallers:\n- Architecture: x64\n  InstallerType: exe\n  InstallerUrl: file:///c/b.exe\n  InstallerSha256: 26CB6E9F56333682122FAFE79DBCDFD51E9F47CC7217DCCD29AC6FC33B5598CD\nManifestType: installer\n",
    );
    assert!(
        e.contains("InstallerUrl \"file:///c/b.exe\" is not an http(s) address"),
        "{e}"
    );
}

/// The 112 Add/Remove Programs entries winget-cli recorded (MIT): none of
/// them is one of the packages here, and none is taken for one.
#[test]
fn real_add_remove_programs_entries_are_not_mistaken_for_these_packages() {
    let Some(catalog) = catalog() else { return };
    let text = std::fs::read_to_string(shared("windows-software-inventory/winget-cli_InputARPData.txt")).unwrap();
    let entries: Vec<Software> = text
        .trim_start_matches('\u{feff}')
        .lines()
        .filter_map(|line| {
            // store id | package name | package publisher | DisplayName | DisplayVersion | Publisher | key or ProductCode
            let f: Vec<&str> = line.split('|').collect();
            (f.len() >= 7).then(|| Software {
                name: f[3].to_owned(),
                version: (!f[4].is_empty()).then(|| f[4].to_owned()),
                publisher: (!f[5].is_empty()).then(|| f[5].to_owned()),
                key: Some(f[6].to_owned()),
                product_code: f[6]
                    .starts_with('{')
                    .then(|| f[6].to_owned())
                    .filter(|c| c.ends_with('}')),
                source: SoftwareSource::Uninstall,
                ..Software::default()
            })
        })
        .collect();
    assert_eq!(entries.len(), 112);
    let inv = windows("10.0.19045", "x64", entries);
    let plan = planner::plan(&catalog, &inv);
    assert!(plan.required.is_empty(), "{:?}", plan.required);
    assert!(plan.installed.is_empty(), "{:?}", plan.installed);
    assert!(plan.unknown.is_empty(), "{:?}", plan.unknown);
}
