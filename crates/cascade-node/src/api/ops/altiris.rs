//! Operations: Altiris-compatible names.

use super::*;

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

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn slug(name: &str) -> String {
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

/// The policy made and the updates it approves.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PolicyCreated {
    pub policy: ObjectId,
    pub approved: Vec<UpdateId>,
}

pub(crate) async fn create_policy_with_updates(ctx: Ctx, p: CreatePolicyWithUpdates) -> Out<PolicyCreated> {
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
    Ok(PolicyCreated {
        policy: policy_id,
        approved: wanted,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIds {
    #[serde(alias = "bulletins")]
    pub updates: Vec<String>,
}

/// A bulletin or update id as this node's catalog knows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resolved {
    pub id: UpdateId,
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<std::sync::Arc<str>>,
    /// What replaces it (when found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<Vec<UpdateId>>,
}

pub(crate) async fn resolve_to_updates(ctx: Ctx, p: UpdateIds) -> Out<Vec<Resolved>> {
    let updates = update_objects(&ctx).await?;
    let catalog = cascade_core::Catalog::new(updates);
    Ok(p.updates
        .iter()
        .map(|raw| {
            let id = UpdateId::new(raw);
            let found = catalog.get(&id);
            Resolved {
                found: found.is_some(),
                title: found.map(|u| u.title.clone()),
                superseded_by: found.map(|_| catalog.superseders_of(&id).iter().map(|s| s.id.clone()).collect()),
                id,
            }
        })
        .collect())
}

/// Update -> the policies that approve it here.
pub(crate) async fn resolve_to_policies(ctx: Ctx, p: UpdateIds) -> Out<BTreeMap<String, Vec<String>>> {
    let approved = approvals_by_update(&ctx).await?;
    Ok(p.updates
        .iter()
        .map(|raw| {
            let id = UpdateId::new(raw);
            (id.to_string(), approved.get(&id).cloned().unwrap_or_default())
        })
        .collect())
}

/// How many of this node's approvals were withdrawn.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Withdrawn {
    pub approvals_withdrawn: usize,
}

pub(crate) async fn disable_bulletins(ctx: Ctx, p: UpdateIds) -> Out<Withdrawn> {
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
    Ok(Withdrawn {
        approvals_withdrawn: count,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSeverityLevel {
    pub update: String,
    /// A custom severity's id.
    pub level: String,
}

pub(crate) async fn set_severity_level(ctx: Ctx, p: SetSeverityLevel) -> Out<Recorded> {
    custom_severities_assign(
        ctx,
        SeverityAssign {
            update: p.update,
            severity: Some(p.level),
        },
    )
    .await
}

pub(crate) async fn get_property(ctx: Ctx, p: ById) -> Out<Effective> {
    settings_get(&ctx, &p.id).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProperty {
    pub id: String,
    pub value: Value,
}

pub(crate) async fn set_property(ctx: Ctx, p: SetProperty) -> Out<Recorded> {
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

pub(crate) async fn set_properties(ctx: Ctx, p: SetProperties) -> Out<Vec<Recorded>> {
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
    Ok(done)
}

pub(crate) fn policy_example() -> Value {
    json!({"policy": {"id": "workstations", "name": "Workstations", "updates": {"severities": ["Critical"]}, "targets": {"groups": ["workstations"]}, "maintenance_windows": ["nightly"], "enabled": true}})
}
