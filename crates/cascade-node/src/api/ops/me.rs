//! Operations: who am I.

use super::*;

pub(crate) async fn me(ctx: Ctx, _: Nothing) -> Out {
    let role = ctx.caller.role();
    let allowed: Vec<&str> = crate::api::operations()
        .iter()
        .filter(|o| o.alias_of.is_none() && o.access.allows(role))
        .map(|o| o.name)
        .collect();
    Ok(json!({"caller": ctx.caller, "node": ctx.node.id, "operations": allowed}))
}
