//! Nodes in this process, on 127.0.0.1: for benchmarks and the demo.

use std::sync::Arc;

use cascade_core::model::{ChangeOp, NodeId, Object, ObjectId, Site};
use cascade_node::{Checked, Node};
use cascade_store::Store;
use cascade_trust::{Ca, Identity};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Harness {
    /// A node serving gRPC on 127.0.0.1 (port picked by the system), with
    /// its parent link when it has a parent.
    /// `parent`: the parent's id and address.
    pub async fn node(&self, id: &str, parent: Option<(NodeId, String)>) -> anyhow::Result<(Arc<Node>, String)> {
        let node_id = NodeId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let issued = self
            .ca
            .issue(&Identity::Node(node_id.clone()), &[], cascade_node::now(), 1)?;
        let data = self.dir.path().join(id);
        let config = Checked::local(
            node_id.clone(),
            data.clone(),
            parent.clone(),
            self.ca.cert_pem.clone(),
            issued.cert_pem,
            issued.key_pem,
        )?;
        let store = Arc::new(Store::open(&data.join("store"), node_id)?);
        let (listener, addr) = cascade_node::bind(&config).await?;
        let node = Node::new(config, store);
        tokio::spawn(cascade_node::serve(node.clone(), listener, std::future::pending()));
        if parent.is_some() {
            tokio::spawn(cascade_node::link::run(node.clone()));
        }
        tokio::spawn(cascade_node::maintenance(
            node.clone(),
            std::time::Duration::from_secs(60),
        ));
        Ok((node, addr.to_string()))
    }
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

/// Serves a node's workflow API, help page and console on 127.0.0.1.
pub async fn serve_api(node: &Arc<Node>) -> anyhow::Result<std::net::SocketAddr> {
    let (listener, addr) = cascade_node::api::http::bind("127.0.0.1:0".parse()?).await?;
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = cascade_node::api::http::serve(node, listener).await {
            tracing::error!(error = %e, "the workflow API stopped");
        }
    });
    Ok(addr)
}
