//! What the node's in-process tree tests share: the time, waiting for a
//! condition, and nodes started through `cascade_node::start` with
//! certificates of one organisation CA.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_core::model::NodeId;
use cascade_node::{Checked, Node};
use cascade_trust::{Ca, Identity};

pub fn now() -> i64 {
    cascade_node::now()
}

pub async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A directory for the nodes' data and the CA that certifies them.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Harness {
    /// A CA valid for `days` from an hour ago.
    pub fn new(days: i64) -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::generate("Example", now() - 3600, days).unwrap(),
        }
    }

    pub fn issue(&self, id: &str) -> cascade_trust::Issued {
        self.ca
            .issue(&Identity::Node(NodeId::new(id).unwrap()), &[], now() - 60, 1)
            .unwrap()
    }

    /// Starts node `id` (under `parent`: its id and address), its
    /// configuration changed by `adjust`; heartbeats every second.
    pub async fn node(
        &self,
        id: &str,
        parent: Option<(NodeId, String)>,
        adjust: impl FnOnce(&mut Checked),
    ) -> (Arc<Node>, String) {
        let issued = self.issue(id);
        let mut config = Checked::local(
            NodeId::new(id).unwrap(),
            self.dir.path().join(id),
            parent,
            self.ca.cert_pem.clone(),
            issued.cert_pem,
            issued.key_pem,
        )
        .unwrap();
        config.heartbeat_seconds = 1;
        adjust(&mut config);
        cascade_node::start(config).await.unwrap().detach()
    }
}
