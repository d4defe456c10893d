//! The regedit importer against real exports: glpi-agent's test data
//! (GPL-2.0-or-later), read in place from the shared data set next to the
//! repository and never copied into it. Without that directory the tests
//! say so and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use cascade_core::UpdateId;
use cascade_core::import::regedit::{self, RegValue, RegistryExport};
use cascade_core::import::text;
use cascade_core::software::{Software, SoftwareSource};

const UNINSTALL: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall";

/// The export `file` of the shared data set, or `None` (after a note) when
/// the data set is not on this machine.
fn export(file: &str) -> Option<RegistryExport> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/windows-software-inventory");
    if !directory.is_dir() {
        eprintln!(
            "skipped: {} is not here; these tests read its real exports",
            directory.display()
        );
        return None;
    }
    let path = directory.join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // regedit writes UTF-16LE with a byte order mark.
    Some(regedit::parse(file, &text::decode(&bytes)).unwrap_or_else(|e| panic!("{e}")))
}

fn uninstall_entry(name: &str, key: &str, version: &str, publisher: &str, product_code: Option<&str>) -> Software {
    Software {
        name: name.into(),
        version: Some(version.into()),
        publisher: Some(publisher.into()),
        product_code: product_code.map(Into::into),
        source: SoftwareSource::Uninstall,
        key: Some(key.into()),
        ..Software::default()
    }
}

#[test]
fn windows_xp_uninstall_export() {
    let Some(export) = export("glpi-agent_xp-Uninstall.reg") else {
        return;
    };
    // 534 entries, the Uninstall key itself, and PDFCreator's
    // CustomMessages subkey.
    assert_eq!(export.len(), 536);
    let found = regedit::software(&export);

    for expected in [
        uninstall_entry(
            "Mozilla Firefox 10.0.2 (x86 en-US)",
            "Mozilla Firefox 10.0.2 (x86 en-US)",
            "10.0.2",
            "Mozilla",
            None,
        ),
        uninstall_entry(
            "Java(TM) 6 Update 31",
            "{26A24AE4-039D-4CA4-87B4-2F83216031FF}",
            "6.0.310",
            "Oracle",
            Some("{26A24AE4-039D-4CA4-87B4-2F83216031FF}"),
        ),
        uninstall_entry(
            "Adobe Reader X (10.1.2)",
            "{AC76BA86-7AD7-1033-7B44-AA1000000001}",
            "10.1.2",
            "Adobe Systems Incorporated",
            Some("{AC76BA86-7AD7-1033-7B44-AA1000000001}"),
        ),
        // Office 2010 registers itself twice: the entry Add/Remove Programs
        // shows (Office14.PROPLUS), and its Windows Installer product,
        // hidden as a system component.
        uninstall_entry(
            "Microsoft Office Professional Plus 2010",
            "Office14.PROPLUS",
            "14.0.6029.1000",
            "Microsoft Corporation",
            None,
        ),
        uninstall_entry(
            "Microsoft Office Professional Plus 2010",
            "{90140000-0011-0000-0000-0000000FF1CE}",
            "14.0.6029.1000",
            "Microsoft Corporation",
            Some("{90140000-0011-0000-0000-0000000FF1CE}"),
        ),
        // Written in lower case in the key name.
        uninstall_entry(
            "Microsoft Visual C++ 2005 Redistributable",
            "{710f4c1c-cc18-4c49-8cbf-51240c89a1a2}",
            "8.0.61001",
            "Microsoft Corporation",
            Some("{710F4C1C-CC18-4C49-8CBF-51240C89A1A2}"),
        ),
    ] {
        assert!(found.software.contains(&expected), "{expected:?}");
    }

    // The .NET Framework as Add/Remove Programs lists it: its own entries
    // and, for most versions, the Windows Installer product's as well.
    let frameworks: Vec<(&str, Option<&str>, Option<&str>)> = found
        .software
        .iter()
        .filter(|s| s.name.starts_with("Microsoft .NET Framework"))
        .map(|s| (s.name.as_str(), s.version.as_deref(), s.key.as_deref()))
        .collect();
    assert_eq!(
        frameworks,
        [
            (
                "Microsoft .NET Framework 1.1",
                None,
                Some("Microsoft .NET Framework 1.1  (1033)")
            ),
            (
                "Microsoft .NET Framework 1.1",
                Some("1.1.4322"),
                Some("{CB2F7EDD-9D1F-43C1-90FC-4F52EAE172A1}")
            ),
            (
                "Microsoft .NET Framework 2.0 Service Pack 2",
                Some("2.2.30729"),
                Some("{C09FB3CD-3D0C-3F2D-899A-6A1D67F2073F}")
            ),
            (
                "Microsoft .NET Framework 3.0 Service Pack 2",
                Some("3.2.30729"),
                Some("{A3051CD0-2F64-3813-A88D-B8DCCDE8F8C7}")
            ),
            // No DisplayVersion; VersionMajor "3" and VersionMinor "5" as strings.
            (
                "Microsoft .NET Framework 3.5 SP1",
                Some("3.5"),
                Some("Microsoft .NET Framework 3.5 SP1")
            ),
            (
                "Microsoft .NET Framework 3.5 SP1",
                Some("3.5.30729"),
                Some("{CE2CDD62-0124-36CA-84D3-9F4DCF5C5BD9}")
            ),
            (
                "Microsoft .NET Framework 4 Client Profile",
                Some("4.0.30319"),
                Some("Microsoft .NET Framework 4 Client Profile")
            ),
            (
                "Microsoft .NET Framework 4 Client Profile",
                Some("4.0.30319"),
                Some("{3C3901C5-3455-3E0A-A214-0B093A5070A6}")
            ),
            (
                "Microsoft .NET Framework 4 Extended",
                Some("4.0.30319"),
                Some("Microsoft .NET Framework 4 Extended")
            ),
            (
                "Microsoft .NET Framework 4 Extended",
                Some("4.0.30319"),
                Some("{0A0CADCF-78DA-33C4-A350-CD51849B9702}")
            ),
        ]
    );

    // The README counts 419 DisplayName values; one is empty (an Office
    // patch entry), which leaves 418 entries. 94 are programs and 324 are
    // updates: the 310 entries whose DisplayName names a KB, less four
    // Windows Installer products that only carry one in their name (kept
    // as programs, below), plus the 17 "Microsoft Office 2010 Service
    // Pack 1 (SP1)" entries, one for each Office part, whose KB (2460049)
    // is only in their HelpLink, and KB968930 ("Windows Management Framework Core",
    // ReleaseType "Software Update"). Those 324 name 295 KBs: several are
    // installed once per product they patch (KB2460049 17 times, KB2553270
    // three times, eleven others twice).
    let named = export
        .subkeys(UNINSTALL)
        .filter(|key| key.text("DisplayName").is_some())
        .count();
    assert_eq!(named, 418);
    assert_eq!(found.software.len(), 94);
    assert_eq!(named - found.software.len(), 324);
    assert_eq!(found.installed_updates.len(), 295);
    let with_kb: Vec<&str> = found
        .software
        .iter()
        .filter(|s| s.name.contains("(KB"))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        with_kb,
        [
            "MSXML 4.0 SP2 (KB954430)",
            "MSXML 4.0 SP2 (KB973688)",
            "MSXML 6.0 Parser (KB933579)",
            "Security Update for CAPICOM (KB931906)",
        ]
    );
    for kb in [
        2_079_403, // KB2079403, ParentKeyName "OperatingSystem"
        2_536_276, // key KB2536276-v2
        2_183_461, // key KB2183461-IE8, ParentKeyName "ie8Hotfix"
        917_734,   // key KB917734_WMP10, no ReleaseType
        2_416_472, // key {0A0CADCF-...}.KB2416472, .NET Framework 4 Extended
        2_656_353, // key M2656353, .NET Framework 1.1
        2_553_091, // Office 2010, key {90140000-...}_Office14.PROPLUS_{...}
        2_460_049, // Office 2010 SP1, in the HelpLink only
        968_930,   // Windows Management Framework Core
        943_729,   // "Update for Windows XP (KB943729)", no ReleaseType or parent
        892_130,   // Windows Genuine Advantage Validation Tool, two entries
    ] {
        assert!(found.installed_updates.contains(&UpdateId::kb(kb)), "KB{kb}");
    }
    assert!(!found.installed_updates.contains(&UpdateId::kb(933_579)));
    assert!(
        !found
            .software
            .iter()
            .any(|s| s.name.starts_with("Security Update for Windows XP"))
    );
    // Updates without a KB number stay programs.
    assert!(found.software.iter().any(|s| s.name == "Windows Media Player 10"));

    // A 32-bit machine's one Uninstall view, but no Windows Installer
    // registrations: not a complete list.
    assert_eq!(found.sources, [SoftwareSource::Uninstall]);
    assert!(!regedit::software_list(&found).complete);
}

#[test]
fn russian_windows_10_uninstall_export() {
    let Some(export) = export("glpi-agent_10_russian-Uninstall.reg") else {
        return;
    };
    assert_eq!(export.len(), 3);
    let csp = export
        .key(&format!("{UNINSTALL}\\{{50F91F80-D397-437C-B0C8-62128DE3B55E}}"))
        .expect("CryptoPro CSP");
    assert_eq!(csp.text("Comments").as_deref(), Some("КриптоПро CSP"));
    assert_eq!(csp.text("Contact").as_deref(), Some("Отдел поддержки клиентов"));
    // REG_EXPAND_SZ written as hex(2) over several lines.
    assert_eq!(
        csp.value("HelpLink"),
        Some(&RegValue::ExpandString("https://support.cryptopro.ru/".into()))
    );
    assert_eq!(
        csp.value("ModifyPath"),
        Some(&RegValue::ExpandString(
            "MsiExec.exe /I{50F91F80-D397-437C-B0C8-62128DE3B55E}".into()
        ))
    );
    assert_eq!(
        csp.value("Readme"),
        Some(&RegValue::ExpandString(
            "http://www.cryptopro.ru/cryptopro/products/csp/default.htm".into()
        ))
    );
    assert_eq!(csp.value("Version"), Some(&RegValue::Dword(0x0500_2ee0)));
    // The key with a Cyrillic name, found in another case.
    let one_c = export.key(&format!("{UNINSTALL}\\1c ПРЕДПРИЯТИЕ 7.7.27")).expect("1C");
    assert_eq!(one_c.name(), "1C Предприятие 7.7.27");

    let found = regedit::software(&export);
    assert_eq!(
        found.software,
        [
            Software {
                name: "1C Предприятие 7.7".into(),
                version: Some("77.27".into()),
                source: SoftwareSource::Uninstall,
                key: Some("1C Предприятие 7.7.27".into()),
                ..Software::default()
            },
            uninstall_entry(
                "КриптоПро CSP",
                "{50F91F80-D397-437C-B0C8-62128DE3B55E}",
                "5.0.12000",
                "Компания КриптоПро",
                Some("{50F91F80-D397-437C-B0C8-62128DE3B55E}"),
            ),
        ]
    );
    assert!(found.installed_updates.is_empty());
    // Paths in "Program Files (x86)" show a 64-bit machine, and the export
    // has only its native Uninstall view: the Uninstall source is not whole.
    assert_eq!(found.sources, []);
    assert!(!regedit::software_list(&found).complete);
}

/// A regedit export is an inventory of its own: merged with the same
/// computer's systeminfo, its software decides Office updates.
#[test]
fn an_export_is_an_inventory_that_merges_with_systeminfo() {
    let Some(bytes) = shared("glpi-agent_xp-Uninstall.reg") else {
        return;
    };
    let (format, software) = cascade_core::import::import_inventory("xp-Uninstall.reg", &bytes).unwrap();
    assert_eq!(format, cascade_core::import::InventoryFormat::RegistryExport);
    let list = software.software.as_ref().expect("a software list");
    assert!(
        list.entries
            .iter()
            .any(|s| s.name == "Mozilla Firefox 10.0.2 (x86 en-US)")
    );
    // Without the OS, the edition's bitness is not known yet.
    assert!(
        software
            .installed_products()
            .iter()
            .all(|p| !p.name.contains("bit edition"))
    );
    let systeminfo = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/windows-inventory/xp_sp3_x86_professional_en-us_systeminfo.txt"),
    )
    .unwrap();
    let (_, mut inv) = cascade_core::import::import_inventory("systeminfo", &systeminfo).unwrap();
    let hotfixes = inv.installed_updates.len();
    let conflicts = inv.merge(software);
    assert!(conflicts.is_empty(), "{conflicts:?}");
    assert_eq!(inv.os.product.as_deref(), Some("Windows XP"));
    assert!(inv.installed_updates.len() > hotfixes);
    // Office Professional Plus 2010 at Service Pack 1 (14.0.6029), on 32-bit Windows.
    let products: Vec<&str> = inv.installed_products().iter().map(|p| p.name.as_str()).collect();
    assert!(
        products.contains(&"Microsoft Office 2010 Service Pack 1 (32-bit editions)"),
        "{products:?}"
    );
    assert!(products.contains(&"Microsoft .NET Framework 4"), "{products:?}");
}

fn shared(file: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/windows-software-inventory")
        .join(file);
    path.exists().then(|| std::fs::read(&path).unwrap())
}
