//! Certificates over a node's and an agent's life, with real processes on
//! 127.0.0.1: an agent renews its certificate before it expires, a node
//! picks up a renewed certificate without a restart (its changes signed by
//! the new key from a published rotation on), and a revoked agent or node
//! is refused by every node below the revocation.

mod support;

use std::process::Command;
use std::time::Duration;

use cascade_trust::{Ca, Identity};
use support::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn certificate(path: &std::path::Path) -> Vec<Vec<u8>> {
    cascade_trust::pem_certs(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn call(tree: &Tree, node: &str, op: &str, params: serde_json::Value) -> serde_json::Value {
    tree.json(node, &["--json", "call", op, "--params", &params.to_string()])
}

#[test]
fn renewal_without_restart_and_revocation_below() {
    let mut tree = Tree::new(&[("root", None), ("region", Some("root")), ("site", Some("region"))]);
    let pki = tree.path().join("pki");
    tree.enrollment("site");
    // The region looks at its certificate files every second.
    tree.extra.insert(
        "region".into(),
        "[security]\ntimestamp_seconds = 1\nmax_timestamp_age_seconds = 86400\n".into(),
    );
    tree.start_all();

    // An agent whose certificate has a third of its life left or less.
    let dir = agent_dir(&tree, "pc-1");
    let ca = Ca::load(&pki).unwrap();
    let old = ca
        .issue(
            &Identity::Agent(cascade_core::model::ComputerId::new("pc-1").unwrap()),
            &[],
            now() - 20 * 86_400,
            30,
        )
        .unwrap();
    old.write(&dir, "agent").unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(&config, agent_config(&dir, &[(&tree.nodes["site"].addr(), 0)])).unwrap();
    let old_serial = cascade_trust::sign::serial_of(&certificate(&dir.join("agent.crt"))[0]).unwrap();
    run_agent(&config);
    let renewed = certificate(&dir.join("agent.crt"));
    assert_eq!(
        renewed.len(),
        2,
        "the new certificate comes with the site's enrollment CA"
    );
    assert_ne!(cascade_trust::sign::serial_of(&renewed[0]).unwrap(), old_serial);
    assert_eq!(
        cascade_trust::identity_of(&renewed[0]).unwrap(),
        Identity::Agent(cascade_core::model::ComputerId::new("pc-1").unwrap())
    );
    let (_, until) = cascade_trust::validity_of(&renewed[0]).unwrap();
    assert!(until > now() + 300 * 86_400, "the site's certificate_days");
    // The renewed certificate and its new key work.
    run_agent(&config);

    // The region's certificate renewed in place: no restart.
    let before = call(&tree, "region", "security.status", serde_json::json!({}))["signing_key"].clone();
    ok(run(&[
        "pki",
        "issue",
        "node",
        "--id",
        "region",
        "--dir",
        pki.to_str().unwrap(),
    ]));
    let renewed_key = cascade_trust::sign::fingerprint(&certificate(&pki.join("region.crt"))[0]);
    wait_for(
        "the region to pick up its renewed certificate",
        Duration::from_secs(20),
        || call(&tree, "region", "security.status", serde_json::json!({}))["signing_key"] == renewed_key.as_str(),
    );
    assert_ne!(before, renewed_key.as_str());
    // A change the region makes now is signed by the new key, and the site
    // takes it (the rotation reached it first).
    ok(tree.ctl(
        "region",
        &[
            "change",
            "--op",
            r#"{"upsert":{"kind":"setting","object":{"id":"after-renewal","value":1}}}"#,
        ],
    ));
    wait_for("the region's new change at the site", Duration::from_secs(20), || {
        tree.json("site", &["objects", "--kind", "setting"])
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.to_string().contains("after-renewal")))
    });
    let keys = tree.json("site", &["objects", "--kind", "signing_key"]);
    assert!(
        keys.to_string().matches("MII").count() >= 4,
        "root, region (two certificates) and site: {keys}"
    );

    // A revoked agent: refused at its site once the revocation is there.
    call(
        &tree,
        "root",
        "certificates.revoke",
        serde_json::json!({"identity": "cascade://agent/pc-1", "reason": "laptop stolen"}),
    );
    wait_for("the revocation at the site", Duration::from_secs(20), || {
        call(&tree, "site", "certificates.revocations", serde_json::json!({}))
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["agent", "run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("revoked by root") && err.contains("laptop stolen"),
        "{err}"
    );

    // A revoked node: its parent refuses it, so nothing reaches it any more.
    let approvals = tree.approvals("site");
    call(
        &tree,
        "root",
        "certificates.revoke",
        serde_json::json!({"identity": "cascade://node/site", "reason": "decommissioned"}),
    );
    wait_for("the revocation at the region", Duration::from_secs(20), || {
        call(&tree, "region", "certificates.revocations", serde_json::json!({}))
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    ok(tree.ctl("root", &["approve", "--policy", "baseline", "--update", "KB5021233"]));
    wait_for("the approval at the region", Duration::from_secs(20), || {
        tree.approvals("region") == approvals + 1
    });
    wait_for("the site to be told why", Duration::from_secs(20), || {
        call(&tree, "site", "node.status", serde_json::json!({}))
            .to_string()
            .contains("revoked by root")
    });
    assert_eq!(tree.approvals("site"), approvals, "nothing reaches a revoked node");
}
