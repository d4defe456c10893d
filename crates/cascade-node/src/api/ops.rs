//! The operations. Each takes its parameters as a type (unknown fields are
//! refused) and returns JSON; the registry at the end names them, groups
//! them for the help page, and gives each its access and an example.

use std::collections::{BTreeMap, BTreeSet};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{
    Approval, ChangeOp, ComputerId, CustomSeverity, MaintenanceWindow, NodeId, Object, ObjectId, ObjectKey, ObjectKind,
    Override, Policy, Setting, Site,
};
use cascade_core::update::{Classification, Severity};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Access, ApiError, Ctx, Operation, parse_params, workflow};
use crate::blocking;

pub(super) type Out = Result<Value, ApiError>;

pub(super) fn id(kind: &'static str, raw: &str) -> Result<ObjectId, ApiError> {
    ObjectId::new(raw).map_err(|e| ApiError::Invalid(format!("{kind}: {e}")))
}

pub(super) async fn objects(ctx: &Ctx, kind: ObjectKind) -> Result<Vec<cascade_store::StoredObject>, ApiError> {
    let store = ctx.node.store.clone();
    Ok(blocking(move || store.objects(kind)).await?)
}

async fn change(ctx: &Ctx, op: ChangeOp) -> Out {
    let change = ctx.node.append_local(op).await?;
    Ok(json!({"origin": change.origin, "seq": change.seq}))
}

pub(super) fn to_value<T: serde::Serialize>(value: &T) -> Out {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// No parameters.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nothing {}

/// One object by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ById {
    pub id: String,
}

// ---- who am I

async fn me(ctx: Ctx, _: Nothing) -> Out {
    let role = ctx.caller.role();
    let allowed: Vec<&str> = super::operations()
        .iter()
        .filter(|o| o.alias_of.is_none() && o.access.allows(role))
        .map(|o| o.name)
        .collect();
    Ok(json!({"caller": ctx.caller, "node": ctx.node.id, "operations": allowed}))
}

// ---- updates

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSearch {
    /// Vendor severities to match.
    #[serde(default)]
    pub severities: Vec<Severity>,
    /// Custom severity names to match.
    #[serde(default)]
    pub custom_severities: Vec<String>,
    /// Product family or one of the products it targets (exact name).
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub classifications: Vec<Classification>,
    /// The publisher ("Mozilla", "Microsoft"; exact, any case).
    #[serde(default)]
    pub publisher: Option<String>,
    /// A package manager's package id ("Mozilla.Firefox"; exact, any case).
    #[serde(default)]
    pub package: Option<String>,
    /// Only superseded (true) or only current (false) updates.
    #[serde(default)]
    pub superseded: Option<bool>,
    /// Released on or after (YYYY-MM-DD).
    #[serde(default)]
    pub released_after: Option<String>,
    /// Released on or before (YYYY-MM-DD).
    #[serde(default)]
    pub released_before: Option<String>,
    /// Text in the id, title or CVEs.
    #[serde(default)]
    pub text: Option<String>,
    /// "id" (default), "title", "severity" or "release_date".
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub descending: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

fn default_limit() -> usize {
    100
}

fn date(field: &str, text: &Option<String>) -> Result<Option<jiff::civil::Date>, ApiError> {
    text.as_deref()
        .map(|t| {
            t.parse::<jiff::civil::Date>()
                .map_err(|e| ApiError::Invalid(format!("{field}: {t:?} is not a date like 2022-12-13 ({e})")))
        })
        .transpose()
}

pub(super) async fn update_objects(ctx: &Ctx) -> Result<Vec<cascade_core::Update>, ApiError> {
    Ok(objects(ctx, ObjectKind::Update)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Update(u) => Some(*u),
            _ => None,
        })
        .collect())
}

pub(super) async fn approvals_by_update(ctx: &Ctx) -> Result<BTreeMap<UpdateId, Vec<String>>, ApiError> {
    let mut out: BTreeMap<UpdateId, Vec<String>> = BTreeMap::new();
    for s in objects(ctx, ObjectKind::Approval).await? {
        if let Object::Approval(a) = s.object.into_value() {
            out.entry(a.update).or_default().push(a.policy.to_string());
        }
    }
    Ok(out)
}

async fn updates_search(ctx: Ctx, p: UpdateSearch) -> Out {
    if p.limit == 0 || p.limit > 10_000 {
        return Err(ApiError::Invalid(format!(
            "limit: {} is not between 1 and 10000",
            p.limit
        )));
    }
    let sort = p.sort.as_deref().unwrap_or("id");
    if !["id", "title", "severity", "release_date"].contains(&sort) {
        return Err(ApiError::Invalid(format!(
            "sort: {sort:?} is not id, title, severity or release_date"
        )));
    }
    let after = date("released_after", &p.released_after)?;
    let before = date("released_before", &p.released_before)?;
    let updates = update_objects(&ctx).await?;
    let catalog = cascade_core::Catalog::new(updates.clone());
    let approved = approvals_by_update(&ctx).await?;
    let text = p.text.as_deref().map(str::to_ascii_lowercase);
    let mut matched: Vec<(&cascade_core::Update, bool)> = Vec::new();
    for u in &updates {
        let superseded = catalog.is_superseded(&u.id);
        let keep = (p.severities.is_empty() || p.severities.contains(&u.severity))
            && (p.custom_severities.is_empty()
                || u.custom_severity
                    .as_ref()
                    .is_some_and(|c| p.custom_severities.contains(c)))
            && p.product.as_ref().is_none_or(|want| {
                u.product.eq_ignore_ascii_case(want) || u.targets.iter().any(|t| t.product.eq_ignore_ascii_case(want))
            })
            && (p.classifications.is_empty() || p.classifications.contains(&u.classification))
            && p.publisher
                .as_ref()
                .is_none_or(|want| u.vendor.eq_ignore_ascii_case(want))
            && p.package
                .as_ref()
                .is_none_or(|want| u.package.as_ref().is_some_and(|pk| pk.id.eq_ignore_ascii_case(want)))
            && p.superseded.is_none_or(|want| want == superseded)
            && after.is_none_or(|a| u.release_date.is_some_and(|r| r >= a))
            && before.is_none_or(|b| u.release_date.is_some_and(|r| r <= b))
            && text.as_ref().is_none_or(|t| {
                u.id.as_str().to_ascii_lowercase().contains(t)
                    || u.title.to_ascii_lowercase().contains(t)
                    || u.cves.iter().any(|c| c.to_ascii_lowercase().contains(t))
            });
        if keep {
            matched.push((u, superseded));
        }
    }
    matched.sort_by(|(a, _), (b, _)| {
        let order = match sort {
            "title" => a.title.cmp(&b.title),
            "severity" => a.severity.cmp(&b.severity),
            "release_date" => a.release_date.cmp(&b.release_date),
            _ => std::cmp::Ordering::Equal,
        };
        let order = order.then_with(|| a.id.cmp(&b.id));
        if p.descending { order.reverse() } else { order }
    });
    let total = matched.len();
    let page: Vec<Value> = matched
        .into_iter()
        .skip(p.offset)
        .take(p.limit)
        .map(|(u, superseded)| {
            json!({
                "id": u.id,
                "title": u.title,
                "severity": u.severity,
                "custom_severity": u.custom_severity,
                "classification": u.classification,
                "product": u.product,
                "publisher": u.vendor,
                "package": u.package,
                "release_date": u.release_date.map(|d| d.to_string()),
                "superseded": superseded,
                "superseded_by": catalog.superseders_of(&u.id).iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                "approved_in": approved.get(&u.id).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Ok(json!({"total": total, "offset": p.offset, "updates": page}))
}

async fn updates_get(ctx: Ctx, p: ById) -> Out {
    let wanted = UpdateId::new(&p.id);
    let store = ctx.node.store.clone();
    let key = ObjectKey {
        kind: ObjectKind::Update,
        id: id("id", wanted.as_str())?,
    };
    let stored = blocking(move || store.object(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("update {wanted} is not in this node's catalog")))?;
    let store = ctx.node.store.clone();
    let counts = {
        let wanted = wanted.clone();
        blocking(move || store.summary_for_update(&wanted)).await?
    };
    let approvals = approvals_by_update(&ctx).await?.remove(&wanted).unwrap_or_default();
    Ok(json!({"update": stored.object, "origin": stored.origin, "approved_in": approvals, "compliance": counts}))
}

// ---- approvals

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalList {
    #[serde(default)]
    pub policy: Option<String>,
}

async fn approvals_list(ctx: Ctx, p: ApprovalList) -> Out {
    let list: Vec<Value> = objects(&ctx, ObjectKind::Approval)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.value() {
            Object::Approval(a) if p.policy.as_deref().is_none_or(|want| a.policy.as_str() == want) => {
                Some(json!({"approval": a, "origin": s.origin}))
            }
            _ => None,
        })
        .collect();
    Ok(Value::Array(list))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalCreate {
    pub policy: String,
    pub update: String,
    /// Unix seconds after which it installs even outside maintenance windows.
    #[serde(default)]
    pub deadline: Option<i64>,
}

async fn approvals_create(ctx: Ctx, p: ApprovalCreate) -> Out {
    let policy = id("policy", &p.policy)?;
    let update = UpdateId::new(&p.update);
    let known = objects(&ctx, ObjectKind::Policy)
        .await?
        .iter()
        .any(|s| matches!(s.object.value(), Object::Policy(x) if x.id == policy));
    if !known {
        return Err(ApiError::NotFound(format!("policy: {policy} does not exist here")));
    }
    let approval = Approval {
        id: id("approval", &format!("{policy}/{update}"))?,
        policy,
        update,
        deadline: p.deadline,
    };
    change(&ctx, ChangeOp::Upsert(Object::Approval(approval))).await
}

async fn delete(ctx: &Ctx, kind: ObjectKind, raw: &str) -> Out {
    let key = ObjectKey {
        kind,
        id: id("id", raw)?,
    };
    let store = ctx.node.store.clone();
    let lookup = key.clone();
    if blocking(move || store.object(&lookup)).await?.is_none() {
        return Err(ApiError::NotFound(format!("{key} does not exist")));
    }
    change(ctx, ChangeOp::Delete(key)).await
}

async fn approvals_delete(ctx: Ctx, p: ById) -> Out {
    delete(&ctx, ObjectKind::Approval, &p.id).await
}

// ---- custom severities

async fn custom_severities_list(ctx: Ctx, _: Nothing) -> Out {
    let mut list: Vec<CustomSeverity> = objects(&ctx, ObjectKind::CustomSeverity)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::CustomSeverity(c) => Some(c),
            _ => None,
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.rank));
    to_value(&list)
}

async fn custom_severities_create(ctx: Ctx, p: CustomSeverity) -> Out {
    if p.name.trim().is_empty() {
        return Err(ApiError::Invalid("name: may not be empty".into()));
    }
    change(&ctx, ChangeOp::Upsert(Object::CustomSeverity(p))).await
}

async fn custom_severities_delete(ctx: Ctx, p: ById) -> Out {
    delete(&ctx, ObjectKind::CustomSeverity, &p.id).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityAssign {
    pub update: String,
    /// A custom severity's id; absent or null removes it.
    #[serde(default)]
    pub severity: Option<String>,
}

async fn custom_severities_assign(ctx: Ctx, p: SeverityAssign) -> Out {
    let update = UpdateId::new(&p.update);
    if let Some(level) = &p.severity {
        let exists = objects(&ctx, ObjectKind::CustomSeverity)
            .await?
            .iter()
            .any(|s| matches!(s.object.value(), Object::CustomSeverity(c) if c.id.as_str() == level));
        if !exists {
            return Err(ApiError::NotFound(format!(
                "severity: custom severity {level} does not exist"
            )));
        }
    }
    let key = ObjectKey {
        kind: ObjectKind::Update,
        id: id("update", update.as_str())?,
    };
    let store = ctx.node.store.clone();
    let stored = blocking(move || store.object(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("update: {update} is not in this node's catalog")))?;
    let Object::Update(mut u) = stored.object.into_value() else {
        return Err(ApiError::Internal("not an update".into()));
    };
    u.custom_severity = p.severity;
    change(&ctx, ChangeOp::Upsert(Object::Update(u))).await
}

// ---- policies and windows

async fn policies_list(ctx: Ctx, _: Nothing) -> Out {
    effective_of(&ctx, ObjectKind::Policy).await
}

async fn policies_get(ctx: Ctx, p: ById) -> Out {
    let all = effective_of(&ctx, ObjectKind::Policy).await?;
    all.as_array()
        .and_then(|a| a.iter().find(|e| e["object"]["object"]["id"] == p.id.as_str()).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("policy {} does not exist here", p.id)))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpsert {
    pub policy: Policy,
}

async fn policies_upsert(ctx: Ctx, p: PolicyUpsert) -> Out {
    let windows: BTreeSet<String> = objects(&ctx, ObjectKind::MaintenanceWindow)
        .await?
        .iter()
        .filter_map(|s| s.object.key().ok().map(|k| k.id.to_string()))
        .collect();
    if let Some(missing) = p
        .policy
        .maintenance_windows
        .iter()
        .find(|w| !windows.contains(w.as_str()))
    {
        return Err(ApiError::Invalid(format!(
            "policy.maintenance_windows: window {missing} does not exist here"
        )));
    }
    change(&ctx, ChangeOp::Upsert(Object::Policy(Box::new(p.policy)))).await
}

async fn policies_delete(ctx: Ctx, p: ById) -> Out {
    delete(&ctx, ObjectKind::Policy, &p.id).await
}

async fn windows_list(ctx: Ctx, _: Nothing) -> Out {
    effective_of(&ctx, ObjectKind::MaintenanceWindow).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowUpsert {
    pub window: MaintenanceWindow,
}

async fn windows_upsert(ctx: Ctx, p: WindowUpsert) -> Out {
    cascade_core::schedule::Schedule::new(&p.window).map_err(|e| ApiError::Invalid(format!("window: {e}")))?;
    change(&ctx, ChangeOp::Upsert(Object::MaintenanceWindow(Box::new(p.window)))).await
}

async fn windows_delete(ctx: Ctx, p: ById) -> Out {
    let users: Vec<String> = objects(&ctx, ObjectKind::Policy)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Policy(policy) if policy.maintenance_windows.iter().any(|w| w.as_str() == p.id) => {
                Some(policy.id.to_string())
            }
            _ => None,
        })
        .collect();
    if !users.is_empty() {
        return Err(ApiError::Conflict(format!(
            "window {} is used by policies {}: change them first",
            p.id,
            users.join(", ")
        )));
    }
    delete(&ctx, ObjectKind::MaintenanceWindow, &p.id).await
}

// ---- settings, effective objects, overrides

/// Each object of a kind as in force here: its origin and whether it is
/// local, inherited and locked, inherited and overridable, or inherited and
/// overridden here (with the fields).
async fn effective_of(ctx: &Ctx, kind: ObjectKind) -> Out {
    let node = ctx.node.clone();
    let rows = blocking(move || -> Result<Vec<Value>, ApiError> {
        let effective: BTreeMap<String, Object> = node
            .effective_objects(kind)?
            .into_iter()
            .filter_map(|o| o.key().ok().map(|k| (k.id.to_string(), o)))
            .collect();
        let mut rows = Vec::new();
        for stored in node.store.objects(kind)? {
            let Ok(key) = stored.object.key() else { continue };
            let overrides = node.store.overrides(&key)?;
            let overridable = stored.object.overridable();
            let status = if let Some(why) = stored.object.unknown_reason() {
                format!("not in force here: {why}")
            } else if stored.origin == node.id {
                "local".to_owned()
            } else if overrides.contains_key(&node.id) {
                "inherited, overridden here".to_owned()
            } else if !overrides.is_empty() {
                "inherited, overridden above".to_owned()
            } else if overridable.is_empty() {
                "inherited, locked".to_owned()
            } else {
                "inherited, overridable".to_owned()
            };
            rows.push(json!({
                "object": effective.get(key.id.as_str()).unwrap_or(&stored.object),
                "origin": stored.origin,
                "status": status,
                "overridable": overridable,
                "overrides": overrides.iter().map(|(origin, o)| json!({"origin": origin, "fields": o.fields})).collect::<Vec<_>>(),
            }));
        }
        Ok(rows)
    })
    .await?;
    Ok(Value::Array(rows))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectiveList {
    /// policy, maintenance_window, setting, approval, custom_severity, site or update.
    pub kind: String,
}

fn kind(raw: &str) -> Result<ObjectKind, ApiError> {
    ObjectKind::parse(raw).ok_or_else(|| {
        ApiError::Invalid(format!(
            "kind: {raw:?} is not one of {}",
            ObjectKind::ALL.map(|k| k.as_str()).join(", ")
        ))
    })
}

async fn effective_list(ctx: Ctx, p: EffectiveList) -> Out {
    effective_of(&ctx, kind(&p.kind)?).await
}

async fn settings_list(ctx: Ctx, _: Nothing) -> Out {
    effective_of(&ctx, ObjectKind::Setting).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingSet {
    pub id: String,
    pub value: Value,
    /// Whether child sites may override it (for a setting made here).
    #[serde(default)]
    pub overridable: bool,
}

/// Sets a setting: this node's own, or an override of an inherited one
/// its owner lets child sites override.
async fn settings_set(ctx: Ctx, p: SettingSet) -> Out {
    let key = ObjectKey {
        kind: ObjectKind::Setting,
        id: id("id", &p.id)?,
    };
    let store = ctx.node.store.clone();
    let lookup = key.clone();
    let existing = blocking(move || store.object(&lookup)).await?;
    match existing {
        Some(stored) if stored.origin != ctx.node.id => {
            let fields = BTreeMap::from([("value".to_owned(), p.value)]);
            change(&ctx, ChangeOp::Override(Override { target: key, fields })).await
        }
        _ => {
            change(
                &ctx,
                ChangeOp::Upsert(Object::Setting(Setting {
                    id: key.id,
                    value: p.value,
                    overridable: p.overridable,
                })),
            )
            .await
        }
    }
}

async fn settings_get(ctx: &Ctx, raw: &str) -> Out {
    let all = effective_of(ctx, ObjectKind::Setting).await?;
    all.as_array()
        .and_then(|a| a.iter().find(|e| e["object"]["object"]["id"] == raw).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("setting {raw} does not exist here")))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideSet {
    pub kind: String,
    pub id: String,
    /// Field name -> new value; only fields the owner marked overridable.
    pub fields: BTreeMap<String, Value>,
}

async fn objects_override(ctx: Ctx, p: OverrideSet) -> Out {
    let target = ObjectKey {
        kind: kind(&p.kind)?,
        id: id("id", &p.id)?,
    };
    change(
        &ctx,
        ChangeOp::Override(Override {
            target,
            fields: p.fields,
        }),
    )
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    pub id: String,
}

async fn objects_clear_override(ctx: Ctx, p: ObjectRef) -> Out {
    let target = ObjectKey {
        kind: kind(&p.kind)?,
        id: id("id", &p.id)?,
    };
    change(&ctx, ChangeOp::ClearOverride(target)).await
}

// ---- hierarchy

async fn sites_tree(ctx: Ctx, _: Nothing) -> Out {
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

async fn sites_add(ctx: Ctx, p: SiteAdd) -> Out {
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

async fn sites_remove(ctx: Ctx, p: ById) -> Out {
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
async fn sites_move(ctx: Ctx, p: SiteMove) -> Out {
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
async fn node_status(ctx: Ctx, _: Nothing) -> Out {
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

async fn links_list(ctx: Ctx, _: Nothing) -> Out {
    let links: Vec<Value> = ctx
        .node
        .links()
        .into_iter()
        .map(|(peer, direction, s)| json!({"peer": peer, "direction": direction, "status": s}))
        .collect();
    Ok(Value::Array(links))
}

async fn links_replicate_now(ctx: Ctx, _: Nothing) -> Out {
    ctx.node.replicate_now();
    Ok(json!({"woken": true}))
}

// ---- computers

/// How long after its last check-in a computer counts as offline, and its
/// scan as too old to trust, unless the setting `compliance.max_scan_age_hours` says otherwise.
const DEFAULT_MAX_SCAN_AGE_HOURS: i64 = 72;

async fn max_scan_age(ctx: &Ctx) -> i64 {
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

async fn computers_list(ctx: Ctx, p: ComputerList) -> Out {
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
fn scan_status(agent: &cascade_core::model::Agent, now: i64, max_age: i64, revision: u64) -> Value {
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

fn computer(raw: &str) -> Result<ComputerId, ApiError> {
    ComputerId::new(raw).map_err(|e| ApiError::Invalid(format!("computer: {e}")))
}

async fn agent_and_inventory(
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

async fn computers_inventory(ctx: Ctx, p: ByComputer) -> Out {
    let (agent, inventory) = agent_and_inventory(&ctx, &p.computer).await?;
    Ok(json!({"agent": agent, "inventory": inventory}))
}

async fn computers_plan(ctx: Ctx, p: ByComputer) -> Out {
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

async fn computers_compliance(ctx: Ctx, p: ByComputer) -> Out {
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

// ---- compliance

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceByUpdate {
    /// One update; all when absent.
    #[serde(default)]
    pub update: Option<String>,
}

async fn compliance_by_update(ctx: Ctx, p: ComplianceByUpdate) -> Out {
    let store = ctx.node.store.clone();
    match p.update {
        Some(u) => {
            let u = UpdateId::new(&u);
            let counts = blocking(move || store.summary_for_update(&u)).await?;
            to_value(&counts)
        }
        None => {
            let summary = blocking(move || store.summary_by_update()).await?;
            to_value(&summary)
        }
    }
}

async fn compliance_by_site(ctx: Ctx, _: Nothing) -> Out {
    let store = ctx.node.store.clone();
    let summary = blocking(move || store.summary_by_site()).await?;
    let mut by_site: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ((site, severity), counts) in summary {
        by_site
            .entry(site.to_string())
            .or_default()
            .insert(severity.to_string(), to_value(&counts)?);
    }
    to_value(&by_site)
}

async fn compliance_by_severity(ctx: Ctx, _: Nothing) -> Out {
    let store = ctx.node.store.clone();
    let summary = blocking(move || store.summary_by_site()).await?;
    let mut by_severity: BTreeMap<String, [u64; ComplianceState::COUNT]> = BTreeMap::new();
    for ((_, severity), counts) in summary {
        let slot = by_severity.entry(severity.to_string()).or_default();
        for (total, n) in slot.iter_mut().zip(counts.0) {
            *total += n;
        }
    }
    let out: BTreeMap<String, Value> = by_severity
        .into_iter()
        .map(|(k, v)| (k, to_value(&cascade_store::StateCounts(v)).unwrap_or_default()))
        .collect();
    to_value(&out)
}

// ---- what `cascade ctl` drives: raw changes, objects, agents, enrollment

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// The operation: `{"upsert": {"kind": ..., "object": {...}}}`,
    /// `{"delete": {"kind": ..., "id": ...}}`, an override or its withdrawal.
    pub op: ChangeOp,
}

async fn changes_record(ctx: Ctx, p: ChangeRecord) -> Out {
    change(&ctx, p.op).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectsOfKind {
    /// update, approval, policy, window, severity, setting, site, revocation, ...
    pub kind: String,
}

async fn objects_list(ctx: Ctx, p: ObjectsOfKind) -> Out {
    let kind =
        ObjectKind::parse(&p.kind).ok_or_else(|| ApiError::Invalid(format!("kind: unknown kind {:?}", p.kind)))?;
    to_value(&objects(&ctx, kind).await?)
}

async fn agents_list(ctx: Ctx, _: Nothing) -> Out {
    let node = ctx.node.clone();
    let rows = blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut rows = Vec::new();
        for agent in node.agents()? {
            let events = node.store.events(&agent.id)?;
            let latest = &events[events.len().saturating_sub(10)..];
            rows.push(json!({ "agent": agent, "events": latest }));
        }
        Ok(rows)
    })
    .await?;
    Ok(Value::Array(rows))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenCreate {
    /// The site the agent joins: this node's id (checked, so that a token
    /// is not made at the wrong node by mistake).
    pub site: String,
    /// How long the token is valid: 60 seconds to 30 days.
    #[serde(default = "default_agent_token_seconds")]
    pub ttl_seconds: u64,
}

fn default_agent_token_seconds() -> u64 {
    3600
}

async fn agent_tokens_create(ctx: Ctx, p: AgentTokenCreate) -> Out {
    let node = &ctx.node;
    if p.site != node.id.as_str() {
        return Err(ApiError::Invalid(format!(
            "site: agents of {} enroll at its own node; this is node {}",
            p.site, node.id
        )));
    }
    if node.config.enrollment.is_none() {
        return Err(ApiError::Conflict(format!(
            "node {} does not enroll agents: its configuration has no [enrollment]",
            node.id
        )));
    }
    if !(60..=30 * 86_400).contains(&p.ttl_seconds) {
        return Err(ApiError::Invalid(format!(
            "ttl_seconds: {} is not between 60 (1 minute) and 2592000 (30 days)",
            p.ttl_seconds
        )));
    }
    let token = cascade_trust::EnrollmentToken::generate(node.id.clone(), &node.config.ca_pem);
    let text = token.encode().map_err(|e| ApiError::Internal(e.to_string()))?;
    let at = ctx.node.now();
    let record = cascade_store::TokenRecord {
        site: node.id.clone(),
        created_by: ctx.caller.name.clone(),
        created_at: at,
        expires_at: at + p.ttl_seconds as i64,
    };
    let expires_at = record.expires_at;
    let store = node.store.clone();
    let hash = token.secret_hash();
    blocking(move || store.put_token(&hash, &record)).await?;
    Ok(json!({"token": text, "site": node.id, "expires_at": expires_at}))
}

// ---- catalog, audit, tokens

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogImport {
    /// The file's name, for messages.
    pub name: String,
    /// The file as text (XML, JSON or YAML).
    #[serde(default)]
    pub content: Option<String>,
    /// The file as base64, for anything that is not UTF-8 text.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Several files read together: the version, installer and locale
    /// manifests of a winget package version (or more versions at once).
    #[serde(default)]
    pub files: Option<Vec<ImportFile>>,
    /// winget manifests: only these package identifiers
    /// (`["Mozilla.Firefox", "7zip.7zip"]`); empty takes every package.
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    pub name: String,
    pub content: String,
}

async fn catalog_import(ctx: Ctx, p: CatalogImport) -> Out {
    use base64::Engine;
    let include = p.include;
    let source = p.name.clone();
    let data = match (p.content, p.content_base64, p.files) {
        (Some(text), None, None) => Some(text.into_bytes()),
        (None, Some(b64), None) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| ApiError::Invalid(format!("content_base64: {e}")))?,
        ),
        (None, None, Some(files)) => {
            let files: Vec<(String, String)> = files.into_iter().map(|f| (f.name, f.content)).collect();
            let imported = blocking(move || cascade_core::import::import_winget(&files, &include))
                .await
                .map_err(|e| ApiError::Invalid(e.to_string()))?;
            return store_imported(&ctx, imported).await;
        }
        _ => None,
    };
    let Some(data) = data else {
        return Err(ApiError::Invalid(
            "give exactly one of content, content_base64 and files".into(),
        ));
    };
    let imported = blocking(move || {
        use cascade_core::import::{self, CatalogFormat, ImportError};
        if import::detect_catalog(&data) == Some(CatalogFormat::Winget) {
            let text = String::from_utf8(data).map_err(|e| ImportError::Format {
                source_name: source.clone(),
                message: format!("not valid UTF-8 (byte offset {})", e.utf8_error().valid_up_to()),
            })?;
            return import::import_winget(&[(source, text)], &include);
        }
        if !include.is_empty() {
            return Err(ImportError::Format {
                source_name: source,
                message: "include chooses winget packages; this file is not a winget manifest".into(),
            });
        }
        import::import_catalog(&source, &data, &import::NoFragments)
    })
    .await
    .map_err(|e| ApiError::Invalid(e.to_string()))?;
    store_imported(&ctx, imported).await
}

async fn store_imported(ctx: &Ctx, imported: cascade_core::import::CatalogImport) -> Out {
    let count = imported.updates.len();
    let ops = imported
        .updates
        .into_iter()
        .map(|u| ChangeOp::Upsert(Object::Update(Box::new(u))))
        .collect();
    ctx.node.append_local_many(ops).await?;
    Ok(json!({"format": imported.format.name(), "updates": count, "skipped": imported.skipped}))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: u64,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

async fn audit_log(ctx: Ctx, p: AuditLog) -> Out {
    let store = ctx.node.store.clone();
    let limit = p.limit.min(10_000);
    let entries = blocking(move || store.audit_log(p.after, limit)).await?;
    let rows: Vec<Value> = entries
        .into_iter()
        .map(|(seq, e)| json!({"seq": seq, "entry": e}))
        .collect();
    Ok(Value::Array(rows))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// Who uses it (shown in the audit log).
    pub name: String,
    /// admin, site-operator (of this node's subtree) or auditor.
    pub role: String,
    #[serde(default = "default_ttl_hours")]
    pub ttl_hours: i64,
}

fn default_ttl_hours() -> i64 {
    24
}

async fn tokens_create(ctx: Ctx, p: TokenCreate) -> Out {
    use base64::Engine;
    let role = cascade_trust::Role::parse(&p.role)
        .ok_or_else(|| ApiError::Invalid(format!("role: {:?} is not admin, site-operator or auditor", p.role)))?;
    if p.name.trim().is_empty() || p.name.len() > 100 {
        return Err(ApiError::Invalid("name: 1 to 100 characters".into()));
    }
    if !(1..=24 * 366).contains(&p.ttl_hours) {
        return Err(ApiError::Invalid(format!(
            "ttl_hours: {} is not between 1 and 8784",
            p.ttl_hours
        )));
    }
    let secret: [u8; 32] = rand::random();
    let token = format!(
        "cascade-api1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let now = ctx.node.now();
    let record = cascade_store::ApiTokenRecord {
        name: p.name.clone(),
        role: role.as_str().to_owned(),
        created_by: ctx.caller.name.clone(),
        created_at: now,
        expires_at: now + p.ttl_hours * 3600,
    };
    let store = ctx.node.store.clone();
    let hash = super::token_hash(&token);
    let expires_at = record.expires_at;
    blocking(move || store.put_api_token(&hash, &record)).await?;
    Ok(json!({"token": token, "name": p.name, "role": role.as_str(), "expires_at": expires_at}))
}

async fn tokens_list(ctx: Ctx, _: Nothing) -> Out {
    let store = ctx.node.store.clone();
    let tokens = blocking(move || store.api_tokens()).await?;
    to_value(&tokens)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ByName {
    pub name: String,
}

async fn tokens_revoke(ctx: Ctx, p: ByName) -> Out {
    let store = ctx.node.store.clone();
    let name = p.name.clone();
    let count = blocking(move || store.revoke_api_tokens(&name)).await?;
    if count == 0 {
        return Err(ApiError::NotFound(format!("no token is named {}", p.name)));
    }
    Ok(json!({"revoked": count}))
}

// ---- certificates and signed changes

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// The certificate's serial number (hex), to revoke one certificate.
    #[serde(default)]
    pub serial: Option<String>,
    /// `cascade://node/<id>`, `cascade://agent/<id>` or an admin's
    /// identity, to revoke every certificate it has.
    #[serde(default)]
    pub identity: Option<String>,
    pub reason: String,
}

async fn certificates_revoke(ctx: Ctx, p: Revoke) -> Out {
    let (name, serial, identity) = match (&p.serial, &p.identity) {
        (Some(serial), None) => {
            let serial = serial
                .trim()
                .trim_start_matches("0x")
                .replace(':', "")
                .to_ascii_lowercase();
            if serial.is_empty() || serial.len() > 64 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::Invalid(format!(
                    "serial: {:?} is not a hex serial number",
                    p.serial
                )));
            }
            (format!("serial:{serial}"), Some(serial), None)
        }
        (None, Some(identity)) => {
            let parsed = cascade_trust::Identity::from_uri(identity)
                .ok_or_else(|| ApiError::Invalid(format!("identity: {identity:?} is not a cascade:// identity")))?;
            if parsed == cascade_trust::Identity::Node(ctx.node.id.clone()) {
                return Err(ApiError::Conflict("a node cannot revoke its own certificate".into()));
            }
            (format!("identity:{identity}"), None, Some(parsed.uri()))
        }
        _ => return Err(ApiError::Invalid("give either serial or identity".into())),
    };
    if p.reason.trim().is_empty() {
        return Err(ApiError::Invalid("reason: say why".into()));
    }
    let revocation = cascade_core::model::Revocation {
        id: id("revocation", &name)?,
        serial,
        identity,
        reason: p.reason,
        at: ctx.node.now(),
    };
    change(&ctx, ChangeOp::Upsert(Object::Revocation(revocation))).await
}

async fn certificates_revocations(ctx: Ctx, _: Nothing) -> Out {
    let list: Vec<Value> = objects(&ctx, ObjectKind::Revocation)
        .await?
        .into_iter()
        .map(|s| json!({"origin": s.origin, "revocation": s.object}))
        .collect();
    Ok(Value::Array(list))
}

async fn certificates_reinstate(ctx: Ctx, p: ById) -> Out {
    let key = cascade_core::model::ObjectKey {
        kind: ObjectKind::Revocation,
        id: id("revocation", &p.id)?,
    };
    let store = ctx.node.store.clone();
    let lookup = key.clone();
    match blocking(move || store.object(&lookup)).await? {
        Some(s) if s.origin == ctx.node.id => change(&ctx, ChangeOp::Delete(key)).await,
        Some(s) => Err(ApiError::Forbidden(format!("{} belongs to {}", p.id, s.origin))),
        None => Err(ApiError::NotFound(format!("no revocation {}", p.id))),
    }
}

async fn security_status(ctx: Ctx, _: Nothing) -> Out {
    use cascade_core::seal::Signer;
    Ok(json!({
        "signing_key": ctx.node.config.tls.signer().key(),
        "freshness": ctx.node.freshness()?,
        "refusals": ctx.node.refusals.list(),
    }))
}

// ---- Altiris-compatible names

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyWithUpdates {
    /// The policy's name (its id is made from it).
    pub name: String,
    /// Bulletins or updates (KB numbers, update ids) it approves.
    #[serde(alias = "bulletins")]
    pub updates: Vec<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn slug(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

async fn create_policy_with_updates(ctx: Ctx, p: CreatePolicyWithUpdates) -> Out {
    let policy_id = id("name", &slug(&p.name))?;
    let catalog: BTreeSet<UpdateId> = update_objects(&ctx).await?.into_iter().map(|u| u.id).collect();
    let wanted: Vec<UpdateId> = p.updates.iter().map(|u| UpdateId::new(u)).collect();
    if let Some(missing) = wanted.iter().find(|u| !catalog.contains(*u)) {
        return Err(ApiError::NotFound(format!(
            "updates: {missing} is not in this node's catalog"
        )));
    }
    let policy = Policy {
        enabled: p.enabled,
        ..Policy::new(policy_id.clone(), p.name.clone())
    };
    let mut ops = vec![ChangeOp::Upsert(Object::Policy(Box::new(policy)))];
    for update in &wanted {
        ops.push(ChangeOp::Upsert(Object::Approval(Approval {
            id: id("approval", &format!("{policy_id}/{update}"))?,
            policy: policy_id.clone(),
            update: update.clone(),
            deadline: None,
        })));
    }
    ctx.node.append_local_many(ops).await?;
    Ok(json!({"policy": policy_id, "approved": wanted}))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIds {
    #[serde(alias = "bulletins")]
    pub updates: Vec<String>,
}

async fn resolve_to_updates(ctx: Ctx, p: UpdateIds) -> Out {
    let updates = update_objects(&ctx).await?;
    let catalog = cascade_core::Catalog::new(updates);
    let rows: Vec<Value> = p
        .updates
        .iter()
        .map(|raw| {
            let id = UpdateId::new(raw);
            match catalog.get(&id) {
                Some(u) => json!({"id": id, "found": true, "title": u.title, "superseded_by": catalog.superseders_of(&id).iter().map(|s| s.id.clone()).collect::<Vec<_>>()}),
                None => json!({"id": id, "found": false}),
            }
        })
        .collect();
    Ok(Value::Array(rows))
}

async fn resolve_to_policies(ctx: Ctx, p: UpdateIds) -> Out {
    let approved = approvals_by_update(&ctx).await?;
    let rows: BTreeMap<String, Vec<String>> = p
        .updates
        .iter()
        .map(|raw| {
            let id = UpdateId::new(raw);
            (id.to_string(), approved.get(&id).cloned().unwrap_or_default())
        })
        .collect();
    to_value(&rows)
}

async fn disable_bulletins(ctx: Ctx, p: UpdateIds) -> Out {
    let wanted: BTreeSet<UpdateId> = p.updates.iter().map(|u| UpdateId::new(u)).collect();
    let mut ops = Vec::new();
    for s in objects(&ctx, ObjectKind::Approval).await? {
        if let Object::Approval(a) = s.object.value()
            && wanted.contains(&a.update)
            && s.origin == ctx.node.id
        {
            ops.push(ChangeOp::Delete(ObjectKey {
                kind: ObjectKind::Approval,
                id: a.id.clone(),
            }));
        }
    }
    let count = ops.len();
    if count > 0 {
        ctx.node.append_local_many(ops).await?;
    }
    Ok(json!({"approvals_withdrawn": count}))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSeverityLevel {
    pub update: String,
    /// A custom severity's id.
    pub level: String,
}

async fn set_severity_level(ctx: Ctx, p: SetSeverityLevel) -> Out {
    custom_severities_assign(
        ctx,
        SeverityAssign {
            update: p.update,
            severity: Some(p.level),
        },
    )
    .await
}

async fn get_property(ctx: Ctx, p: ById) -> Out {
    settings_get(&ctx, &p.id).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProperty {
    pub id: String,
    pub value: Value,
}

async fn set_property(ctx: Ctx, p: SetProperty) -> Out {
    settings_set(
        ctx,
        SettingSet {
            id: p.id,
            value: p.value,
            overridable: false,
        },
    )
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProperties {
    /// Setting id -> value.
    pub properties: BTreeMap<String, Value>,
}

async fn set_properties(ctx: Ctx, p: SetProperties) -> Out {
    let mut done = Vec::new();
    for (id, value) in p.properties {
        done.push(
            settings_set(
                ctx.clone(),
                SettingSet {
                    id,
                    value,
                    overridable: false,
                },
            )
            .await?,
        );
    }
    Ok(Value::Array(done))
}

fn policy_example() -> Value {
    json!({"policy": {"id": "workstations", "name": "Workstations", "updates": {"severities": ["Critical"]}, "targets": {"groups": ["workstations"]}, "maintenance_windows": ["nightly"], "enabled": true}})
}

pub static OPERATIONS: &[Operation] = &[
    op!(
        "me",
        "Access",
        Access::Read,
        "Who the caller is, its role and the operations it may call.",
        me,
        Nothing,
        json!({})
    ),
    op!(
        "tokens.create",
        "Access",
        Access::Admin,
        "A bearer token for this node's API with a role (shown once).",
        tokens_create,
        TokenCreate,
        json!({"name": "alice", "role": "admin", "ttl_hours": 8})
    ),
    op!(
        "tokens.list",
        "Access",
        Access::Admin,
        "The bearer tokens of this node (without secrets).",
        tokens_list,
        Nothing,
        json!({})
    ),
    op!(
        "tokens.revoke",
        "Access",
        Access::Admin,
        "Revokes the tokens of a name.",
        tokens_revoke,
        ByName,
        json!({"name": "alice"})
    ),
    op!(
        "certificates.revoke",
        "Access",
        Access::Admin,
        "Revokes a certificate (by serial) or every certificate of an identity; replicates down, and every node below refuses it from then on.",
        certificates_revoke,
        Revoke,
        json!({"identity": "cascade://agent/pc-lost-1", "reason": "laptop stolen"})
    ),
    op!(
        "certificates.revocations",
        "Access",
        Access::Read,
        "The revocations in force here, with the node that made each.",
        certificates_revocations,
        Nothing,
        json!({})
    ),
    op!(
        "certificates.reinstate",
        "Access",
        Access::Admin,
        "Withdraws a revocation this node made.",
        certificates_reinstate,
        ById,
        json!({"id": "identity:cascade://agent/pc-lost-1"})
    ),
    op!(
        "security.status",
        "Access",
        Access::Read,
        "This node's signing key, how fresh its view of the root is (signed timestamps), and the changes, reports and timestamps it refused lately with the attack each was.",
        security_status,
        Nothing,
        json!({})
    ),
    op!(
        "updates.search",
        "Updates",
        Access::Read,
        "Updates by severity, custom severity, product, classification, superseded, release date or text.",
        updates_search,
        UpdateSearch,
        json!({"severities": ["Critical"], "superseded": false, "limit": 20})
    ),
    op!(
        "updates.get",
        "Updates",
        Access::Read,
        "One update with its approvals and compliance counts.",
        updates_get,
        ById,
        json!({"id": "KB5021233"})
    ),
    op!(
        "catalog.import",
        "Updates",
        Access::Write,
        "Imports a vendor catalog (CVRF, WSUS XML, Update Catalog JSON, Cascade JSON).",
        catalog_import,
        CatalogImport,
        json!({"name": "cvrf-2022-dec.xml", "content": "<cvrfdoc>…</cvrfdoc>"})
    ),
    op!(
        "approvals.list",
        "Approvals",
        Access::Read,
        "Approvals, optionally of one policy.",
        approvals_list,
        ApprovalList,
        json!({"policy": "workstations"})
    ),
    op!(
        "approvals.create",
        "Approvals",
        Access::Write,
        "Approves an update for a policy, with an optional deadline.",
        approvals_create,
        ApprovalCreate,
        json!({"policy": "workstations", "update": "KB5021233", "deadline": 1_800_000_000})
    ),
    op!(
        "approvals.delete",
        "Approvals",
        Access::Write,
        "Withdraws an approval.",
        approvals_delete,
        ById,
        json!({"id": "workstations/KB5021233"})
    ),
    op!(
        "custom_severities.list",
        "Custom severities",
        Access::Read,
        "Custom severity levels, most urgent first.",
        custom_severities_list,
        Nothing,
        json!({})
    ),
    op!(
        "custom_severities.create",
        "Custom severities",
        Access::Write,
        "Creates or changes a custom severity level.",
        custom_severities_create,
        CustomSeverity,
        json!({"id": "p1", "name": "Patch this week", "rank": 100})
    ),
    op!(
        "custom_severities.assign",
        "Custom severities",
        Access::Write,
        "Gives an update a custom severity (null removes it).",
        custom_severities_assign,
        SeverityAssign,
        json!({"update": "KB5021233", "severity": "p1"})
    ),
    op!(
        "custom_severities.delete",
        "Custom severities",
        Access::Write,
        "Deletes a custom severity level.",
        custom_severities_delete,
        ById,
        json!({"id": "p1"})
    ),
    op!(
        "policies.list",
        "Policies",
        Access::Read,
        "Policies in force here, each marked local, inherited and locked, overridable, or overridden.",
        policies_list,
        Nothing,
        json!({})
    ),
    op!(
        "policies.get",
        "Policies",
        Access::Read,
        "One policy as in force here.",
        policies_get,
        ById,
        json!({"id": "workstations"})
    ),
    op!(
        "policies.upsert",
        "Policies",
        Access::Write,
        "Creates or changes a policy of this node.",
        policies_upsert,
        PolicyUpsert,
        policy_example()
    ),
    op!(
        "policies.delete",
        "Policies",
        Access::Write,
        "Deletes a policy of this node.",
        policies_delete,
        ById,
        json!({"id": "workstations"})
    ),
    op!(
        "windows.list",
        "Maintenance windows",
        Access::Read,
        "Maintenance windows in force here, with their inheritance.",
        windows_list,
        Nothing,
        json!({})
    ),
    op!(
        "windows.upsert",
        "Maintenance windows",
        Access::Write,
        "Creates or changes a maintenance window (checked: zone, start, days).",
        windows_upsert,
        WindowUpsert,
        json!({"window": {"id": "nightly", "name": "Nightly", "time_zone": "Europe/Berlin", "start": "22:00", "duration_minutes": 240, "days": ["mon", "tue", "wed", "thu", "fri"]}})
    ),
    op!(
        "windows.delete",
        "Maintenance windows",
        Access::Write,
        "Deletes a maintenance window of this node.",
        windows_delete,
        ById,
        json!({"id": "nightly"})
    ),
    op!(
        "settings.list",
        "Settings",
        Access::Read,
        "Settings in force here: local, inherited and locked, overridable, or overridden here.",
        settings_list,
        Nothing,
        json!({})
    ),
    op!(
        "settings.set",
        "Settings",
        Access::Write,
        "Sets a setting of this node, or overrides an inherited one its owner marked overridable.",
        settings_set,
        SettingSet,
        json!({"id": "compliance.max_scan_age_hours", "value": 48, "overridable": true})
    ),
    op!(
        "effective.list",
        "Settings",
        Access::Read,
        "Any kind of object as in force here, with origin, inheritance status and overrides.",
        effective_list,
        EffectiveList,
        json!({"kind": "policy"})
    ),
    op!(
        "objects.override",
        "Settings",
        Access::Write,
        "Overrides fields of an inherited object that its owner marked overridable.",
        objects_override,
        OverrideSet,
        json!({"kind": "maintenance_window", "id": "nightly", "fields": {"start": "23:00"}})
    ),
    op!(
        "objects.clear_override",
        "Settings",
        Access::Write,
        "Withdraws this node's override of an object.",
        objects_clear_override,
        ObjectRef,
        json!({"kind": "maintenance_window", "id": "nightly"})
    ),
    op!(
        "sites.tree",
        "Hierarchy",
        Access::Read,
        "This node, the sites above it, its subtree, the site records and link status.",
        sites_tree,
        Nothing,
        json!({})
    ),
    op!(
        "sites.add",
        "Hierarchy",
        Access::Admin,
        "Registers a child site (also the second half of moving a site here).",
        sites_add,
        SiteAdd,
        json!({"id": "site-a", "name": "Site A"})
    ),
    op!(
        "sites.remove",
        "Hierarchy",
        Access::Admin,
        "Unregisters a child site (the first half of moving it elsewhere).",
        sites_remove,
        ById,
        json!({"id": "site-a"})
    ),
    op!(
        "sites.move",
        "Hierarchy",
        Access::Admin,
        "Moves this node under another parent (first sites.remove at the old parent, then sites.add at the new one); its whole state goes there.",
        sites_move,
        SiteMove,
        json!({"parent": "region-b.example:7443", "parent_id": "region-b"})
    ),
    op!(
        "node.status",
        "Hierarchy",
        Access::Read,
        "A summary of this node: parent, children, links, outbox, agents, computers, content, catalog revision.",
        node_status,
        Nothing,
        json!({})
    ),
    op!(
        "links.list",
        "Hierarchy",
        Access::Read,
        "Link status both ways: connected, lag, last contact, last error.",
        links_list,
        Nothing,
        json!({})
    ),
    op!(
        "links.replicate_now",
        "Hierarchy",
        Access::Write,
        "Wakes the parent link now.",
        links_replicate_now,
        Nothing,
        json!({})
    ),
    op!(
        "changes.record",
        "Hierarchy",
        Access::Admin,
        "Records any change at this node, given as its JSON operation (an upsert or delete of an object this node owns); it replicates down.",
        changes_record,
        ChangeRecord,
        json!({"op": {"upsert": {"kind": "approval", "object": {"id": "critical/KB5021233", "policy": "critical", "update": "KB5021233"}}}})
    ),
    op!(
        "objects.list",
        "Hierarchy",
        Access::Read,
        "The stored objects of a kind at this node, with their origin and seal.",
        objects_list,
        ObjectsOfKind,
        json!({"kind": "policy"})
    ),
    op!(
        "agents.list",
        "Computers",
        Access::Read,
        "The agents this node serves, each with its latest ten install events.",
        agents_list,
        Nothing,
        json!({})
    ),
    op!(
        "agent_tokens.create",
        "Computers",
        Access::Write,
        "A one-time, expiring token with which one agent enrolls at this node (shown once).",
        agent_tokens_create,
        AgentTokenCreate,
        json!({"site": "site-a", "ttl_seconds": 3600})
    ),
    op!(
        "computers.list",
        "Computers",
        Access::Read,
        "Computers this node serves, with state counts and whether their scan is current, stale or missing.",
        computers_list,
        ComputerList,
        json!({"limit": 50})
    ),
    op!(
        "computers.inventory",
        "Computers",
        Access::Read,
        "A computer's latest inventory.",
        computers_inventory,
        ByComputer,
        json!({"computer": "pc-0042"})
    ),
    op!(
        "computers.plan",
        "Computers",
        Access::Read,
        "A computer's assignment now: what it would install, in order, and why the rest not.",
        computers_plan,
        ByComputer,
        json!({"computer": "pc-0042"})
    ),
    op!(
        "computers.compliance",
        "Computers",
        Access::Read,
        "A computer's state per update, each with its age; unknown states with their reason.",
        computers_compliance,
        ByComputer,
        json!({"computer": "pc-0042"})
    ),
    op!(
        "compliance.by_update",
        "Compliance",
        Access::Read,
        "Counts per state of this node's subtree, per update or for one.",
        compliance_by_update,
        ComplianceByUpdate,
        json!({"update": "KB5021233"})
    ),
    op!(
        "compliance.by_site",
        "Compliance",
        Access::Read,
        "Counts per state per site and severity, for this node's subtree.",
        compliance_by_site,
        Nothing,
        json!({})
    ),
    op!(
        "compliance.by_severity",
        "Compliance",
        Access::Read,
        "Counts per state per severity, for this node's subtree.",
        compliance_by_severity,
        Nothing,
        json!({})
    ),
    op!(
        "policies.what_if",
        "Policies",
        Access::Read,
        "Before approving: which computers here a policy would give which updates, how many restart, and whether the work fits their windows.",
        workflow::policies_what_if,
        workflow::WhatIf,
        json!({"policy": {"id": "pilot", "name": "Pilot", "updates": {"severities": ["Critical"]}}, "minutes_per_update": 10})
    ),
    op!(
        "rollout.status",
        "Policies",
        Access::Read,
        "Staged rollouts: each ring's state per update (open, waiting with its soak end, halted with why) and the subtree's counts.",
        workflow::rollout_status,
        workflow::RolloutStatus,
        json!({"policy": "workstations"})
    ),
    op!(
        "rollout.promote",
        "Policies",
        Access::Write,
        "Opens the next ring of an update's rollout now (lifting a halt), at the policy's own node.",
        workflow::rollout_promote,
        workflow::RolloutPromote,
        json!({"policy": "workstations", "update": "KB5021233"})
    ),
    op!(
        "tasks.run",
        "Tasks",
        Access::Write,
        "Starts a task on this node: replicate_now, compact or persist_agents.",
        workflow::tasks_run,
        workflow::TaskRun,
        json!({"task": "compact"})
    ),
    op!(
        "tasks.status",
        "Tasks",
        Access::Read,
        "A task's state and result.",
        workflow::tasks_status,
        workflow::TaskId,
        json!({"id": 1})
    ),
    op!(
        "audit.log",
        "Audit",
        Access::Read,
        "The audit log: who changed what, when (it replicates up).",
        audit_log,
        AuditLog,
        json!({"after": 0, "limit": 50})
    ),
    // The names of the Altiris Patch Workflow Web Service.
    op!(
        "CreateUpdatePolicy",
        "Altiris names",
        Access::Write,
        "Creates a policy approving bulletins.",
        create_policy_with_updates,
        CreatePolicyWithUpdates,
        json!({"name": "December rollup", "bulletins": ["KB5021233"], "enabled": true}),
        Some("policies.upsert")
    ),
    op!(
        "CreateUpdatePolicyViaUpdates",
        "Altiris names",
        Access::Write,
        "Creates a policy approving updates.",
        create_policy_with_updates,
        CreatePolicyWithUpdates,
        json!({"name": "December rollup", "updates": ["KB5021233"]}),
        Some("policies.upsert")
    ),
    op!(
        "ResolveToUpdates",
        "Altiris names",
        Access::Read,
        "Resolves bulletins to updates (and what supersedes them).",
        resolve_to_updates,
        UpdateIds,
        json!({"bulletins": ["KB5021233"]}),
        Some("updates.get")
    ),
    op!(
        "ResolveToPolicies",
        "Altiris names",
        Access::Read,
        "The policies that approve each update.",
        resolve_to_policies,
        UpdateIds,
        json!({"updates": ["KB5021233"]}),
        Some("approvals.list")
    ),
    op!(
        "DisableBulletins",
        "Altiris names",
        Access::Write,
        "Withdraws this node's approvals of the bulletins.",
        disable_bulletins,
        UpdateIds,
        json!({"bulletins": ["KB5021233"]}),
        Some("approvals.delete")
    ),
    op!(
        "GetCustomSeverities",
        "Altiris names",
        Access::Read,
        "The custom severity levels.",
        custom_severities_list,
        Nothing,
        json!({}),
        Some("custom_severities.list")
    ),
    op!(
        "GetCustomSeverityLevels",
        "Altiris names",
        Access::Read,
        "The custom severity levels, most urgent first.",
        custom_severities_list,
        Nothing,
        json!({}),
        Some("custom_severities.list")
    ),
    op!(
        "SetSeverityLevel",
        "Altiris names",
        Access::Write,
        "Gives an update a custom severity level.",
        set_severity_level,
        SetSeverityLevel,
        json!({"update": "KB5021233", "level": "p1"}),
        Some("custom_severities.assign")
    ),
    op!(
        "GetProperty",
        "Altiris names",
        Access::Read,
        "One setting as in force here.",
        get_property,
        ById,
        json!({"id": "compliance.max_scan_age_hours"}),
        Some("settings.list")
    ),
    op!(
        "SetProperty",
        "Altiris names",
        Access::Write,
        "Sets one setting.",
        set_property,
        SetProperty,
        json!({"id": "compliance.max_scan_age_hours", "value": 48}),
        Some("settings.set")
    ),
    op!(
        "SetProperties",
        "Altiris names",
        Access::Write,
        "Sets several settings.",
        set_properties,
        SetProperties,
        json!({"properties": {"compliance.max_scan_age_hours": 48}}),
        Some("settings.set")
    ),
    op!(
        "content.status",
        "Content",
        Access::Read,
        "The content cache (files, bytes, limit, transfers in flight, bytes fetched and served) and, per approved update, which files this node holds and which it lacks.",
        workflow::content_status,
        Nothing,
        json!({})
    ),
    op!(
        "content.ensure",
        "Content",
        Access::Write,
        "Fetches the content of the updates this node lacks (pre-staging) from the parent, or at the root from the vendor's URL, verified by sha256.",
        workflow::content_ensure,
        workflow::ContentEnsure,
        json!({"updates": ["KB5021233"]})
    ),
    op!(
        "EnsureStaged",
        "Altiris names",
        Access::Write,
        "Makes sure the updates' content is on this node, fetching it from the parent.",
        workflow::content_ensure,
        workflow::ContentEnsure,
        json!({"bulletins": ["KB5021233"]}),
        Some("content.ensure")
    ),
    op!(
        "content.add",
        "Content",
        Access::Write,
        "Adds content from a file or directory on this node's own disk: each file the catalog names (by sha256 and size) is copied in, verified.",
        workflow::content_add,
        workflow::ContentAdd,
        json!({"path": "/srv/vendor-downloads/2022-12"})
    ),
    op!(
        "IsStaged",
        "Altiris names",
        Access::Read,
        "Whether each update's content is on this node.",
        workflow::is_staged,
        UpdateIds,
        json!({"updates": ["KB5021233"]}),
        Some("content.status")
    ),
    op!(
        "GetStagedUpdates",
        "Altiris names",
        Access::Read,
        "Approved updates whose content is on this node.",
        workflow::staged_updates,
        Nothing,
        json!({}),
        Some("content.status")
    ),
    op!(
        "GetNonstagedUpdates",
        "Altiris names",
        Access::Read,
        "Approved updates whose content is not (all) on this node, with what is missing.",
        workflow::nonstaged_updates,
        Nothing,
        json!({}),
        Some("content.status")
    ),
    op!(
        "RunTask",
        "Altiris names",
        Access::Write,
        "Starts a task on this node.",
        workflow::tasks_run,
        workflow::TaskRun,
        json!({"task": "compact"}),
        Some("tasks.run")
    ),
    op!(
        "GetTaskInstanceStatus",
        "Altiris names",
        Access::Read,
        "A task's state and result.",
        workflow::tasks_status,
        workflow::TaskId,
        json!({"id": 1}),
        Some("tasks.status")
    ),
    op!(
        "MyPrivileges",
        "Altiris names",
        Access::Read,
        "The caller's role and allowed operations.",
        me,
        Nothing,
        json!({}),
        Some("me")
    ),
];
