//! Who may do what where, on every surface: every operation of the
//! registry (enumerated, so a new one cannot escape) for each role and
//! site scope (admin; site operators of this node, of a child, of a
//! sibling, of the parent; auditor; an agent's and a node's certificate; no
//! credentials), over HTTPS with a token, HTTPS with a client certificate
//! and gRPC, at the root and at a site. Each call carries a parameter no
//! operation takes, so an allowed call stops at "invalid parameters"
//! (proof that authorization let it through) and nothing is written either
//! way: the nodes' change logs and audit logs are checked unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// What a call may come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Past authorization (stopped by the probe parameter).
    Allowed,
    Unauthenticated,
    Forbidden,
}

/// Who calls, as the node should see it.
#[derive(Clone, Debug)]
enum Who {
    Admin,
    Auditor,
    Operator(&'static str),
    Agent,
    Node,
    Nobody,
}

/// Sites above and including each node of the test tree, nearest first.
fn sites_up(node: &str) -> &'static [&'static str] {
    match node {
        "root" => &["root"],
        "east" => &["east", "root"],
        other => panic!("no node {other}"),
    }
}

fn expected(who: &Who, access: cascade_node::api::Access, node: &str) -> Outcome {
    use cascade_node::api::Access;
    match who {
        Who::Nobody => Outcome::Unauthenticated,
        Who::Agent | Who::Node => Outcome::Forbidden,
        Who::Admin => Outcome::Allowed,
        Who::Auditor if access == Access::Read => Outcome::Allowed,
        Who::Auditor => Outcome::Forbidden,
        Who::Operator(site) if sites_up(node).contains(site) && access != Access::Admin => Outcome::Allowed,
        Who::Operator(_) => Outcome::Forbidden,
    }
}

fn http_outcome(status: u16, body: &str) -> Outcome {
    match status {
        400 => Outcome::Allowed,
        401 => Outcome::Unauthenticated,
        403 => Outcome::Forbidden,
        other => panic!("unexpected HTTP status {other}: {body}"),
    }
}

fn grpc_outcome(status: &tonic::Status) -> Outcome {
    match status.code() {
        tonic::Code::InvalidArgument => Outcome::Allowed,
        tonic::Code::Unauthenticated => Outcome::Unauthenticated,
        tonic::Code::PermissionDenied => Outcome::Forbidden,
        other => panic!("unexpected gRPC code {other:?}: {}", status.message()),
    }
}

type Https = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

fn https(config: Arc<rustls::ClientConfig>) -> Https {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config({
            // hyper-rustls sets the ALPN itself.
            let mut config = (*config).clone();
            config.alpn_protocols.clear();
            config
        })
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        ))
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

async fn post(client: &Https, base: &str, op: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let mut request = hyper::Request::post(format!("{base}/api/v1/{op}")).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// What a node has written: its change logs' length and its audit log's.
fn written(tree: &Tree, node: &str) -> (Value, usize) {
    let status: Value = serde_json::from_str(&ok(tree.ctl(node, &["--json", "status"]))).unwrap();
    let audit: Value = serde_json::from_str(&ok(tree.ctl(
        node,
        &["--json", "call", "audit.log", "--params", r#"{"limit": 10000}"#],
    )))
    .unwrap();
    (status["revision"].clone(), audit.as_array().unwrap().len())
}

#[test]
fn every_operation_for_every_role_site_and_surface() {
    let mut tree = Tree::new(&[
        ("root", None),
        ("east", Some("root")),
        ("east-1", Some("east")),
        ("west", Some("root")),
    ]);
    for id in ["root", "east"] {
        tree.top.insert(id.into(), "api_listen = \"127.0.0.1:0\"\n".into());
    }
    tree.start_all();
    let pki = tree.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    for (name, role, site) in [
        ("audrey", "auditor", None),
        ("op-root", "site-operator", Some("root")),
        ("op-east", "site-operator", Some("east")),
        ("op-east-1", "site-operator", Some("east-1")),
        ("op-west", "site-operator", Some("west")),
    ] {
        tree.issue_admin(name, role, site);
    }
    ok(run(&["pki", "issue", "agent", "--id", "pc-1", "--dir", pki_s]));
    // The site records reach east (its operators' scope is decided from them).
    wait_for("the tree at east", Duration::from_secs(20), || {
        ok(tree.ctl("east", &["--json", "call", "sites.tree"])).contains("\"above\":[\"root\"]")
    });

    let certificates: Vec<(Who, Option<(&str, &str)>)> = vec![
        (Who::Admin, Some(("admin-ops.crt", "admin-ops.key"))),
        (Who::Auditor, Some(("admin-audrey.crt", "admin-audrey.key"))),
        (Who::Operator("root"), Some(("admin-op-root.crt", "admin-op-root.key"))),
        (Who::Operator("east"), Some(("admin-op-east.crt", "admin-op-east.key"))),
        (
            Who::Operator("east-1"),
            Some(("admin-op-east-1.crt", "admin-op-east-1.key")),
        ),
        (Who::Operator("west"), Some(("admin-op-west.crt", "admin-op-west.key"))),
        (Who::Agent, Some(("agent-pc-1.crt", "agent-pc-1.key"))),
        (Who::Node, Some(("west.crt", "west.key"))),
        (Who::Nobody, None),
    ];
    let operations = cascade_node::api::operations();
    let probe = json!({"matrix_probe": true}).to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut checked = 0usize;
    for node in ["root", "east"] {
        let before = written(&tree, node);
        let tokens: Vec<(Who, String)> = [
            ("admin", Who::Admin),
            (
                "site-operator",
                Who::Operator(if node == "root" { "root" } else { "east" }),
            ),
            ("auditor", Who::Auditor),
        ]
        .into_iter()
        .map(|(role, who)| {
            (
                who,
                ok(tree.ctl(
                    node,
                    &[
                        "api-token",
                        "create",
                        "--name",
                        &format!("matrix-{role}"),
                        "--role",
                        role,
                    ],
                ))
                .trim()
                .to_owned(),
            )
        })
        .collect();
        let api = format!(
            "https://{}",
            std::fs::read_to_string(tree.nodes[node].data().join("api.addr")).unwrap()
        );
        let grpc_address = tree.nodes[node].addr();
        let ca = pki.join("ca.crt");
        let mut failures = Vec::new();
        runtime.block_on(async {
            // HTTPS with a bearer token.
            let plain = https(client_tls(&ca, None, b"http/1.1"));
            for (who, token) in &tokens {
                for op in operations {
                    let (status, body) = post(&plain, &api, op.name, Some(token), &probe).await;
                    let (got, want) = (http_outcome(status, &body), expected(who, op.access, node));
                    if got != want {
                        failures.push(format!(
                            "{node} https token {who:?} {}: {got:?}, expected {want:?}: {body}",
                            op.name
                        ));
                    }
                    checked += 1;
                }
            }
            // HTTPS and gRPC with each certificate (or none).
            for (who, files) in &certificates {
                let identity = files.map(|(c, k)| (pki.join(c), pki.join(k)));
                let config =
                    |alpn: &[u8]| client_tls(&ca, identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())), alpn);
                let client = https(config(b"http/1.1"));
                let mut admin = admin_client(&grpc_address, config(b"h2")).await;
                for op in operations {
                    let want = expected(who, op.access, node);
                    let (status, body) = post(&client, &api, op.name, None, &probe).await;
                    let got = http_outcome(status, &body);
                    if got != want {
                        failures.push(format!(
                            "{node} https certificate {who:?} {}: {got:?}, expected {want:?}: {body}",
                            op.name
                        ));
                    }
                    let got = match admin
                        .invoke(cascade_node::admin::invoke_request(
                            op.name,
                            &json!({"matrix_probe": true}),
                        ))
                        .await
                    {
                        Ok(reply) => panic!("{node} grpc {who:?} {}: the probe was accepted: {reply:?}", op.name),
                        Err(status) => grpc_outcome(&status),
                    };
                    if got != want {
                        failures.push(format!("{node} grpc {who:?} {}: {got:?}, expected {want:?}", op.name));
                    }
                    checked += 2;
                }
            }
        });
        assert!(
            failures.is_empty(),
            "{} of the calls were decided wrongly:\n{}",
            failures.len(),
            failures.join("\n")
        );
        // The tokens made above are this test's only writes (audited, no change).
        let after = written(&tree, node);
        assert_eq!(after.0, before.0, "{node}: no change was recorded");
        assert_eq!(
            after.1,
            before.1 + tokens.len(),
            "{node}: only the token creations were audited"
        );
    }
    assert!(checked > 2_000, "{checked} calls checked");
}

/// The direct ways in that the old Admin RPCs offered, tried with the
/// real `cascade ctl` as a site operator of a child site at the root:
/// each refused, nothing written.
#[test]
fn a_site_operator_cannot_act_as_enterprise_admin_through_ctl() {
    let mut tree = Tree::new(&[("root", None), ("east", Some("root"))]);
    tree.start_all();
    let pki = tree.path().join("pki");
    tree.issue_admin("eve", "site-operator", Some("east"));
    let before = written(&tree, "root");
    let as_eve = |args: &[&str]| {
        let addr = tree.nodes["root"].addr();
        let mut full = vec!["ctl", "--node", &addr, "--pki", pki.to_str().unwrap(), "--as", "eve"];
        full.extend_from_slice(args);
        run(&full)
    };
    let revoke_admin = serde_json::to_string(&json!({"upsert": {"kind": "revocation", "object": {"id": "ops", "identity": "cascade://admin/ops?role=admin", "reason": "takeover", "at": 1}}})).unwrap();
    let catalog = fixture("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    for args in [
        vec!["approve", "--policy", "p", "--update", "KB5021233"],
        vec!["site", "add", "--id", "rogue"],
        vec!["site", "remove", "--id", "east"],
        vec!["change", "--op", &revoke_admin],
        vec!["import", catalog.to_str().unwrap()],
        vec!["api-token", "create", "--name", "eve", "--role", "admin"],
    ] {
        let out = as_eve(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?} was not refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("outside east's subtree") || stderr.contains("may not operate node root"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(written(&tree, "root"), before, "nothing written at the root");
    // At its own site the operator works, but cannot touch what the root owns.
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB1"]));
    wait_for("the approval at east", Duration::from_secs(20), || {
        ok(tree.ctl("east", &["objects", "--kind", "approval"])).contains("p/KB1")
    });
    let east = tree.nodes["east"].addr();
    let at_east = |args: &[&str]| {
        let mut full = vec!["ctl", "--node", &east, "--pki", pki.to_str().unwrap(), "--as", "eve"];
        full.extend_from_slice(args);
        run(&full)
    };
    ok(at_east(&[
        "call",
        "windows.upsert",
        "--params",
        r#"{"window": {"id": "east-nights", "name": "East nights", "time_zone": "Europe/Berlin", "start": "22:00", "duration_minutes": 240, "days": ["mon"]}}"#,
    ]));
    let out = at_east(&["call", "approvals.delete", "--params", r#"{"id": "p/KB1"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("east may not change") && stderr.contains("belongs to root"),
        "{stderr}"
    );
    assert!(ok(tree.ctl("east", &["objects", "--kind", "approval"])).contains("p/KB1"));
}
