//! Certificates over a node's and an agent's life, with real processes on
//! 127.0.0.1: an agent renews its certificate before it expires, a node
//! picks up a renewed certificate without a restart (its changes signed by
//! the new key from a published rotation on), and a revoked agent or node
//! is refused by every node below the revocation; and, in one process, a
//! node refuses an agent certificate revoked after it checked it.

// Tests read the wall clock freely (clippy.toml keeps it to one place in
// the crates).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

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

/// An agent's certificate from site A's enrollment CA makes no computer at
/// site B (only where A's CA is trusted for failover), and a genuine node
/// certificate cannot pose as a node's parent or as the node `cascade ctl`
/// addressed.
#[test]
fn identities_are_bound_to_their_site_and_their_node() {
    let mut tree = Tree::new(&[
        ("root", None),
        ("site-a", Some("root")),
        ("site-b", Some("root")),
        ("site-c", Some("root")),
    ]);
    tree.enrollment("site-a");
    tree.enrollment("site-b");
    // site-c serves site-a's agents when site-a is down.
    tree.extra.insert(
        "site-c".into(),
        "[agents]\ntrusted_enrollment_cas = [\"pki/enroll-site-a.crt\"]\n".into(),
    );
    tree.start_all();

    let token = ok(tree.ctl("site-a", &["agent-token", "create", "--site", "site-a", "--ttl", "10m"]))
        .trim()
        .to_owned();
    let dir = tree.path().join("pc-a");
    ok(run(&[
        "agent",
        "enroll",
        "--token",
        &token,
        "--node",
        &tree.nodes["site-a"].addr(),
        "--data",
        dir.to_str().unwrap(),
        "--name",
        "pc-a",
    ]));
    let config = dir.join("agent.toml");
    let run_at = |node: &str| {
        std::fs::write(&config, agent_config(&dir, &[(&tree.nodes[node].addr(), 0)])).unwrap();
        Command::new(BIN)
            .args(["agent", "run", "--once", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let at_b = run_at("site-b");
    assert!(!at_b.status.success(), "site-b took site-a's agent");
    let refusal = String::from_utf8_lossy(&at_b.stderr);
    assert!(
        refusal.contains("was not enrolled at site-b") && refusal.contains("another site's enrollment CA"),
        "{refusal}"
    );
    assert_eq!(
        tree.json("site-b", &["--json", "agents"]),
        serde_json::json!([]),
        "no computer made at site-b"
    );
    assert!(
        run_at("site-c").status.success(),
        "site-c trusts site-a's enrollment CA"
    );
    assert!(run_at("site-a").status.success());

    // A node that is not a site's child gets no content from it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = tree.path().join("pki");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let refused = runtime.block_on(async {
        let channel = cascade_node::channel(
            &tree.nodes["site-a"].addr(),
            None,
            &read("ca.crt"),
            &read("site-b.crt"),
            &read("site-b.key"),
        )
        .await
        .unwrap();
        cascade_proto::v1::agents_client::AgentsClient::new(channel)
            .content(cascade_proto::v1::ContentRequest {
                sha256: "0".repeat(64),
                offset: 0,
            })
            .await
            .err()
    });
    let refused = refused.expect("site-a served content to a sibling");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is not a child of site-a"), "{refused:?}");

    // A node configured under the root, pointed at site-b's address: site-b's
    // genuine node certificate does not make it the root.
    let config = std::fs::read_to_string(tree.path().join("site-c.toml"))
        .unwrap()
        .replace(
            &format!("address = \"{}\"", tree.nodes["root"].addr()),
            &format!("address = \"{}\"", tree.nodes["site-b"].addr()),
        );
    tree.nodes.get_mut("site-c").unwrap().kill();
    std::fs::write(tree.path().join("site-c.toml"), config).unwrap();
    tree.nodes.get_mut("site-c").unwrap().start();
    wait_for("site-c to name the impostor", Duration::from_secs(20), || {
        ok(tree.ctl("site-c", &["--json", "links"])).contains("presented cascade://node/site-b, not node root")
    });
    // ctl, told which node it addresses, refuses another.
    let out = run(&[
        "ctl",
        "--node",
        &tree.nodes["site-b"].addr(),
        "--node-id",
        "root",
        "--pki",
        pki.to_str().unwrap(),
        "--as",
        "ops",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("presented cascade://node/site-b, not node root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A computer name is one computer in a site's chain: a node does not
/// enroll a name that a site below it already reports for.
#[test]
fn a_node_does_not_enroll_a_computer_name_its_subtree_reports_for() {
    let mut tree = Tree::new(&[("root", None), ("site-b", Some("root"))]);
    tree.enrollment("root");
    std::fs::create_dir_all(tree.nodes["site-b"].data()).unwrap();
    tree.seed_records("site-b", 3);
    tree.start_all();
    wait_for("site-b's records at the root", Duration::from_secs(30), || {
        tree.json("root", &["--json", "compliance"])["records"].as_u64() == Some(3)
    });
    let enroll = |name: &str| {
        let token = ok(tree.ctl("root", &["agent-token", "create", "--site", "root", "--ttl", "10m"]))
            .trim()
            .to_owned();
        run(&[
            "agent",
            "enroll",
            "--token",
            &token,
            "--node",
            &tree.nodes["root"].addr(),
            "--data",
            tree.path().join(name).to_str().unwrap(),
            "--name",
            name,
        ])
    };
    let taken = enroll("site-b-pc-0");
    assert!(!taken.status.success());
    let refusal = String::from_utf8_lossy(&taken.stderr);
    assert!(refusal.contains("is a computer of site site-b"), "{refusal}");
    ok(enroll("root-pc-0"));
}

/// A node that checked an agent's certificate refuses it once it is
/// revoked, whether a batch brings it again or a later report relies on
/// the one it knows: what the node remembers of checked certificates saves
/// the chain check, never the revocation check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_checked_before_its_revocation_is_refused_after() {
    use cascade_core::model::{ChangeOp, ComplianceRecord, ComputerId, Object, ObjectId, Revocation};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h = cascade::inprocess::harness("Revoked").unwrap();
    let (node, _) = h.node("root", None).await.unwrap();
    let pki = h.dir.path().join("paper-agents");
    h.ca.write(&pki).unwrap();
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki).unwrap(), now() - 60);
    let mut records: Vec<ComplianceRecord> = (0..3)
        .map(|n| ComplianceRecord {
            computer: ComputerId::new("pc-stolen-key").unwrap(),
            update: cascade_core::UpdateId::kb(5_000_000 + n),
            site: node.id.clone(),
            state: cascade_core::compliance::ComplianceState::Installed,
            severity: cascade_core::update::Severity::Critical,
            counter: 1,
            observed_at: now(),
            attestation: None,
        })
        .collect();
    let cert = agents.sign(&mut records).unwrap().remove(0);
    let (reports, _) = cascade_core::report::group(records);
    let none = std::collections::HashMap::new();
    // Checked, then remembered: a report relies on it, as a later batch would.
    let der = node.check_agent_certificate(&cert).unwrap();
    assert_eq!(node.check_agent_certificate(&cert).unwrap(), der);
    assert_eq!(node.check_report("child", reports[0].clone(), &none).unwrap().len(), 3);
    let revocation = Revocation {
        id: ObjectId::new("stolen-agent-key").unwrap(),
        serial: Some(cascade_trust::sign::serial_of(&der).unwrap()),
        identity: None,
        reason: "key stolen".into(),
        at: now(),
    };
    node.append_local(ChangeOp::Upsert(Object::Revocation(revocation)))
        .await
        .unwrap();
    let refused = node.check_agent_certificate(&cert).unwrap_err();
    assert!(refused.to_string().contains("key stolen"), "{refused}");
    assert!(
        node.check_report("child", reports[0].clone(), &none)
            .unwrap()
            .is_empty()
    );
}
