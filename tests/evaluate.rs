//! `cascade evaluate`, run as a user runs it: the real binary on real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

fn cascade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(args)
        .output()
        .expect("run cascade")
}

const DEC_2022: &str = "cvrf/cvrfDocument-2022-Dec.trimmed.xml";

#[test]
fn json_plan_for_windows_10_21h2() {
    let out = cascade(&[
        "evaluate",
        "--catalog",
        &fixture(DEC_2022),
        "--inventory",
        &fixture("inventory/win10-21h2-x64.json"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let required = plan["required"].as_array().unwrap();
    assert_eq!(required.len(), 1);
    assert_eq!(required[0]["id"], "KB5021233");
    assert_eq!(required[0]["severity"], "Critical");
    assert_eq!(required[0]["restart"], "yes");
    assert_eq!(
        required[0]["reason"],
        "applies to Windows 10 Version 21H2 for x64-based Systems; not installed"
    );
    assert!(required[0]["title"].as_str().unwrap().ends_with("(KB5021233)"));
    assert_eq!(plan["installed"], serde_json::json!([]));
    assert_eq!(plan["superseded"], serde_json::json!([]));
    assert_eq!(plan["not_applicable"], 53);
    assert_eq!(plan["unknown"], serde_json::json!([]));
}

#[test]
fn table_for_a_localised_systeminfo_with_its_qfe_list() {
    let out = cascade(&[
        "evaluate",
        "--catalog",
        &fixture(DEC_2022),
        "--inventory",
        &fixture("windows-inventory/10_1809_x64_education_en-us_20190306_systeminfo.txt"),
        "--inventory",
        &fixture("windows-inventory/10_1809_x64_education_en-us_20190306_qfe.txt"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("Windows 10, version 1809, Education, x64"), "{stdout}");
    assert!(stdout.contains("Required, in install order:"), "{stdout}");
    // December 2022's cumulative update for 1809.
    assert!(stdout.contains("KB5021237"), "{stdout}");
    assert!(
        stdout.contains("why: applies to Windows 10 Version 1809 for x64-based Systems; not installed"),
        "{stdout}"
    );
}

#[test]
fn catalog_directories() {
    let wsusscn2 = cascade(&[
        "evaluate",
        "--catalog",
        &fixture("wsusscn2/extracted"),
        "--inventory",
        &fixture("inventory/win10-21h2-x64.json"),
        "--json",
    ]);
    assert!(
        wsusscn2.status.success(),
        "{}",
        String::from_utf8_lossy(&wsusscn2.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&wsusscn2.stdout).unwrap();
    // The fixture's updates need prerequisites the package does not carry: unknown, with why.
    let unknown = plan["unknown"].as_array().unwrap();
    assert!(!unknown.is_empty());
    assert!(
        unknown
            .iter()
            .all(|u| u["reason"].as_str().unwrap().contains("not in the catalog")),
        "{unknown:?}"
    );

    let catalog = cascade(&[
        "evaluate",
        "--catalog",
        &fixture("update-catalog"),
        "--inventory",
        &fixture("inventory/win10-21h2-x64.json"),
        "--json",
    ]);
    assert!(catalog.status.success(), "{}", String::from_utf8_lossy(&catalog.stderr));
}

#[test]
fn malformed_input_exits_2_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture(DEC_2022)).unwrap();
    let cut = dir.path().join("cut.xml");
    std::fs::write(&cut, &text[..text.len() / 3]).unwrap();
    let out = cascade(&[
        "evaluate",
        "--catalog",
        cut.to_str().unwrap(),
        "--inventory",
        &fixture("inventory/win10-21h2-x64.json"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing printed as if it had worked");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("cut.xml: line "), "{stderr}");
    assert!(stderr.contains("the text ends inside <"), "{stderr}");

    let bad_inventory = dir.path().join("inv.json");
    std::fs::write(
        &bad_inventory,
        "{\"os\": {\"family\": \"windows\", \"version\": \"ten\"}}",
    )
    .unwrap();
    let out = cascade(&[
        "evaluate",
        "--catalog",
        &fixture(DEC_2022),
        "--inventory",
        bad_inventory.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("inv.json: line 1") && stderr.contains("not a dotted numeric version"),
        "{stderr}"
    );

    let out = cascade(&[
        "evaluate",
        "--catalog",
        "/nonexistent/catalog.xml",
        "--inventory",
        &fixture("inventory/win10-21h2-x64.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/catalog.xml"));

    let out = cascade(&[
        "evaluate",
        "--catalog",
        &fixture(DEC_2022),
        "--inventory",
        &fixture("windows-inventory/xp_rtm_x86_professional_en-us_qfe.txt"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a hotfix list alone says nothing about the OS"
    );
}

#[test]
fn wsusscn2_cab_as_published_equals_its_extracted_files() {
    let inventory = fixture("inventory/win10-21h2-x64.json");
    let from_cab = cascade(&[
        "evaluate",
        "--catalog",
        &fixture("wsusscn2/wsusscn2.cab"),
        "--inventory",
        &inventory,
        "--json",
    ]);
    assert!(
        from_cab.status.success(),
        "{}",
        String::from_utf8_lossy(&from_cab.stderr)
    );
    let extracted = cascade(&[
        "evaluate",
        "--catalog",
        &fixture("wsusscn2/extracted"),
        "--inventory",
        &inventory,
        "--json",
    ]);
    assert!(
        extracted.status.success(),
        "{}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&from_cab.stdout),
        String::from_utf8_lossy(&extracted.stdout)
    );
    let plan: serde_json::Value = serde_json::from_slice(&from_cab.stdout).unwrap();
    assert!(plan["unknown"].as_array().unwrap().len() + plan["superseded"].as_array().unwrap().len() > 0);

    // A cabinet that is not a wsusscn2 catalogue says so.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.cab");
    let mut bytes = std::fs::read(fixture("wsusscn2/wsusscn2.cab")).unwrap();
    bytes.truncate(200);
    std::fs::write(&bogus, bytes).unwrap();
    let out = cascade(&[
        "evaluate",
        "--catalog",
        bogus.to_str().unwrap(),
        "--inventory",
        &inventory,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus.cab"));
}

/// A Windows 7 computer's systeminfo merged with its software list (native
/// inventory JSON holding only software), planned on each track.
#[test]
fn systeminfo_with_its_software_on_each_track() {
    let dir = tempfile::tempdir().unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("software/legacy-office.json")).unwrap()).unwrap();
    let software = dir.path().join("software.json");
    std::fs::write(&software, serde_json::json!({ "software": list }).to_string()).unwrap();
    let systeminfo = fixture("windows-inventory/7_sp1_x64_enterprise_en-us_A_systeminfo.txt");
    let software = software.display().to_string();
    for (track, want) in [
        ("rollup", ["KB5021291", "KB5021091"]),
        ("security-only", ["KB5021288", "KB5021079"]),
    ] {
        let out = cascade(&[
            "evaluate",
            "--catalog",
            &fixture(DEC_2022),
            "--inventory",
            &systeminfo,
            "--inventory",
            &software,
            "--track",
            track,
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = plan["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, want, "{track}");
        assert_eq!(plan["unknown"].as_array().unwrap().len(), 0, "{track}: {plan}");
    }
    // The derived containment is reported with why.
    let out = cascade(&[
        "evaluate",
        "--catalog",
        &fixture(DEC_2022),
        "--inventory",
        &systeminfo,
        "--inventory",
        &software,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: catalog: KB5021291 contains KB5021288: the monthly rollup for Windows 7"),
        "{stderr}"
    );
}
