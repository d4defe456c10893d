//! A tree of real `cascade node` processes on 127.0.0.1 with ports the
//! system picks: replication down and up, restarts, and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_store::Store;
use support::*;

const SEVEN: &[(&str, Option<&str>)] = &[
    ("root", None),
    ("east", Some("root")),
    ("west", Some("root")),
    ("east-1", Some("east")),
    ("east-2", Some("east")),
    ("west-1", Some("west")),
    ("west-2", Some("west")),
];

const LEAVES: [&str; 4] = ["east-1", "east-2", "west-1", "west-2"];

#[test]
fn seven_nodes_approvals_down_compliance_up_and_a_killed_middle_node() {
    let mut tree = Tree::new(SEVEN);
    // The leaves' agents have reported before the tree comes up.
    for leaf in LEAVES {
        std::fs::create_dir_all(tree.nodes[leaf].data()).unwrap();
        tree.seed_records(leaf, 2_500);
    }
    tree.start_all();

    // 1. An approval made at the root reaches all four leaves.
    ok(tree.ctl("root", &["approve", "--policy", "baseline", "--update", "KB5021233"]));
    wait_for("the approval at every leaf", Duration::from_secs(30), || {
        LEAVES.iter().all(|l| tree.approvals(l) == 1)
    });

    // 2. 10,000 records from the leaves reach the root exactly once.
    wait_for("10,000 records at the root", Duration::from_secs(60), || {
        tree.records("root") == 10_000
    });
    assert_eq!(tree.records("east"), 5_000);
    assert_eq!(tree.records("west"), 5_000);

    // 3. An intermediate node killed with SIGKILL while changes flow, then
    // restarted: the tree converges, nothing lost or duplicated.
    for n in 0..5 {
        ok(tree.ctl(
            "root",
            &[
                "approve",
                "--policy",
                "baseline",
                "--update",
                &format!("KB{}", 6_000_000 + n),
            ],
        ));
    }
    tree.nodes.get_mut("east").unwrap().kill();
    for n in 5..10 {
        ok(tree.ctl(
            "root",
            &[
                "approve",
                "--policy",
                "baseline",
                "--update",
                &format!("KB{}", 6_000_000 + n),
            ],
        ));
    }
    tree.restart("east");
    wait_for("11 approvals at every leaf", Duration::from_secs(60), || {
        LEAVES.iter().all(|l| tree.approvals(l) == 11)
    });
    assert_eq!(tree.records("root"), 10_000, "nothing duplicated by the restart");
    // Links are up both ways again.
    let links = tree.json("east", &["--json", "links"]);
    let up: Vec<_> = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["direction"] == "down" || l["direction"] == "up")
        .collect();
    assert_eq!(up.len(), 2);
    // Each says whether it is stalled and how often it was.
    assert!(
        up.iter().all(|l| l["stalled"].is_boolean() && l["stalls"].is_u64()),
        "{up:?}"
    );
    wait_for("east's parent links connected", Duration::from_secs(30), || {
        tree.json("east", &["--json", "links"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| (l["direction"] == "down" || l["direction"] == "up") && l["connected"] == true)
            .count()
            == 2
    });
}

#[test]
fn strangers_are_refused_and_nothing_is_written() {
    let mut tree = Tree::new(&[("root", None), ("site-a", Some("root"))]);
    tree.start_all();
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB1"]));
    let pki = tree.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    // A node of another CA, a valid node certificate for a site that is not
    // registered, an expired one, and an agent certificate.
    let other = tree.path().join("other-pki");
    ok(run(&["pki", "init", "--dir", other.to_str().unwrap()]));
    ok(run(&[
        "pki",
        "issue",
        "node",
        "--id",
        "site-a",
        "--dir",
        other.to_str().unwrap(),
    ]));
    ok(run(&[
        "pki",
        "issue",
        "admin",
        "--name",
        "ops",
        "--role",
        "admin",
        "--dir",
        other.to_str().unwrap(),
    ]));
    ok(run(&["pki", "issue", "node", "--id", "site-z", "--dir", pki_s]));
    ok(run(&[
        "pki", "issue", "node", "--id", "site-old", "--dir", pki_s, "--days", "0",
    ]));
    ok(run(&["pki", "issue", "agent", "--id", "pc-1", "--dir", pki_s]));
    ok(run(&[
        "pki", "issue", "admin", "--name", "auditor", "--role", "auditor", "--dir", pki_s,
    ]));
    let root = tree.nodes["root"].addr();

    // The admin API refuses another CA's admin outright (TLS) and an auditor's write.
    let out = run(&[
        "ctl",
        "--node",
        &root,
        "--pki",
        other.to_str().unwrap(),
        "--as",
        "ops",
        "approve",
        "--policy",
        "p",
        "--update",
        "KB2",
    ]);
    assert!(!out.status.success());
    let out = run(&[
        "ctl", "--node", &root, "--pki", pki_s, "--as", "auditor", "approve", "--policy", "p", "--update", "KB2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(auditor) may not call changes.record"));

    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let attempt = |dir: &Path, stem: &str| -> String {
        let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        let cert = std::fs::read_to_string(dir.join(format!("{stem}.crt"))).unwrap();
        let key = std::fs::read_to_string(dir.join(format!("{stem}.key"))).unwrap();
        let root = root.clone();
        runtime.block_on(async move {
            let channel = match cascade_node::channel(&root, None, &ca, &cert, &key).await {
                Ok(c) => c,
                Err(e) => return format!("connect: {e}"),
            };
            let mut client = cascade_proto::v1::hierarchy_client::HierarchyClient::new(channel);
            let items = serde_json::to_vec(&Vec::<cascade_core::model::Upward>::new()).unwrap();
            let report = tokio_stream::iter(vec![cascade_proto::v1::UpBatch {
                seq: 1,
                items,
                snapshot: false,
                records: vec![forged_record()],
                reports: Vec::new(),
                subtree: None,
                applied: Default::default(),
            }]);
            let subscribe = client
                .subscribe(cascade_proto::with_protocol(
                    cascade_proto::v1::SubscribeRequest::default(),
                ))
                .await;
            let report = client.report(cascade_proto::with_protocol(report)).await;
            match (subscribe, report) {
                (Err(a), Err(b)) => format!("{:?}: {} / {:?}: {}", a.code(), a.message(), b.code(), b.message()),
                other => format!("accepted: {other:?}"),
            }
        })
    };
    let foreign = attempt(&other, "site-a");
    assert!(!foreign.starts_with("accepted"), "{foreign}");
    let unregistered = attempt(&pki, "site-z");
    assert!(unregistered.contains("not registered as a child"), "{unregistered}");
    let expired = attempt(&pki, "site-old");
    assert!(!expired.starts_with("accepted"), "{expired}");
    let agent = attempt(&pki, "agent-pc-1");
    assert!(agent.contains("is not a node"), "{agent}");
    // A registered child reporting for a site outside its subtree (its
    // sibling) is refused.
    ok(tree.ctl("root", &["site", "add", "--id", "site-b"]));
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let cert = std::fs::read_to_string(pki.join("site-a.crt")).unwrap();
    let key = std::fs::read_to_string(pki.join("site-a.key")).unwrap();
    let refused = runtime.block_on(async {
        let channel = cascade_node::channel(&root, None, &ca, &cert, &key).await.unwrap();
        let mut client = cascade_proto::v1::hierarchy_client::HierarchyClient::new(channel);
        let batch = cascade_proto::v1::UpBatch {
            seq: 1_000_000,
            items: Vec::new(),
            snapshot: false,
            records: vec![forged_record()],
            reports: Vec::new(),
            subtree: None,
            applied: Default::default(),
        };
        let mut acks = client
            .report(cascade_proto::with_protocol(tokio_stream::iter(vec![batch])))
            .await
            .unwrap()
            .into_inner();
        acks.message().await
    });
    let status = refused.expect_err("a report for a sibling's site");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("outside its subtree"), "{}", status.message());
    // Nor for a site it never declared below itself.
    let refused = runtime.block_on(async {
        let channel = cascade_node::channel(&root, None, &ca, &cert, &key).await.unwrap();
        let mut client = cascade_proto::v1::hierarchy_client::HierarchyClient::new(channel);
        let mut record = forged_record();
        record.site = "site-nowhere".into();
        let batch = cascade_proto::v1::UpBatch {
            seq: 1_000_001,
            items: Vec::new(),
            snapshot: false,
            records: vec![record],
            reports: Vec::new(),
            subtree: None,
            applied: Default::default(),
        };
        let mut acks = client
            .report(cascade_proto::with_protocol(tokio_stream::iter(vec![batch])))
            .await
            .unwrap()
            .into_inner();
        acks.message().await
    });
    assert!(
        refused
            .expect_err("a report for an undeclared site")
            .message()
            .contains("site-nowhere, outside its subtree")
    );
    // Nothing was written: the root still has its one approval and no records.
    assert_eq!(tree.approvals("root"), 1);
    assert_eq!(tree.records("root"), 0);
    // The registered child is unaffected.
    wait_for("the approval at site-a", Duration::from_secs(30), || {
        tree.approvals("site-a") == 1
    });
}

/// A record claiming to come from site-b.
fn forged_record() -> cascade_proto::v1::ComplianceRecord {
    cascade_proto::v1::ComplianceRecord {
        computer: "pc-9".into(),
        update: "KB1".into(),
        site: "site-b".into(),
        state: cascade_proto::v1::ComplianceState::Installed as i32,
        severity: cascade_proto::v1::Severity::Low as i32,
        counter: 1,
        ..Default::default()
    }
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let tree = Tree::new(&[("root", None)]);
    let write = |text: &str| {
        let p = tree.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = run(&["node", "run", "--config", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let base = "id = \"root\"\nlisten = \"127.0.0.1:0\"\ndata = \"d\"\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/root.crt\"\nkey = \"pki/root.key\"\n";
    let err = write(&format!("colour = \"blue\"\n{base}"));
    assert!(err.contains("unknown field `colour`"), "{err}");
    let err = write(&base.replace("127.0.0.1:0", "localhost"));
    assert!(err.contains("`listen`"), "{err}");
    let err = write(&base.replace("pki/root.key", "pki/missing.key"));
    assert!(err.contains("`tls.key`") && err.contains("missing.key"), "{err}");
    let err = write(&base.replace("id = \"root\"", "id = \"other\""));
    assert!(err.contains("`tls.cert`") && err.contains("not node other"), "{err}");
    let err = write(
        &format!("{base}heartbeat_seconds = 0\n")
            .replace("[tls]", "heartbeat_seconds = 0\n[tls]")
            .replacen("heartbeat_seconds = 0\n", "", 1),
    );
    assert!(err.contains("`heartbeat_seconds`"), "{err}");
    let err = write(&base.replace("[tls]", "log_hold_days = 0\n[tls]"));
    assert!(
        err.contains("`log_hold_days`") && err.contains("between 1 and 3650"),
        "{err}"
    );
}

#[test]
fn a_moved_leaf_keeps_its_history_and_cycles_are_refused() {
    let mut tree = Tree::new(&[
        ("root", None),
        ("east", Some("root")),
        ("west", Some("root")),
        ("leaf", Some("east")),
    ]);
    std::fs::create_dir_all(tree.nodes["leaf"].data()).unwrap();
    tree.seed_records("leaf", 300);
    tree.start_all();
    ok(tree.ctl(
        "east",
        &[
            "change",
            "--op",
            r#"{"upsert":{"kind":"setting","object":{"id":"east-only","value":1}}}"#,
        ],
    ));
    wait_for("the leaf's records at the root", Duration::from_secs(30), || {
        tree.records("root") == 300
    });
    wait_for("east's setting at the leaf", Duration::from_secs(30), || {
        tree.json("leaf", &["objects", "--kind", "setting"])
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });

    // A move that would make a cycle is refused: root is above east.
    let out = tree.ctl("east", &["site", "add", "--id", "root"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would make a cycle"));

    // Move the leaf from east to west.
    ok(tree.ctl("east", &["site", "remove", "--id", "leaf"]));
    ok(tree.ctl("west", &["site", "add", "--id", "leaf"]));
    tree.nodes.get_mut("leaf").unwrap().kill();
    tree.parents.insert("leaf".into(), Some("west".into()));
    tree.restart("leaf");
    // West gets the leaf's whole history; the root keeps it, counted once.
    wait_for("the leaf's history at west", Duration::from_secs(30), || {
        tree.records("west") == 300
    });
    assert_eq!(tree.records("root"), 300);
    // What only the old branch had is gone from the leaf; the root's
    // changes still arrive.
    wait_for("east's setting gone from the leaf", Duration::from_secs(30), || {
        tree.json("leaf", &["objects", "--kind", "setting"])
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB1"]));
    wait_for("the root's approval at the moved leaf", Duration::from_secs(30), || {
        tree.approvals("leaf") == 1
    });
}

/// A TCP proxy that injects the faults of a WAN: added delay, refused
/// connections, connections reset, and stalls (connected, nothing moves).
mod fault {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Mode {
        Pass,
        Delay(Duration),
        Refuse,
        Stall,
    }

    pub struct Proxy {
        pub addr: SocketAddr,
        mode: Arc<Mutex<Mode>>,
        connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
        runtime: tokio::runtime::Runtime,
    }

    impl Proxy {
        pub fn start(upstream: SocketAddr) -> Proxy {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
            let addr = listener.local_addr().unwrap();
            let mode = Arc::new(Mutex::new(Mode::Pass));
            let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
            let (m, c) = (mode.clone(), connections.clone());
            runtime.spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if *m.lock().unwrap() == Mode::Refuse {
                        drop(inbound);
                        continue;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = tokio::spawn(pump(ri, wo, m.clone()));
                    let b = tokio::spawn(pump(ro, wi, m.clone()));
                    c.lock().unwrap().extend([a.abort_handle(), b.abort_handle()]);
                }
            });
            Proxy {
                addr,
                mode,
                connections,
                runtime,
            }
        }

        pub fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }

        /// Cuts every open connection.
        pub fn reset(&self) {
            for c in self.connections.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.reset();
            let _ = &self.runtime;
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mode: Arc<Mutex<Mode>>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Bounded: a stall holds bytes until the mode changes.
            for _ in 0..600 {
                let current = *mode.lock().unwrap();
                match current {
                    Mode::Stall => tokio::time::sleep(Duration::from_millis(100)).await,
                    Mode::Delay(d) => {
                        tokio::time::sleep(d).await;
                        break;
                    }
                    _ => break,
                }
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}

#[test]
fn converges_after_delay_refusal_reset_and_stall() {
    let mut tree = Tree::new(&[("root", None), ("mid", Some("root")), ("leaf", Some("mid"))]);
    std::fs::create_dir_all(tree.nodes["leaf"].data()).unwrap();
    tree.seed_records("leaf", 2_000);
    // Start root and mid, then the leaf behind a fault proxy to mid.
    let (root, mid) = ("root".to_owned(), "mid".to_owned());
    tree.write_config(&root);
    tree.nodes.get_mut(&root).unwrap().start();
    ok(tree.ctl(&root, &["site", "add", "--id", "mid"]));
    tree.write_config(&mid);
    tree.nodes.get_mut(&mid).unwrap().start();
    ok(tree.ctl(&mid, &["site", "add", "--id", "leaf"]));
    let proxy = fault::Proxy::start(tree.nodes["mid"].addr().parse().unwrap());
    let config = format!(
        "id = \"leaf\"\nlisten = \"127.0.0.1:0\"\ndata = \"leaf-data\"\nheartbeat_seconds = 1\n[parent]\naddress = \"{}\"\nid = \"mid\"\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/leaf.crt\"\nkey = \"pki/leaf.key\"\n",
        proxy.addr
    );
    std::fs::write(tree.path().join("leaf.toml"), config).unwrap();
    tree.nodes.get_mut("leaf").unwrap().start();

    // Three revisions published at the root while the link misbehaves.
    proxy.set(fault::Mode::Delay(Duration::from_millis(150)));
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB1"]));
    std::thread::sleep(Duration::from_millis(500));
    proxy.reset();
    proxy.set(fault::Mode::Refuse);
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB2"]));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.set(fault::Mode::Stall);
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB3"]));
    std::thread::sleep(Duration::from_secs(3));
    // Heal, and ask the leaf to replicate now rather than wait out its backoff.
    proxy.set(fault::Mode::Pass);
    let _ = tree.ctl("leaf", &["replicate-now"]);
    wait_for("three approvals at the leaf", Duration::from_secs(60), || {
        tree.approvals("leaf") == 3
    });
    wait_for("the leaf's 2,000 records at the root", Duration::from_secs(60), || {
        tree.records("root") == 2_000
    });
    assert_eq!(tree.records("mid"), 2_000, "nothing duplicated on the way");
}

#[test]
fn health_answers_and_sigterm_stops_cleanly() {
    let mut tree = Tree::new(&[("root", None)]);
    tree.start_all();
    let pki = tree.path().join("pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let (ca, cert, key) = (read("ca.crt"), read("admin-ops.crt"), read("admin-ops.key"));
    let addr = tree.nodes["root"].addr();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let channel = cascade_node::channel(&addr, None, &ca, &cert, &key).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "cascade.v1.Hierarchy".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut child = tree.nodes.get_mut("root").unwrap().child.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // Its store opens again: it was closed cleanly.
    assert!(Store::open_existing(&tree.nodes["root"].data().join("store")).is_ok());
}

#[test]
fn link_status_is_stored_and_exported_as_metrics() {
    let mut tree = Tree::new(&[("root", None), ("site-a", Some("root"))]);
    tree.start_all();
    // Give site-a a metrics address and restart it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tree.nodes.get_mut("site-a").unwrap().kill();
    tree.write_config("site-a");
    let config = tree.path().join("site-a.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("metrics_listen = \"127.0.0.1:{port}\"\n{text}")).unwrap();
    tree.nodes.get_mut("site-a").unwrap().start();
    ok(tree.ctl("root", &["approve", "--policy", "p", "--update", "KB1"]));
    wait_for("the approval at site-a", Duration::from_secs(30), || {
        tree.approvals("site-a") == 1
    });

    let scrape = || -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    wait_for("link metrics", Duration::from_secs(30), || {
        let body = scrape();
        body.contains("cascade_link_connected{")
            && body.contains("direction=\"down\"")
            && body.contains("cascade_origin_applied_seq{origin=\"root\"}")
    });
    let body = scrape();
    assert!(body.contains("cascade_outbox_pending"), "{body}");
    assert!(body.contains("cascade_changes_applied_total"), "{body}");

    // The link status outlives the process.
    std::thread::sleep(Duration::from_secs(3));
    tree.nodes.get_mut("site-a").unwrap().kill();
    let store = Store::open_existing(&tree.nodes["site-a"].data().join("store")).unwrap();
    let stored = store.link_status().unwrap().expect("stored link status").to_string();
    assert!(stored.contains("\"down\"") && stored.contains("\"up\""), "{stored}");
}
