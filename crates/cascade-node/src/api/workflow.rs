//! Operations about the work itself: which content this node holds,
//! tasks run on the node, and what a policy would do before it is approved.

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::model::{Approval, Object, ObjectKind, Policy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ops::{Nothing, Out, UpdateIds, approvals_by_update, id, update_objects};
use super::{ApiError, Ctx, TaskResult, TaskStatus};

// ---- content held here

/// Whether every content file of an update is in this node's content
/// directory with its catalog size, and the names of those that are not.
fn staged(node: &crate::Node, update: &cascade_core::Update) -> (bool, Vec<String>) {
    let mut missing = Vec::new();
    for c in &update.content {
        let present = node
            .content_path(&c.sha256.to_ascii_lowercase())
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.len() == c.size);
        if !present {
            missing.push(c.file_name.clone());
        }
    }
    (missing.is_empty(), missing)
}

async fn approved_updates(ctx: &Ctx) -> Result<Vec<cascade_core::Update>, ApiError> {
    let approved = approvals_by_update(ctx).await?;
    Ok(update_objects(ctx)
        .await?
        .into_iter()
        .filter(|u| approved.contains_key(&u.id))
        .collect())
}

/// The content cache and, per approved update, whether its files are here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContentStatus {
    pub cache: CacheStatus,
    pub updates: Vec<UpdateContent>,
}

/// The content cache in numbers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheStatus {
    pub files: usize,
    pub bytes: u64,
    pub limit_bytes: Option<u64>,
    pub in_flight: Vec<crate::content::InFlight>,
    pub fetched_bytes: u64,
    pub transfers: u64,
    pub served_bytes: u64,
    pub evicted: u64,
}

/// An approved update's content here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateContent {
    pub id: UpdateId,
    pub files: usize,
    pub bytes: u64,
    pub staged: bool,
    /// The file names not (fully) here.
    pub missing: Vec<String>,
}

pub(super) async fn content_status(ctx: Ctx, _: Nothing) -> Out<ContentStatus> {
    let files = ctx.node.cached_files();
    let (fetched_bytes, transfers, served_bytes, evicted) = ctx.node.content_counters();
    let cache = CacheStatus {
        files: files.len(),
        bytes: files.iter().map(|(_, size)| size).sum(),
        limit_bytes: ctx.node.config.content_cache_bytes,
        in_flight: ctx.node.in_flight(),
        fetched_bytes,
        transfers,
        served_bytes,
        evicted,
    };
    let updates = approved_updates(&ctx)
        .await?
        .into_iter()
        .map(|u| {
            let (staged, missing) = staged(&ctx.node, &u);
            UpdateContent {
                bytes: u.content.iter().map(|c| c.size).sum(),
                files: u.content.len(),
                id: u.id,
                staged,
                missing,
            }
        })
        .collect();
    Ok(ContentStatus { cache, updates })
}

/// Whether an update's files are all here, and the names of those that are not.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Staged {
    pub staged: bool,
    pub missing: Vec<String>,
}

/// Update -> whether its content is here.
pub(super) async fn is_staged(ctx: Ctx, p: UpdateIds) -> Out<BTreeMap<String, Staged>> {
    let updates = update_objects(&ctx).await?;
    let mut out = BTreeMap::new();
    for raw in &p.updates {
        let wanted = UpdateId::new(raw);
        let update = updates
            .iter()
            .find(|u| u.id == wanted)
            .ok_or_else(|| ApiError::NotFound(format!("updates: {wanted} is not in this node's catalog")))?;
        let (staged, missing) = staged(&ctx.node, update);
        out.insert(wanted.to_string(), Staged { staged, missing });
    }
    Ok(out)
}

pub(super) async fn staged_updates(ctx: Ctx, _: Nothing) -> Out<Vec<UpdateId>> {
    Ok(approved_updates(&ctx)
        .await?
        .into_iter()
        .filter(|u| !u.content.is_empty() && staged(&ctx.node, u).0)
        .map(|u| u.id)
        .collect())
}

/// An approved update whose content is not all here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Nonstaged {
    pub id: UpdateId,
    pub missing: Vec<String>,
}

pub(super) async fn nonstaged_updates(ctx: Ctx, _: Nothing) -> Out<Vec<Nonstaged>> {
    Ok(approved_updates(&ctx)
        .await?
        .into_iter()
        .filter_map(|u| {
            let (staged, missing) = staged(&ctx.node, &u);
            (!staged).then_some(Nonstaged { id: u.id, missing })
        })
        .collect())
}

// ---- tasks

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRun {
    /// replicate_now (wake the parent link), compact (the change logs and
    /// the outbox, now) or persist_agents (write agents' check-ins now).
    pub task: String,
}

/// The task started (`tasks.status` follows it).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskStarted {
    pub id: u64,
    pub state: &'static str,
}

pub(super) async fn tasks_run(ctx: Ctx, p: TaskRun) -> Out<TaskStarted> {
    if !matches!(p.task.as_str(), "replicate_now" | "compact" | "persist_agents") {
        return Err(ApiError::Invalid(format!(
            "task: {:?} is not replicate_now, compact or persist_agents",
            p.task
        )));
    }
    let id = ctx.node.work.start(&p.task, &ctx.caller.name, ctx.node.now());
    let node = ctx.node.clone();
    tokio::spawn(async move {
        let result: Result<TaskResult, String> = match p.task.as_str() {
            "replicate_now" => {
                node.signals.wake.notify_one();
                Ok(TaskResult::Woken { woken: true })
            }
            "compact" => node
                .compact_log()
                .await
                .map(|c| TaskResult::Compacted {
                    changes_dropped: c.changes,
                    outbox_entries_dropped: c.outbox_entries,
                    children_released: c.released.iter().map(|id| id.to_string()).collect(),
                })
                .map_err(|e| e.to_string()),
            _ => node
                .persist_agents()
                .await
                .map(|agents_written| TaskResult::AgentsWritten { agents_written })
                .map_err(|e| e.to_string()),
        };
        node.work.finish(id, node.now(), result);
    });
    Ok(TaskStarted { id, state: "running" })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    pub id: u64,
}

pub(super) async fn tasks_status(ctx: Ctx, p: TaskId) -> Out<TaskStatus> {
    ctx.node
        .work
        .status(p.id)
        .ok_or_else(|| ApiError::NotFound(format!("no task {} on this node since it started", p.id)))
}

// ---- what-if

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    /// The policy as it would be (not stored, not approved).
    pub policy: Policy,
    /// Updates to count as approved for it, besides its update filter.
    #[serde(default)]
    pub approve: Vec<String>,
    /// Minutes one install is expected to take, to compare with the windows.
    #[serde(default = "default_minutes")]
    pub minutes_per_update: u32,
}

fn default_minutes() -> u32 {
    10
}

/// What a policy would do here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WhatIfResult {
    pub computers_targeted: usize,
    pub computers_with_updates: usize,
    pub computers_restarting: usize,
    pub computers_not_fitting_windows: usize,
    pub computers: Vec<WhatIfComputer>,
}

/// What a policy would give one computer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WhatIfComputer {
    pub computer: cascade_core::model::ComputerId,
    /// In install order.
    pub updates: Vec<UpdateId>,
    /// Of those, how many restart the computer.
    pub restarts: usize,
    /// The expected install time.
    pub minutes: u64,
    pub longest_window_minutes: Option<u64>,
    /// Whether the work fits its longest window (true without windows).
    pub fits_windows: bool,
}

/// Which of this node's computers a policy would give which updates, how
/// many would restart, and whether the work fits their windows.
pub(super) async fn policies_what_if(ctx: Ctx, p: WhatIf) -> Out<WhatIfResult> {
    use cascade_core::assignment::{Placement, Targeting};
    let mut policy = p.policy;
    policy.enabled = true;
    let approvals: Vec<Approval> = p
        .approve
        .iter()
        .map(|u| {
            let update = UpdateId::new(u);
            Ok(Approval {
                id: id("approval", &format!("{}/{update}", policy.id))?,
                policy: policy.id.clone(),
                update,
                deadline: None,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let node = ctx.node.clone();
    let minutes = u64::from(p.minutes_per_update);
    node.run(move |node| -> Out<WhatIfResult> {
        let mut updates = Vec::new();
        let mut windows = Vec::new();
        for o in node.effective_objects(ObjectKind::Update)? {
            if let Object::Update(u) = o {
                updates.push(*u);
            }
        }
        for o in node.effective_objects(ObjectKind::MaintenanceWindow)? {
            if let Object::MaintenanceWindow(w) = o {
                windows.push(*w);
            }
        }
        if let Some(missing) = policy
            .maintenance_windows
            .iter()
            .find(|w| !windows.iter().any(|x| x.id == **w))
        {
            return Err(ApiError::Invalid(format!(
                "policy.maintenance_windows: window {missing} does not exist here"
            )));
        }
        let targeting = Targeting::new(updates, [policy], approvals, windows);
        let sites = node.sites_up()?;
        let now = ctx.node.now();
        let mut rows = Vec::new();
        let (mut targeted, mut with_updates, mut restarting, mut not_fitting) = (0, 0, 0, 0);
        for agent in node.agents()? {
            let Some(hash) = agent.inventory.clone() else { continue };
            let Some(inventory) = node.store.inventory(&hash)? else {
                continue;
            };
            let selection = targeting.select(&Placement {
                sites: &sites,
                inventory: &inventory,
                now,
            });
            if selection.policies.is_empty() {
                continue;
            }
            targeted += 1;
            let catalog = targeting.catalog(&selection);
            let plan = cascade_core::planner::plan(&catalog, &inventory);
            let assignment = targeting.assignment(&agent.id, &node.id, &hash, &selection, &plan, now);
            let restarts = assignment
                .steps
                .iter()
                .filter(|s| s.restart != cascade_core::update::RestartBehavior::Never)
                .count();
            let work = assignment.steps.len() as u64 * minutes;
            let longest = assignment
                .maintenance_windows
                .iter()
                .map(|w| u64::from(w.duration_minutes))
                .max();
            let fits = longest.is_none_or(|l| work <= l);
            with_updates += usize::from(!assignment.steps.is_empty());
            restarting += usize::from(restarts > 0);
            not_fitting += usize::from(!fits);
            rows.push(WhatIfComputer {
                computer: agent.id,
                updates: assignment.steps.iter().map(|s| s.update.clone()).collect(),
                restarts,
                minutes: work,
                longest_window_minutes: longest,
                fits_windows: fits,
            });
        }
        Ok(WhatIfResult {
            computers_targeted: targeted,
            computers_with_updates: with_updates,
            computers_restarting: restarting,
            computers_not_fitting_windows: not_fitting,
            computers: rows,
        })
    })
    .await
}

// ---- staged rollout

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutStatus {
    /// One policy; all with rings when absent.
    #[serde(default)]
    pub policy: Option<String>,
}

/// A staged rollout of one approved update.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RolloutRow {
    pub policy: cascade_core::model::ObjectId,
    pub update: UpdateId,
    /// Whether the policy is this node's (only there it is promoted).
    pub owned_here: bool,
    /// Why it stopped, when it did.
    pub halted: Option<String>,
    pub rings: Vec<RingRow>,
}

/// One ring of a rollout with the subtree's counts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RingRow {
    pub ring: String,
    pub status: RingState,
    pub computers: u64,
    pub installed: u64,
    pub failed: u64,
    pub max_failure_percent: u32,
}

/// open (since when), halted (why), or waiting (until its soak ends).
#[derive(Debug, Serialize, JsonSchema)]
pub struct RingState {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<i64>,
}

impl RingState {
    fn new(state: &'static str) -> RingState {
        RingState {
            state,
            since: None,
            reason: None,
            soak_until: None,
        }
    }
}

/// Each ring's state per approved update of the policies with rings, with
/// the subtree's counts.
pub(super) async fn rollout_status(ctx: Ctx, p: RolloutStatus) -> Out<Vec<RolloutRow>> {
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let rollouts = node.run(move |node| node.rollouts(now)).await?;
    let totals = ctx.node.ring_totals();
    let mut rows = Vec::new();
    for (policy, owned, update, rollout) in rollouts {
        if p.policy.as_deref().is_some_and(|want| want != policy.id.as_str()) {
            continue;
        }
        let open = rollout.open_rings();
        let rings = policy
            .rings
            .iter()
            .enumerate()
            .map(|(i, ring)| {
                let (computers, installed, failed) = totals
                    .get(&(policy.id.clone(), update.clone(), i as u32))
                    .copied()
                    .unwrap_or_default();
                let status = if i < open {
                    RingState {
                        since: rollout.opened.get(i).copied(),
                        ..RingState::new("open")
                    }
                } else if let Some(why) = rollout.halted.as_ref().filter(|_| i == open) {
                    RingState {
                        reason: Some(why.clone()),
                        ..RingState::new("halted")
                    }
                } else if i == open {
                    let previous = &policy.rings[i - 1];
                    let since = rollout.opened.get(i - 1).copied().unwrap_or(now);
                    RingState {
                        soak_until: Some(since + i64::from(previous.soak_hours) * 3600),
                        ..RingState::new("waiting")
                    }
                } else {
                    RingState::new("waiting")
                };
                RingRow {
                    ring: ring.name.clone(),
                    status,
                    computers,
                    installed,
                    failed,
                    max_failure_percent: ring.max_failure_percent,
                }
            })
            .collect();
        rows.push(RolloutRow {
            policy: policy.id.clone(),
            update,
            owned_here: owned,
            halted: rollout.halted.clone(),
            rings,
        });
    }
    Ok(rows)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPromote {
    pub policy: String,
    pub update: String,
}

/// The rollout after the promotion.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Promoted {
    pub policy: cascade_core::model::ObjectId,
    pub update: UpdateId,
    pub open_rings: usize,
}

/// Opens the next ring now (and lifts a halt), at the policy's own node.
pub(super) async fn rollout_promote(ctx: Ctx, p: RolloutPromote) -> Out<Promoted> {
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let rollouts = node.run(move |node| node.rollouts(now)).await?;
    let wanted = UpdateId::new(&p.update);
    let (policy, owned, _, mut rollout) = rollouts
        .into_iter()
        .find(|(policy, _, update, _)| policy.id.as_str() == p.policy && *update == wanted)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "policy {} has no rings or does not approve {wanted} here",
                p.policy
            ))
        })?;
    if !owned {
        return Err(ApiError::Forbidden(format!(
            "policy {} belongs to another node: promote it there",
            policy.id
        )));
    }
    if rollout.opened.is_empty() {
        rollout.opened.push(now);
    }
    if rollout.opened.len() >= policy.rings.len() {
        return Err(ApiError::Conflict(format!(
            "every ring of {} has {wanted} already",
            policy.id
        )));
    }
    rollout.opened.push(now);
    rollout.halted = None;
    let opened = rollout.opened.len();
    ctx.node
        .append_local(cascade_core::model::ChangeOp::Upsert(Object::Rollout(rollout)))
        .await?;
    Ok(Promoted {
        policy: policy.id,
        update: wanted,
        open_rings: opened,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentEnsure {
    #[serde(alias = "bulletins")]
    pub updates: Vec<String>,
}

/// What fetching did, file by file, and whether each update is staged now.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ensured {
    pub transfers: Vec<Transfer>,
    pub updates: Vec<UpdateStaged>,
}

/// One file fetched, or why not.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Transfer {
    pub update: UpdateId,
    pub file: String,
    /// Bytes fetched for it (0 when another transfer brought it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether an update's content is all here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateStaged {
    pub update: UpdateId,
    pub staged: bool,
}

/// Makes sure the updates' content is here, fetching from the parent (or,
/// at the root, the vendor's URL) what is missing; unapproved updates may
/// be pre-staged too.
pub(super) async fn content_ensure(ctx: Ctx, p: ContentEnsure) -> Out<Ensured> {
    let updates = update_objects(&ctx).await?;
    let mut wanted = Vec::new();
    for raw in &p.updates {
        let id = UpdateId::new(raw);
        let update = updates
            .iter()
            .find(|u| u.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("updates: {id} is not in this node's catalog")))?;
        wanted.push(update.clone());
    }
    let mut transfers = Vec::new();
    for u in &wanted {
        let (_, missing) = staged(&ctx.node, u);
        for c in u.content.iter().filter(|c| missing.contains(&c.file_name)) {
            let before = ctx.node.content_counters().0;
            let result = ctx.node.ensure_content(&c.sha256.to_ascii_lowercase(), true).await;
            let (fetched, error) = match result {
                Ok(_) => (Some(ctx.node.content_counters().0 - before), None),
                Err(e) => (None, Some(e.to_string())),
            };
            transfers.push(Transfer {
                update: u.id.clone(),
                file: c.file_name.clone(),
                fetched,
                error,
            });
        }
    }
    if let Some(error) = transfers.iter().find_map(|t| t.error.clone())
        && transfers.iter().all(|t| t.error.is_some())
    {
        return Err(ApiError::Unavailable(error));
    }
    let updates = wanted
        .iter()
        .map(|u| UpdateStaged {
            update: u.id.clone(),
            staged: staged(&ctx.node, u).0,
        })
        .collect();
    Ok(Ensured { transfers, updates })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentAdd {
    /// A file or directory inside one of the node's content import
    /// directories (`content_import` in its configuration): absolute, or
    /// relative to them.
    pub path: String,
}

/// One file of the path: copied in (with its sha256), or why not.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AddedFile {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Adds content from this node's disk: each file the catalog names (by
/// sha256 and size) is copied in, verified; others are reported.
pub(super) async fn content_add(ctx: Ctx, p: ContentAdd) -> Out<Vec<AddedFile>> {
    let node = ctx.node.clone();
    let path = std::path::PathBuf::from(&p.path);
    let results = node
        .run(move |node| node.add_content(&path))
        .await
        .map_err(|e| ApiError::Invalid(format!("path: {e}")))?;
    Ok(results
        .into_iter()
        .map(|(file, r)| match r {
            Ok(sha) => AddedFile {
                file,
                sha256: Some(sha),
                error: None,
            },
            Err(e) => AddedFile {
                file,
                sha256: None,
                error: Some(e),
            },
        })
        .collect())
}
