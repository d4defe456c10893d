//! `cascade node backup` and `cascade node restore`, run as an operator runs
//! them; and `cascade bench rollup`, whose root is a node process of its own,
//! at a small size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;

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

fn record(c: u64, counter: u64) -> ComplianceRecord {
    ComplianceRecord {
        computer: ComputerId::new(&format!("pc-{c}")).unwrap(),
        update: if counter == 1 {
            UpdateId::new("KB5021233")
        } else {
            UpdateId::kb(6_000_000 + counter)
        },
        site: NodeId::new("site-a").unwrap(),
        state: if c.is_multiple_of(2) {
            ComplianceState::Installed
        } else {
            ComplianceState::Required
        },
        severity: Severity::Critical,
        counter,
        observed_at: 1_700_000_000,
        attestation: None,
    }
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_and_restore_a_node_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let store = Store::open(&data, NodeId::new("site-a").unwrap()).unwrap();
        let records: Vec<_> = (0..50).map(|c| record(c, 1)).collect();
        store.ingest("agents", 1, &records, true).unwrap();

        // Held by a process that does not answer on the control socket: the
        // backup says so instead of waiting or touching the store.
        let refused = dir.path().join("b");
        let out = cascade(&["node", "backup", "--data", path(&data), "--out", path(&refused)]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is in use, and its node does not answer"), "{stderr}");
        assert!(!refused.exists() && !refused.with_extension("partial").exists());

        // Held by a running node that writes on while the backup is taken:
        // the backup comes through the node's control socket, consistent.
        let store = Arc::new(store);
        let control = cascade_node::control::ControlServer::start(store.clone(), &data).unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for seq in 2..=60u64 {
                    let records: Vec<_> = (0..20).map(|c| record(c, seq)).collect();
                    store.ingest("agents", seq, &records, true).unwrap();
                }
            })
        };
        let online = dir.path().join("online.backup");
        let out = cascade(&["node", "backup", "--data", path(&data), "--out", path(&online)]);
        writer.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up the running node"));
        drop(control);
        let (copy, _) = Store::restore(
            std::fs::File::open(&online).unwrap(),
            &dir.path().join("online"),
            Default::default(),
        )
        .unwrap();
        let (by_update, by_site) = copy.recount().unwrap();
        assert_eq!(copy.summary_by_update().unwrap(), by_update, "a consistent copy");
        assert_eq!(copy.summary_by_site().unwrap(), by_site);
        assert_eq!(
            copy.summary_for_update(&UpdateId::new("KB5021233")).unwrap().total(),
            50
        );
    }
    // sled's background threads let go of the store's lock shortly after the
    // last handle is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Store::open_existing(&data).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let backup = dir.path().join("site-a.backup");
    let out = cascade(&["node", "backup", "--data", path(&data), "--out", path(&backup)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up node site-a"));

    let restored = dir.path().join("restored");
    // Restored compressed: how an existing store changes that.
    let out = cascade(&[
        "node",
        "restore",
        "--from",
        path(&backup),
        "--data",
        path(&restored),
        "--compress",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("entries, compressed)"));
    let store = Store::open_existing(&restored.join("store")).unwrap();
    assert!(store.compressed());
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
    let out = cascade(&["node", "restore", "--from", path(&backup), "--data", path(&again)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    assert!(!again.exists());
}

#[test]
fn the_rollup_benchmark_measures_a_root_process_of_its_own_and_exits() {
    let out = cascade(&["bench", "rollup", "--computers", "300", "--updates", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], 1200);
    let memory = &report["memory"];
    let (idle, peak) = (
        memory["root_idle_rss_bytes"].as_u64().unwrap(),
        memory["root_peak_rss_bytes"].as_u64().unwrap(),
    );
    assert!(idle > 0 && peak >= idle, "{memory}");
    assert!(
        memory["root_peak_rss_whole_run_bytes"].as_u64().unwrap() >= peak,
        "{memory}"
    );
    // The root's answers came through its API; its store was read after it stopped.
    for query in [
        "compliance_by_update",
        "by_site_and_severity",
        "computers_needing_update_at_site",
    ] {
        assert_eq!(report["root_queries"][query]["samples"], 200, "{query}");
    }
    assert!(report["root_disk"]["live_bytes_per_record"].as_f64().unwrap() > 0.0);
    for recovery in ["lost_outbox", "moved_site"] {
        assert!(
            report["recovery"][recovery]["seconds"].as_f64().unwrap() > 0.0,
            "{recovery}"
        );
    }
}
