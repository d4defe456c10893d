//! Operations: updates.

use super::*;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSearch {
    /// Vendor severities to match.
    #[serde(default)]
    pub severities: Vec<Severity>,
    /// Custom severity names to match.
    #[serde(default)]
    pub custom_severities: Vec<String>,
    /// Product family or one of the products it targets (exact name).
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub classifications: Vec<Classification>,
    /// The publisher ("Mozilla", "Microsoft"; exact, any case).
    #[serde(default)]
    pub publisher: Option<String>,
    /// A package manager's package id ("Mozilla.Firefox"; exact, any case).
    #[serde(default)]
    pub package: Option<String>,
    /// Only superseded (true) or only current (false) updates.
    #[serde(default)]
    pub superseded: Option<bool>,
    /// Released on or after (YYYY-MM-DD).
    #[serde(default)]
    pub released_after: Option<String>,
    /// Released on or before (YYYY-MM-DD).
    #[serde(default)]
    pub released_before: Option<String>,
    /// Text in the id, title or CVEs.
    #[serde(default)]
    pub text: Option<String>,
    /// "id" (default), "title", "severity" or "release_date".
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub descending: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

pub(crate) fn default_limit() -> usize {
    100
}

pub(crate) fn date(field: &str, text: &Option<String>) -> Result<Option<jiff::civil::Date>, ApiError> {
    text.as_deref()
        .map(|t| {
            t.parse::<jiff::civil::Date>()
                .map_err(|e| ApiError::Invalid(format!("{field}: {t:?} is not a date like 2022-12-13 ({e})")))
        })
        .transpose()
}

pub(crate) async fn update_objects(ctx: &Ctx) -> Result<Vec<cascade_core::Update>, ApiError> {
    Ok(objects(ctx, ObjectKind::Update)
        .await?
        .into_iter()
        .filter_map(|s| match s.object.into_value() {
            Object::Update(u) => Some(*u),
            _ => None,
        })
        .collect())
}

pub(crate) async fn approvals_by_update(ctx: &Ctx) -> Result<BTreeMap<UpdateId, Vec<String>>, ApiError> {
    let mut out: BTreeMap<UpdateId, Vec<String>> = BTreeMap::new();
    for s in objects(ctx, ObjectKind::Approval).await? {
        if let Object::Approval(a) = s.object.into_value() {
            out.entry(a.update).or_default().push(a.policy.to_string());
        }
    }
    Ok(out)
}

/// A page of the updates that match.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdatePage {
    /// How many match in all.
    pub total: usize,
    pub offset: usize,
    pub updates: Vec<UpdateRow>,
}

/// An update as a search lists it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateRow {
    pub id: UpdateId,
    pub title: std::sync::Arc<str>,
    pub severity: Severity,
    pub custom_severity: Option<String>,
    pub classification: Classification,
    pub product: String,
    pub publisher: String,
    pub package: Option<cascade_core::update::Package>,
    /// YYYY-MM-DD.
    pub release_date: Option<String>,
    pub superseded: bool,
    pub superseded_by: Vec<UpdateId>,
    /// The policies that approve it here.
    pub approved_in: Vec<String>,
}

pub(crate) async fn updates_search(ctx: Ctx, p: UpdateSearch) -> Out<UpdatePage> {
    if p.limit == 0 || p.limit > 10_000 {
        return Err(ApiError::Invalid(format!(
            "limit: {} is not between 1 and 10000",
            p.limit
        )));
    }
    let sort = p.sort.as_deref().unwrap_or("id");
    if !["id", "title", "severity", "release_date"].contains(&sort) {
        return Err(ApiError::Invalid(format!(
            "sort: {sort:?} is not id, title, severity or release_date"
        )));
    }
    let after = date("released_after", &p.released_after)?;
    let before = date("released_before", &p.released_before)?;
    let updates = update_objects(&ctx).await?;
    let catalog = cascade_core::Catalog::new(updates.clone());
    let approved = approvals_by_update(&ctx).await?;
    let text = p.text.as_deref().map(str::to_ascii_lowercase);
    let mut matched: Vec<(&cascade_core::Update, bool)> = Vec::new();
    for u in &updates {
        let superseded = catalog.is_superseded(&u.id);
        let keep = (p.severities.is_empty() || p.severities.contains(&u.severity))
            && (p.custom_severities.is_empty()
                || u.custom_severity
                    .as_ref()
                    .is_some_and(|c| p.custom_severities.contains(c)))
            && p.product.as_ref().is_none_or(|want| {
                u.product.eq_ignore_ascii_case(want) || u.targets.iter().any(|t| t.product.eq_ignore_ascii_case(want))
            })
            && (p.classifications.is_empty() || p.classifications.contains(&u.classification))
            && p.publisher
                .as_ref()
                .is_none_or(|want| u.vendor.eq_ignore_ascii_case(want))
            && p.package
                .as_ref()
                .is_none_or(|want| u.package.as_ref().is_some_and(|pk| pk.id.eq_ignore_ascii_case(want)))
            && p.superseded.is_none_or(|want| want == superseded)
            && after.is_none_or(|a| u.release_date.is_some_and(|r| r >= a))
            && before.is_none_or(|b| u.release_date.is_some_and(|r| r <= b))
            && text.as_ref().is_none_or(|t| {
                u.id.as_str().to_ascii_lowercase().contains(t)
                    || u.title.to_ascii_lowercase().contains(t)
                    || u.cves.iter().any(|c| c.to_ascii_lowercase().contains(t))
            });
        if keep {
            matched.push((u, superseded));
        }
    }
    matched.sort_by(|(a, _), (b, _)| {
        let order = match sort {
            "title" => a.title.cmp(&b.title),
            "severity" => a.severity.cmp(&b.severity),
            "release_date" => a.release_date.cmp(&b.release_date),
            _ => std::cmp::Ordering::Equal,
        };
        let order = order.then_with(|| a.id.cmp(&b.id));
        if p.descending { order.reverse() } else { order }
    });
    let total = matched.len();
    let updates = matched
        .into_iter()
        .skip(p.offset)
        .take(p.limit)
        .map(|(u, superseded)| UpdateRow {
            id: u.id.clone(),
            title: u.title.clone(),
            severity: u.severity,
            custom_severity: u.custom_severity.clone(),
            classification: u.classification,
            product: u.product.clone(),
            publisher: u.vendor.clone(),
            package: u.package.clone(),
            release_date: u.release_date.map(|d| d.to_string()),
            superseded,
            superseded_by: catalog.superseders_of(&u.id).iter().map(|s| s.id.clone()).collect(),
            approved_in: approved.get(&u.id).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(UpdatePage {
        total,
        offset: p.offset,
        updates,
    })
}

/// One update with the node that imported it, the policies that approve
/// it here and this subtree's counts for it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateDetail {
    /// The update object (kind `update`) as signed.
    pub update: cascade_core::exact::Exact<Object>,
    pub origin: NodeId,
    pub approved_in: Vec<String>,
    pub compliance: cascade_store::StateCounts,
}

pub(crate) async fn updates_get(ctx: Ctx, p: ById) -> Out<UpdateDetail> {
    let wanted = UpdateId::new(&p.id);
    let store = ctx.node.db.clone();
    let key = ObjectKey {
        kind: ObjectKind::Update,
        id: id("id", wanted.as_str())?,
    };
    let stored = store
        .run(move |store| store.object(&key))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("update {wanted} is not in this node's catalog")))?;
    let store = ctx.node.db.clone();
    let counts = {
        let wanted = wanted.clone();
        store.run(move |store| store.summary_for_update(&wanted)).await?
    };
    let approvals = approvals_by_update(&ctx).await?.remove(&wanted).unwrap_or_default();
    Ok(UpdateDetail {
        update: stored.object,
        origin: stored.origin,
        approved_in: approvals,
        compliance: counts,
    })
}
