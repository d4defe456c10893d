//! Operations: custom severities.

use super::*;

pub(crate) async fn custom_severities_list(ctx: Ctx, _: Nothing) -> Out<Vec<CustomSeverity>> {
    let mut list: Vec<CustomSeverity> = objects(&ctx, ObjectKind::CustomSeverity)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::CustomSeverity(c) => Some(c),
            _ => None,
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.rank));
    Ok(list)
}

pub(crate) async fn custom_severities_create(ctx: Ctx, p: CustomSeverity) -> Out<Recorded> {
    if p.name.trim().is_empty() {
        return Err(ApiError::Invalid("name: may not be empty".into()));
    }
    change(&ctx, ChangeOp::Upsert(Object::CustomSeverity(p))).await
}

pub(crate) async fn custom_severities_delete(ctx: Ctx, p: ById) -> Out<Recorded> {
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

pub(crate) async fn custom_severities_assign(ctx: Ctx, p: SeverityAssign) -> Out<Recorded> {
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
    let store = ctx.node.db.clone();
    let stored = store
        .run(move |store| store.object(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("update: {update} is not in this node's catalog")))?;
    let Object::Update(mut u) = stored.object.into_value() else {
        return Err(ApiError::Internal("not an update".into()));
    };
    u.custom_severity = p.severity;
    change(&ctx, ChangeOp::Upsert(Object::Update(u))).await
}
