//! Operations: computers.

use super::*;

/// How long after its last check-in a computer counts as offline, and its
/// scan as too old to trust, unless the setting `compliance.max_scan_age_hours` says otherwise.
pub(crate) const DEFAULT_MAX_SCAN_AGE_HOURS: i64 = 72;

pub(crate) async fn max_scan_age(ctx: &Ctx) -> i64 {
    settings_get(ctx, "compliance.max_scan_age_hours")
        .await
        .ok()
        .and_then(|s| s["object"]["object"]["value"].as_i64())
        .filter(|h| *h > 0)
        .unwrap_or(DEFAULT_MAX_SCAN_AGE_HOURS)
        * 3600
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputerList {
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

pub(crate) async fn computers_list(ctx: Ctx, p: ComputerList) -> Out {
    let max_age = max_scan_age(&ctx).await;
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let rows = blocking(move || -> Result<Value, ApiError> {
        let revision = node.revision()?;
        let agents = node.agents()?;
        let total = agents.len();
        let mut rows = Vec::new();
        for agent in agents.into_iter().skip(p.offset).take(p.limit) {
            let records = node.store.computer_records(&agent.id)?;
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for r in &records {
                *counts.entry(r.state.name()).or_default() += 1;
            }
            let status = scan_status(&agent, now, max_age, revision);
            rows.push(json!({"agent": agent, "states": counts, "scan": status}));
        }
        Ok(json!({"total": total, "computers": rows}))
    })
    .await?;
    Ok(rows)
}

/// Why a computer's results may not be current: never scanned, scan too
/// old (offline), planned before the catalog changed, or fine; with the age.
pub(crate) fn scan_status(agent: &cascade_core::model::Agent, now: i64, max_age: i64, revision: u64) -> Value {
    let last_seen = agent.last_seen;
    let age = now - last_seen;
    if agent.inventory.is_none() {
        json!({"state": "never_scanned", "reason": "the agent enrolled but never sent an inventory", "age_seconds": age})
    } else if age > max_age {
        json!({"state": "stale", "reason": format!("offline since {last_seen}: the last scan is older than {} hours", max_age / 3600), "age_seconds": age})
    } else if agent.revision.is_some_and(|r| r < revision) {
        json!({"state": "outdated", "reason": format!(
            "catalog revision mismatch: its plan was made at revision {}, the node is at {revision}; it has not checked in since",
            agent.revision.unwrap_or_default()
        ), "age_seconds": age})
    } else {
        json!({"state": "current", "age_seconds": age})
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ByComputer {
    pub computer: String,
}

pub(crate) fn computer(raw: &str) -> Result<ComputerId, ApiError> {
    ComputerId::new(raw).map_err(|e| ApiError::Invalid(format!("computer: {e}")))
}

pub(crate) async fn agent_and_inventory(
    ctx: &Ctx,
    raw: &str,
) -> Result<(cascade_core::model::Agent, Option<cascade_core::Inventory>), ApiError> {
    let id = computer(raw)?;
    let node = ctx.node.clone();
    blocking(move || -> Result<_, ApiError> {
        let agent = node
            .agents()?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("computer {id} is not served by node {}", node.id)))?;
        let inventory = match &agent.inventory {
            Some(hash) => node.store.inventory(hash)?,
            None => None,
        };
        Ok((agent, inventory))
    })
    .await
}

pub(crate) async fn computers_inventory(ctx: Ctx, p: ByComputer) -> Out {
    let (agent, inventory) = agent_and_inventory(&ctx, &p.computer).await?;
    Ok(json!({"agent": agent, "inventory": inventory}))
}

pub(crate) async fn computers_plan(ctx: Ctx, p: ByComputer) -> Out {
    let (agent, inventory) = agent_and_inventory(&ctx, &p.computer).await?;
    let inventory = inventory.ok_or_else(|| {
        ApiError::Conflict(format!(
            "computer {} never sent an inventory: it has no plan yet",
            agent.id
        ))
    })?;
    let hash = agent.inventory.clone().unwrap_or_default();
    let node = ctx.node.clone();
    let at = ctx.node.now();
    let assignment = blocking(move || node.assignment(&agent.id, &hash, &inventory, at)).await?;
    to_value(&assignment)
}

pub(crate) async fn computers_compliance(ctx: Ctx, p: ByComputer) -> Out {
    let id = computer(&p.computer)?;
    let max_age = max_scan_age(&ctx).await;
    let now = ctx.node.now();
    let node = ctx.node.clone();
    blocking(move || -> Out {
        let revision = node.revision()?;
        let records = node.store.computer_records(&id)?;
        let agent = node.agents()?.into_iter().find(|a| a.id == id);
        let scan = agent
            .as_ref()
            .map(|a| scan_status(a, now, max_age, revision));
        let rows: Vec<Value> = records
            .iter()
            .map(|r| {
                let age = now - r.observed_at;
                let mut row = json!({"update": r.update, "state": r.state, "severity": r.severity, "site": r.site, "observed_at": r.observed_at, "age_seconds": age});
                // An unknown state always says why; a stale scan is also said.
                if let ComplianceState::Unknown { reason } = &r.state {
                    row["reason"] = json!(reason);
                }
                if age > max_age {
                    row["stale"] = json!(format!("observed more than {} hours ago", max_age / 3600));
                }
                row
            })
            .collect();
        if rows.is_empty() && agent.is_none() {
            return Err(ApiError::NotFound(format!("node {} has no records of computer {id}", node.id)));
        }
        Ok(json!({"computer": id, "scan": scan, "records": rows}))
    })
    .await
}
