//! Operations: compliance.

use cascade_store::StateCounts;

use super::*;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceByUpdate {
    /// One update; all when absent.
    #[serde(default)]
    pub update: Option<String>,
}

/// The counts of one update, or of every update by id.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum UpdateCounts {
    One(StateCounts),
    ByUpdate(BTreeMap<UpdateId, StateCounts>),
}

pub(crate) async fn compliance_by_update(ctx: Ctx, p: ComplianceByUpdate) -> Out<UpdateCounts> {
    let store = ctx.node.db.clone();
    Ok(match p.update {
        Some(u) => {
            let u = UpdateId::new(&u);
            UpdateCounts::One(store.run(move |store| store.summary_for_update(&u)).await?)
        }
        None => UpdateCounts::ByUpdate(store.run(move |store| store.summary_by_update()).await?),
    })
}

/// Site -> severity -> counts.
pub(crate) async fn compliance_by_site(ctx: Ctx, _: Nothing) -> Out<BTreeMap<NodeId, BTreeMap<String, StateCounts>>> {
    let store = ctx.node.db.clone();
    let summary = store.run(move |store| store.summary_by_site()).await?;
    let mut by_site: BTreeMap<NodeId, BTreeMap<String, StateCounts>> = BTreeMap::new();
    for ((site, severity), counts) in summary {
        by_site.entry(site).or_default().insert(severity.to_string(), counts);
    }
    Ok(by_site)
}

/// Severity -> counts.
pub(crate) async fn compliance_by_severity(ctx: Ctx, _: Nothing) -> Out<BTreeMap<String, StateCounts>> {
    let store = ctx.node.db.clone();
    let summary = store.run(move |store| store.summary_by_site()).await?;
    let mut by_severity: BTreeMap<String, StateCounts> = BTreeMap::new();
    for ((_, severity), counts) in summary {
        let slot = by_severity.entry(severity.to_string()).or_default();
        for (total, n) in slot.0.iter_mut().zip(counts.0) {
            *total += n;
        }
    }
    Ok(by_severity)
}
