//! Operations: what `cascade ctl` drives: raw changes, objects, agents, enrollment.

use super::*;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// The operation: `{"upsert": {"kind": ..., "object": {...}}}`,
    /// `{"delete": {"kind": ..., "id": ...}}`, an override or its withdrawal.
    pub op: ChangeOp,
}

pub(crate) async fn changes_record(ctx: Ctx, p: ChangeRecord) -> Out<Recorded> {
    change(&ctx, p.op).await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectsOfKind {
    /// update, approval, policy, window, severity, setting, site, revocation, ...
    pub kind: String,
}

pub(crate) async fn objects_list(ctx: Ctx, p: ObjectsOfKind) -> Out<Vec<cascade_store::StoredObject>> {
    let kind =
        ObjectKind::parse(&p.kind).ok_or_else(|| ApiError::Invalid(format!("kind: unknown kind {:?}", p.kind)))?;
    objects(&ctx, kind).await
}

/// An agent with its latest ten install events.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentRow {
    pub agent: cascade_core::model::Agent,
    pub events: Vec<cascade_core::model::InstallEvent>,
}

pub(crate) async fn agents_list(ctx: Ctx, _: Nothing) -> Out<Vec<AgentRow>> {
    let node = ctx.node.clone();
    node.run(move |node| -> Out<Vec<AgentRow>> {
        let mut rows = Vec::new();
        for agent in node.agents()? {
            let mut events = node.store.events(&agent.id)?;
            let events = events.split_off(events.len().saturating_sub(10));
            rows.push(AgentRow { agent, events });
        }
        Ok(rows)
    })
    .await
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTokenCreate {
    /// The site the agent joins: this node's id (checked, so that a token
    /// is not made at the wrong node by mistake).
    pub site: String,
    /// How long the token is valid: 60 seconds to 30 days.
    #[serde(default = "default_agent_token_seconds")]
    pub ttl_seconds: u64,
}

pub(crate) fn default_agent_token_seconds() -> u64 {
    3600
}

/// A one-time enrollment token: shown here once and never again.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewAgentToken {
    pub token: String,
    pub site: NodeId,
    /// Unix seconds.
    pub expires_at: i64,
}

pub(crate) async fn agent_tokens_create(ctx: Ctx, p: AgentTokenCreate) -> Out<NewAgentToken> {
    let node = &ctx.node;
    if p.site != node.id.as_str() {
        return Err(ApiError::Invalid(format!(
            "site: agents of {} enroll at its own node; this is node {}",
            p.site, node.id
        )));
    }
    if node.config.enrollment.is_none() {
        return Err(ApiError::Conflict(format!(
            "node {} does not enroll agents: its configuration has no [enrollment]",
            node.id
        )));
    }
    if !(60..=30 * 86_400).contains(&p.ttl_seconds) {
        return Err(ApiError::Invalid(format!(
            "ttl_seconds: {} is not between 60 (1 minute) and 2592000 (30 days)",
            p.ttl_seconds
        )));
    }
    let token = cascade_trust::EnrollmentToken::generate(node.id.clone(), &node.config.ca_pem);
    let text = token.encode().map_err(|e| ApiError::Internal(e.to_string()))?;
    let at = ctx.node.now();
    let record = cascade_store::TokenRecord {
        site: node.id.clone(),
        created_by: ctx.caller.name.clone(),
        created_at: at,
        expires_at: at + p.ttl_seconds as i64,
    };
    let expires_at = record.expires_at;
    let store = node.db.clone();
    let hash = token.secret_hash();
    store.run(move |store| store.put_token(&hash, &record)).await?;
    Ok(NewAgentToken {
        token: text,
        site: node.id.clone(),
        expires_at,
    })
}
