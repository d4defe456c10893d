//! Operations: settings, effective objects, overrides.

use super::*;

/// An object as in force here, with where it comes from and what may
/// change it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Effective {
    #[serde(skip)]
    pub id: ObjectId,
    /// With the overrides in force here applied; as stored when it is not
    /// in force here.
    pub object: cascade_core::exact::Exact<Object>,
    /// The node that owns it.
    pub origin: NodeId,
    /// local; inherited, locked; inherited, overridable; inherited,
    /// overridden here (or above); or not in force here, with why.
    pub status: String,
    /// The fields its owner lets sites below override.
    pub overridable: BTreeSet<String>,
    pub overrides: Vec<OverrideRow>,
}

/// One node's override of an inherited object.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OverrideRow {
    pub origin: NodeId,
    /// Field name -> the value in force below that node.
    pub fields: BTreeMap<String, Value>,
}

/// Each object of a kind as in force here: its origin and whether it is
/// local, inherited and locked, inherited and overridable, or inherited and
/// overridden here (with the fields).
pub(crate) async fn effective_of(ctx: &Ctx, kind: ObjectKind) -> Out<Vec<Effective>> {
    let node = ctx.node.clone();
    node.run(move |node| -> Out<Vec<Effective>> {
        let mut effective: BTreeMap<String, Object> = node
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
            let object = match effective.remove(key.id.as_str()) {
                Some(object) => cascade_core::exact::Exact::new(object),
                None => stored.object,
            };
            rows.push(Effective {
                id: key.id,
                object,
                origin: stored.origin,
                status,
                overridable,
                overrides: overrides
                    .into_iter()
                    .map(|(origin, o)| OverrideRow {
                        origin,
                        fields: o.into_value().fields,
                    })
                    .collect(),
            });
        }
        Ok(rows)
    })
    .await
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

pub(crate) async fn effective_list(ctx: Ctx, p: EffectiveList) -> Out<Vec<Effective>> {
    effective_of(&ctx, kind(&p.kind)?).await
}

pub(crate) async fn settings_list(ctx: Ctx, _: Nothing) -> Out<Vec<Effective>> {
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
pub(crate) async fn settings_set(ctx: Ctx, p: SettingSet) -> Out<Recorded> {
    let key = ObjectKey {
        kind: ObjectKind::Setting,
        id: id("id", &p.id)?,
    };
    let store = ctx.node.db.clone();
    let lookup = key.clone();
    let existing = store.run(move |store| store.object(&lookup)).await?;
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

pub(crate) async fn settings_get(ctx: &Ctx, raw: &str) -> Out<Effective> {
    effective_of(ctx, ObjectKind::Setting)
        .await?
        .into_iter()
        .find(|e| e.id.as_str() == raw)
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

pub(crate) async fn objects_override(ctx: Ctx, p: OverrideSet) -> Out<Recorded> {
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

pub(crate) async fn objects_clear_override(ctx: Ctx, p: ObjectRef) -> Out<Recorded> {
    let target = ObjectKey {
        kind: kind(&p.kind)?,
        id: id("id", &p.id)?,
    };
    change(&ctx, ChangeOp::ClearOverride(target)).await
}
