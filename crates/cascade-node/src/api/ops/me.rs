//! Operations: who am I.

use super::*;

/// The caller as this node sees it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Me {
    pub caller: crate::api::Caller,
    pub node: NodeId,
    /// The operations the caller's role allows (native names).
    pub operations: Vec<&'static str>,
}

pub(crate) async fn me(ctx: Ctx, _: Nothing) -> Out<Me> {
    let role = ctx.caller.role();
    let operations = crate::api::operations()
        .iter()
        .filter(|o| o.alias_of.is_none() && o.access.allows(role))
        .map(|o| o.name)
        .collect();
    Ok(Me {
        caller: ctx.caller,
        node: ctx.node.id.clone(),
        operations,
    })
}
