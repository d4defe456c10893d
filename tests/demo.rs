//! `cascade demo --smoke`, the README's first command without the waiting:
//! seven nodes, simulated computers from the bundled real inventories, the
//! bundled real CVRF sample; every computer's compliance reaches the root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

const BIN: &str = env!("CARGO_BIN_EXE_cascade");

#[test]
fn the_demo_converges_and_says_so_in_one_json_line() {
    let out = std::process::Command::new(BIN)
        .args(["demo", "--smoke", "--computers-per-site", "10", "--limit-seconds", "90"])
        .output()
        .expect("run cascade demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("a line");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(report["nodes"], 7);
    assert_eq!(report["computers"], 40);
    assert_eq!(report["computers_reported_at_root"], 40);
    assert_eq!(report["approvals_converged"], true);
    assert!(report["seconds"].as_f64().unwrap() < 90.0);
    // Plans decided from the computers' software: few records unknown.
    let unknown = report["unknown_percent"].as_f64().unwrap();
    assert!(
        unknown < 5.0,
        "{unknown} % of the records at the root are unknown: {last}"
    );
    let records = &report["records_at_root"];
    assert!(records["not_applicable"].as_u64().unwrap() > 0, "{last}");
    // The monthly rollups contain the security-only updates: never both.
    assert!(records["superseded"].as_u64().unwrap() > 0, "{last}");
    // Older Firefox, Chrome and 7-Zip patched from the winget manifests.
    assert!(report["third_party_patched"].as_u64().unwrap() > 0, "{last}");
}
