//! The agent end to end with real processes on 127.0.0.1: enrollment with a
//! one-time token, targeting at the node, content, installers that write
//! files, maintenance windows and deadlines, a restart batched at the end,
//! results visible at the root two levels up; failover between two nodes;
//! the fleet simulator.

// Tests read the wall clock freely (clippy.toml keeps it to one place in
// the crates).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use cascade_core::UpdateId;
use cascade_core::model::{ChangeOp, MaintenanceWindow, Object, ObjectId, Policy};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{
    Classification, Content, ExitCode, ExitMeaning, InstallCommand, RestartBehavior, Severity, Update,
};
use support::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An update for the Debian fixture computer whose installer is a shell script.
fn linux_update(id: &str, script: &str, exit_codes: Vec<ExitCode>, restart: RestartBehavior) -> Update {
    let mut u = Update::new(
        UpdateId::new(id),
        format!("Test update {id}"),
        Classification::SecurityUpdate,
    );
    u.vendor = "Example".into();
    u.severity = Severity::Critical;
    u.restart = restart;
    u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "linux"));
    u.install = Some(InstallCommand {
        program: "/bin/sh".into(),
        arguments: vec!["-c".into(), script.into(), "installer".into(), "{content}".into()],
        exit_codes,
    });
    u
}

fn change(tree: &Tree, node: &str, op: &ChangeOp) {
    ok(tree.ctl(node, &["change", "--op", &serde_json::to_string(op).unwrap()]));
}

fn counts(tree: &Tree, node: &str, update: &str) -> serde_json::Value {
    tree.json(node, &["--json", "compliance"])["by_update"][update].clone()
}

#[test]
fn an_enrolled_agent_installs_and_the_root_two_levels_up_sees_it() {
    let mut tree = Tree::new(&[("root", None), ("region", Some("root")), ("site", Some("region"))]);
    let pki = tree.path().join("pki");
    tree.enrollment("site");
    tree.start_all();

    // The region's content store holds the payload the first update
    // copies; the site pre-stages it from there.
    let payload = b"the bytes of an update\n".repeat(1000);
    let sha = sha256_hex(&payload);
    let content_dir = tree.nodes["region"].data().join("content");
    std::fs::create_dir_all(&content_dir).unwrap();
    std::fs::write(content_dir.join(&sha), &payload).unwrap();
    let marker = tree.path().join("installed-marker");

    let mut copy = linux_update(
        "EX-1",
        &format!("cp \"$1\" {}", marker.display()),
        vec![],
        RestartBehavior::Never,
    );
    copy.content = vec![Content {
        file_name: "ex-1.bin".into(),
        sha256: sha.clone(),
        size: payload.len() as u64,
        url: None,
    }];
    let reboot = linux_update(
        "EX-2",
        "exit 194",
        vec![ExitCode {
            code: 194,
            meaning: ExitMeaning::SuccessRestartRequired,
        }],
        RestartBehavior::May,
    );
    let waits = linux_update("EX-3", "exit 0", vec![], RestartBehavior::Never);
    let windows_only = {
        let mut u = linux_update("EX-4", "exit 0", vec![], RestartBehavior::Never);
        u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "windows"));
        u
    };
    for u in [copy, reboot, waits, windows_only] {
        change(&tree, "root", &ChangeOp::Upsert(Object::Update(Box::new(u))));
    }
    // A window that is closed now: twelve hours ahead, for an hour.
    let closed_at = jiff::Timestamp::from_second(now() + 12 * 3600).unwrap();
    let start = closed_at.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let window = MaintenanceWindow {
        id: ObjectId::new("nightly").unwrap(),
        name: "Nightly".into(),
        time_zone: "UTC".into(),
        start: format!("{:02}:{:02}", start.hour(), start.minute()),
        duration_minutes: 60,
        days: vec![],
        overridable: Default::default(),
    };
    change(
        &tree,
        "root",
        &ChangeOp::Upsert(Object::MaintenanceWindow(Box::new(window))),
    );
    let policy = Policy {
        maintenance_windows: vec![ObjectId::new("nightly").unwrap()],
        ..Policy::new(ObjectId::new("servers").unwrap(), "Servers")
    };
    change(&tree, "root", &ChangeOp::Upsert(Object::Policy(Box::new(policy))));
    // EX-1 and EX-2 are past their deadline: they install outside the window.
    let past = (now() - 60).to_string();
    for id in ["EX-1", "EX-2", "EX-4"] {
        ok(tree.ctl(
            "root",
            &["approve", "--policy", "servers", "--update", id, "--deadline", &past],
        ));
    }
    ok(tree.ctl("root", &["approve", "--policy", "servers", "--update", "EX-3"]));
    wait_for("approvals at the site", Duration::from_secs(20), || {
        tree.approvals("site") == 4
    });
    let staged = |node: &str| -> serde_json::Value {
        let out = ok(tree.ctl(
            node,
            &["--json", "call", "IsStaged", "--params", r#"{"updates": ["EX-1"]}"#],
        ));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["EX-1"]["staged"].clone()
    };
    assert_eq!(staged("site"), false);
    assert_eq!(staged("region"), true);
    let ensured = ok(tree.ctl(
        "site",
        &[
            "--json",
            "call",
            "EnsureStaged",
            "--params",
            r#"{"bulletins": ["EX-1", "EX-2"]}"#,
        ],
    ));
    let ensured: serde_json::Value = serde_json::from_str(&ensured).unwrap();
    assert_eq!(ensured["transfers"][0]["fetched"], payload.len(), "{ensured}");
    assert_eq!(staged("site"), true);
    let root_refused = tree.ctl(
        "root",
        &["call", "content.ensure", "--params", r#"{"updates": ["EX-1"]}"#],
    );
    let refusal = String::from_utf8_lossy(&root_refused.stderr);
    assert!(
        refusal.contains("has no parent") && refusal.contains("no URL"),
        "{refusal}"
    );

    // Enrollment: a token from the site's node, used once.
    let token = ok(tree.ctl("site", &["agent-token", "create", "--site", "site", "--ttl", "10m"]))
        .trim()
        .to_owned();
    let agent_dir = tree.path().join("agent");
    let site_addr = tree.nodes["site"].addr();
    ok(run(&[
        "agent",
        "enroll",
        "--token",
        &token,
        "--node",
        &format!("https://{site_addr}"),
        "--data",
        agent_dir.to_str().unwrap(),
        "--name",
        "pc-e2e",
    ]));
    assert!(agent_dir.join("agent.toml").exists() && agent_dir.join("agent.key").exists());
    let again = run(&[
        "agent",
        "enroll",
        "--token",
        &token,
        "--node",
        &site_addr,
        "--data",
        tree.path().join("agent-2").to_str().unwrap(),
        "--name",
        "pc-other",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("unknown or was used already"));
    // The site's enrollment CA cannot mint an admin (or node) identity.
    let sub = cascade_trust::Ca::load_files(&pki.join("enroll-site.crt"), &pki.join("enroll-site.key")).unwrap();
    let forged = sub
        .issue(
            &cascade_trust::Identity::Admin {
                name: "mallory".into(),
                role: cascade_trust::Role::Admin,
                site: None,
            },
            &[],
            now(),
            1,
        )
        .unwrap();
    let forged_dir = tree.path().join("forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    std::fs::copy(pki.join("ca.crt"), forged_dir.join("ca.crt")).unwrap();
    std::fs::write(forged_dir.join("admin-mallory.crt"), forged.cert_pem + &sub.cert_pem).unwrap();
    std::fs::write(forged_dir.join("admin-mallory.key"), forged.key_pem).unwrap();
    let refused = run(&[
        "ctl",
        "--node",
        &tree.nodes["root"].addr(),
        "--pki",
        forged_dir.to_str().unwrap(),
        "--as",
        "mallory",
        "links",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("intermediate certificate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let no_enrollment = tree.ctl("region", &["agent-token", "create", "--site", "region"]);
    assert!(String::from_utf8_lossy(&no_enrollment.stderr).contains("does not enroll agents"));

    let config = agent_dir.join("agent.toml");
    std::fs::write(&config, agent_config(&agent_dir, &[(&site_addr, 0)])).unwrap();
    let first = run_agent(&config);
    assert_eq!(first["steps"], 3, "{first}");
    assert_eq!(first["installed"], 1, "EX-1 past its deadline: {first}");
    assert_eq!(first["pending_restart"], 1, "EX-2 asked for a restart: {first}");
    assert_eq!(first["deferred"], 1, "EX-3 waits for the window: {first}");
    assert_eq!(first["restart_requested"], true, "{first}");
    assert_eq!(
        std::fs::read(&marker).unwrap(),
        payload,
        "the installer had the verified content"
    );
    assert!(
        std::fs::read_to_string(agent_dir.join("boot_id"))
            .unwrap()
            .starts_with("rebooted-"),
        "the restart command ran"
    );

    // After the "restart" the boot id differs: EX-2 is installed.
    let second = run_agent(&config);
    assert_eq!(second["steps"], 1, "only EX-3 is left: {second}");
    assert_eq!(second["deferred"], 1, "{second}");
    assert_eq!(second["reports_queued"], 0, "{second}");

    // The results reach the root, two levels up.
    wait_for("installed states at the root", Duration::from_secs(20), || {
        counts(&tree, "root", "EX-1")["installed"] == 1
            && counts(&tree, "root", "EX-2")["installed"] == 1
            && counts(&tree, "root", "EX-3")["required"] == 1
            && counts(&tree, "root", "EX-4")["not_applicable"] == 1
    });
    // What a new policy would do here, before it is approved: EX-3 for the
    // one computer, in a 60-minute window that one 10-minute install fits.
    let what_if = ok(tree.ctl(
        "site",
        &[
            "--json",
            "call",
            "policies.what_if",
            "--params",
            r#"{"policy": {"id": "more", "name": "More", "maintenance_windows": ["nightly"]}, "approve": ["EX-3", "EX-4"]}"#,
        ],
    ));
    let what_if: serde_json::Value = serde_json::from_str(&what_if).unwrap();
    assert_eq!(what_if["computers_targeted"], 1, "{what_if}");
    assert_eq!(
        what_if["computers"][0]["updates"],
        serde_json::json!(["EX-3"]),
        "{what_if}"
    );
    assert_eq!(what_if["computers"][0]["fits_windows"], true, "{what_if}");
    assert_eq!(what_if["computers_restarting"], 0, "{what_if}");
    let agents = tree.json("site", &["--json", "agents"]);
    assert_eq!(agents[0]["agent"]["id"], "pc-e2e");
    let kinds: Vec<&str> = agents[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for kind in [
        "downloaded",
        "installed",
        "pending_restart",
        "restart_requested",
        "restarted",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn an_agent_fails_over_to_the_other_node_and_returns() {
    let mut tree = Tree::new(&[("root", None), ("site-a", Some("root")), ("site-b", Some("root"))]);
    tree.start_all();
    let agent_dir = agent_dir(&tree, "pc-roaming");
    let a = tree.nodes["site-a"].addr();
    let b = tree.nodes["site-b"].addr();
    let config = agent_dir.join("agent.toml");
    std::fs::write(&config, agent_config(&agent_dir, &[(&a, 1), (&b, 2)])).unwrap();

    assert_eq!(
        run_agent(&config)["node"],
        a.as_str(),
        "equally near: the preferred one"
    );
    tree.nodes.get_mut("site-a").unwrap().kill();
    assert_eq!(run_agent(&config)["node"], b.as_str(), "site-a is down");
    tree.restart("site-a");
    assert_eq!(run_agent(&config)["node"], a.as_str(), "back to site-a");
    let seen_by_b = tree.json("site-b", &["--json", "agents"]);
    assert_eq!(seen_by_b[0]["agent"]["id"], "pc-roaming");
}

#[test]
fn the_fleet_simulator_checks_in_against_a_real_catalog() {
    let mut tree = Tree::new(&[("root", None), ("site", Some("root"))]);
    tree.start_all();
    // A file that is not a catalog is named; the others are imported.
    let out = tree.ctl(
        "root",
        &[
            "--json",
            "import",
            fixture("cvrf/cvrfDocument-2022-Dec.trimmed.xml").to_str().unwrap(),
            fixture("linux/os-release").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let imported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(imported[0]["updates"].as_u64().unwrap() > 40, "{imported}");
    assert!(
        imported[1]["error"].as_str().unwrap().contains("not a catalog"),
        "{imported}"
    );
    let policy = Policy {
        updates: cascade_core::model::UpdateFilter {
            severities: vec![Severity::Critical],
            ..Default::default()
        },
        ..Policy::new(ObjectId::new("critical").unwrap(), "Critical updates")
    };
    change(&tree, "root", &ChangeOp::Upsert(Object::Policy(Box::new(policy))));
    wait_for("the policy at the site", Duration::from_secs(20), || {
        tree.json("site", &["objects", "--kind", "policy"])
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let out = ok(run(&[
        "agent",
        "simulate",
        "--count",
        "40",
        "--inventories",
        fixture("windows-inventory").to_str().unwrap(),
        "--node",
        &tree.nodes["site"].addr(),
        "--pki",
        tree.path().join("pki").to_str().unwrap(),
        "--seed",
        "7",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["runs_ok"], 80, "{report}");
    assert!(report["installed"].as_u64().unwrap() > 0, "{report}");
    assert!(report["failed_installs"].as_u64().unwrap() > 0, "5% fail: {report}");
    // Every computer's records reach the root.
    wait_for("40 computers at the root", Duration::from_secs(30), || {
        let by_update = tree.json("root", &["--json", "compliance"])["by_update"].clone();
        let kb = &by_update["KB5021233"];
        kb.as_object()
            .is_some_and(|m| m.values().filter_map(|v| v.as_u64()).sum::<u64>() > 0)
    });
    let agents = tree.json("site", &["--json", "agents"]);
    assert_eq!(agents.as_array().map(Vec::len), Some(40));
}

#[test]
fn a_node_drops_repeated_reports_and_refuses_reports_for_other_computers() {
    use cascade_core::compliance::ComplianceState;
    use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
    use cascade_proto::v1::ReportRequest;
    use cascade_proto::v1::agents_client::AgentsClient;

    let mut tree = Tree::new(&[("site", None)]);
    let pki = tree.path().join("pki");
    ok(run(&[
        "pki",
        "issue",
        "agent",
        "--id",
        "pc-1",
        "--dir",
        pki.to_str().unwrap(),
    ]));
    tree.start_all();
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let record = |computer: &str, state: ComplianceState| ComplianceRecord {
        computer: ComputerId::new(computer).unwrap(),
        update: UpdateId::new("KB5021233"),
        site: NodeId::new("elsewhere").unwrap(),
        state,
        severity: Severity::Critical,
        counter: 0,
        observed_at: now(),
        attestation: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = cascade_agent::connect::channel(
            &tree.nodes["site"].addr(),
            &read("ca.crt"),
            Some((&read("agent-pc-1.crt"), &read("agent-pc-1.key"))),
        )
        .await
        .unwrap();
        let mut client = AgentsClient::new(channel);
        let signer =
            cascade_trust::sign::KeySigner::from_pem(&read("agent-pc-1.crt"), &read("agent-pc-1.key")).unwrap();
        let computer = ComputerId::new("pc-1").unwrap();
        let report = |counter: u64, records: Vec<ComplianceRecord>| {
            use cascade_core::seal;
            let leaves: Vec<[u8; 32]> = records.iter().map(seal::record_leaf).collect();
            let message = seal::report_message(&computer, counter, &seal::merkle(&leaves).0);
            let (scheme, signature) = seal::Signer::sign(&signer, &message).unwrap();
            ReportRequest {
                counter,
                records: serde_json::to_vec(&records).unwrap(),
                events: Vec::new(),
                scheme: u32::from(scheme),
                signature,
            }
        };
        let mut unsigned = report(1, vec![record("pc-1", ComplianceState::Installed)]);
        unsigned.signature.clear();
        let refused = client.report(unsigned).await.unwrap_err();
        assert!(refused.message().contains("bad signature"), "{}", refused.message());
        let mut altered = report(1, vec![record("pc-1", ComplianceState::Installed)]);
        altered.records = serde_json::to_vec(&vec![record("pc-1", ComplianceState::Failed { code: 1 })]).unwrap();
        let refused = client.report(altered).await.unwrap_err();
        assert!(refused.message().contains("bad signature"), "{}", refused.message());
        let first = client
            .report(report(1, vec![record("pc-1", ComplianceState::Installed)]))
            .await
            .unwrap();
        assert_eq!(first.into_inner().acked, 1);
        // The same counter again (a replay, or a resend after a lost
        // acknowledgement) changes nothing.
        let again = client
            .report(report(1, vec![record("pc-1", ComplianceState::Failed { code: 1603 })]))
            .await
            .unwrap();
        assert_eq!(again.into_inner().acked, 1);
        let forged = client
            .report(report(2, vec![record("pc-2", ComplianceState::Installed)]))
            .await
            .unwrap_err();
        assert_eq!(forged.code(), tonic::Code::PermissionDenied);
        assert!(forged.message().contains("only for itself"), "{}", forged.message());
    });
    let counts = counts(&tree, "site", "KB5021233");
    assert_eq!(
        counts,
        serde_json::json!({"installed": 1}),
        "the replay did not replace it"
    );
}

#[test]
fn a_staged_rollout_opens_rings_by_soak_and_failures_and_by_promotion() {
    let mut tree = Tree::new(&[("root", None), ("site", Some("root"))]);
    tree.start_all();
    for (id, script) in [
        ("EX-OK", "exit 0"),
        ("EX-BAD", "echo broken >&2; exit 1"),
        ("EX-AUTO", "exit 0"),
    ] {
        let u = linux_update(id, script, vec![], RestartBehavior::Never);
        change(&tree, "root", &ChangeOp::Upsert(Object::Update(Box::new(u))));
    }
    let rings = |pilot_soak: u32| {
        serde_json::json!([
            {"name": "pilot", "targets": {"groups": ["pilot"]}, "soak_hours": pilot_soak, "max_failure_percent": 50},
            {"name": "production", "soak_hours": 0}
        ])
    };
    for (policy, soak) in [("staged", 1000), ("auto", 0)] {
        let params =
            serde_json::json!({"policy": {"id": policy, "name": policy, "enabled": true, "rings": rings(soak)}});
        ok(tree.ctl("root", &["call", "policies.upsert", "--params", &params.to_string()]));
    }
    for (policy, update) in [("staged", "EX-OK"), ("staged", "EX-BAD"), ("auto", "EX-AUTO")] {
        ok(tree.ctl("root", &["approve", "--policy", policy, "--update", update]));
    }
    wait_for("approvals at the site", Duration::from_secs(20), || {
        tree.approvals("site") == 3
    });
    let site = tree.nodes["site"].addr();
    let agent = |pc: &str, groups: &str| -> PathBuf {
        let dir = agent_dir(&tree, pc);
        std::fs::write(dir.join("facts.toml"), format!("groups = [{groups}]\n")).unwrap();
        let config = dir.join("agent.toml");
        let text =
            agent_config(&dir, &[(&site, 0)]).replace("data = \".\"\n", "data = \".\"\nfacts_file = \"facts.toml\"\n");
        std::fs::write(&config, text).unwrap();
        config
    };
    let pilot = agent("pc-pilot", "\"pilot\"");
    let production = agent("pc-prod", "");

    let first = run_agent(&pilot);
    assert_eq!(
        (first["installed"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(1)),
        "{first}"
    );
    assert_eq!(run_agent(&production)["steps"], 0, "no ring of production is open yet");

    // The site counts its rings and sends the counts up; the root, which
    // owns the policies, halts EX-BAD (1 of 1 failed > 50%), keeps EX-OK
    // in its 1000-hour soak, and opens production for EX-AUTO (no soak).
    let status = |node: &str| -> serde_json::Value {
        let out = ok(tree.ctl(node, &["--json", "call", "rollout.status"]));
        serde_json::from_str(&out).unwrap()
    };
    let find = |all: &serde_json::Value, policy: &str, update: &str| -> serde_json::Value {
        all.as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy"] == policy && r["update"] == update)
            .cloned()
            .unwrap_or_default()
    };
    wait_for("the rollout decisions at the root", Duration::from_secs(30), || {
        let all = status("root");
        find(&all, "staged", "EX-BAD")["rings"][1]["status"]["state"] == "halted"
            && find(&all, "auto", "EX-AUTO")["rings"][1]["status"]["state"] == "open"
            && find(&all, "staged", "EX-OK")["rings"][0]["installed"] == 1
    });
    let all = status("root");
    let halted = find(&all, "staged", "EX-BAD");
    assert!(
        halted["halted"].as_str().unwrap().contains("1 of 1 installs failed"),
        "{halted}"
    );
    assert_eq!(find(&all, "staged", "EX-OK")["rings"][1]["status"]["state"], "waiting");
    wait_for("EX-AUTO for production at the site", Duration::from_secs(20), || {
        find(&status("site"), "auto", "EX-AUTO")["rings"][1]["status"]["state"] == "open"
    });
    let second = run_agent(&production);
    assert_eq!(second["installed"], 1, "EX-AUTO only: {second}");

    // An admin promotes EX-OK at the policy's own node; not at the site.
    let refused = tree.ctl(
        "site",
        &[
            "call",
            "rollout.promote",
            "--params",
            r#"{"policy": "staged", "update": "EX-OK"}"#,
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    ok(tree.ctl(
        "root",
        &[
            "call",
            "rollout.promote",
            "--params",
            r#"{"policy": "staged", "update": "EX-OK"}"#,
        ],
    ));
    wait_for("EX-OK for production at the site", Duration::from_secs(20), || {
        find(&status("site"), "staged", "EX-OK")["rings"][1]["status"]["state"] == "open"
    });
    let third = run_agent(&production);
    assert_eq!(third["installed"], 1, "EX-OK; never the halted EX-BAD: {third}");
    assert_eq!(run_agent(&production)["steps"], 0);

    // A change of the catalog makes the computers' plans outdated, with
    // the reason, until they check in again.
    ok(tree.ctl(
        "root",
        &[
            "call",
            "settings.set",
            "--params",
            r#"{"id": "any.setting", "value": 1}"#,
        ],
    ));
    let scan = |pc: &str| -> serde_json::Value {
        let out = ok(tree.ctl("site", &["--json", "call", "computers.list"]));
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        all["computers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["agent"]["id"] == pc)
            .map(|c| c["scan"].clone())
            .unwrap_or_default()
    };
    wait_for("an outdated plan at the site", Duration::from_secs(20), || {
        scan("pc-prod")["state"] == "outdated"
    });
    assert!(
        scan("pc-prod")["reason"]
            .as_str()
            .unwrap()
            .starts_with("catalog revision mismatch")
    );
    run_agent(&production);
    assert_eq!(scan("pc-prod")["state"], "current");
}

/// `ctl --json call <op> --params <params>` at a node.
fn call(tree: &Tree, node: &str, op: &str, params: serde_json::Value) -> serde_json::Value {
    tree.json(node, &["--json", "call", op, "--params", &params.to_string()])
}

#[test]
fn reports_at_the_root_answer_which_computers_two_levels_down_need_what_and_why() {
    let mut tree = Tree::new(&[
        ("root", None),
        ("region", Some("root")),
        ("site", Some("region")),
        ("other", Some("root")),
    ]);
    tree.start_all();
    let disk_full = linux_update("R-FAIL", "exit 112", vec![], RestartBehavior::Never);
    let fine = linux_update("R-OK", "exit 0", vec![], RestartBehavior::Never);
    let windows_only = {
        let mut u = linux_update("R-NA", "exit 0", vec![], RestartBehavior::Never);
        u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "windows"));
        u.severity = Severity::Important;
        u
    };
    for u in [disk_full, fine, windows_only] {
        change(&tree, "root", &ChangeOp::Upsert(Object::Update(Box::new(u))));
    }
    let policy = Policy::new(ObjectId::new("all").unwrap(), "All");
    change(&tree, "root", &ChangeOp::Upsert(Object::Policy(Box::new(policy))));
    let past = (now() - 60).to_string();
    for id in ["R-FAIL", "R-OK", "R-NA"] {
        ok(tree.ctl(
            "root",
            &["approve", "--policy", "all", "--update", id, "--deadline", &past],
        ));
    }
    wait_for("approvals at the site", Duration::from_secs(20), || {
        tree.approvals("site") == 3
    });
    let site_addr = tree.nodes["site"].addr();
    for pc in ["pc-a", "pc-b"] {
        let dir = agent_dir(&tree, pc);
        let config = dir.join("agent.toml");
        std::fs::write(&config, agent_config(&dir, &[(&site_addr, 0)])).unwrap();
        let run = run_agent(&config);
        assert_eq!(run["installed"], 1, "{run}");
    }
    wait_for("both computers at the root", Duration::from_secs(30), || {
        let listed = call(&tree, "root", "reports.computers", serde_json::json!({}));
        listed["items"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|c| c["last_report"].as_i64() > Some(0)))
            && counts(&tree, "root", "R-FAIL")["failed"] == 2
    });

    // Every computer of the subtree, without its inventory: site, OS, agent.
    let listed = call(&tree, "root", "reports.computers", serde_json::json!({}));
    let pc = &listed["items"][0];
    assert_eq!(pc["computer"], "pc-a", "{listed}");
    assert_eq!(pc["site"], "site", "{listed}");
    assert_eq!(
        (&pc["os"], &pc["release"], &pc["version"]),
        (&"debian".into(), &"bookworm".into(), &"12".into()),
        "{listed}"
    );
    assert_eq!(pc["agent_version"], env!("CARGO_PKG_VERSION"), "{listed}");
    assert!(
        pc["scan_age_seconds"].as_i64().is_some_and(|a| (0..600).contains(&a)),
        "{listed}"
    );
    // A region's subtree holds them; a sibling region's does not.
    let of = |site: &str| {
        call(&tree, "root", "reports.computers", serde_json::json!({"site": site}))["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((of("region"), of("site"), of("other")), (2, 2, 0));
    let outside = tree.ctl(
        "region",
        &["call", "reports.computers", "--params", r#"{"site": "other"}"#],
    );
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("not in the subtree"),
        "{outside:?}"
    );
    assert_eq!(
        call(
            &tree,
            "root",
            "reports.computers",
            serde_json::json!({"scan_older_than_hours": 1})
        )["items"],
        serde_json::json!([]),
        "both scanned just now"
    );
    // Sorted otherwise than by name: paged by offset.
    let sorted = call(
        &tree,
        "root",
        "reports.computers",
        serde_json::json!({"update": "R-OK", "sort": "site", "descending": true, "limit": 1}),
    );
    assert_eq!(
        (sorted["total_items"].as_u64(), sorted["next_offset"].as_u64()),
        (Some(2), Some(1)),
        "{sorted}"
    );
    assert_eq!(sorted["items"][0]["computer"], "pc-b", "{sorted}");
    assert_eq!(sorted["items"][0]["state"], "installed", "{sorted}");

    // The computers behind a count, each with its reason.
    let failed = call(
        &tree,
        "root",
        "reports.computers",
        serde_json::json!({"update": "R-FAIL", "state": "failed"}),
    );
    let rows = failed["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{failed}");
    assert_eq!(rows[1]["computer"], "pc-b");
    assert_eq!(rows[1]["code"], 112);
    assert!(
        rows[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not enough space on the disk"),
        "{failed}"
    );

    // Compliance: R-OK installed and R-NA not applicable, R-FAIL failed.
    let by_site = call(&tree, "root", "reports.compliance", serde_json::json!({"by": "site"}));
    assert_eq!(by_site["items"][0]["site"], "site", "{by_site}");
    assert_eq!(by_site["items"][0]["percent"], 66.7, "{by_site}");
    assert_eq!(by_site["items"][0]["failed"], 2, "{by_site}");
    let by_update = call(
        &tree,
        "root",
        "reports.compliance",
        serde_json::json!({"by": "update", "site": "region", "sort": "percent"}),
    );
    assert_eq!(by_update["items"][0]["update"], "R-FAIL", "{by_update}");
    assert_eq!(by_update["items"][0]["percent"], 0.0, "{by_update}");
    let important = call(
        &tree,
        "root",
        "reports.compliance",
        serde_json::json!({"by": "severity", "severity": "Important"}),
    );
    assert_eq!(important["overall"]["not_applicable"], 2, "{important}");
    // Narrowed to the computers' operating system and last scan.
    let debian = call(
        &tree,
        "root",
        "reports.compliance",
        serde_json::json!({"by": "site", "os": "debian", "release": "bookworm", "scanned_within_hours": 1}),
    );
    assert_eq!(debian["items"][0]["percent"], 66.7, "{debian}");
    let windows = call(
        &tree,
        "root",
        "reports.compliance",
        serde_json::json!({"os": "Windows 11"}),
    );
    assert_eq!(windows["items"], serde_json::json!([]), "{windows}");
    assert_eq!(windows["overall"]["total"], 0, "{windows}");

    // Failures by installer code, with the code's meaning.
    let failures = call(&tree, "root", "reports.failures", serde_json::json!({}));
    assert_eq!(failures["items"][0]["update"], "R-FAIL", "{failures}");
    assert_eq!(failures["items"][0]["failed"], 2);
    assert_eq!(failures["items"][0]["codes"][0]["code"], 112);
    assert_eq!(failures["items"][0]["sites"][0]["site"], "site");
    assert_eq!(
        failures["by_code"][0]["meaning"],
        "there is not enough space on the disk"
    );

    // One computer from the root, and from its own site with its events.
    let from_root = call(
        &tree,
        "root",
        "reports.computer",
        serde_json::json!({"computer": "pc-a"}),
    );
    assert_eq!(from_root["served_here"], false);
    assert_eq!(from_root["records"].as_array().unwrap().len(), 3, "{from_root}");
    assert_eq!(from_root["computer"]["site"], "site");
    let at_site = call(
        &tree,
        "site",
        "reports.computer",
        serde_json::json!({"computer": "pc-a"}),
    );
    assert_eq!(at_site["served_here"], true);
    assert_eq!(at_site["events_from"], "site");
    let site_events = at_site["events"].as_array().unwrap();
    assert!(!site_events.is_empty(), "{at_site}");
    // From the root, two levels up: the latest events its summary carries,
    // the failed install with its code among them, newest first as at its site.
    assert_eq!(from_root["events_from"], "summary", "{from_root}");
    let root_events = from_root["events"].as_array().unwrap();
    assert!(
        !root_events.is_empty() && root_events.len() <= cascade_core::model::RECENT_EVENTS,
        "{from_root}"
    );
    assert_eq!(
        root_events[..],
        site_events[..root_events.len()],
        "{from_root} {at_site}"
    );
    assert!(
        root_events.iter().any(|e| e["update"] == "R-FAIL" && e["code"] == 112),
        "{from_root}"
    );

    // Today's point of the trend is the compliance now.
    let trend = call(
        &tree,
        "root",
        "reports.trend",
        serde_json::json!({"days": 7, "by": "site"}),
    );
    let points = trend["items"][0]["points"].as_array().unwrap();
    assert_eq!(points.last().unwrap()["percent"], 66.7, "{trend}");

    // Exports: every page of a report, as CSV (here one row per page).
    let csv = ok(tree.ctl(
        "root",
        &["call", "reports.computers", "--params", r#"{"limit": 1}"#, "--csv"],
    ));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("computer,site,agent_version,"), "{csv}");
    assert!(
        lines[1].starts_with("pc-a,site,") && lines[2].starts_with("pc-b,site,"),
        "{csv}"
    );
    let jsonl = ok(tree.ctl("root", &["call", "reports.failures", "--jsonl"]));
    assert_eq!(jsonl.lines().count(), 1, "{jsonl}");
    let refused = tree.ctl(
        "root",
        &["call", "tokens.create", "--params", r#"{"name": "x"}"#, "--csv"],
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only reading operations export"));
}
