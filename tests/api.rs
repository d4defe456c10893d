//! The workflow API over real HTTPS (curl) and gRPC (`ctl call`) against
//! real node processes: every operation, the roles, bad input, inheritance
//! down the tree, the help page and the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// An HTTPS client of one node's API, through curl, remembering which
/// operations it called.
struct Api<'a> {
    tree: &'a Tree,
    node: String,
    called: &'a RefCell<BTreeSet<String>>,
    /// The first successful response of each operation: the help page's
    /// example responses (docs/api-examples.json).
    examples: &'a RefCell<std::collections::BTreeMap<String, Value>>,
    /// Every successful response, to check against its operation's result
    /// schema.
    results: &'a RefCell<Vec<(String, Value)>>,
}

/// A response shortened for an example: long lists cut to two items, long
/// text cut, secrets hidden.
fn shorten(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().take(2).map(shorten).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "token" {
                        json!("cascade-api1.(secret, shown once)")
                    } else {
                        shorten(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::String(s) if s.len() > 160 => json!(format!("{}…", s.chars().take(160).collect::<String>())),
        other => other.clone(),
    }
}

impl Api<'_> {
    fn base(&self) -> String {
        let addr = std::fs::read_to_string(self.tree.nodes[&self.node].data().join("api.addr")).unwrap();
        format!("https://{addr}")
    }

    fn curl(&self, args: &[&str]) -> (u16, String) {
        self.curl_with(args, "")
    }

    /// curl with `stdin` as its standard input (bodies go there: a catalog
    /// is too long for an argument).
    fn curl_with(&self, args: &[&str], stdin: &str) -> (u16, String) {
        use std::io::Write;
        let ca = self.tree.path().join("pki/ca.crt");
        let mut child = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// POSTs raw text to an operation with a token (or none).
    fn raw(&self, op: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        self.called.borrow_mut().insert(op.to_owned());
        let url = format!("{}/api/v1/{op}", self.base());
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec![
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ];
        if let Some(a) = &auth {
            args.extend(["-H", a]);
        }
        args.push(&url);
        let (code, text) = self.curl_with(&args, body);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code == 200 && !self.examples.borrow().contains_key(op) {
            self.examples.borrow_mut().insert(op.to_owned(), shorten(&value));
        }
        if code == 200 {
            self.results.borrow_mut().push((op.to_owned(), value.clone()));
        }
        (code, value)
    }

    fn call(&self, op: &str, token: &str, params: Value) -> (u16, Value) {
        self.raw(op, Some(token), &params.to_string())
    }

    /// Calls and expects success.
    fn ok(&self, op: &str, token: &str, params: Value) -> Value {
        let (code, body) = self.call(op, token, params);
        assert_eq!(code, 200, "{op}: {body}");
        body
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[&format!("{}{path}", self.base())])
    }
}

#[test]
fn every_operation_over_https_with_roles_inheritance_and_bad_input() {
    let mut tree = Tree::new(&[("root", None), ("child", Some("root")), ("other", Some("root"))]);
    for id in ["root", "child", "other"] {
        tree.top.insert(id.into(), "api_listen = \"127.0.0.1:0\"\n".into());
    }
    tree.enrollment("child");
    tree.start_all();
    let token = |node: &str, name: &str, role: &str| -> String {
        ok(tree.ctl(node, &["api-token", "create", "--name", name, "--role", role]))
            .trim()
            .to_owned()
    };
    let admin = token("root", "alice", "admin");
    let auditor = token("root", "audrey", "auditor");
    let operator = token("child", "oscar", "site-operator");
    let child_admin = token("child", "carol", "admin");
    let called = RefCell::new(BTreeSet::new());
    let examples = RefCell::new(std::collections::BTreeMap::new());
    let results = RefCell::new(Vec::new());
    let root = Api {
        tree: &tree,
        node: "root".into(),
        called: &called,
        examples: &examples,
        results: &results,
    };
    let child = Api {
        tree: &tree,
        node: "child".into(),
        called: &called,
        examples: &examples,
        results: &results,
    };

    // Who am I; credentials.
    let me = root.ok("me", &admin, json!({}));
    assert_eq!(me["caller"]["role"], "admin");
    assert!(me["operations"].as_array().unwrap().len() > 30);
    assert_eq!(
        root.ok("MyPrivileges", &auditor, json!({}))["caller"]["role"],
        "auditor"
    );
    let (code, body) = root.raw("me", None, "{}");
    assert_eq!(code, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("no credentials"));
    let (code, _) = root.call("me", "cascade-api1.not-a-token", json!({}));
    assert_eq!(code, 401);
    // A token is the node's own: the child's token means nothing at the root.
    assert_eq!(root.call("me", &operator, json!({})).0, 401);

    // Catalog import and update search.
    let cvrf = std::fs::read_to_string(fixture("cvrf/cvrfDocument-2022-Dec.trimmed.xml")).unwrap();
    let imported = root.ok("catalog.import", &admin, json!({"name": "dec.xml", "content": cvrf}));
    assert_eq!(imported["format"], "MSRC CVRF");
    let (code, body) = root.call(
        "catalog.import",
        &admin,
        json!({"name": "bad.xml", "content": "<nope/>"}),
    );
    assert_eq!(code, 400, "{body}");
    let critical = root.ok(
        "updates.search",
        &auditor,
        json!({"severities": ["Critical"], "superseded": false, "limit": 5}),
    );
    assert!(critical["total"].as_u64().unwrap() > 0);
    assert!(critical["updates"].as_array().unwrap().len() <= 5);
    let by_text = root.ok("updates.search", &auditor, json!({"text": "kb5021233"}));
    assert_eq!(by_text["updates"][0]["id"], "KB5021233");
    let one = root.ok("updates.get", &auditor, json!({"id": "5021233"}));
    assert_eq!(one["update"]["object"]["id"], "KB5021233");
    assert_eq!(root.call("updates.get", &auditor, json!({"id": "KB1"})).0, 404);

    // Bad input names the field; nothing changes.
    let (code, body) = root.call("updates.search", &auditor, json!({"severities": ["Urgent"]}));
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().starts_with("severities[0]"), "{body}");
    let (code, body) = root.call("updates.search", &auditor, json!({"limit": "ten"}));
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().starts_with("limit"), "{body}");
    let (code, body) = root.call("approvals.list", &auditor, json!({"polcy": "x"}));
    assert_eq!(code, 400);
    assert!(
        body["message"].as_str().unwrap().contains("unknown field `polcy`"),
        "{body}"
    );
    let (code, body) = root.raw("approvals.list", Some(&auditor), "{not json");
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().contains("invalid JSON"), "{body}");
    let (code, _) = root.call("no.such.operation", &auditor, json!({}));
    assert_eq!(code, 404);

    // Windows, policies, approvals; the auditor reads only.
    let (code, body) = root.call(
        "windows.upsert",
        &admin,
        json!({"window": {"id": "nightly", "name": "Nightly", "time_zone": "Mars/Base", "start": "22:00", "duration_minutes": 60}}),
    );
    assert_eq!(code, 400);
    assert!(body["message"].as_str().unwrap().contains("Mars/Base"), "{body}");
    root.ok(
        "windows.upsert",
        &admin,
        json!({"window": {"id": "nightly", "name": "Nightly", "time_zone": "Europe/Berlin", "start": "22:00", "duration_minutes": 240, "overridable": ["start"]}}),
    );
    let (code, body) = root.call(
        "policies.upsert",
        &admin,
        json!({"policy": {"id": "p", "name": "P", "maintenance_windows": ["weekly"]}}),
    );
    assert_eq!(code, 400, "{body}");
    root.ok(
        "policies.upsert",
        &admin,
        json!({"policy": {"id": "workstations", "name": "Workstations", "maintenance_windows": ["nightly"], "enabled": true}}),
    );
    assert_eq!(
        root.ok("policies.get", &auditor, json!({"id": "workstations"}))["status"],
        "local"
    );
    assert_eq!(
        root.ok("policies.list", &auditor, json!({})).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        root.ok("windows.list", &auditor, json!({})).as_array().unwrap().len(),
        1
    );
    assert_eq!(
        root.call("windows.delete", &admin, json!({"id": "nightly"})).0,
        409,
        "a policy uses it"
    );
    root.ok(
        "windows.upsert",
        &admin,
        json!({"window": {"id": "spare", "name": "Spare", "time_zone": "UTC", "start": "01:00", "duration_minutes": 30}}),
    );
    root.ok("windows.delete", &admin, json!({"id": "spare"}));
    let (code, body) = root.call(
        "approvals.create",
        &auditor,
        json!({"policy": "workstations", "update": "KB5021233"}),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        root.call(
            "approvals.create",
            &admin,
            json!({"policy": "nope", "update": "KB5021233"})
        )
        .0,
        404
    );
    root.ok(
        "approvals.create",
        &admin,
        json!({"policy": "workstations", "update": "KB5021233", "deadline": 1_900_000_000}),
    );
    root.ok(
        "approvals.create",
        &admin,
        json!({"policy": "workstations", "update": "KB5021237"}),
    );
    assert_eq!(
        root.ok("approvals.list", &auditor, json!({"policy": "workstations"}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    root.ok("approvals.delete", &admin, json!({"id": "workstations/KB5021237"}));
    assert_eq!(
        root.call("approvals.delete", &admin, json!({"id": "workstations/KB5021237"}))
            .0,
        404
    );

    // Custom severities.
    root.ok(
        "custom_severities.create",
        &admin,
        json!({"id": "p1", "name": "This week", "rank": 100}),
    );
    root.ok(
        "custom_severities.create",
        &admin,
        json!({"id": "p2", "name": "This month", "rank": 50}),
    );
    let levels = root.ok("GetCustomSeverityLevels", &auditor, json!({}));
    assert_eq!(levels[0]["id"], "p1");
    assert_eq!(
        root.ok("GetCustomSeverities", &auditor, json!({}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        root.ok("custom_severities.list", &auditor, json!({}))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    root.ok(
        "custom_severities.assign",
        &admin,
        json!({"update": "KB5021233", "severity": "p2"}),
    );
    root.ok(
        "SetSeverityLevel",
        &admin,
        json!({"update": "KB5021233", "level": "p1"}),
    );
    let tagged = root.ok("updates.search", &auditor, json!({"custom_severities": ["p1"]}));
    assert_eq!(tagged["total"], 1);
    assert_eq!(
        root.call(
            "custom_severities.assign",
            &admin,
            json!({"update": "KB5021233", "severity": "p9"})
        )
        .0,
        404
    );
    root.ok("custom_severities.delete", &admin, json!({"id": "p2"}));

    // Settings: overridable at the root, overridden at the child by its
    // site operator, who cannot change what the root owns.
    root.ok(
        "settings.set",
        &admin,
        json!({"id": "compliance.max_scan_age_hours", "value": 48, "overridable": true}),
    );
    root.ok(
        "settings.set",
        &admin,
        json!({"id": "reboot.message", "value": "Restarting for updates"}),
    );
    root.ok("SetProperty", &admin, json!({"id": "ui.banner", "value": "Production"}));
    root.ok(
        "SetProperties",
        &admin,
        json!({"properties": {"ui.colour": "blue", "ui.motd": "hello"}}),
    );
    assert_eq!(
        root.ok("GetProperty", &auditor, json!({"id": "ui.banner"}))["object"]["object"]["value"],
        "Production"
    );
    wait_for("settings at the child", Duration::from_secs(20), || {
        child
            .call("settings.list", &operator, json!({}))
            .1
            .as_array()
            .is_some_and(|a| a.len() == 5)
    });
    let status = |api: &Api, id: &str| -> Value {
        api.ok("settings.list", &operator_or(api, &operator, &admin), json!({}))
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["object"]["object"]["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(
        status(&child, "compliance.max_scan_age_hours"),
        "inherited, overridable"
    );
    assert_eq!(status(&child, "reboot.message"), "inherited, locked");
    child.ok(
        "settings.set",
        &operator,
        json!({"id": "compliance.max_scan_age_hours", "value": 12}),
    );
    assert_eq!(
        status(&child, "compliance.max_scan_age_hours"),
        "inherited, overridden here"
    );
    let (code, body) = child.call(
        "settings.set",
        &operator,
        json!({"id": "reboot.message", "value": "no"}),
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = child.call("policies.delete", &operator, json!({"id": "workstations"}));
    assert_eq!(code, 403, "the child does not own the root's policy: {body}");
    child.ok(
        "objects.override",
        &operator,
        json!({"kind": "maintenance_window", "id": "nightly", "fields": {"start": "23:30"}}),
    );
    let windows = child.ok("effective.list", &operator, json!({"kind": "maintenance_window"}));
    assert_eq!(windows[0]["object"]["object"]["start"], "23:30");
    assert_eq!(windows[0]["status"], "inherited, overridden here");
    let (code, _) = child.call(
        "objects.override",
        &operator,
        json!({"kind": "maintenance_window", "id": "nightly", "fields": {"time_zone": "UTC"}}),
    );
    assert_eq!(code, 403, "time_zone is not overridable");
    child.ok(
        "objects.clear_override",
        &operator,
        json!({"kind": "maintenance_window", "id": "nightly"}),
    );
    assert_eq!(
        child.ok("windows.list", &operator, json!({}))[0]["object"]["object"]["start"],
        "22:00"
    );
    // A site operator may not register sites or make tokens.
    assert_eq!(child.call("sites.add", &operator, json!({"id": "grandchild"})).0, 403);
    assert_eq!(
        child
            .call("tokens.create", &operator, json!({"name": "x", "role": "admin"}))
            .0,
        403
    );
    // Local policies at the child are the site operator's.
    child.ok(
        "policies.upsert",
        &operator,
        json!({"policy": {"id": "child-local", "name": "Child only", "enabled": true}}),
    );
    child.ok("policies.delete", &operator, json!({"id": "child-local"}));

    // Hierarchy.
    let tree_view = root.ok("sites.tree", &auditor, json!({}));
    assert_eq!(tree_view["node"], "root");
    assert!(tree_view["subtree"].as_array().unwrap().contains(&json!("child")));
    assert_eq!(child.ok("sites.tree", &operator, json!({}))["above"], json!(["root"]));
    root.ok("sites.add", &admin, json!({"id": "spare", "name": "Spare"}));
    let (code, body) = child.call("sites.add", &child_admin, json!({"id": "root"}));
    assert_eq!(code, 409, "a cycle: {body}");
    root.ok("sites.remove", &admin, json!({"id": "spare"}));
    wait_for("the child's link at the root", Duration::from_secs(20), || {
        root.ok("links.list", &auditor, json!({})).as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x["peer"] == "child" && x["status"]["connected"] == true)
        })
    });
    root.ok("links.replicate_now", &admin, json!({}));
    let status = root.ok("node.status", &auditor, json!({}));
    assert_eq!(status["node"], "root");
    assert!(status["children"].as_array().unwrap().contains(&json!("child")));
    let summary = ok(tree.ctl("root", &["status"]));
    assert!(
        summary.starts_with("node root") && summary.contains("children: child"),
        "{summary}"
    );

    // Computers and compliance (no agents yet: empty, and unknown computers are 404).
    assert_eq!(child.call("computers.list", &operator, json!({})).1["total"], 0);
    for op in ["computers.inventory", "computers.plan", "computers.compliance"] {
        assert_eq!(child.call(op, &operator, json!({"computer": "pc-9"})).0, 404, "{op}");
    }
    root.ok("compliance.by_update", &auditor, json!({}));
    root.ok("compliance.by_update", &auditor, json!({"update": "KB5021233"}));
    root.ok("compliance.by_site", &auditor, json!({}));
    root.ok("compliance.by_severity", &auditor, json!({}));

    // Altiris names.
    let created = root.ok(
        "CreateUpdatePolicy",
        &admin,
        json!({"name": "December Rollup", "bulletins": ["KB5021233", "5021237"]}),
    );
    assert_eq!(created["policy"], "december-rollup");
    root.ok(
        "CreateUpdatePolicyViaUpdates",
        &admin,
        json!({"name": "Servers", "updates": ["KB5021233"]}),
    );
    assert_eq!(
        root.call(
            "CreateUpdatePolicyViaUpdates",
            &admin,
            json!({"name": "X", "updates": ["KB1"]})
        )
        .0,
        404
    );
    let resolved = root.ok("ResolveToUpdates", &auditor, json!({"bulletins": ["KB5021233", "KB1"]}));
    assert_eq!(resolved[0]["found"], true);
    assert_eq!(resolved[1]["found"], false);
    let policies = root.ok("ResolveToPolicies", &auditor, json!({"updates": ["KB5021233"]}));
    assert_eq!(policies["KB5021233"].as_array().unwrap().len(), 3);
    let withdrawn = root.ok("DisableBulletins", &admin, json!({"bulletins": ["KB5021237"]}));
    assert_eq!(withdrawn["approvals_withdrawn"], 1);

    // Content held here (the CVRF sample names no files), tasks, what-if.
    let status = root.ok("content.status", &auditor, json!({}));
    assert!(
        status["updates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["staged"] == true && u["files"] == 0)
    );
    assert_eq!(status["cache"]["files"], 0);
    // Content comes from the import directory only: a path outside it is
    // refused in the same words whether it exists or not, with nothing of
    // the file (its hash, size or existence) in the answer.
    let (code, missing) = root.call("content.add", &admin, json!({"path": "/nonexistent/dir"}));
    assert_eq!(code, 400, "{missing}");
    for outside in [
        fixture("linux/os-release"),
        "/etc".into(),
        tree.import_dir().join("../pki"),
    ] {
        let (code, body) = root.call("content.add", &admin, json!({"path": outside}));
        assert_eq!(code, 400, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("not a file or directory inside"), "{message}");
        assert_eq!(
            message.replace(outside.to_str().unwrap(), "P"),
            missing["message"].as_str().unwrap().replace("/nonexistent/dir", "P"),
        );
        assert!(!message.contains("sha256"), "{message}");
    }
    std::fs::copy(fixture("linux/os-release"), tree.import_dir().join("os-release")).unwrap();
    let added = root.ok("content.add", &admin, json!({"path": "os-release"}));
    assert!(
        added[0]["error"]
            .as_str()
            .unwrap()
            .contains("not the content of any update"),
        "{added}"
    );
    assert_eq!(
        root.ok("IsStaged", &auditor, json!({"updates": ["KB5021233"]}))["KB5021233"]["staged"],
        true
    );
    assert_eq!(root.call("IsStaged", &auditor, json!({"updates": ["KB1"]})).0, 404);
    assert_eq!(
        root.ok("GetStagedUpdates", &auditor, json!({})),
        json!([]),
        "nothing with content"
    );
    assert_eq!(root.ok("GetNonstagedUpdates", &auditor, json!({})), json!([]));
    // Nothing lacks content here, so nothing is fetched (tests/agent.rs
    // stages content from a parent).
    let ensured = root.ok("content.ensure", &admin, json!({"updates": ["KB5021233"]}));
    assert_eq!(ensured["transfers"], json!([]));
    assert_eq!(
        root.ok("EnsureStaged", &admin, json!({"bulletins": ["KB5021233"]}))["updates"][0]["staged"],
        true
    );
    assert_eq!(
        root.call("content.ensure", &auditor, json!({"updates": ["KB5021233"]}))
            .0,
        403
    );
    let task = root.ok("tasks.run", &admin, json!({"task": "compact"}));
    let task_id = task["id"].as_u64().unwrap();
    wait_for("the compaction task", Duration::from_secs(10), || {
        root.ok("tasks.status", &auditor, json!({"id": task_id}))["state"] == "succeeded"
    });
    let replicate = root.ok("RunTask", &admin, json!({"task": "replicate_now"}));
    let replicate_id = replicate["id"].as_u64().unwrap();
    wait_for("the replicate task", Duration::from_secs(10), || {
        root.ok("GetTaskInstanceStatus", &auditor, json!({"id": replicate_id}))["state"] == "succeeded"
    });
    assert_eq!(root.call("tasks.run", &admin, json!({"task": "reboot"})).0, 400);
    assert_eq!(root.call("tasks.run", &auditor, json!({"task": "compact"})).0, 403);
    let what_if = root.ok(
        "policies.what_if",
        &auditor,
        json!({"policy": {"id": "pilot", "name": "Pilot", "updates": {"severities": ["Critical"]}}}),
    );
    assert_eq!(what_if["computers_targeted"], 0, "the root serves no computers itself");
    let (code, body) = root.call(
        "policies.what_if",
        &auditor,
        json!({"policy": {"id": "pilot", "name": "Pilot", "maintenance_windows": ["weekly"]}}),
    );
    assert_eq!(code, 400, "{body}");

    // Staged rollouts (tests/agent.rs drives them with agents).
    assert_eq!(
        root.ok("rollout.status", &auditor, json!({})),
        json!([]),
        "no policy has rings"
    );
    assert_eq!(
        root.call(
            "rollout.promote",
            &admin,
            json!({"policy": "workstations", "update": "KB5021233"})
        )
        .0,
        404
    );
    root.ok(
        "policies.upsert",
        &admin,
        json!({"policy": {"id": "staged", "name": "Staged", "enabled": true, "rings": [{"name": "pilot", "targets": {"groups": ["pilot"]}, "soak_hours": 24}, {"name": "production"}]}}),
    );
    root.ok(
        "approvals.create",
        &admin,
        json!({"policy": "staged", "update": "KB5021233"}),
    );
    let promoted = root.ok(
        "rollout.promote",
        &admin,
        json!({"policy": "staged", "update": "KB5021233"}),
    );
    assert_eq!(promoted["open_rings"], 2);
    assert_eq!(
        root.call(
            "rollout.promote",
            &admin,
            json!({"policy": "staged", "update": "KB5021233"})
        )
        .0,
        409
    );

    // One simulated computer at the child, for the computer operations.
    let inventories = fixture("windows-inventory");
    ok(run(&[
        "agent",
        "simulate",
        "--count",
        "1",
        "--runs",
        "1",
        "--prefix",
        "api",
        "--inventories",
        inventories.to_str().unwrap(),
        "--node",
        &tree.nodes["child"].addr(),
        "--pki",
        tree.path().join("pki").to_str().unwrap(),
    ]));
    let listed = child.ok("computers.list", &operator, json!({}));
    assert_eq!(listed["computers"][0]["agent"]["id"], "api-0");
    assert_eq!(listed["computers"][0]["scan"]["state"], "current");
    let inventory = child.ok("computers.inventory", &operator, json!({"computer": "api-0"}));
    assert_eq!(inventory["inventory"]["os"]["family"], "windows");
    let plan = child.ok("computers.plan", &operator, json!({"computer": "api-0"}));
    assert_eq!(plan["computer"], "api-0");
    let states = child.ok("computers.compliance", &operator, json!({"computer": "api-0"}));
    assert_eq!(states["computer"], "api-0");

    // Reports at the root over the child's computer.
    wait_for("api-0 in the root's reports", Duration::from_secs(20), || {
        root.ok("reports.computers", &auditor, json!({}))["items"][0]["computer"] == "api-0"
    });
    let one = root.ok("reports.computer", &auditor, json!({"computer": "api-0"}));
    assert_eq!(one["computer"]["site"], "child", "{one}");
    assert_eq!(one["computer"]["os"], "Windows 10", "{one}");
    assert_eq!(
        root.call("reports.computer", &auditor, json!({"computer": "pc-9"})).0,
        404
    );
    let by_site = root.ok("reports.compliance", &auditor, json!({"by": "site_severity"}));
    assert_eq!(by_site["items"][0]["site"], "child", "{by_site}");
    let (code, body) = root.call("reports.compliance", &auditor, json!({"by": "planet"}));
    assert!(
        code == 400 && body["message"].as_str().unwrap().starts_with("by:"),
        "{body}"
    );
    root.ok("reports.failures", &auditor, json!({"code": "0x80070643"}));
    let (code, body) = root.call("reports.failures", &auditor, json!({"code": "0xZZ"}));
    assert!(
        code == 400 && body["message"].as_str().unwrap().contains("hexadecimal"),
        "{body}"
    );
    root.ok("reports.trend", &auditor, json!({"days": 90, "by": "severity"}));
    assert_eq!(root.call("reports.trend", &auditor, json!({"days": 0})).0, 400);
    // Any report as a CSV download, every page of it.
    let (code, csv) = root.curl_with(
        &[
            "-X",
            "POST",
            "-H",
            "Accept: text/csv",
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Authorization: Bearer {auditor}"),
            "--data-binary",
            "@-",
            &format!("{}/api/v1/reports.computers", root.base()),
        ],
        r#"{"limit": 1}"#,
    );
    assert_eq!(code, 200, "{csv}");
    assert!(
        csv.starts_with("computer,site,") && csv.contains("\r\napi-0,child,"),
        "{csv}"
    );

    // Audit: who, when, what; the child's changes replicate up.
    let log = root.ok("audit.log", &auditor, json!({"limit": 500}));
    assert!(log.as_array().unwrap().iter().any(|e| {
        e["entry"]["action"] == "approvals.create"
            && e["entry"]["actor"]
                .as_str()
                .unwrap()
                .starts_with("alice (admin, token)")
    }));
    wait_for("the child's audit entries at the root", Duration::from_secs(20), || {
        root.ok("audit.log", &auditor, json!({"limit": 1000}))
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"]["node"] == "child" && e["entry"]["actor"].as_str().unwrap().starts_with("oscar"))
    });

    // Signed changes and certificates: the node's key and freshness, and
    // revocations that replicate down.
    let status = root.ok("security.status", &auditor, json!({}));
    assert_eq!(status["signing_key"].as_str().unwrap().len(), 64, "{status}");
    assert_eq!(status["freshness"]["stale"], false, "{status}");
    let lost = json!({"identity": "cascade://agent/pc-lost-1", "reason": "laptop stolen"});
    assert_eq!(root.call("certificates.revoke", &auditor, lost.clone()).0, 403);
    assert_eq!(root.call("certificates.revoke", &admin, json!({"reason": "x"})).0, 400);
    assert_eq!(
        root.call(
            "certificates.revoke",
            &admin,
            json!({"identity": "cascade://node/root", "reason": "x"})
        )
        .0,
        409
    );
    assert_eq!(
        root.call("certificates.revoke", &admin, json!({"serial": "zz", "reason": "x"}))
            .0,
        400
    );
    root.ok("certificates.revoke", &admin, lost);
    wait_for("the revocation at the child", Duration::from_secs(20), || {
        child
            .ok("certificates.revocations", &operator, json!({}))
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    assert_eq!(
        child
            .call(
                "certificates.reinstate",
                &child_admin,
                json!({"id": "identity:cascade://agent/pc-lost-1"})
            )
            .0,
        403,
        "the root's revocation is the root's to withdraw"
    );
    root.ok(
        "certificates.reinstate",
        &admin,
        json!({"id": "identity:cascade://agent/pc-lost-1"}),
    );
    assert_eq!(
        root.call("certificates.reinstate", &admin, json!({"id": "identity:nothing"}))
            .0,
        404
    );

    // Tokens.
    assert!(root.ok("tokens.list", &admin, json!({})).as_array().unwrap().len() >= 2);
    let extra = root.ok(
        "tokens.create",
        &admin,
        json!({"name": "temp", "role": "auditor", "ttl_hours": 1}),
    );
    let temp = extra["token"].as_str().unwrap().to_owned();
    root.ok("me", &temp, json!({}));
    assert_eq!(root.ok("tokens.revoke", &admin, json!({"name": "temp"}))["revoked"], 1);
    assert_eq!(root.call("me", &temp, json!({})).0, 401);
    assert_eq!(root.call("tokens.list", &auditor, json!({})).0, 403);

    // Moving the child under the other region: unregistered at the root
    // (which owns its site record), registered there, then moved.
    assert_eq!(
        root.call(
            "sites.move",
            &admin,
            json!({"parent": "127.0.0.1:1", "parent_id": "other"})
        )
        .0,
        409,
        "the root has no parent"
    );
    assert_eq!(
        child
            .call(
                "sites.move",
                &child_admin,
                json!({"parent": "nowhere", "parent_id": "other"})
            )
            .0,
        400
    );
    assert_eq!(
        child
            .call(
                "sites.move",
                &operator,
                json!({"parent": "127.0.0.1:1", "parent_id": "other"})
            )
            .0,
        403
    );
    root.ok("sites.remove", &admin, json!({"id": "child"}));
    wait_for(
        "the child's record gone at the other region",
        Duration::from_secs(20),
        || {
            ok(tree.ctl("other", &["objects", "--kind", "site"]))
                .matches("\"child\"")
                .count()
                == 0
        },
    );
    ok(tree.ctl("other", &["site", "add", "--id", "child"]));
    let other_addr = tree.nodes["other"].addr();
    let moved = child.ok(
        "sites.move",
        &child_admin,
        json!({"parent": other_addr, "parent_id": "other"}),
    );
    assert_eq!(moved["was"], tree.nodes["root"].addr());
    wait_for("the child under the other region", Duration::from_secs(30), || {
        child.ok("sites.tree", &child_admin, json!({}))["above"] == json!(["other", "root"])
    });
    wait_for("the other region's link to the child", Duration::from_secs(20), || {
        ok(tree.ctl("other", &["--json", "links"])).contains("\"peer\":\"child\"")
    });

    // What `cascade ctl` drives is in the registry too: raw changes (admins
    // only), objects, agents, enrollment tokens (at the site's own node).
    let recorded = root.ok(
        "changes.record",
        &admin,
        json!({"op": {"upsert": {"kind": "approval", "object": {"id": "raw/KB5021233", "policy": "raw", "update": "KB5021233"}}}}),
    );
    assert_eq!(recorded["origin"], "root");
    assert_eq!(
        root.call(
            "changes.record",
            &auditor,
            json!({"op": {"delete": {"kind": "approval", "id": "raw/KB5021233"}}})
        )
        .0,
        403
    );
    let approvals = root.ok("objects.list", &auditor, json!({"kind": "approval"}));
    assert!(approvals.to_string().contains("raw/KB5021233"), "{approvals}");
    assert_eq!(root.call("objects.list", &auditor, json!({"kind": "nonsense"})).0, 400);
    assert_eq!(root.ok("agents.list", &auditor, json!({})), json!([]));
    let enrollment = child.ok(
        "agent_tokens.create",
        &operator,
        json!({"site": "child", "ttl_seconds": 600}),
    );
    assert!(enrollment["token"].as_str().unwrap().len() > 20, "{enrollment}");
    assert_eq!(
        child.call("agent_tokens.create", &operator, json!({"site": "root"})).0,
        400
    );
    assert_eq!(
        root.call("agent_tokens.create", &admin, json!({"site": "root"})).0,
        409,
        "the root enrolls no agents"
    );

    // Admin client certificates work too, and gRPC has the same operations.
    // A browser holding the certificate cannot be made to write by a
    // foreign page: a form's content type and a foreign Origin are refused
    // before anything runs.
    let pki = tree.path().join("pki");
    let with_certificate = |extra: &[&str], op: &str, body: &str| {
        let mut args = vec![
            "--cert".to_owned(),
            pki.join("admin-ops.crt").display().to_string(),
            "--key".to_owned(),
            pki.join("admin-ops.key").display().to_string(),
            "-X".to_owned(),
            "POST".to_owned(),
            "--data".to_owned(),
            body.to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{}/api/v1/{op}", root.base()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        root.curl(&args)
    };
    let form_write = r#"{"name": "csrf", "bulletins": ["KB5021233"], "enabled": true}"#;
    let (code, body) = with_certificate(&["-H", "Content-Type: text/plain"], "CreateUpdatePolicy", form_write);
    assert_eq!(code, 415, "{body}");
    let (code, body) = with_certificate(
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Origin: https://attacker.example",
        ],
        "CreateUpdatePolicy",
        form_write,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cross-origin"), "{body}");
    let (code, body) = with_certificate(
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Sec-Fetch-Site: cross-site",
        ],
        "CreateUpdatePolicy",
        form_write,
    );
    assert_eq!(code, 403, "{body}");
    let policies = root.ok("policies.list", &auditor, json!({}));
    assert!(!policies.to_string().contains("csrf"), "nothing written: {policies}");
    let (code, body) = with_certificate(&["-H", "Content-Type: application/json"], "me", "{}");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"via\":\"certificate\""), "{body}");
    // Every reply carries the security headers; API replies are not cached.
    for path in ["/", "/help", "/api/v1", "/openapi.json"] {
        let (_, head) = root.curl(&["-s", "-D", "-", "-o", "/dev/null", &format!("{}{path}", root.base())]);
        let head = head.to_ascii_lowercase();
        for header in [
            "content-security-policy: default-src 'none'; script-src 'self'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "strict-transport-security: max-age=",
            "cache-control: no-store",
        ] {
            assert!(head.contains(header), "{path}: {header} in {head}");
        }
    }
    let grpc = ok(tree.ctl(
        "root",
        &[
            "--json",
            "call",
            "updates.search",
            "--params",
            r#"{"text": "KB5021233"}"#,
        ],
    ));
    let grpc: Value = serde_json::from_str(&grpc).unwrap();
    assert_eq!(grpc["updates"][0]["id"], "KB5021233");
    let by_title = root.ok(
        "updates.search",
        &auditor,
        json!({"sort": "title", "descending": true, "limit": 3}),
    );
    let titles: Vec<&str> = by_title["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.len() == 3 && titles.windows(2).all(|w| w[0] >= w[1]),
        "{titles:?}"
    );
    assert_eq!(root.call("updates.search", &auditor, json!({"sort": "colour"})).0, 400);
    let refused = tree.ctl("root", &["call", "updates.search", "--params", r#"{"limit": "x"}"#]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("limit"));

    // The help page lists every operation with a form; OpenAPI describes each.
    let (code, help) = root.get("/help");
    assert_eq!(code, 200);
    let (_, openapi) = root.get("/openapi.json");
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    let (_, listing) = root.get("/api/v1");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let all: BTreeSet<String> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &all {
        assert!(
            help.contains(&format!("data-op=\"{name}\"")),
            "help has a form for {name}"
        );
        assert!(
            openapi["paths"][format!("/api/v1/{name}")]["post"]["requestBody"].is_object(),
            "OpenAPI describes {name}"
        );
    }
    assert!(!help.contains("http://") && !help.contains("cdn"), "no outside assets");
    let (code, console) = root.get("/");
    assert_eq!(code, 200);
    assert!(console.contains("Cascade console"));
    let untested: Vec<&String> = all.iter().filter(|n| !called.borrow().contains(*n)).collect();
    assert!(untested.is_empty(), "operations without a test: {untested:?}");

    // Every successful response is what OpenAPI says the operation returns
    // (the schemas come from the result types), and every operation
    // returned one at least once.
    let validated = check_results(&openapi, &results.borrow());
    let without: Vec<&String> = all.iter().filter(|n| !validated.contains(n.as_str())).collect();
    assert!(without.is_empty(), "operations that never succeeded here: {without:?}");

    // The help page's example responses are real ones from this test:
    // CASCADE_WRITE_EXAMPLES=1 writes them; otherwise every operation must
    // have one in the committed file.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api-examples.json");
    if std::env::var_os("CASCADE_WRITE_EXAMPLES").is_some() {
        let text = serde_json::to_string_pretty(&*examples.borrow()).unwrap();
        std::fs::write(&path, text + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let without: Vec<&String> = all.iter().filter(|n| committed.get(n.as_str()).is_none()).collect();
    assert!(
        without.is_empty(),
        "docs/api-examples.json lacks {without:?}: run with CASCADE_WRITE_EXAMPLES=1"
    );
    assert!(help.contains("Example response"));
}

/// Checks each response against its operation's result schema in the
/// OpenAPI document (JSON Schema 2020-12, references into its components);
/// returns the operations checked.
fn check_results(openapi: &Value, results: &[(String, Value)]) -> BTreeSet<String> {
    let mut validators = std::collections::BTreeMap::new();
    let mut checked = BTreeSet::new();
    for (op, value) in results {
        let validator = validators.entry(op.clone()).or_insert_with(|| {
            let schema = &openapi["paths"][format!("/api/v1/{op}")]["post"]["responses"]["200"]["content"]
                ["application/json"]["schema"];
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "allOf": [schema],
                "components": openapi["components"],
            });
            jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{op}: the result schema is not valid: {e}"))
        });
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .take(5)
            .collect();
        assert!(
            errors.is_empty(),
            "{op}: the response is not what its schema says: {errors:?}\n{value}"
        );
        checked.insert(op.clone());
    }
    checked
}

#[test]
fn a_response_of_another_shape_than_its_schema_fails_the_check() {
    let openapi = json!({
        "paths": {"/api/v1/x": {"post": {"responses": {"200": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/X"}
        }}}}}}},
        "components": {"schemas": {"X": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": ["string", "null"]}},
            "required": ["a"]
        }}}
    });
    let good = [("x".to_owned(), json!({"a": 1, "b": null}))];
    assert_eq!(check_results(&openapi, &good).len(), 1);
    for bad in [json!({"a": "1"}), json!({"b": "x"}), json!([1])] {
        let results = [("x".to_owned(), bad.clone())];
        let outcome = std::panic::catch_unwind(|| check_results(&openapi, &results));
        assert!(outcome.is_err(), "{bad} passed");
    }
}

fn operator_or(api: &Api, operator: &str, admin: &str) -> String {
    if api.node == "child" { operator } else { admin }.to_owned()
}
