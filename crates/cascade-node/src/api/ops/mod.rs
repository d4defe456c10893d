//! The operations, one file per domain. Each takes its parameters as a
//! type (unknown fields are refused) and returns a type of its own, whose
//! JSON Schema is the result's in the OpenAPI document; this file holds
//! what they share and the registry, which names them, groups them for the
//! help page, and gives each its access and an example.

use std::collections::{BTreeMap, BTreeSet};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{
    Approval, ChangeOp, ComputerId, CustomSeverity, MaintenanceWindow, NodeId, Object, ObjectId, ObjectKey, ObjectKind,
    Override, Policy, Setting, Site,
};
use cascade_core::update::{Classification, Severity};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Access, ApiError, Ctx, Operation, parse_params, workflow};
use crate::blocking;

pub(super) type Out<T> = Result<T, ApiError>;

pub(super) fn id(kind: &'static str, raw: &str) -> Result<ObjectId, ApiError> {
    ObjectId::new(raw).map_err(|e| ApiError::Invalid(format!("{kind}: {e}")))
}

pub(super) async fn objects(ctx: &Ctx, kind: ObjectKind) -> Result<Vec<cascade_store::StoredObject>, ApiError> {
    let store = ctx.node.db.clone();
    Ok(store.run(move |store| store.objects(kind)).await?)
}

/// A change recorded at this node: it replicates down (and its audit entry
/// up) from here.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Recorded {
    pub origin: NodeId,
    pub seq: u64,
}

async fn change(ctx: &Ctx, op: ChangeOp) -> Out<Recorded> {
    let change = ctx.node.append_local(op).await?;
    Ok(Recorded {
        origin: change.origin,
        seq: change.seq,
    })
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

mod altiris;
mod approvals;
mod catalog;
mod certificates;
mod changes;
mod compliance;
mod computers;
mod hierarchy;
mod me;
mod policies;
mod settings;
mod severities;
mod updates;

pub(crate) use altiris::*;
pub(crate) use approvals::*;
pub(crate) use catalog::*;
pub(crate) use certificates::*;
pub(crate) use changes::*;
pub(crate) use compliance::*;
pub(crate) use computers::*;
pub(crate) use hierarchy::*;
pub(crate) use me::*;
pub(crate) use policies::*;
pub(crate) use settings::*;
pub(crate) use severities::*;
pub(crate) use updates::*;

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
