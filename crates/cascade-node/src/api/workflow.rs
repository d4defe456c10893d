//! Operations about the work itself: which content this node holds,
//! tasks run on the node, and what a policy would do before it is approved.

use cascade_core::UpdateId;
use cascade_core::model::{Approval, Object, ObjectKind, Policy};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ops::{Nothing, Out, UpdateIds, approvals_by_update, id, to_value, update_objects};
use super::{ApiError, Ctx};
use crate::blocking;

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

pub(super) async fn content_status(ctx: Ctx, _: Nothing) -> Out {
    let files = ctx.node.cached_files();
    let (fetched, fetches, served, evicted) = ctx.node.content_counters();
    let cache = json!({
        "files": files.len(),
        "bytes": files.iter().map(|(_, size)| size).sum::<u64>(),
        "limit_bytes": ctx.node.config.content_cache_bytes,
        "in_flight": ctx.node.in_flight(),
        "fetched_bytes": fetched,
        "transfers": fetches,
        "served_bytes": served,
        "evicted": evicted,
    });
    let updates: Vec<Value> = approved_updates(&ctx)
        .await?
        .into_iter()
        .map(|u| {
            let (staged, missing) = staged(&ctx.node, &u);
            let bytes: u64 = u.content.iter().map(|c| c.size).sum();
            json!({"id": u.id, "files": u.content.len(), "bytes": bytes, "staged": staged, "missing": missing})
        })
        .collect();
    Ok(json!({"cache": cache, "updates": updates}))
}

pub(super) async fn is_staged(ctx: Ctx, p: UpdateIds) -> Out {
    let updates = update_objects(&ctx).await?;
    let mut out = serde_json::Map::new();
    for raw in &p.updates {
        let wanted = UpdateId::new(raw);
        let update = updates
            .iter()
            .find(|u| u.id == wanted)
            .ok_or_else(|| ApiError::NotFound(format!("updates: {wanted} is not in this node's catalog")))?;
        let (staged, missing) = staged(&ctx.node, update);
        out.insert(wanted.to_string(), json!({"staged": staged, "missing": missing}));
    }
    Ok(Value::Object(out))
}

pub(super) async fn staged_updates(ctx: Ctx, _: Nothing) -> Out {
    let ids: Vec<UpdateId> = approved_updates(&ctx)
        .await?
        .into_iter()
        .filter(|u| !u.content.is_empty() && staged(&ctx.node, u).0)
        .map(|u| u.id)
        .collect();
    to_value(&ids)
}

pub(super) async fn nonstaged_updates(ctx: Ctx, _: Nothing) -> Out {
    let rows: Vec<Value> = approved_updates(&ctx)
        .await?
        .into_iter()
        .filter_map(|u| {
            let (staged, missing) = staged(&ctx.node, &u);
            (!staged).then(|| json!({"id": u.id, "missing": missing}))
        })
        .collect();
    Ok(Value::Array(rows))
}

// ---- tasks

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRun {
    /// replicate_now (wake the parent link), compact (the change logs and
    /// the outbox, now) or persist_agents (write agents' check-ins now).
    pub task: String,
}

pub(super) async fn tasks_run(ctx: Ctx, p: TaskRun) -> Out {
    if !matches!(p.task.as_str(), "replicate_now" | "compact" | "persist_agents") {
        return Err(ApiError::Invalid(format!(
            "task: {:?} is not replicate_now, compact or persist_agents",
            p.task
        )));
    }
    let id = {
        let mut tasks = ctx.node.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let id = tasks.keys().next_back().map_or(1, |k| k + 1);
        tasks.insert(
            id,
            super::TaskStatus {
                id,
                task: p.task.clone(),
                state: "running".into(),
                started_at: ctx.node.now(),
                finished_at: None,
                result: Value::Null,
                started_by: ctx.caller.name.clone(),
            },
        );
        // The latest thousand are kept.
        while tasks.len() > 1000 {
            let Some(first) = tasks.keys().next().copied() else {
                break;
            };
            tasks.remove(&first);
        }
        id
    };
    let node = ctx.node.clone();
    tokio::spawn(async move {
        let result: Result<Value, String> = match p.task.as_str() {
            "replicate_now" => {
                node.wake.notify_one();
                Ok(json!({"woken": true}))
            }
            "compact" => {
                let store = node.store.clone();
                blocking(move || -> Result<Value, cascade_store::StoreError> {
                    let changes = store.compact(crate::LOG_RETAIN)?;
                    let entries = store.outbox_compact(crate::OUTBOX_MAX)?;
                    Ok(json!({"changes_dropped": changes, "outbox_entries_dropped": entries}))
                })
                .await
                .map_err(|e| e.to_string())
            }
            _ => node
                .persist_agents()
                .await
                .map(|n| json!({"agents_written": n}))
                .map_err(|e| e.to_string()),
        };
        let mut tasks = node.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tasks.get_mut(&id) {
            t.finished_at = Some(ctx.node.now());
            match result {
                Ok(v) => {
                    t.state = "succeeded".into();
                    t.result = v;
                }
                Err(e) => {
                    t.state = "failed".into();
                    t.result = json!(e);
                }
            }
        }
    });
    Ok(json!({"id": id, "state": "running"}))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskId {
    pub id: u64,
}

pub(super) async fn tasks_status(ctx: Ctx, p: TaskId) -> Out {
    let tasks = ctx.node.tasks.lock().unwrap_or_else(|e| e.into_inner());
    let task = tasks
        .get(&p.id)
        .ok_or_else(|| ApiError::NotFound(format!("no task {} on this node since it started", p.id)))?;
    to_value(task)
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

/// Which of this node's computers a policy would give which updates, how
/// many would restart, and whether the work fits their windows.
pub(super) async fn policies_what_if(ctx: Ctx, p: WhatIf) -> Out {
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
    blocking(move || -> Out {
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
            rows.push(json!({
                "computer": agent.id,
                "updates": assignment.steps.iter().map(|s| s.update.clone()).collect::<Vec<_>>(),
                "restarts": restarts,
                "minutes": work,
                "longest_window_minutes": longest,
                "fits_windows": fits,
            }));
        }
        Ok(json!({
            "computers_targeted": targeted,
            "computers_with_updates": with_updates,
            "computers_restarting": restarting,
            "computers_not_fitting_windows": not_fitting,
            "computers": rows,
        }))
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

/// Each ring's state per approved update of the policies with rings, with
/// the subtree's counts.
pub(super) async fn rollout_status(ctx: Ctx, p: RolloutStatus) -> Out {
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let rollouts = blocking(move || node.rollouts(now)).await?;
    let totals = ctx.node.ring_totals();
    let mut rows = Vec::new();
    for (policy, owned, update, rollout) in rollouts {
        if p.policy.as_deref().is_some_and(|want| want != policy.id.as_str()) {
            continue;
        }
        let open = rollout.open_rings();
        let rings: Vec<Value> = policy
            .rings
            .iter()
            .enumerate()
            .map(|(i, ring)| {
                let (computers, installed, failed) = totals
                    .get(&(policy.id.clone(), update.clone(), i as u32))
                    .copied()
                    .unwrap_or_default();
                let state = if i < open {
                    json!({"state": "open", "since": rollout.opened.get(i)})
                } else if let Some(why) = rollout.halted.as_ref().filter(|_| i == open) {
                    json!({"state": "halted", "reason": why})
                } else if i == open {
                    let previous = &policy.rings[i - 1];
                    let since = rollout.opened.get(i - 1).copied().unwrap_or(now);
                    json!({"state": "waiting", "soak_until": since + i64::from(previous.soak_hours) * 3600})
                } else {
                    json!({"state": "waiting"})
                };
                json!({"ring": ring.name, "status": state, "computers": computers, "installed": installed, "failed": failed, "max_failure_percent": ring.max_failure_percent})
            })
            .collect();
        rows.push(json!({"policy": policy.id, "update": update, "owned_here": owned, "halted": rollout.halted, "rings": rings}));
    }
    Ok(Value::Array(rows))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPromote {
    pub policy: String,
    pub update: String,
}

/// Opens the next ring now (and lifts a halt), at the policy's own node.
pub(super) async fn rollout_promote(ctx: Ctx, p: RolloutPromote) -> Out {
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let rollouts = blocking(move || node.rollouts(now)).await?;
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
    Ok(json!({"policy": policy.id, "update": wanted, "open_rings": opened}))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentEnsure {
    #[serde(alias = "bulletins")]
    pub updates: Vec<String>,
}

/// Makes sure the updates' content is here, fetching from the parent (or,
/// at the root, the vendor's URL) what is missing; unapproved updates may
/// be pre-staged too.
pub(super) async fn content_ensure(ctx: Ctx, p: ContentEnsure) -> Out {
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
    let mut rows: Vec<Value> = Vec::new();
    for u in &wanted {
        let (_, missing) = staged(&ctx.node, u);
        for c in u.content.iter().filter(|c| missing.contains(&c.file_name)) {
            let before = ctx.node.content_counters().0;
            let result = ctx.node.ensure_content(&c.sha256.to_ascii_lowercase(), true).await;
            rows.push(match result {
                Ok(_) => {
                    json!({"update": u.id, "file": c.file_name, "fetched": ctx.node.content_counters().0 - before})
                }
                Err(e) => json!({"update": u.id, "file": c.file_name, "error": e.to_string()}),
            });
        }
    }
    if let Some(error) = rows.iter().find_map(|r| r["error"].as_str())
        && rows.iter().all(|r| r.get("error").is_some())
    {
        return Err(ApiError::Unavailable(error.to_owned()));
    }
    let staged_now: Vec<Value> = wanted
        .iter()
        .map(|u| json!({"update": u.id, "staged": staged(&ctx.node, u).0}))
        .collect();
    Ok(json!({"transfers": rows, "updates": staged_now}))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentAdd {
    /// A file or directory inside one of the node's content import
    /// directories (`content_import` in its configuration): absolute, or
    /// relative to them.
    pub path: String,
}

/// Adds content from this node's disk: each file the catalog names (by
/// sha256 and size) is copied in, verified; others are reported.
pub(super) async fn content_add(ctx: Ctx, p: ContentAdd) -> Out {
    let node = ctx.node.clone();
    let path = std::path::PathBuf::from(&p.path);
    let results = blocking(move || node.add_content(&path))
        .await
        .map_err(|e| ApiError::Invalid(format!("path: {e}")))?;
    let rows: Vec<Value> = results
        .into_iter()
        .map(|(file, r)| match r {
            Ok(sha) => json!({"file": file, "sha256": sha}),
            Err(e) => json!({"file": file, "error": e}),
        })
        .collect();
    Ok(Value::Array(rows))
}
