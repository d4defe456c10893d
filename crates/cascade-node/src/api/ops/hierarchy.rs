//! Operations: hierarchy.

use super::*;

/// A link of this node, either way.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LinkRow {
    /// The parent's address, or a child's node id.
    pub peer: String,
    /// up (to the parent) or down (to a child).
    pub direction: &'static str,
    pub status: crate::LinkStatus,
}

fn link_rows(node: &crate::Node) -> Vec<LinkRow> {
    node.links()
        .into_iter()
        .map(|(peer, direction, status)| LinkRow {
            peer,
            direction,
            status,
        })
        .collect()
}

/// Where this node sits in the tree.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SitesTree {
    pub node: NodeId,
    /// The sites above it, its parent first.
    pub above: Vec<NodeId>,
    /// The sites below it.
    pub subtree: Vec<NodeId>,
    /// The site records in force here.
    pub sites: Vec<Site>,
    pub links: Vec<LinkRow>,
}

pub(crate) async fn sites_tree(ctx: Ctx, _: Nothing) -> Out<SitesTree> {
    let sites: Vec<Site> = objects(&ctx, ObjectKind::Site)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Site(site) => Some(site),
            _ => None,
        })
        .collect();
    let (above, subtree) = ctx
        .node
        .run(|n| -> Result<_, cascade_store::StoreError> { Ok((n.sites_up()?, n.subtree()?)) })
        .await?;
    Ok(SitesTree {
        node: ctx.node.id.clone(),
        above: above.into_iter().skip(1).collect(),
        subtree: subtree.into_iter().collect(),
        sites,
        links: link_rows(&ctx.node),
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteAdd {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

pub(crate) async fn sites_add(ctx: Ctx, p: SiteAdd) -> Out<Recorded> {
    let site = id("id", &p.id)?;
    if site.as_str() == ctx.node.id.as_str() {
        return Err(ApiError::Invalid("id: a node cannot be its own child".into()));
    }
    if let Some(above) = ctx
        .node
        .run(|n| n.sites_up())
        .await?
        .iter()
        .skip(1)
        .find(|a| a.as_str() == site.as_str())
    {
        return Err(ApiError::Conflict(format!(
            "{above} is above {} in the tree: making it a child would make a cycle",
            ctx.node.id
        )));
    }
    let name = p.name.unwrap_or_else(|| p.id.clone());
    change(
        &ctx,
        ChangeOp::Upsert(Object::Site(Site {
            id: site,
            name,
            parent: Some(ctx.node.id.clone()),
        })),
    )
    .await
}

pub(crate) async fn sites_remove(ctx: Ctx, p: ById) -> Out<Recorded> {
    let out = delete(&ctx, ObjectKind::Site, &p.id).await?;
    if let Ok(child) = NodeId::new(&p.id) {
        let store = ctx.node.db.clone();
        store.run(move |store| store.remove_subscriber(&child)).await?;
    }
    Ok(out)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteMove {
    /// The new parent's gRPC address (host:port); it must have registered
    /// this node first (`sites.add` there).
    pub parent: String,
    /// The new parent's node id: the link accepts only a server whose
    /// certificate names it.
    pub parent_id: String,
}

/// The parent this node moved to, and the one it left.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Moved {
    pub parent: String,
    pub was: String,
}

/// Moves this node under another parent: the link reconnects there, the
/// new parent receives this node's whole state, and changes come from it.
/// Afterwards the old parent unregisters it (`sites.remove` there).
pub(crate) async fn sites_move(ctx: Ctx, p: SiteMove) -> Out<Moved> {
    let Some(current) = ctx.node.parent_address() else {
        return Err(ApiError::Conflict(format!(
            "node {} is the root of its tree: it has no parent to move away from",
            ctx.node.id
        )));
    };
    let address = p.parent.trim().to_owned();
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
    if !valid {
        return Err(ApiError::Invalid(format!("parent: {address:?} is not host:port")));
    }
    if address == current {
        return Err(ApiError::Conflict(format!(
            "parent: this node's parent is {current} already"
        )));
    }
    let parent_id = NodeId::new(&p.parent_id).map_err(|e| ApiError::Invalid(format!("parent_id: {e}")))?;
    if parent_id == ctx.node.id {
        return Err(ApiError::Invalid("parent_id: a node cannot be its own parent".into()));
    }
    ctx.node.move_to(address.clone(), parent_id).await?;
    Ok(Moved {
        parent: address,
        was: current,
    })
}

/// A summary of this node.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NodeStatus {
    pub node: NodeId,
    /// This node's release.
    pub version: &'static str,
    /// The parent's address; none at the root.
    pub parent: Option<String>,
    /// The sites above it, its parent first.
    pub above: Vec<NodeId>,
    pub children: Vec<NodeId>,
    pub links: Vec<LinkRow>,
    pub outbox: OutboxStatus,
    /// The catalog revision (bumped by every change applied here).
    pub revision: u64,
    /// The agents this node serves.
    pub agents: usize,
    /// The computers in this node's subtree with compliance records here.
    pub computers: u64,
    /// The compliance records here.
    pub records: u64,
    pub content: ContentSummary,
    pub store_bytes: u64,
    /// Whether the store keeps its data compressed on disk.
    pub store_compressed: bool,
    pub connections: crate::listener::ListenersStatus,
}

/// What waits to go up to the parent.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OutboxStatus {
    /// Entries not yet acknowledged.
    pub pending: u64,
    /// The last sequence number given out.
    pub last: u64,
    /// The highest sequence the parent acknowledged.
    pub acked: u64,
    /// Entries were dropped before the parent had them: it gets a snapshot.
    pub snapshot_required: bool,
}

/// This node's content cache in numbers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContentSummary {
    pub files: usize,
    pub bytes: u64,
    pub fetched_bytes: u64,
    pub transfers: u64,
    pub served_bytes: u64,
    pub evicted: u64,
    pub in_flight: usize,
}

/// A summary of this node: where it sits, its links, what waits to go up,
/// its agents and computers, its content, its catalog revision.
pub(crate) async fn node_status(ctx: Ctx, _: Nothing) -> Out<NodeStatus> {
    let node = ctx.node.clone();
    node.run(move |node| -> Out<NodeStatus> {
        let outbox = node.store.outbox_state()?;
        let summary = node.store.summary_by_update()?;
        let files = node.cached_files();
        let (fetched_bytes, transfers, served_bytes, evicted) = node.content_counters();
        Ok(NodeStatus {
            node: node.id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            parent: node.parent_address(),
            above: node.sites_up()?.into_iter().skip(1).collect(),
            children: node.children()?.into_iter().collect(),
            links: link_rows(node),
            outbox: OutboxStatus {
                pending: outbox.pending,
                last: outbox.last,
                acked: outbox.acked,
                snapshot_required: outbox.snapshot_required,
            },
            revision: node.revision()?,
            agents: node.agents()?.len(),
            computers: node.store.computer_count()?,
            records: summary.values().map(|c| c.total()).sum(),
            content: ContentSummary {
                files: files.len(),
                bytes: files.iter().map(|(_, s)| *s).sum(),
                fetched_bytes,
                transfers,
                served_bytes,
                evicted,
                in_flight: node.in_flight().len(),
            },
            store_bytes: node.store.size_on_disk(),
            store_compressed: node.store.compressed(),
            connections: node.listeners.status(),
        })
    })
    .await
}

pub(crate) async fn links_list(ctx: Ctx, _: Nothing) -> Out<Vec<LinkRow>> {
    Ok(link_rows(&ctx.node))
}

/// The parent link was woken.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Woken {
    pub woken: bool,
}

pub(crate) async fn links_replicate_now(ctx: Ctx, _: Nothing) -> Out<Woken> {
    ctx.node.replicate_now();
    Ok(Woken { woken: true })
}
