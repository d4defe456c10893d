//! What abandoned transfers leave in a node's content directory goes;
//! verified files and transfers in flight stay; the cache limit holds for
//! transfers at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cascade_core::model::NodeId;
use cascade_node::{Checked, Node};
use cascade_store::Store;

/// A node without a parent in `dir`, with a cache limit.
fn node(dir: &tempfile::TempDir, id: &str, cache: Option<u64>) -> Arc<Node> {
    let id = NodeId::new(id).unwrap();
    let mut config = Checked::standalone(id.clone(), dir.path().to_path_buf()).unwrap();
    config.content_cache_bytes = cache;
    // The test's vendor is on loopback, over plain HTTP.
    config.vendor = cascade_node::config::VendorConfig {
        allow_hosts: vec!["127.0.0.1".into()],
        allow_http: true,
        allow_private_addresses: true,
    };
    Node::new(config, Arc::new(Store::temporary(id).unwrap()))
}

#[test]
fn abandoned_partial_files_are_removed_and_verified_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, "site", None);
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let sha = "ab".repeat(32);
    std::fs::write(content.join(&sha), b"verified").unwrap();
    std::fs::write(content.join(format!("{}.part", "cd".repeat(32))), b"half").unwrap();
    // A manifest kept beside its file stays; one whose file never came goes.
    std::fs::write(content.join(format!("{sha}.manifest")), b"m").unwrap();
    std::fs::write(content.join(format!("{}.manifest", "ef".repeat(32))), b"m").unwrap();
    assert_eq!(
        node.clean_partials(std::time::Duration::from_secs(3600)),
        0,
        "recent: kept to resume"
    );
    assert_eq!(node.clean_partials(std::time::Duration::ZERO), 2);
    assert!(content.join(&sha).exists());
    assert!(content.join(format!("{sha}.manifest")).exists());
    assert_eq!(node.cached_files(), vec![(sha, 8)]);
}

/// Serves `body` at every URL to whoever asks, after `delay`.
fn slow_vendor(body: Arc<Vec<u8>>, delay: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { return };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                std::thread::sleep(delay);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_downloads_at_once_cannot_take_the_same_room_in_the_cache() {
    use cascade_core::UpdateId;
    use cascade_core::model::{ChangeOp, Object};
    use cascade_core::update::{Classification, Content, Update};
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir, "root", Some(7_000_000));
    // Two 5 MB files (different bytes, so different hashes) from a slow vendor.
    let mut shas = Vec::new();
    for (n, fill) in [(1, 0x11u8), (2, 0x22u8)] {
        let body = Arc::new(vec![fill; 5_000_000]);
        let base = slow_vendor(body.clone(), std::time::Duration::from_millis(300));
        let sha = cascade_content::sha256_of_bytes(&body);
        let mut u = Update::new(UpdateId::new(&format!("EX-{n}")), "Big", Classification::Update);
        u.content = vec![Content {
            file_name: format!("ex-{n}.bin"),
            sha256: sha.clone(),
            size: body.len() as u64,
            url: Some(format!("{base}/ex-{n}.bin")),
        }];
        node.append_local(ChangeOp::Upsert(Object::Update(Box::new(u))))
            .await
            .unwrap();
        shas.push(sha);
    }
    let (a, b) = tokio::join!(node.ensure_content(&shas[0], true), node.ensure_content(&shas[1], true));
    let results = [a, b];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(refused.to_string().contains("cache is full"), "{refused}");
    assert!(refused.to_string().contains("on its way"), "{refused}");
    assert_eq!(node.cached_files().len(), 1);
}
