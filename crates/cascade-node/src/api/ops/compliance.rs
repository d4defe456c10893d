//! Operations: compliance.

use super::*;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceByUpdate {
    /// One update; all when absent.
    #[serde(default)]
    pub update: Option<String>,
}

pub(crate) async fn compliance_by_update(ctx: Ctx, p: ComplianceByUpdate) -> Out {
    let store = ctx.node.store.clone();
    match p.update {
        Some(u) => {
            let u = UpdateId::new(&u);
            let counts = blocking(move || store.summary_for_update(&u)).await?;
            to_value(&counts)
        }
        None => {
            let summary = blocking(move || store.summary_by_update()).await?;
            to_value(&summary)
        }
    }
}

pub(crate) async fn compliance_by_site(ctx: Ctx, _: Nothing) -> Out {
    let store = ctx.node.store.clone();
    let summary = blocking(move || store.summary_by_site()).await?;
    let mut by_site: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ((site, severity), counts) in summary {
        by_site
            .entry(site.to_string())
            .or_default()
            .insert(severity.to_string(), to_value(&counts)?);
    }
    to_value(&by_site)
}

pub(crate) async fn compliance_by_severity(ctx: Ctx, _: Nothing) -> Out {
    let store = ctx.node.store.clone();
    let summary = blocking(move || store.summary_by_site()).await?;
    let mut by_severity: BTreeMap<String, [u64; ComplianceState::COUNT]> = BTreeMap::new();
    for ((_, severity), counts) in summary {
        let slot = by_severity.entry(severity.to_string()).or_default();
        for (total, n) in slot.iter_mut().zip(counts.0) {
            *total += n;
        }
    }
    let out: BTreeMap<String, Value> = by_severity
        .into_iter()
        .map(|(k, v)| (k, to_value(&cascade_store::StateCounts(v)).unwrap_or_default()))
        .collect();
    to_value(&out)
}
