//! Operations: approvals.

use super::*;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalList {
    #[serde(default)]
    pub policy: Option<String>,
}

/// An approval with the node that made it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalRow {
    pub approval: Approval,
    pub origin: NodeId,
}

pub(crate) async fn approvals_list(ctx: Ctx, p: ApprovalList) -> Out<Vec<ApprovalRow>> {
    Ok(objects(&ctx, ObjectKind::Approval)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Approval(a) if p.policy.as_deref().is_none_or(|want| a.policy.as_str() == want) => {
                Some(ApprovalRow {
                    approval: a,
                    origin: s.origin,
                })
            }
            _ => None,
        })
        .collect())
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

pub(crate) async fn approvals_create(ctx: Ctx, p: ApprovalCreate) -> Out<Recorded> {
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

pub(crate) async fn delete(ctx: &Ctx, kind: ObjectKind, raw: &str) -> Out<Recorded> {
    let key = ObjectKey {
        kind,
        id: id("id", raw)?,
    };
    let store = ctx.node.db.clone();
    let lookup = key.clone();
    if store.run(move |store| store.object(&lookup)).await?.is_none() {
        return Err(ApiError::NotFound(format!("{key} does not exist")));
    }
    change(ctx, ChangeOp::Delete(key)).await
}

pub(crate) async fn approvals_delete(ctx: Ctx, p: ById) -> Out<Recorded> {
    delete(&ctx, ObjectKind::Approval, &p.id).await
}
