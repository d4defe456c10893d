//! Update content down a tree of real node processes: pulled through only
//! where a computer needs it, one transfer for many requests, the vendor's
//! URL at the root, eviction under a cache limit, and a bad copy never
//! handed on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use cascade_core::UpdateId;
use cascade_core::model::{ChangeOp, Object};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{Classification, Content, InstallCommand, RestartBehavior, Severity, Update};
use serde_json::{Value, json};
use support::*;

/// Bytes that do not compress or repeat.
fn payload(size: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn update_with(id: &str, bytes: &[u8], url: Option<String>, supersedes: &[&str]) -> Update {
    let mut u = Update::new(
        UpdateId::new(id),
        format!("Content test {id}"),
        Classification::SecurityUpdate,
    );
    u.vendor = "Example".into();
    u.severity = Severity::Important;
    u.restart = RestartBehavior::Never;
    u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "linux"));
    u.supersedes = supersedes.iter().map(|s| UpdateId::new(s)).collect();
    u.install = Some(InstallCommand {
        program: "/bin/sh".into(),
        arguments: vec![
            "-c".into(),
            "test -s \"$1\"".into(),
            "installer".into(),
            "{content}".into(),
        ],
        exit_codes: vec![],
    });
    u.content = vec![Content {
        file_name: format!("{}.bin", id.to_ascii_lowercase()),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        url,
    }];
    u
}

fn call(tree: &Tree, node: &str, op: &str, params: Value) -> Value {
    let out = ok(tree.ctl(node, &["--json", "call", op, "--params", &params.to_string()]));
    serde_json::from_str(&out).unwrap()
}

fn cache(tree: &Tree, node: &str) -> Value {
    call(tree, node, "content.status", json!({}))["cache"].clone()
}

/// An agent of `pc` at `site` whose runs print their summary.
fn agent(tree: &Tree, pc: &str, site: &str) -> PathBuf {
    let dir = agent_dir(tree, pc);
    let path = dir.join("agent.toml");
    std::fs::write(&path, agent_config(&dir, &[(&tree.nodes[site].addr(), 0)])).unwrap();
    path
}

/// A one-file HTTP server standing in for the vendor's download site.
fn vendor(body: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ex-url.bin", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        // One request is all the root makes.
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (url, handle)
}

#[test]
fn content_flows_only_where_it_is_needed_once_per_node() {
    let mut tree = Tree::new(&[
        ("root", None),
        ("region", Some("root")),
        ("site-a", Some("region")),
        ("site-b", Some("region")),
    ]);
    // site-a keeps at most 7 MB: EX-NEW (3 MB) pushes out the 5 MB EX-OLD it supersedes.
    tree.top
        .insert("site-a".into(), "content_cache_bytes = 7000000\n".into());
    // The vendor's server of this test is on loopback, over plain HTTP.
    tree.extra.insert(
        "root".into(),
        "[vendor]\nallow_hosts = [\"127.0.0.1\"]\nallow_http = true\nallow_private_addresses = true\n".into(),
    );
    tree.start_all();

    let old = payload(5_000_000, 1);
    let new = payload(3_000_000, 2);
    let big = payload(50 << 20, 3);
    let from_vendor = payload(1_000_000, 4);
    let bad = payload(100_000, 5);
    let (url, vendor_thread) = vendor(from_vendor.clone());
    let updates = [
        update_with("EX-OLD", &old, None, &[]),
        update_with("EX-NEW", &new, None, &["EX-OLD"]),
        update_with("EX-BIG", &big, None, &[]),
        update_with("EX-URL", &from_vendor, Some(url), &[]),
        update_with("EX-BAD", &bad, None, &[]),
    ];
    for u in &updates {
        let op = ChangeOp::Upsert(Object::Update(Box::new(u.clone())));
        ok(tree.ctl("root", &["change", "--op", &serde_json::to_string(&op).unwrap()]));
    }
    // The root holds the files the vendor published (EX-URL comes from
    // its URL); EX-BAD's file is damaged.
    let downloads = tree.import_dir().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    for (name, bytes) in [
        ("old.bin", &old),
        ("new.bin", &new),
        ("big.bin", &big),
        ("notes.txt", &b"x".to_vec()),
    ] {
        std::fs::write(downloads.join(name), bytes).unwrap();
    }
    let added = call(&tree, "root", "content.add", json!({"path": downloads}));
    assert_eq!(
        added
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["sha256"].is_string())
            .count(),
        3,
        "{added}"
    );
    assert!(added.to_string().contains("not the content of any update"), "{added}");
    let mut damaged = bad.clone();
    damaged[7] ^= 1;
    std::fs::write(
        tree.nodes["root"].data().join("content").join(sha256_hex(&bad)),
        &damaged,
    )
    .unwrap();

    // Site A's computers get EX-OLD, EX-NEW, EX-URL and EX-BAD; site B's EX-BIG.
    let site_a =
        json!({"policy": {"id": "site-a-only", "name": "Site A", "enabled": true, "targets": {"sites": ["site-a"]}}});
    let site_b_policy =
        json!({"policy": {"id": "site-b-only", "name": "Site B", "enabled": true, "targets": {"sites": ["site-b"]}}});
    call(&tree, "root", "policies.upsert", site_a);
    call(&tree, "root", "policies.upsert", site_b_policy);
    for (policy, update) in [
        ("site-a-only", "EX-OLD"),
        ("site-a-only", "EX-URL"),
        ("site-a-only", "EX-BAD"),
        ("site-b-only", "EX-BIG"),
    ] {
        ok(tree.ctl("root", &["approve", "--policy", policy, "--update", update]));
    }
    wait_for("approvals at the sites", Duration::from_secs(20), || {
        tree.approvals("site-a") == 4 && tree.approvals("site-b") == 4
    });

    // site-b: 50 requests at once for the 50 MB update, one transfer from the region.
    let pc_b = agent(&tree, "pc-b", "site-b");
    let pki = tree.path().join("pki");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).unwrap();
    let (ca, cert, key) = (read("ca.crt"), read("agent-pc-b.crt"), read("agent-pc-b.key"));
    let site_b = tree.nodes["site-b"].addr();
    let big_sha = sha256_hex(&big);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let received: Vec<(u64, Option<String>)> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..50 {
            let (ca, cert, key, site_b, sha) = (ca.clone(), cert.clone(), key.clone(), site_b.clone(), big_sha.clone());
            tasks.spawn(async move {
                let channel = cascade_agent::connect::channel(&site_b, &ca, Some((&cert, &key)))
                    .await
                    .unwrap();
                let mut client = cascade_proto::v1::agents_client::AgentsClient::new(channel);
                let mut stream = client
                    .content(cascade_proto::v1::ContentRequest { sha256: sha, offset: 0 })
                    .await
                    .unwrap()
                    .into_inner();
                let mut total = 0u64;
                let mut hasher = (n == 0).then(<sha2::Sha256 as sha2::Digest>::new);
                while let Some(chunk) = stream.message().await.unwrap() {
                    total += chunk.data.len() as u64;
                    if let Some(h) = hasher.as_mut() {
                        sha2::Digest::update(h, &chunk.data);
                    }
                }
                let hash = hasher.map(|h| {
                    sha2::Digest::finalize(h)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                });
                (total, hash)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    assert!(
        received.iter().all(|(n, _)| *n == big.len() as u64),
        "every request got the whole file"
    );
    assert_eq!(received.iter().find_map(|(_, h)| h.clone()), Some(big_sha.clone()));
    assert_eq!(cache(&tree, "site-b")["transfers"], 1, "one transfer from the region");
    assert_eq!(cache(&tree, "site-b")["fetched_bytes"], big.len() as u64);
    assert_eq!(cache(&tree, "region")["fetched_bytes"], big.len() as u64);
    assert_eq!(cache(&tree, "root")["served_bytes"], big.len() as u64);
    assert_eq!(
        run_agent(&pc_b)["installed"],
        1,
        "pc-b needs only EX-BIG, now cached at site-b"
    );
    assert_eq!(
        cache(&tree, "site-b")["transfers"],
        1,
        "the agent's download was served from the cache"
    );

    // site-a: its computer pulls EX-OLD and EX-URL through the region;
    // EX-BAD's damaged copy is refused everywhere on the way.
    let pc_a = agent(&tree, "pc-a", "site-a");
    let first = run_agent(&pc_a);
    assert_eq!(first["installed"], 2, "{first}");
    assert_eq!(first["failed"], 1, "EX-BAD: {first}");
    for node in ["root", "region", "site-a"] {
        assert!(
            !tree.nodes[node].data().join("content").join(sha256_hex(&bad)).exists() || node == "root",
            "no verified copy of EX-BAD at {node}"
        );
    }
    let agents = tree.json("site-a", &["--json", "agents"]);
    assert!(
        agents.to_string().contains("hash mismatch"),
        "the agent's event names it: {agents}"
    );
    vendor_thread.join().unwrap();
    assert_eq!(
        cache(&tree, "root")["fetched_bytes"],
        from_vendor.len() as u64,
        "EX-URL from the vendor"
    );
    // site-b never received site-a's content.
    let b_files = cache(&tree, "site-b")["files"].clone();
    assert_eq!(b_files, 1, "only EX-BIG at site-b");

    // EX-NEW supersedes EX-OLD: under site-a's 7 MB limit (6 MB held) the
    // superseded file makes room for it.
    ok(tree.ctl("root", &["approve", "--policy", "site-a-only", "--update", "EX-NEW"]));
    wait_for("EX-NEW approved at site-a", Duration::from_secs(20), || {
        tree.approvals("site-a") == 5
    });
    let status_before = cache(&tree, "site-a");
    let second = run_agent(&pc_a);
    let status_after = cache(&tree, "site-a");
    assert!(
        status_after["evicted"].as_u64().unwrap() > status_before["evicted"].as_u64().unwrap(),
        "{status_before} {status_after} {second}"
    );
    assert!(
        !tree.nodes["site-a"]
            .data()
            .join("content")
            .join(sha256_hex(&old))
            .exists(),
        "EX-OLD went"
    );
    assert_eq!(second["installed"], 1, "EX-NEW: {second}");
    assert_eq!(status_after["bytes"], (new.len() + from_vendor.len()) as u64);
    // site-a never held EX-BIG, site-b never site-a's files.
    assert!(!tree.nodes["site-a"].data().join("content").join(&big_sha).exists());
}

#[test]
fn a_node_that_cannot_write_refuses_new_downloads_and_keeps_serving_its_cache() {
    let mut tree = Tree::new(&[("root", None), ("site", Some("root"))]);
    // The site may write no file larger than 3 MB: a 5 MB download fails
    // as on a full disk (its store stays far below the limit).
    tree.nodes.get_mut("site").unwrap().file_size_limit = Some(3_000_000);
    tree.start_all();
    let small = payload(1_000_000, 11);
    let large = payload(5_000_000, 12);
    for u in [
        update_with("EX-SMALL", &small, None, &[]),
        update_with("EX-LARGE", &large, None, &[]),
    ] {
        let op = ChangeOp::Upsert(Object::Update(Box::new(u)));
        ok(tree.ctl("root", &["change", "--op", &serde_json::to_string(&op).unwrap()]));
    }
    let files = tree.import_dir().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("small.bin"), &small).unwrap();
    std::fs::write(files.join("large.bin"), &large).unwrap();
    call(&tree, "root", "content.add", json!({"path": files}));
    call(
        &tree,
        "root",
        "policies.upsert",
        json!({"policy": {"id": "all", "name": "All", "enabled": true}}),
    );
    for update in ["EX-SMALL", "EX-LARGE"] {
        ok(tree.ctl("root", &["approve", "--policy", "all", "--update", update]));
    }
    wait_for("approvals at the site", Duration::from_secs(20), || {
        tree.approvals("site") == 2
    });
    let pc = agent(&tree, "pc-full", "site");
    let first = run_agent(&pc);
    assert_eq!(
        (first["installed"].as_u64(), first["failed"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    let events = tree.json("site", &["--json", "agents"]).to_string();
    assert!(
        events.contains("File too large") || events.contains("os error 27"),
        "the refusal is named: {events}"
    );
    assert!(
        !tree.nodes["site"]
            .data()
            .join("content")
            .join(sha256_hex(&large))
            .exists()
    );
    // The node is up and still serves what it holds.
    let second = tree.path().join("pc-second");
    let config = agent(&tree, "pc-second", "site");
    let again = run_agent(&config);
    assert_eq!(again["installed"], 1, "EX-SMALL from the cache: {again}");
    assert!(second.exists());
    assert_eq!(
        again["failed"], 1,
        "EX-LARGE is refused again, with the same reason: {again}"
    );
    assert!(
        ok(tree.ctl("site", &["status"])).starts_with("node site"),
        "the node is up"
    );
}

/// The root fetches vendor content over HTTPS from the hosts its
/// configuration allows, on public addresses: a catalog that names a
/// loopback or internal URL gets a refusal that says what was refused,
/// and the far side is never contacted.
#[test]
fn vendor_urls_outside_the_allow_list_are_refused_without_a_request() {
    let mut tree = Tree::new(&[("root", None)]);
    tree.start_all();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let bytes = payload(1000, 21);
    let urls = [
        format!("http://127.0.0.1:{port}/secret"),
        format!("https://127.0.0.1:{port}/secret"),
        format!("https://localhost:{port}/secret"),
        "https://metadata.internal/latest".to_owned(),
        "ftp://download.windowsupdate.com/x.cab".to_owned(),
    ];
    for (n, url) in urls.iter().enumerate() {
        let mut u = update_with(&format!("EX-SSRF-{n}"), &bytes, Some(url.clone()), &[]);
        u.content[0].sha256 = sha256_hex(format!("{n}").as_bytes());
        let op = ChangeOp::Upsert(Object::Update(Box::new(u)));
        ok(tree.ctl("root", &["change", "--op", &serde_json::to_string(&op).unwrap()]));
        let out = tree.ctl(
            "root",
            &[
                "--json",
                "call",
                "content.ensure",
                "--params",
                &json!({"updates": [format!("EX-SSRF-{n}")]}).to_string(),
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("refused"), "{url}: {text}");
        assert!(!text.contains("answered") && !text.contains("sha256 "), "{url}: {text}");
    }
    assert!(listener.accept().is_err(), "the loopback server was contacted");
}

/// A third-party update end to end: a winget manifest imported at the root,
/// approved; its installer (a script checking its switches) served by the
/// test's vendor on 127.0.0.1. winget gives no installer size: the site's
/// first request has the root download it (held to the content limit,
/// verified by its sha256) and publish the update again with the size;
/// the file then flows down, and an agent at the site whose software list
/// has the older version runs it with the silent switch.
#[test]
fn a_winget_update_from_import_to_an_installer_run_with_its_switches() {
    let mut tree = Tree::new(&[("root", None), ("site", Some("root"))]);
    tree.extra.insert(
        "root".into(),
        "[vendor]\nallow_hosts = [\"127.0.0.1\"]\nallow_http = true\nallow_private_addresses = true\n".into(),
    );
    tree.start_all();
    // The installer: a script that checks the switches it is given (the
    // nullsoft default, /S) and says it ran.
    let pc = agent_dir(&tree, "pc-w");
    let ran = pc.join("installer-ran");
    let mut installer = format!(
        "#!/bin/sh\n[ \"$*\" = \"/S\" ] || exit 3\necho \"$*\" > '{}'\nexit 0\n",
        ran.display()
    )
    .into_bytes();
    // Padded as real installers are large (a comment the shell skips).
    installer.extend(b"#");
    installer.extend(vec![b'x'; 300_000]);
    installer.extend(b"\n");
    let sha = sha256_hex(&installer);
    let (url, vendor_thread) = vendor(installer.clone());
    // A singleton manifest, as winget-pkgs writes them, for a package
    // served by the test's vendor.
    let manifest = format!(
        "PackageIdentifier: Example.Tool\nPackageVersion: 2.0\nPackageLocale: en-US\nPublisher: Example\n\
         PackageName: Example Tool\nLicense: MIT\nShortDescription: A tool.\nInstallers:\n- Architecture: x64\n  \
         InstallerType: nullsoft\n  Scope: machine\n  InstallerUrl: {url}\n  InstallerSha256: {}\n\
         ManifestType: singleton\nManifestVersion: 1.5.0\n",
        sha.to_ascii_uppercase()
    );
    let dir = tree.import_dir().join("winget");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Example.Tool.yaml"), manifest).unwrap();
    let imported = ok(tree.ctl("root", &["import", &dir.display().to_string()]));
    assert!(imported.contains("imported 1 updates"), "{imported}");
    let id = "winget:Example.Tool@2.0/x64/machine/nullsoft";
    call(
        &tree,
        "root",
        "policies.upsert",
        json!({"policy": {"id": "tools", "name": "Tools", "enabled": true}}),
    );
    ok(tree.ctl("root", &["approve", "--policy", "tools", "--update", id]));
    wait_for("the approval at the site", Duration::from_secs(20), || {
        tree.approvals("site") == 1
    });
    let ensure = || {
        tree.ctl(
            "site",
            &[
                "--json",
                "call",
                "content.ensure",
                "--params",
                &json!({"updates": [id]}).to_string(),
            ],
        )
    };
    // The first request starts the root's download and is told to come back.
    let first = ensure();
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "{}", String::from_utf8_lossy(&first.stdout));
    assert!(said.contains("does not give its size yet"), "{said}");
    wait_for("the file at the site", Duration::from_secs(60), || {
        ensure().status.success()
    });
    assert_eq!(
        std::fs::read(tree.nodes["site"].data().join("content").join(&sha)).unwrap(),
        installer
    );
    // The update, at the root and below, now says the size.
    for node in ["root", "site"] {
        let update = call(&tree, node, "updates.get", json!({"id": id}));
        assert_eq!(
            update["update"]["object"]["content"][0]["size"],
            installer.len() as u64,
            "{node}: {update}"
        );
    }
    vendor_thread.join().unwrap();

    // A computer whose software list has Example Tool 1.0 (the facts file
    // makes this Linux test agent a Windows computer for the rules): its
    // agent downloads the installer from the site and runs it with /S.
    std::fs::write(pc.join("facts.toml"), "\"os.family\" = \"windows\"\n").unwrap();
    std::fs::write(
        pc.join("software.json"),
        json!({"complete": true, "entries": [
            {"name": "Example Tool", "version": "1.0", "publisher": "Example", "key": "Example Tool", "arch": "x64"}
        ]})
        .to_string(),
    )
    .unwrap();
    let config = pc.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "facts_file = \"facts.toml\"\nsoftware_file = \"software.json\"\n{}",
            agent_config(&pc, &[(&tree.nodes["site"].addr(), 0)])
        ),
    )
    .unwrap();
    let run = run_agent(&config);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(run["installed"], 1, "{run}");
        assert_eq!(std::fs::read_to_string(&ran).unwrap().trim(), "/S");
    }
}
