//! Operations: computers.

use super::*;

/// How long after its last check-in a computer counts as offline, and its
/// scan as too old to trust, unless the setting `compliance.max_scan_age_hours` says otherwise.
pub(crate) const DEFAULT_MAX_SCAN_AGE_HOURS: i64 = 72;

pub(crate) async fn max_scan_age(ctx: &Ctx) -> i64 {
    settings_get(ctx, "compliance.max_scan_age_hours")
        .await
        .ok()
        .and_then(|e| match e.object.value() {
            Object::Setting(s) => s.value.as_i64(),
            _ => None,
        })
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

/// A page of the computers this node serves.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerPage {
    /// How many there are in all.
    pub total: usize,
    pub computers: Vec<ComputerRow>,
}

/// A computer with its count of updates per state and how current its scan is.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerRow {
    pub agent: cascade_core::model::Agent,
    /// State name -> updates in it.
    pub states: BTreeMap<&'static str, u64>,
    pub scan: ScanStatus,
}

pub(crate) async fn computers_list(ctx: Ctx, p: ComputerList) -> Out<ComputerPage> {
    let max_age = max_scan_age(&ctx).await;
    let node = ctx.node.clone();
    let now = ctx.node.now();
    node.run(move |node| -> Out<ComputerPage> {
        let revision = node.revision()?;
        let agents = node.agents()?;
        let total = agents.len();
        let mut computers = Vec::new();
        for agent in agents.into_iter().skip(p.offset).take(p.limit) {
            let records = node.store.computer_records(&agent.id)?;
            let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
            for r in &records {
                *states.entry(r.state.name()).or_default() += 1;
            }
            let scan = scan_status(&agent, now, max_age, revision);
            computers.push(ComputerRow { agent, states, scan });
        }
        Ok(ComputerPage { total, computers })
    })
    .await
}

/// Whether a computer's results are current.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ScanStatus {
    /// never_scanned, stale, outdated or current.
    pub state: &'static str,
    /// Why it is not current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since it last checked in.
    pub age_seconds: i64,
}

/// Why a computer's results may not be current: never scanned, scan too
/// old (offline), planned before the catalog changed, or fine; with the age.
pub(crate) fn scan_status(agent: &cascade_core::model::Agent, now: i64, max_age: i64, revision: u64) -> ScanStatus {
    let last_seen = agent.last_seen;
    let age_seconds = now - last_seen;
    let (state, reason) = if agent.inventory.is_none() {
        (
            "never_scanned",
            Some("the agent enrolled but never sent an inventory".to_owned()),
        )
    } else if age_seconds > max_age {
        (
            "stale",
            Some(format!(
                "offline since {last_seen}: the last scan is older than {} hours",
                max_age / 3600
            )),
        )
    } else if agent.revision.is_some_and(|r| r < revision) {
        (
            "outdated",
            Some(format!(
                "catalog revision mismatch: its plan was made at revision {}, the node is at {revision}; it has not checked in since",
                agent.revision.unwrap_or_default()
            )),
        )
    } else {
        ("current", None)
    };
    ScanStatus {
        state,
        reason,
        age_seconds,
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
    node.run(move |node| -> Result<_, ApiError> {
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

/// A computer and its latest inventory (none before its first scan).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerInventory {
    pub agent: cascade_core::model::Agent,
    pub inventory: Option<cascade_core::Inventory>,
}

pub(crate) async fn computers_inventory(ctx: Ctx, p: ByComputer) -> Out<ComputerInventory> {
    let (agent, inventory) = agent_and_inventory(&ctx, &p.computer).await?;
    Ok(ComputerInventory { agent, inventory })
}

pub(crate) async fn computers_plan(ctx: Ctx, p: ByComputer) -> Out<cascade_core::assignment::Assignment> {
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
    Ok(node
        .run(move |node| node.assignment(&agent.id, &hash, &inventory, at))
        .await?)
}

/// A computer's compliance here: how current its scan is and its state per
/// update.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerCompliance {
    pub computer: ComputerId,
    /// None when this node has its records but not the computer (it
    /// reports to a site below).
    pub scan: Option<ScanStatus>,
    pub records: Vec<ComplianceRow>,
}

/// A computer's state for one update.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComplianceRow {
    pub update: UpdateId,
    pub state: ComplianceState,
    pub severity: Severity,
    pub site: NodeId,
    pub observed_at: i64,
    pub age_seconds: i64,
    /// Why the state is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when the observation is older than the scan age limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

pub(crate) async fn computers_compliance(ctx: Ctx, p: ByComputer) -> Out<ComputerCompliance> {
    let id = computer(&p.computer)?;
    let max_age = max_scan_age(&ctx).await;
    let now = ctx.node.now();
    let node = ctx.node.clone();
    node.run(move |node| -> Out<ComputerCompliance> {
        let revision = node.revision()?;
        let records = node.store.computer_records(&id)?;
        let agent = node.agents()?.into_iter().find(|a| a.id == id);
        let scan = agent.as_ref().map(|a| scan_status(a, now, max_age, revision));
        let rows: Vec<ComplianceRow> = records
            .into_iter()
            .map(|r| {
                let age = now - r.observed_at;
                // An unknown state always says why; a stale scan is also said.
                let reason = match &r.state {
                    ComplianceState::Unknown { reason } => Some(reason.clone()),
                    _ => None,
                };
                ComplianceRow {
                    update: r.update,
                    state: r.state,
                    severity: r.severity,
                    site: r.site,
                    observed_at: r.observed_at,
                    age_seconds: age,
                    reason,
                    stale: (age > max_age).then(|| format!("observed more than {} hours ago", max_age / 3600)),
                }
            })
            .collect();
        if rows.is_empty() && agent.is_none() {
            return Err(ApiError::NotFound(format!(
                "node {} has no records of computer {id}",
                node.id
            )));
        }
        Ok(ComputerCompliance {
            computer: id,
            scan,
            records: rows,
        })
    })
    .await
}
