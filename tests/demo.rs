//! `cascade demo --smoke`, the README's first command without the waiting:
//! seven nodes, simulated computers from the bundled real inventories, the
//! bundled real CVRF sample; every computer's compliance reaches the root.

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
}
