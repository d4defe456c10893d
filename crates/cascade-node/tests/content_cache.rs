//! What abandoned transfers leave in a node's content directory goes;
//! verified files and transfers in flight stay.

use std::sync::Arc;

use cascade_core::model::NodeId;
use cascade_node::{Checked, Node};
use cascade_store::Store;

#[test]
fn abandoned_partial_files_are_removed_and_verified_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let id = NodeId::new("site").unwrap();
    let ca = cascade_trust::Ca::generate("Test", cascade_node::now(), 1).unwrap();
    let issued = ca
        .issue(&cascade_trust::Identity::Node(id.clone()), &[], cascade_node::now(), 1)
        .unwrap();
    let config = Checked::local(
        id.clone(),
        dir.path().to_path_buf(),
        None,
        ca.cert_pem.clone(),
        issued.cert_pem,
        issued.key_pem,
    )
    .unwrap();
    let node = Node::new(config, Arc::new(Store::temporary(id).unwrap()));
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let sha = "ab".repeat(32);
    std::fs::write(content.join(&sha), b"verified").unwrap();
    std::fs::write(content.join(format!("{}.part", "cd".repeat(32))), b"half").unwrap();
    assert_eq!(
        node.clean_partials(std::time::Duration::from_secs(3600)),
        0,
        "recent: kept to resume"
    );
    assert_eq!(node.clean_partials(std::time::Duration::ZERO), 1);
    assert!(content.join(&sha).exists());
    assert_eq!(node.cached_files(), vec![(sha, 8)]);
}
