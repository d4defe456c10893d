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

pub(crate) async fn create_policy_with_updates(ctx: Ctx, p: CreatePolicyWithUpdates) -> Out {
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

pub(crate) async fn resolve_to_updates(ctx: Ctx, p: UpdateIds) -> Out {
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

pub(crate) async fn resolve_to_policies(ctx: Ctx, p: UpdateIds) -> Out {
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

pub(crate) async fn disable_bulletins(ctx: Ctx, p: UpdateIds) -> Out {
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

pub(crate) async fn set_severity_level(ctx: Ctx, p: SetSeverityLevel) -> Out {
    custom_severities_assign(
        ctx,
        SeverityAssign {
            update: p.update,
            severity: Some(p.level),
        },
    )
    .await
}

pub(crate) async fn get_property(ctx: Ctx, p: ById) -> Out {
    settings_get(&ctx, &p.id).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetProperty {
    pub id: String,
    pub value: Value,
}

pub(crate) async fn set_property(ctx: Ctx, p: SetProperty) -> Out {
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

pub(crate) async fn set_properties(ctx: Ctx, p: SetProperties) -> Out {
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

pub(crate) fn policy_example() -> Value {
    json!({"policy": {"id": "workstations", "name": "Workstations", "updates": {"severities": ["Critical"]}, "targets": {"groups": ["workstations"]}, "maintenance_windows": ["nightly"], "enabled": true}})
}
