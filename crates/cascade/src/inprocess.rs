//! Nodes in this process, on 127.0.0.1: for benchmarks and the demo.

use std::sync::Arc;

use cascade_core::model::{ChangeOp, NodeId, Object, ObjectId, Site};
use cascade_node::{Checked, Node, RunningNode};
use cascade_trust::{Ca, Identity};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A node serving gRPC on 127.0.0.1 (port picked by the system), with
    /// its parent link when it has a parent; it runs as long as the process.
    /// `parent`: the parent's id and address.
    pub async fn node(&self, id: &str, parent: Option<(NodeId, String)>) -> anyhow::Result<(Arc<Node>, String)> {
        Ok(self.start(id, parent, |_| {}).await?.detach())
    }

    /// [`Self::node`] with its configuration adjusted by `adjust`, stopped
    /// when the returned handle is dropped.
    pub async fn start(
        &self,
        id: &str,
        parent: Option<(NodeId, String)>,
        adjust: impl FnOnce(&mut Checked),
    ) -> anyhow::Result<RunningNode> {
        let node_id = NodeId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let issued = self
            .ca
            .issue(&Identity::Node(node_id.clone()), &[], cascade_node::now(), 1)?;
        let mut config = Checked::local(
            node_id,
            self.dir.path().join(id),
            parent,
            self.ca.cert_pem.clone(),
            issued.cert_pem,
            issued.key_pem,
        )?;
        adjust(&mut config);
        Ok(cascade_node::start(config).await?)
    }
}

/// `count` generated security updates (KB7000000 on), as the changes that
/// publish them: a large catalog for benchmarks and stress tests.
pub fn generated_updates(count: u64) -> Vec<ChangeOp> {
    use cascade_core::update::{Classification, Severity, Update};
    (0..count)
        .map(|n| {
            let mut u = Update::new(
                cascade_core::UpdateId::kb(7_000_000 + n),
                format!("Generated update {n} (KB{})", 7_000_000 + n),
                Classification::SecurityUpdate,
            );
            u.severity = Severity::Important;
            ChangeOp::Upsert(Object::Update(Box::new(u)))
        })
        .collect()
}

/// A harness with a fresh CA in a temporary directory.
pub fn harness(name: &str) -> anyhow::Result<Harness> {
    Ok(Harness {
        dir: tempfile::tempdir()?,
        ca: Ca::generate(name, cascade_node::now() - 60, 1)?,
    })
}

/// Registers `child` with `parent`.
pub async fn add_child(parent: &Arc<Node>, child: &str) -> anyhow::Result<()> {
    let site = Site {
        id: ObjectId::new(child).map_err(|e| anyhow::anyhow!("{e}"))?,
        name: child.to_owned(),
        parent: Some(parent.id.clone()),
    };
    parent.append_local(ChangeOp::Upsert(Object::Site(site))).await?;
    Ok(())
}
