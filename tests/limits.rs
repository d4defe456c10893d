//! Resources a caller controls are bounded before it is known: silent
//! connections cannot exhaust a node's file descriptors, and bodies of
//! callers without credentials (or of operations that take parameters
//! only) are refused before they are read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn api_address(tree: &Tree, node: &str) -> String {
    std::fs::read_to_string(tree.nodes[node].data().join("api.addr")).unwrap()
}

#[test]
fn silent_connections_do_not_keep_an_admin_out_of_a_node_with_few_descriptors() {
    let mut tree = Tree::new(&[("root", None)]);
    tree.top.insert("root".into(), "api_listen = \"127.0.0.1:0\"\n".into());
    tree.nodes.get_mut("root").unwrap().open_files = Some(1024);
    tree.start_all();
    let token = ok(tree.ctl("root", &["api-token", "create", "--name", "alice", "--role", "admin"]))
        .trim()
        .to_owned();
    let grpc = tree.nodes["root"].addr();
    let api = api_address(&tree, "root");
    let ca = tree.path().join("pki/ca.crt");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 1,100 TLS connections to each port, handshaken and then silent.
    let held = runtime.block_on(async {
        let config = client_tls(&ca, None, b"h2");
        let mut held = Vec::new();
        for address in [&grpc, &api] {
            let mut opened = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while opened < 1_100 && Instant::now() < deadline {
                let Ok(tcp) = tokio::net::TcpStream::connect(address.as_str()).await else {
                    continue;
                };
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await {
                    held.push(tls);
                }
                opened += 1;
            }
        }
        held
    });
    assert!(held.len() > 2_000, "{} connections made", held.len());
    // An admin still gets answers at once, over gRPC and over HTTPS.
    let started = Instant::now();
    let status: Value = serde_json::from_str(&ok(tree.ctl("root", &["--json", "status"]))).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--data",
            "{}",
            &format!("https://{api}/api/v1/me"),
        ])
        .output()
        .unwrap();
    let me: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        me["caller"]["name"],
        "alice",
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered in {:?}",
        started.elapsed()
    );
    let connections = &status["connections"];
    let max = connections["grpc"]["max"].as_u64().unwrap();
    assert_eq!(max, 1024 / 3, "a third of the open-file limit each: {connections}");
    assert_eq!(connections["open_file_limit"], 1024);
    assert!(connections["grpc"]["open"].as_u64().unwrap() <= max, "{connections}");
    assert!(connections["grpc"]["evicted"].as_u64().unwrap() > 0, "{connections}");
    assert!(connections["api"]["evicted"].as_u64().unwrap() > 0, "{connections}");
    drop(held);
}

#[test]
fn bodies_are_refused_before_they_are_read_unless_the_caller_may_send_them() {
    let mut tree = Tree::new(&[("root", None)]);
    tree.top.insert("root".into(), "api_listen = \"127.0.0.1:0\"\n".into());
    tree.start_all();
    let pki = tree.path().join("pki");
    tree.issue_admin("audrey", "auditor", None);
    let grpc = tree.nodes["root"].addr();
    let ca = pki.join("ca.crt");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = "x".repeat(60 << 20);
    runtime.block_on(async {
        let import = json!({"name": "big.xml", "content": big});
        // No certificate: refused as unauthenticated, whatever the size.
        let mut nobody = admin_client(&grpc, client_tls(&ca, None, b"h2")).await;
        let refused = nobody
            .invoke(cascade_node::admin::invoke_request("catalog.import", &import))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        // An auditor may not import: refused before the 60 MB are read.
        let auditor = (pki.join("admin-audrey.crt"), pki.join("admin-audrey.key"));
        let mut audrey = admin_client(&grpc, client_tls(&ca, Some((&auditor.0, &auditor.1)), b"h2")).await;
        let refused = audrey
            .invoke(cascade_node::admin::invoke_request("catalog.import", &import))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        // An operation that takes parameters takes no more than 1 MB of them.
        let admin = (pki.join("admin-ops.crt"), pki.join("admin-ops.key"));
        let mut ops = admin_client(&grpc, client_tls(&ca, Some((&admin.0, &admin.1)), b"h2")).await;
        let refused = ops
            .invoke(cascade_node::admin::invoke_request(
                "updates.search",
                &json!({"text": "x".repeat(2 << 20)}),
            ))
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Ok);
        assert!(refused.message().contains("limit"), "{refused:?}");
        // The name in the metadata decides; the body may not name another.
        let mut request = cascade_node::admin::invoke_request("me", &json!({}));
        request.get_mut().operation = "tokens.create".into();
        let refused = audrey.invoke(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        // Without the metadata nothing is decided, so nothing runs.
        let refused = ops
            .invoke(cascade_proto::v1::InvokeRequest {
                operation: "me".into(),
                params: b"{}".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("cascade-operation"), "{refused:?}");
    });
    // Over HTTPS: 60 MB without a token is answered 401 (or cut) without
    // being read, and the node answers the next caller as before.
    let api = api_address(&tree, "root");
    let body = tree.path().join("big.json");
    std::fs::write(
        &body,
        format!("{{\"name\": \"big.xml\", \"content\": \"{}\"}}", "x".repeat(60 << 20)),
    )
    .unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            "--cacert",
        ])
        .arg(&ca)
        .args(["-X", "POST", "-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://{api}/api/v1/catalog.import"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(code == "401" || code == "000", "HTTP {code}");
    assert_eq!(
        ok(tree.ctl("root", &["objects", "--kind", "update"])).trim(),
        "[]",
        "nothing imported"
    );
}

/// A WSUS document nested 300,000 deep (5.7 MB) and one nested 200 deep,
/// imported at a running root: each refused with the limit named, and the
/// node goes on (the first aborted the process, the second was stored and
/// then read as "node store is corrupt").
#[test]
fn hostile_nesting_in_an_import_is_refused_and_the_node_goes_on() {
    let mut tree = Tree::new(&[("root", None)]);
    tree.start_all();
    let document = |depth: usize| {
        let leaf = r#"<bar:RegDword Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Cascade" Value="V" Comparison="EqualTo" Data="1"/>"#;
        format!(
            r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update" xmlns:lar="http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules" xmlns:bar="http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules">
<upd:UpdateIdentity UpdateID="0a51549b-4e86-4a26-97d4-9e3567f24ea1" RevisionNumber="1" />
<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>Deep</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>
<upd:ApplicabilityRules><upd:IsInstallable>{}{leaf}{}</upd:IsInstallable></upd:ApplicabilityRules>
</upd:Update>"#,
            "<lar:Not>".repeat(depth),
            "</lar:Not>".repeat(depth)
        )
    };
    for depth in [300_000, 200] {
        let file = tree.path().join(format!("deep-{depth}.xml"));
        std::fs::write(&file, document(depth)).unwrap();
        let out = tree.ctl("root", &["import", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "depth {depth}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("deeper than"), "depth {depth}: {stderr}");
        assert!(!stderr.contains("corrupt"), "depth {depth}: {stderr}");
        // The node answers, with nothing imported.
        assert_eq!(ok(tree.ctl("root", &["objects", "--kind", "update"])).trim(), "[]");
    }
}
