//! Operations: hierarchy.

use super::*;

pub(crate) async fn sites_tree(ctx: Ctx, _: Nothing) -> Out {
    let sites: Vec<Site> = objects(&ctx, ObjectKind::Site)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Site(site) => Some(site),
            _ => None,
        })
        .collect();
    let links: Vec<Value> = ctx
        .node
        .links()
        .into_iter()
        .map(|(peer, direction, s)| json!({"peer": peer, "direction": direction, "status": s}))
        .collect();
    Ok(json!({
        "node": ctx.node.id,
        "above": ctx.node.sites_up()?.into_iter().skip(1).collect::<Vec<_>>(),
        "subtree": ctx.node.subtree()?,
        "sites": sites,
        "links": links,
    }))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteAdd {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

pub(crate) async fn sites_add(ctx: Ctx, p: SiteAdd) -> Out {
    let site = id("id", &p.id)?;
    if site.as_str() == ctx.node.id.as_str() {
        return Err(ApiError::Invalid("id: a node cannot be its own child".into()));
    }
    if let Some(above) = ctx
        .node
        .sites_up()?
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

pub(crate) async fn sites_remove(ctx: Ctx, p: ById) -> Out {
    let out = delete(&ctx, ObjectKind::Site, &p.id).await?;
    if let Ok(child) = NodeId::new(&p.id) {
        let store = ctx.node.store.clone();
        blocking(move || store.remove_subscriber(&child)).await?;
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

/// Moves this node under another parent: the link reconnects there, the
/// new parent receives this node's whole state, and changes come from it.
/// Afterwards the old parent unregisters it (`sites.remove` there).
pub(crate) async fn sites_move(ctx: Ctx, p: SiteMove) -> Out {
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
    Ok(json!({"parent": address, "was": current}))
}

/// A summary of this node: where it sits, its links, what waits to go up,
/// its agents and computers, its content, its catalog revision.
pub(crate) async fn node_status(ctx: Ctx, _: Nothing) -> Out {
    let node = ctx.node.clone();
    blocking(move || -> Out {
        let outbox = node.store.outbox_state()?;
        let summary = node.store.summary_by_update()?;
        let records: u64 = summary.values().map(|c| c.total()).sum();
        let files = node.cached_files();
        let (fetched, transfers, served, evicted) = node.content_counters();
        let links: Vec<Value> = node
            .links()
            .into_iter()
            .map(|(peer, direction, s)| json!({"peer": peer, "direction": direction, "status": s}))
            .collect();
        Ok(json!({
            "node": node.id,
            "version": env!("CARGO_PKG_VERSION"),
            "parent": node.parent_address(),
            "above": node.sites_up()?.into_iter().skip(1).collect::<Vec<_>>(),
            "children": node.children()?,
            "links": links,
            "outbox": {"pending": outbox.pending, "last": outbox.last, "acked": outbox.acked, "snapshot_required": outbox.snapshot_required},
            "revision": node.revision()?,
            "agents": node.agents()?.len(),
            "computers": node.store.computer_count(),
            "records": records,
            "content": {"files": files.len(), "bytes": files.iter().map(|(_, s)| *s).sum::<u64>(), "fetched_bytes": fetched, "transfers": transfers, "served_bytes": served, "evicted": evicted, "in_flight": node.in_flight().len()},
            "store_bytes": node.store.size_on_disk(),
            "connections": node.listeners.status(),
        }))
    })
    .await
}

pub(crate) async fn links_list(ctx: Ctx, _: Nothing) -> Out {
    let links: Vec<Value> = ctx
        .node
        .links()
        .into_iter()
        .map(|(peer, direction, s)| json!({"peer": peer, "direction": direction, "status": s}))
        .collect();
    Ok(Value::Array(links))
}

pub(crate) async fn links_replicate_now(ctx: Ctx, _: Nothing) -> Out {
    ctx.node.replicate_now();
    Ok(json!({"woken": true}))
}
