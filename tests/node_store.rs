//! `cascade node backup` and `cascade node restore`, run as an operator runs them.

use std::process::Command;

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::update::Severity;
use cascade_store::Store;

fn cascade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(args)
        .output()
        .expect("run cascade")
}

#[test]
fn backup_and_restore_a_node_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(&data, NodeId::new("site-a").unwrap()).unwrap();
        let records: Vec<_> = (0..50)
            .map(|c| ComplianceRecord {
                computer: ComputerId::new(&format!("pc-{c}")).unwrap(),
                update: UpdateId::new("KB5021233"),
                site: NodeId::new("site-a").unwrap(),
                state: if c % 2 == 0 {
                    ComplianceState::Installed
                } else {
                    ComplianceState::Required
                },
                severity: Severity::Critical,
                counter: 1,
                observed_at: 1_700_000_000,
            })
            .collect();
        store.ingest("agents", 1, &records, true).unwrap();

        // While the store is in use the backup says so instead of waiting or corrupting it.
        let out = cascade(&[
            "node",
            "backup",
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("b").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("in use by another process"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let backup = dir.path().join("site-a.backup");
    let out = cascade(&[
        "node",
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up node site-a"));

    let restored = dir.path().join("restored");
    let out = cascade(&[
        "node",
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open_existing(&restored).unwrap();
    assert_eq!(store.node().as_str(), "site-a");
    let counts = store.summary_for_update(&UpdateId::new("KB5021233")).unwrap();
    assert_eq!((counts.get("installed"), counts.get("required")), (25, 25));
    drop(store);

    // A damaged backup is refused and nothing is created.
    let mut bytes = std::fs::read(&backup).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    std::fs::write(&backup, bytes).unwrap();
    let again = dir.path().join("again");
    let out = cascade(&[
        "node",
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(!again.exists());
}
