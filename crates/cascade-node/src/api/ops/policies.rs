//! Operations: policies and windows.

use super::*;

pub(crate) async fn policies_list(ctx: Ctx, _: Nothing) -> Out<Vec<Effective>> {
    effective_of(&ctx, ObjectKind::Policy).await
}

pub(crate) async fn policies_get(ctx: Ctx, p: ById) -> Out<Effective> {
    effective_of(&ctx, ObjectKind::Policy)
        .await?
        .into_iter()
        .find(|e| e.id.as_str() == p.id)
        .ok_or_else(|| ApiError::NotFound(format!("policy {} does not exist here", p.id)))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpsert {
    pub policy: Policy,
}

pub(crate) async fn policies_upsert(ctx: Ctx, p: PolicyUpsert) -> Out<Recorded> {
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

pub(crate) async fn policies_delete(ctx: Ctx, p: ById) -> Out<Recorded> {
    delete(&ctx, ObjectKind::Policy, &p.id).await
}

pub(crate) async fn windows_list(ctx: Ctx, _: Nothing) -> Out<Vec<Effective>> {
    effective_of(&ctx, ObjectKind::MaintenanceWindow).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowUpsert {
    pub window: MaintenanceWindow,
}

pub(crate) async fn windows_upsert(ctx: Ctx, p: WindowUpsert) -> Out<Recorded> {
    cascade_core::schedule::Schedule::new(&p.window).map_err(|e| ApiError::Invalid(format!("window: {e}")))?;
    change(&ctx, ChangeOp::Upsert(Object::MaintenanceWindow(Box::new(p.window)))).await
}

pub(crate) async fn windows_delete(ctx: Ctx, p: ById) -> Out<Recorded> {
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
