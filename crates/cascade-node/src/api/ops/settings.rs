//! Operations: settings, effective objects, overrides.

use super::*;

/// Each object of a kind as in force here: its origin and whether it is
/// local, inherited and locked, inherited and overridable, or inherited and
/// overridden here (with the fields).
pub(crate) async fn effective_of(ctx: &Ctx, kind: ObjectKind) -> Out {
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

pub(crate) fn kind(raw: &str) -> Result<ObjectKind, ApiError> {
    ObjectKind::parse(raw).ok_or_else(|| {
        ApiError::Invalid(format!(
            "kind: {raw:?} is not one of {}",
            ObjectKind::ALL.map(|k| k.as_str()).join(", ")
        ))
    })
}

pub(crate) async fn effective_list(ctx: Ctx, p: EffectiveList) -> Out {
    effective_of(&ctx, kind(&p.kind)?).await
}

pub(crate) async fn settings_list(ctx: Ctx, _: Nothing) -> Out {
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
pub(crate) async fn settings_set(ctx: Ctx, p: SettingSet) -> Out {
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

pub(crate) async fn settings_get(ctx: &Ctx, raw: &str) -> Out {
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

pub(crate) async fn objects_override(ctx: Ctx, p: OverrideSet) -> Out {
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

pub(crate) async fn objects_clear_override(ctx: Ctx, p: ObjectRef) -> Out {
    let target = ObjectKey {
        kind: kind(&p.kind)?,
        id: id("id", &p.id)?,
    };
    change(&ctx, ChangeOp::ClearOverride(target)).await
}
