//! Operations: certificates and signed changes.

use super::*;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// The certificate's serial number (hex), to revoke one certificate.
    #[serde(default)]
    pub serial: Option<String>,
    /// `cascade://node/<id>`, `cascade://agent/<id>` or an admin's
    /// identity, to revoke every certificate it has.
    #[serde(default)]
    pub identity: Option<String>,
    pub reason: String,
}

pub(crate) async fn certificates_revoke(ctx: Ctx, p: Revoke) -> Out<Recorded> {
    let (name, serial, identity) = match (&p.serial, &p.identity) {
        (Some(serial), None) => {
            let serial = serial
                .trim()
                .trim_start_matches("0x")
                .replace(':', "")
                .to_ascii_lowercase();
            if serial.is_empty() || serial.len() > 64 || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::Invalid(format!(
                    "serial: {:?} is not a hex serial number",
                    p.serial
                )));
            }
            (format!("serial:{serial}"), Some(serial), None)
        }
        (None, Some(identity)) => {
            let parsed = cascade_trust::Identity::from_uri(identity)
                .ok_or_else(|| ApiError::Invalid(format!("identity: {identity:?} is not a cascade:// identity")))?;
            if parsed == cascade_trust::Identity::Node(ctx.node.id.clone()) {
                return Err(ApiError::Conflict("a node cannot revoke its own certificate".into()));
            }
            (format!("identity:{identity}"), None, Some(parsed.uri()))
        }
        _ => return Err(ApiError::Invalid("give either serial or identity".into())),
    };
    if p.reason.trim().is_empty() {
        return Err(ApiError::Invalid("reason: say why".into()));
    }
    let revocation = cascade_core::model::Revocation {
        id: id("revocation", &name)?,
        serial,
        identity,
        reason: p.reason,
        at: ctx.node.now(),
    };
    change(&ctx, ChangeOp::Upsert(Object::Revocation(revocation))).await
}

/// A revocation in force here with the node that made it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RevocationRow {
    pub origin: NodeId,
    /// The revocation object (kind `revocation`) as signed.
    pub revocation: cascade_core::exact::Exact<Object>,
}

pub(crate) async fn certificates_revocations(ctx: Ctx, _: Nothing) -> Out<Vec<RevocationRow>> {
    Ok(objects(&ctx, ObjectKind::Revocation)
        .await?
        .into_iter()
        .map(|s| RevocationRow {
            origin: s.origin,
            revocation: s.object,
        })
        .collect())
}

pub(crate) async fn certificates_reinstate(ctx: Ctx, p: ById) -> Out<Recorded> {
    let key = cascade_core::model::ObjectKey {
        kind: ObjectKind::Revocation,
        id: id("revocation", &p.id)?,
    };
    let store = ctx.node.db.clone();
    let lookup = key.clone();
    match store.run(move |store| store.object(&lookup)).await? {
        Some(s) if s.origin == ctx.node.id => change(&ctx, ChangeOp::Delete(key)).await,
        Some(s) => Err(ApiError::Forbidden(format!("{} belongs to {}", p.id, s.origin))),
        None => Err(ApiError::NotFound(format!("no revocation {}", p.id))),
    }
}

/// This node's signing key, how fresh its view of the root is, and what it
/// refused lately.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SecurityStatus {
    /// Hex SHA-256 of the certificate whose key signs this node's changes.
    pub signing_key: String,
    pub freshness: crate::security::Freshness,
    pub refusals: Vec<crate::security::Refusal>,
}

pub(crate) async fn security_status(ctx: Ctx, _: Nothing) -> Out<SecurityStatus> {
    use cascade_core::seal::Signer;
    Ok(SecurityStatus {
        signing_key: ctx.node.config.tls.signer().key().to_owned(),
        freshness: ctx.node.run(|n| n.freshness()).await?,
        refusals: ctx.node.trust.refusals.list(),
    })
}
