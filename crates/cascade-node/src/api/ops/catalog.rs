//! Operations: catalog, audit, tokens.

use super::*;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogImport {
    /// The file's name, for messages.
    pub name: String,
    /// The file as text (XML, JSON or YAML).
    #[serde(default)]
    pub content: Option<String>,
    /// The file as base64, for anything that is not UTF-8 text.
    #[serde(default)]
    pub content_base64: Option<String>,
    /// Several files read together: the version, installer and locale
    /// manifests of a winget package version (or more versions at once).
    #[serde(default)]
    pub files: Option<Vec<ImportFile>>,
    /// winget manifests: only these package identifiers
    /// (`["Mozilla.Firefox", "7zip.7zip"]`); empty takes every package.
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    pub name: String,
    pub content: String,
}

pub(crate) async fn catalog_import(ctx: Ctx, p: CatalogImport) -> Out<Imported> {
    use base64::Engine;
    let include = p.include;
    let source = p.name.clone();
    let data = match (p.content, p.content_base64, p.files) {
        (Some(text), None, None) => Some(text.into_bytes()),
        (None, Some(b64), None) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| ApiError::Invalid(format!("content_base64: {e}")))?,
        ),
        (None, None, Some(files)) => {
            let files: Vec<(String, String)> = files.into_iter().map(|f| (f.name, f.content)).collect();
            let imported = blocking(move || cascade_core::import::import_winget(&files, &include))
                .await
                .map_err(|e| ApiError::Invalid(e.to_string()))?;
            return store_imported(&ctx, imported).await;
        }
        _ => None,
    };
    let Some(data) = data else {
        return Err(ApiError::Invalid(
            "give exactly one of content, content_base64 and files".into(),
        ));
    };
    let imported = blocking(move || {
        use cascade_core::import::{self, CatalogFormat, ImportError};
        if import::detect_catalog(&data) == Some(CatalogFormat::Winget) {
            let text = String::from_utf8(data).map_err(|e| ImportError::Format {
                source_name: source.clone(),
                message: format!("not valid UTF-8 (byte offset {})", e.utf8_error().valid_up_to()),
            })?;
            return import::import_winget(&[(source, text)], &include);
        }
        if !include.is_empty() {
            return Err(ImportError::Format {
                source_name: source,
                message: "include chooses winget packages; this file is not a winget manifest".into(),
            });
        }
        import::import_catalog(&source, &data, &import::NoFragments)
    })
    .await
    .map_err(|e| ApiError::Invalid(e.to_string()))?;
    store_imported(&ctx, imported).await
}

/// What an import recorded.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Imported {
    /// The format it was read as.
    pub format: &'static str,
    /// Updates recorded (new or changed, each a signed change).
    pub updates: usize,
    /// Records passed over, each with why.
    pub skipped: Vec<String>,
}

pub(crate) async fn store_imported(ctx: &Ctx, imported: cascade_core::import::CatalogImport) -> Out<Imported> {
    let count = imported.updates.len();
    let ops = imported
        .updates
        .into_iter()
        .map(|u| ChangeOp::Upsert(Object::Update(Box::new(u))))
        .collect();
    ctx.node.append_local_many(ops).await?;
    Ok(Imported {
        format: imported.format.name(),
        updates: count,
        skipped: imported.skipped,
    })
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLog {
    /// Entries after this sequence number.
    #[serde(default)]
    pub after: u64,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

/// One entry of the audit log with its sequence number (page with `after`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditRow {
    pub seq: u64,
    pub entry: cascade_core::model::AuditEntry,
}

pub(crate) async fn audit_log(ctx: Ctx, p: AuditLog) -> Out<Vec<AuditRow>> {
    let store = ctx.node.db.clone();
    let limit = p.limit.min(10_000);
    let entries = store.run(move |store| store.audit_log(p.after, limit)).await?;
    Ok(entries
        .into_iter()
        .map(|(seq, entry)| AuditRow { seq, entry })
        .collect())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// Who uses it (shown in the audit log).
    pub name: String,
    /// admin, site-operator (of this node's subtree) or auditor.
    pub role: String,
    #[serde(default = "default_ttl_hours")]
    pub ttl_hours: i64,
}

pub(crate) fn default_ttl_hours() -> i64 {
    24
}

/// A new bearer token: the secret is shown here once and never again.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NewToken {
    pub token: String,
    pub name: String,
    pub role: &'static str,
    /// Unix seconds.
    pub expires_at: i64,
}

pub(crate) async fn tokens_create(ctx: Ctx, p: TokenCreate) -> Out<NewToken> {
    use base64::Engine;
    let role = cascade_trust::Role::parse(&p.role)
        .ok_or_else(|| ApiError::Invalid(format!("role: {:?} is not admin, site-operator or auditor", p.role)))?;
    if p.name.trim().is_empty() || p.name.len() > 100 {
        return Err(ApiError::Invalid("name: 1 to 100 characters".into()));
    }
    if !(1..=24 * 366).contains(&p.ttl_hours) {
        return Err(ApiError::Invalid(format!(
            "ttl_hours: {} is not between 1 and 8784",
            p.ttl_hours
        )));
    }
    let secret: [u8; 32] = rand::random();
    let token = format!(
        "cascade-api1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let now = ctx.node.now();
    let record = cascade_store::ApiTokenRecord {
        name: p.name.clone(),
        role: role.as_str().to_owned(),
        created_by: ctx.caller.name.clone(),
        created_at: now,
        expires_at: now + p.ttl_hours * 3600,
    };
    let store = ctx.node.db.clone();
    let hash = crate::api::token_hash(&token);
    let expires_at = record.expires_at;
    store.run(move |store| store.put_api_token(&hash, &record)).await?;
    Ok(NewToken {
        token,
        name: p.name,
        role: role.as_str(),
        expires_at,
    })
}

pub(crate) async fn tokens_list(ctx: Ctx, _: Nothing) -> Out<Vec<cascade_store::ApiTokenRecord>> {
    let store = ctx.node.db.clone();
    Ok(store.run(move |store| store.api_tokens()).await?)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ByName {
    pub name: String,
}

/// How many tokens were revoked.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Revoked {
    pub revoked: usize,
}

pub(crate) async fn tokens_revoke(ctx: Ctx, p: ByName) -> Out<Revoked> {
    let store = ctx.node.db.clone();
    let name = p.name.clone();
    let count = store.run(move |store| store.revoke_api_tokens(&name)).await?;
    if count == 0 {
        return Err(ApiError::NotFound(format!("no token is named {}", p.name)));
    }
    Ok(Revoked { revoked: count })
}
