//! Reports over this node's subtree: compliance percentages, the computers
//! behind any count, one computer from any ancestor, failures by installer
//! code, and trends from the daily history. Every report pages, sorts and
//! filters (site subtree, severity, custom severity, update, state, OS
//! release, last-scan age); `export` turns any of them into CSV or JSON
//! rows, page by page.

use std::collections::{BTreeMap, BTreeSet};

use cascade_core::UpdateId;
use cascade_core::compliance::{ComplianceState, code_hex, code_meaning};
use cascade_core::model::{ComplianceRecord, ComputerId, ComputerSummary, NodeId};
use cascade_core::update::Severity;
use cascade_store::{DayAggregates, StateCounts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ops::{Out, update_objects};
use super::{Access, ApiError, Ctx, Operation, parse_params};
use crate::Node;

/// Days of history kept unless the setting `reports.history_days` says otherwise.
pub const DEFAULT_HISTORY_DAYS: i64 = 400;

/// The most rows a report sorts other than by its natural order (their
/// keys are held in memory).
const MAX_SORTED: usize = 100_000;

/// What rows sort by: text or a number.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Number(i64),
    Text(String),
}

/// How long a report that reads every record waits for another to finish.
const HEAVY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One report at a time that reads every record (or sorts every row) of
/// the subtree: many at once would take the node's memory and cores from
/// its agents and links.
async fn heavy_permit(node: &Node) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    heavy_permit_within(node, HEAVY_WAIT).await
}

async fn heavy_permit_within(
    node: &Node,
    wait: std::time::Duration,
) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    match tokio::time::timeout(wait, node.work.heavy_reports.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::Unavailable(
            "another report that reads every record is being made at this node: try again in a moment, or narrow the filters".into(),
        )),
    }
}

/// The most rows of one page.
const MAX_LIMIT: usize = 10_000;

fn default_limit() -> usize {
    100
}

fn default_days() -> i64 {
    30
}

/// Unix seconds as a day number (days since 1970-01-01, UTC).
pub fn day_of(at: i64) -> i64 {
    at.div_euclid(86_400)
}

/// A day number as `YYYY-MM-DD`.
pub fn day_text(day: i64) -> String {
    jiff::Timestamp::from_second(day * 86_400)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| day.to_string())
}

/// What a report is narrowed to, as checked from its parameters.
#[derive(Debug, Default)]
struct Scope {
    /// The sites of the named site's subtree; `None` for this node's whole subtree.
    sites: Option<Vec<NodeId>>,
    severity: Option<Severity>,
    /// The updates of the named update or custom severity.
    updates: Option<BTreeSet<UpdateId>>,
    state: Option<usize>,
    os: Option<String>,
    release: Option<String>,
    /// Seconds: only computers whose last scan is older (`Some((true, s))`)
    /// or newer (`Some((false, s))`).
    scan_age: Option<(bool, i64)>,
    /// Lower-case text the computer's name holds.
    search: Option<String>,
}

impl Scope {
    fn keeps_name(&self, computer: &ComputerId) -> bool {
        self.search
            .as_ref()
            .is_none_or(|text| computer.as_str().to_ascii_lowercase().contains(text.as_str()))
    }

    fn keeps_record(&self, r: &ComplianceRecord) -> bool {
        self.keeps_name(&r.computer)
            && self.severity.is_none_or(|s| r.severity == s)
            && self.updates.as_ref().is_none_or(|u| u.contains(&r.update))
            && self.state.is_none_or(|s| r.state.index() == s)
            && self.sites.as_ref().is_none_or(|s| s.contains(&r.site))
    }

    /// The states of the records kept: a listing of one update's records
    /// in a state that is not compliant reads the index of those.
    fn states(&self) -> cascade_store::States {
        self.state
            .map_or(cascade_store::States::Any, cascade_store::States::Only)
    }

    fn filters_computers(&self) -> bool {
        self.os.is_some() || self.release.is_some() || self.scan_age.is_some()
    }

    fn keeps_computer(&self, c: Option<&ComputerSummary>, now: i64) -> bool {
        if !self.filters_computers() {
            return true;
        }
        let Some(c) = c else { return false };
        self.os.as_ref().is_none_or(|os| c.os.eq_ignore_ascii_case(os))
            && self
                .release
                .as_ref()
                .is_none_or(|r| c.release.as_deref().is_some_and(|cr| cr.eq_ignore_ascii_case(r)))
            && self.scan_age.is_none_or(|(older, seconds)| {
                let age = now - c.last_scan;
                if older {
                    c.last_scan == 0 || age > seconds
                } else {
                    c.last_scan > 0 && age <= seconds
                }
            })
    }
}

/// The filters every report takes (those that do not apply to a report
/// are refused by its own parameters).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceReport {
    /// Rows per "site", "severity", "update", "site_severity" or "custom_severity".
    #[serde(default)]
    pub by: Option<String>,
    /// A site: it and every site below it (this node's subtree when absent).
    #[serde(default)]
    pub site: Option<String>,
    /// Critical, Important, Moderate, Low or Unspecified.
    #[serde(default)]
    pub severity: Option<String>,
    /// A custom severity's id: the updates assigned it.
    #[serde(default)]
    pub custom_severity: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    /// Only computers with this operating system ("Windows Server 2022").
    #[serde(default)]
    pub os: Option<String>,
    /// Only computers of this feature release ("22H2").
    #[serde(default)]
    pub release: Option<String>,
    /// Only computers whose last scan is older than this many hours (or never).
    #[serde(default)]
    pub scan_older_than_hours: Option<u32>,
    /// Only computers that scanned within this many hours.
    #[serde(default)]
    pub scanned_within_hours: Option<u32>,
    /// "name" (default), "percent", "total", "compliant", "failed" or "required".
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub descending: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputersReport {
    /// A site: it and every site below it.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    /// installed, required, not_applicable, superseded, downloaded,
    /// pending_restart, failed, unknown or stale.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub custom_severity: Option<String>,
    /// Operating system, as listed ("Windows Server 2022").
    #[serde(default)]
    pub os: Option<String>,
    /// Feature release ("22H2").
    #[serde(default)]
    pub release: Option<String>,
    /// Only computers whose last scan is older than this many hours (or never).
    #[serde(default)]
    pub scan_older_than_hours: Option<u32>,
    /// Only computers that scanned within this many hours.
    #[serde(default)]
    pub scanned_within_hours: Option<u32>,
    /// Only computers whose name holds this text (any case).
    #[serde(default)]
    pub search: Option<String>,
    /// With `site`: that site's own computers only, not those below it.
    #[serde(default)]
    pub only_site: bool,
    /// "computer" (default), "site", "os", "last_scan" or "last_report".
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub descending: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The `next` of the previous page (sorted by computer).
    #[serde(default)]
    pub after: Option<String>,
    /// Rows to skip (other sorts).
    #[serde(default)]
    pub offset: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputerReport {
    pub computer: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailuresReport {
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    /// One installer code (decimal, or hexadecimal as 0x80240017).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrendReport {
    /// Days back from today (1 to the days kept).
    #[serde(default = "default_days")]
    pub days: i64,
    /// One line per "site", "severity" or "update"; one line in all when absent.
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn severity(raw: &Option<String>) -> Result<Option<Severity>, ApiError> {
    raw.as_deref()
        .map(|s| {
            Severity::parse(s).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "severity: {s:?} is not Critical, Important, Moderate, Low or Unspecified"
                ))
            })
        })
        .transpose()
}

fn state(raw: &Option<String>) -> Result<Option<usize>, ApiError> {
    raw.as_deref()
        .map(|s| {
            ComplianceState::NAMES.iter().position(|n| *n == s).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "state: {s:?} is not one of {}",
                    ComplianceState::NAMES.join(", ")
                ))
            })
        })
        .transpose()
}

/// The last-scan age filter, from its two mutually exclusive parameters.
fn scan_age(older_than: Option<u32>, within: Option<u32>) -> Result<Option<(bool, i64)>, ApiError> {
    match (older_than, within) {
        (Some(_), Some(_)) => Err(ApiError::Invalid(
            "scan_older_than_hours and scanned_within_hours: give one of them".into(),
        )),
        (Some(h), None) => Ok(Some((true, i64::from(h) * 3600))),
        (None, Some(h)) => Ok(Some((false, i64::from(h) * 3600))),
        (None, None) => Ok(None),
    }
}

fn limit(limit: usize) -> Result<usize, ApiError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::Invalid(format!(
            "limit: {limit} is not between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// The sites of a site's subtree, checked against this node's.
async fn sites(node: &std::sync::Arc<Node>, raw: &Option<String>) -> Result<Option<Vec<NodeId>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let site = NodeId::new(raw).map_err(|e| ApiError::Invalid(format!("site: {e}")))?;
    let lookup = site.clone();
    node.run(move |n| n.subtree_of(&lookup))
        .await?
        .map(|s| Some(s.into_iter().collect()))
        .ok_or_else(|| ApiError::NotFound(format!("site {site} is not in the subtree of node {}", node.id)))
}

/// The updates of an update id or a custom severity.
async fn updates(
    ctx: &Ctx,
    update: &Option<String>,
    custom: &Option<String>,
) -> Result<Option<BTreeSet<UpdateId>>, ApiError> {
    let mut out: Option<BTreeSet<UpdateId>> = update.as_ref().map(|u| BTreeSet::from([UpdateId::new(u)]));
    if let Some(custom) = custom {
        let known = update_objects(ctx).await?;
        let of: BTreeSet<UpdateId> = known
            .iter()
            .filter(|u| u.custom_severity.as_deref() == Some(custom.as_str()))
            .map(|u| u.id.clone())
            .collect();
        out = Some(match out {
            Some(one) => one.intersection(&of).cloned().collect(),
            None => of,
        });
    }
    Ok(out)
}

/// Counts as a report shows them: the compliance percentage (installed,
/// superseded or not applicable over every record; null without records),
/// the compliant and total counts, and the count of every state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts(pub StateCounts);

impl Counts {
    pub fn percent(&self) -> Option<f64> {
        let total = self.0.total();
        (total > 0).then(|| (self.0.compliant() as f64 * 1000.0 / total as f64).round() / 10.0)
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(3 + ComplianceState::COUNT))?;
        map.serialize_entry("percent", &self.percent())?;
        map.serialize_entry("compliant", &self.0.compliant())?;
        map.serialize_entry("total", &self.0.total())?;
        for (name, n) in ComplianceState::NAMES.iter().zip(self.0.0) {
            map.serialize_entry(name, &n)?;
        }
        map.end()
    }
}

impl JsonSchema for Counts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Counts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut properties = serde_json::Map::new();
        properties.insert(
            "percent".into(),
            json!({"type": ["number", "null"], "minimum": 0, "maximum": 100, "description": "Compliant over total, in percent to one decimal; null without records."}),
        );
        properties.insert(
            "compliant".into(),
            json!({"type": "integer", "minimum": 0, "description": "Installed, superseded or not applicable."}),
        );
        properties.insert("total".into(), json!({"type": "integer", "minimum": 0}));
        for name in ComplianceState::NAMES {
            properties.insert(name.into(), json!({"type": "integer", "minimum": 0}));
        }
        let required: Vec<&String> = properties.keys().collect();
        schemars::json_schema!({
            "type": "object",
            "description": "Compliance counts with the percentage.",
            "properties": properties,
            "required": required,
        })
    }
}

fn add(into: &mut StateCounts, from: &StateCounts) {
    for (a, b) in into.0.iter_mut().zip(from.0) {
        *a += b;
    }
}

/// What a group of a report is named by: the dimensions it was grouped
/// by, each a column (`total` for the one group of everything).
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct GroupName {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_severity: Option<String>,
}

impl GroupName {
    /// Names the group by `value` in the column `dimension`.
    fn set(&mut self, dimension: &str, value: String) {
        let slot = match dimension {
            "site" => &mut self.site,
            "severity" => &mut self.severity,
            "update" => &mut self.update,
            "custom_severity" => &mut self.custom_severity,
            _ => &mut self.total,
        };
        *slot = Some(value);
    }
}

/// One group of `reports.compliance`: its name and its counts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComplianceGroup {
    #[serde(flatten)]
    pub name: GroupName,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A page of `reports.compliance`, with the counts over every group.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CompliancePage {
    pub items: Vec<ComplianceGroup>,
    pub total_items: usize,
    /// The offset of the next page; null on the last.
    pub next_offset: Option<usize>,
    pub overall: Counts,
    pub node: NodeId,
}

/// The column a compliance group sorts by.
fn group_sort_key(group: &ComplianceGroup, column: &str) -> f64 {
    let counts = &group.counts.0;
    match column {
        "percent" => group.counts.percent().unwrap_or(-1.0),
        "total" => counts.total() as f64,
        "compliant" => counts.compliant() as f64,
        state => counts.get(state) as f64,
    }
}

// ---- reports.compliance

async fn compliance(ctx: Ctx, p: ComplianceReport) -> Out<CompliancePage> {
    let by = p.by.clone().unwrap_or_else(|| "site".to_owned());
    if !["site", "severity", "update", "site_severity", "custom_severity"].contains(&by.as_str()) {
        return Err(ApiError::Invalid(format!(
            "by: {by:?} is not site, severity, update, site_severity or custom_severity"
        )));
    }
    let sort_columns = ["name", "percent", "total", "compliant", "failed", "required"];
    if let Some(s) = &p.sort
        && !sort_columns.contains(&s.as_str())
    {
        return Err(ApiError::Invalid(format!(
            "sort: {s:?} is not one of {}",
            sort_columns.join(", ")
        )));
    }
    let limit = limit(p.limit)?;
    let scope = Scope {
        sites: sites(&ctx.node, &p.site).await?,
        severity: severity(&p.severity)?,
        updates: updates(&ctx, &p.update, &p.custom_severity).await?,
        os: p.os.clone(),
        release: p.release.clone(),
        scan_age: scan_age(p.scan_older_than_hours, p.scanned_within_hours)?,
        ..Scope::default()
    };
    let now = ctx.node.now();
    // Custom severities and update severities come from the update objects.
    let known = update_objects(&ctx).await?;
    let custom: BTreeMap<UpdateId, String> = known
        .iter()
        .filter_map(|u| Some((u.id.clone(), u.custom_severity.clone()?)))
        .collect();
    let update_severity: BTreeMap<UpdateId, Severity> = known.iter().map(|u| (u.id.clone(), u.severity)).collect();
    // Whether the kept counts answer, or every record must be read.
    let by_records = by == "update" || by == "custom_severity";
    let counted = !scope.filters_computers()
        && ((!by_records && scope.updates.is_none()) || (by_records && scope.sites.is_none()));
    let _permit = if counted {
        None
    } else {
        Some(heavy_permit(&ctx.node).await?)
    };
    let node = ctx.node.clone();
    let (groups, overall) = node
        .run(
            move |node| -> Result<(BTreeMap<Vec<String>, StateCounts>, StateCounts), ApiError> {
                let mut groups: BTreeMap<Vec<String>, StateCounts> = BTreeMap::new();
                let mut overall = StateCounts::default();
                if counted && !by_records {
                    // Per site and severity, kept as counts.
                    for ((site, sev), counts) in node.store.summary_by_site()? {
                        if scope.sites.as_ref().is_some_and(|s| !s.contains(&site))
                            || scope.severity.is_some_and(|s| s != sev)
                        {
                            continue;
                        }
                        let key = match by.as_str() {
                            "site" => vec![site.to_string()],
                            "severity" => vec![format!("{sev:?}")],
                            _ => vec![site.to_string(), format!("{sev:?}")],
                        };
                        add(groups.entry(key).or_default(), &counts);
                        add(&mut overall, &counts);
                    }
                } else if counted {
                    // Per update, kept as counts.
                    for (update, counts) in node.store.summary_by_update()? {
                        if scope.updates.as_ref().is_some_and(|u| !u.contains(&update))
                            || scope
                                .severity
                                .is_some_and(|s| update_severity.get(&update).copied().unwrap_or_default() != s)
                        {
                            continue;
                        }
                        let key = if by == "update" {
                            vec![update.to_string()]
                        } else {
                            vec![custom.get(&update).cloned().unwrap_or_default()]
                        };
                        add(groups.entry(key).or_default(), &counts);
                        add(&mut overall, &counts);
                    }
                } else {
                    // Updates of some sites (or sites for some updates): counted
                    // from the records of the narrowest index.
                    let one_update = scope
                        .updates
                        .as_ref()
                        .filter(|u| u.len() == 1)
                        .and_then(|u| u.first().cloned());
                    let mut after: Option<String> = None;
                    // A summary that cannot be read fails the report, not the
                    // record: the filter keeps the first error for after the page.
                    let failed = std::cell::RefCell::new(None);
                    loop {
                        let page = node.store.records_page(
                            one_update.as_ref(),
                            scope.sites.as_deref(),
                            scope.states(),
                            after.as_deref(),
                            10_000,
                            |r| {
                                scope.keeps_record(r)
                                    && (!scope.filters_computers()
                                        || scope.keeps_computer(
                                            summary_or_note(&node.store, &r.computer, &failed).as_ref(),
                                            now,
                                        ))
                            },
                        )?;
                        if let Some(e) = failed.borrow_mut().take() {
                            return Err(e.into());
                        }
                        for r in &page.items {
                            let key = match by.as_str() {
                                "site" => vec![r.site.to_string()],
                                "severity" => vec![format!("{:?}", r.severity)],
                                "update" => vec![r.update.to_string()],
                                "custom_severity" => vec![custom.get(&r.update).cloned().unwrap_or_default()],
                                _ => vec![r.site.to_string(), format!("{:?}", r.severity)],
                            };
                            let slot = groups.entry(key).or_default();
                            slot.0[r.state.index()] += 1;
                            overall.0[r.state.index()] += 1;
                        }
                        match page.next {
                            Some(n) => after = Some(n),
                            None => break,
                        }
                    }
                }
                Ok((groups, overall))
            },
        )
        .await?;
    let names: &[&str] = match p.by.as_deref().unwrap_or("site") {
        "site_severity" => &["site", "severity"],
        "severity" => &["severity"],
        "update" => &["update"],
        "custom_severity" => &["custom_severity"],
        _ => &["site"],
    };
    let mut rows: Vec<ComplianceGroup> = groups
        .into_iter()
        .map(|(key, counts)| {
            let mut name = GroupName::default();
            for (dimension, value) in names.iter().zip(key) {
                name.set(dimension, value);
            }
            ComplianceGroup {
                name,
                counts: Counts(counts),
            }
        })
        .collect();
    // Groups come in name order; another column sorts them (stable, so
    // equal values stay in name order).
    match p.sort.as_deref().unwrap_or("name") {
        "name" => {}
        column => rows.sort_by(|a, b| group_sort_key(a, column).total_cmp(&group_sort_key(b, column))),
    }
    if p.descending {
        rows.reverse();
    }
    let total_items = rows.len();
    let items: Vec<ComplianceGroup> = rows.into_iter().skip(p.offset).take(limit).collect();
    let next_offset = (p.offset + items.len() < total_items).then_some(p.offset + items.len());
    Ok(CompliancePage {
        items,
        total_items,
        next_offset,
        overall: Counts(overall),
        node: ctx.node.id.clone(),
    })
}

// ---- reports.computers

/// A row of `reports.computers`: a computer with its summary (when this
/// node has one), and the record behind the count (when the report is of
/// records).
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computer: Option<ComputerId>,
    /// The computer's site (the record's, for a record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<NodeId>,
    #[serde(flatten)]
    pub summary: Option<SummaryColumns>,
    #[serde(flatten)]
    pub record: Option<RecordColumns>,
}

/// What a computer's summary says of it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SummaryColumns {
    pub os: String,
    pub release: Option<String>,
    pub version: Option<String>,
    /// Unix seconds; 0 when never.
    pub last_scan: i64,
    pub last_report: i64,
    /// Null when it never scanned.
    pub scan_age_seconds: Option<i64>,
    pub agent_version: String,
    pub pending_restart: bool,
}

/// One update's state on a computer, with why and how old.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RecordColumns {
    pub update: UpdateId,
    pub severity: String,
    pub state: &'static str,
    pub reason: String,
    /// The installer's exit code, for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    pub observed_at: i64,
    pub age_seconds: i64,
}

fn computer_row(
    summary: Option<&ComputerSummary>,
    computer: &ComputerId,
    record: Option<&ComplianceRecord>,
    now: i64,
) -> ComputerRow {
    ComputerRow {
        computer: Some(computer.clone()),
        site: record
            .map(|r| r.site.clone())
            .or_else(|| summary.map(|s| s.site.clone())),
        summary: summary.map(|s| SummaryColumns {
            os: s.os.clone(),
            release: s.release.clone(),
            version: s.version.clone(),
            last_scan: s.last_scan,
            last_report: s.last_report,
            scan_age_seconds: (s.last_scan > 0).then(|| now - s.last_scan),
            agent_version: s.agent_version.clone(),
            pending_restart: s.pending_restart,
        }),
        record: record.map(|r| RecordColumns {
            update: r.update.clone(),
            severity: format!("{:?}", r.severity),
            state: r.state.name(),
            reason: r.state.reason(),
            code: match r.state {
                ComplianceState::Failed { code } => Some(code),
                _ => None,
            },
            observed_at: r.observed_at,
            age_seconds: now - r.observed_at,
        }),
    }
}

/// A page of `reports.computers`: in computer order, it goes on from the
/// last row (`next`, given back as `after`); in another order, by offset.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ComputersPage {
    Keyset {
        items: Vec<ComputerRow>,
        /// Where the next page starts (`after`); null on the last.
        next: Option<String>,
        node: NodeId,
    },
    Offset {
        items: Vec<ComputerRow>,
        total_items: usize,
        /// The offset of the next page; null on the last.
        next_offset: Option<usize>,
        node: NodeId,
    },
}

async fn computers(ctx: Ctx, p: ComputersReport) -> Out<ComputersPage> {
    let limit = limit(p.limit)?;
    let sort = p.sort.clone().unwrap_or_else(|| "computer".to_owned());
    let sort_columns = ["computer", "site", "os", "last_scan", "last_report"];
    if !sort_columns.contains(&sort.as_str()) {
        return Err(ApiError::Invalid(format!(
            "sort: {sort:?} is not one of {}",
            sort_columns.join(", ")
        )));
    }
    if sort != "computer" && p.after.is_some() {
        return Err(ApiError::Invalid(
            "after: pages sorted by anything but computer go on with offset".into(),
        ));
    }
    let scan_age = scan_age(p.scan_older_than_hours, p.scanned_within_hours)?;
    if p.only_site && p.site.is_none() {
        return Err(ApiError::Invalid("only_site: name the site".into()));
    }
    let scope = Scope {
        sites: if p.only_site {
            sites(&ctx.node, &p.site)
                .await?
                .map(|_| p.site.iter().filter_map(|s| NodeId::new(s).ok()).collect())
        } else {
            sites(&ctx.node, &p.site).await?
        },
        severity: severity(&p.severity)?,
        updates: updates(&ctx, &p.update, &p.custom_severity).await?,
        state: state(&p.state)?,
        os: p.os.clone(),
        release: p.release.clone(),
        scan_age,
        search: p
            .search
            .as_ref()
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| !s.is_empty()),
    };
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let (after, offset, descending) = (p.after.clone(), p.offset, p.descending);
    let _permit = if sort != "computer" || descending {
        Some(heavy_permit(&ctx.node).await?)
    } else {
        None
    };
    node.run(move |node| -> Out<ComputersPage> {
        let store = &node.store;
        // Rows per record when a record filter is given (the computers
        // behind a count), per computer otherwise.
        let per_record = scope.updates.is_some() || scope.state.is_some() || scope.severity.is_some();
        let one_update = scope.updates.as_ref().filter(|u| u.len() == 1).and_then(|u| u.first().cloned());
        // A summary that cannot be read fails the listing (checked after
        // each page), not the record.
        let failed = std::cell::RefCell::new(None);
        let keep_record = |r: &ComplianceRecord| {
            scope.keeps_record(r)
                && (!scope.filters_computers()
                    || scope.keeps_computer(summary_or_note(store, &r.computer, &failed).as_ref(), now))
        };
        let keep_summary = |s: &ComputerSummary| scope.keeps_name(&s.computer) && scope.keeps_computer(Some(s), now);
        // Each record's row, with its computer's summary.
        let rows_of_records = |records: &[ComplianceRecord]| -> Result<Vec<ComputerRow>, ApiError> {
            records
                .iter()
                .map(|r| Ok(computer_row(store.summary_brief(&r.computer)?.as_ref(), &r.computer, Some(r), now)))
                .collect()
        };
        if sort == "computer" && !descending {
            let (rows, next) = if per_record {
                let page = store.records_page(
                    one_update.as_ref(),
                    scope.sites.as_deref(),
                    scope.states(),
                    after.as_deref(),
                    limit,
                    keep_record,
                )?;
                if let Some(e) = failed.borrow_mut().take() {
                    return Err(e.into());
                }
                (rows_of_records(&page.items)?, page.next)
            } else {
                let page = store.summaries(scope.sites.as_deref(), after.as_deref(), limit, keep_summary)?;
                let rows = page.items.iter().map(|s| computer_row(Some(s), &s.computer, None, now)).collect();
                (rows, page.next)
            };
            return Ok(ComputersPage::Keyset {
                items: rows,
                next,
                node: node.id.clone(),
            });
        }
        // Another order: the sort key of every matching row, up to a
        // bound; rows are made for the page asked for only.
        let needs_summary = matches!(sort.as_str(), "os" | "last_scan" | "last_report");
        let key_of = |s: Option<&ComputerSummary>, r: Option<&ComplianceRecord>| -> SortKey {
            match sort.as_str() {
                "site" => SortKey::Text(
                    r.map(|r| r.site.to_string())
                        .or_else(|| s.map(|s| s.site.to_string()))
                        .unwrap_or_default(),
                ),
                "os" => SortKey::Text(s.map(|s| s.os.clone()).unwrap_or_default()),
                "last_scan" => SortKey::Number(s.map_or(0, |s| s.last_scan)),
                _ => SortKey::Number(s.map_or(0, |s| s.last_report)),
            }
        };
        let mut entries: Vec<(SortKey, ComputerId, Option<ComplianceRecord>)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let next = if per_record {
                let page = store.records_page(
                    one_update.as_ref(),
                    scope.sites.as_deref(),
                    scope.states(),
                    token.as_deref(),
                    10_000,
                    keep_record,
                )?;
                if let Some(e) = failed.borrow_mut().take() {
                    return Err(e.into());
                }
                for r in page.items {
                    let summary = if needs_summary { store.summary_brief(&r.computer)? } else { None };
                    entries.push((key_of(summary.as_ref(), Some(&r)), r.computer.clone(), Some(r)));
                }
                page.next
            } else {
                let page = store.summaries(scope.sites.as_deref(), token.as_deref(), 10_000, keep_summary)?;
                for s in page.items {
                    entries.push((key_of(Some(&s), None), s.computer.clone(), None));
                }
                page.next
            };
            if entries.len() > MAX_SORTED {
                return Err(ApiError::Invalid(format!(
                    "more than {MAX_SORTED} rows to sort by {sort}: narrow the filters, or sort by computer (which pages without sorting)"
                )));
            }
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        entries.sort_by(|a, b| (&a.0, &a.1, a.2.as_ref().map(|r| &r.update)).cmp(&(&b.0, &b.1, b.2.as_ref().map(|r| &r.update))));
        if descending {
            entries.reverse();
        }
        let total = entries.len();
        let rows = entries
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, c, r)| Ok(computer_row(store.summary_brief(c)?.as_ref(), c, r.as_ref(), now)))
            .collect::<Result<Vec<ComputerRow>, ApiError>>()?;
        let next_offset = (offset + rows.len() < total).then_some(offset + rows.len());
        Ok(ComputersPage::Offset {
            items: rows,
            total_items: total,
            next_offset,
            node: node.id.clone(),
        })
    })
    .await
}

// ---- reports.computer

/// One computer as `reports.computer` shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerReportResult {
    /// Its summary (columns as in `reports.computers`).
    pub computer: ComputerRow,
    /// Whether this node serves it (its agent checks in here).
    pub served_here: bool,
    pub compliance: Counts,
    pub records: Vec<ComputerRecord>,
    /// Its install events, newest first.
    pub events: Vec<cascade_core::model::InstallEvent>,
    /// site (every event kept where it checks in) or summary (the latest
    /// few its summary carries up).
    pub events_from: &'static str,
    pub node: NodeId,
}

/// One update's state on the computer, with the update's title and, for a
/// failure, the code's meaning.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ComputerRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<NodeId>,
    #[serde(flatten)]
    pub record: Option<RecordColumns>,
    pub title: Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_hex: Option<String>,
    /// What the code means, when it is a known one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_meaning: Option<&'static str>,
}

async fn computer(ctx: Ctx, p: ComputerReport) -> Out<ComputerReportResult> {
    let id = ComputerId::new(&p.computer).map_err(|e| ApiError::Invalid(format!("computer: {e}")))?;
    let titles: BTreeMap<UpdateId, std::sync::Arc<str>> = update_objects(&ctx)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u.title.clone()))
        .collect();
    let node = ctx.node.clone();
    let now = ctx.node.now();
    node.run(move |node| -> Out<ComputerReportResult> {
        let summary = node.store.summary(&id)?;
        let records = node.store.computer_records(&id)?;
        let served_here = node.agents()?.iter().any(|a| a.id == id);
        if summary.is_none() && records.is_empty() && !served_here {
            return Err(ApiError::NotFound(format!(
                "no computer {id} reported to node {} or the sites below it",
                node.id
            )));
        }
        let rows: Vec<ComputerRecord> = records
            .iter()
            .map(|r| {
                let row = computer_row(None, &id, Some(r), now);
                let code = match r.state {
                    ComplianceState::Failed { code } => Some(code),
                    _ => None,
                };
                ComputerRecord {
                    site: row.site,
                    record: row.record,
                    title: titles.get(&r.update).cloned(),
                    code_hex: code.map(code_hex),
                    code_meaning: code.and_then(code_meaning),
                }
            })
            .collect();
        let mut counts = StateCounts::default();
        for r in &records {
            counts.0[r.state.index()] += 1;
        }
        // Every install event stays at the computer's own site; the nodes
        // above see the latest few its summary carries. Newest first.
        let (events, events_from) = if served_here {
            let events = node.store.events(&id)?.into_iter().rev().take(50).collect::<Vec<_>>();
            (events, "site")
        } else {
            let recent = summary.as_ref().map(|s| s.recent_events.clone()).unwrap_or_default();
            (recent.into_iter().rev().collect(), "summary")
        };
        Ok(ComputerReportResult {
            computer: computer_row(summary.as_ref(), &id, None, now),
            served_here,
            compliance: Counts(counts),
            records: rows,
            events,
            events_from,
            node: node.id.clone(),
        })
    })
    .await
}

// ---- reports.failures

fn parse_code(raw: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::Invalid(format!(
            "code: {raw:?} is not a number (decimal, or hexadecimal as 0x80240017)"
        ))
    };
    match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => {
            let value = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
            // A 32-bit HRESULT is kept as the agent reports it, signed.
            Ok(match u32::try_from(value) {
                Ok(v) => i64::from(v as i32),
                Err(_) => i64::try_from(value).map_err(|_| bad())?,
            })
        }
        None => raw.trim().parse().map_err(|_| bad()),
    }
}

/// A page of `reports.failures`, with every code's count.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FailuresPage {
    pub items: Vec<FailedUpdate>,
    pub total_items: usize,
    /// The offset of the next page; null on the last.
    pub next_offset: Option<usize>,
    /// Every code, most computers first.
    pub by_code: Vec<CodeCount>,
    pub node: NodeId,
}

/// An update's failures by installer code and by site.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FailedUpdate {
    pub update: UpdateId,
    pub title: Option<std::sync::Arc<str>>,
    /// Computers on which it failed.
    pub failed: u64,
    pub codes: Vec<CodeCount>,
    pub sites: Vec<SiteCount>,
}

/// The computers that failed with one installer code.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CodeCount {
    pub code: i64,
    pub code_hex: String,
    /// What the code means, when it is a known one.
    pub meaning: Option<&'static str>,
    pub computers: u64,
}

/// The computers of one site.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SiteCount {
    pub site: NodeId,
    pub computers: u64,
}

async fn failures(ctx: Ctx, p: FailuresReport) -> Out<FailuresPage> {
    let limit = limit(p.limit)?;
    let sites = sites(&ctx.node, &p.site).await?;
    let code = p.code.as_deref().map(parse_code).transpose()?;
    let update = p.update.as_deref().map(UpdateId::new);
    let titles: BTreeMap<UpdateId, std::sync::Arc<str>> = update_objects(&ctx)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u.title.clone()))
        .collect();
    let store = ctx.node.db.clone();
    let counts = store.run(move |store| store.failure_counts()).await?;
    // Codes are compared as 32-bit values: signed or not, one code.
    let same_code = |a: i64, b: i64| a == b || (a as u32 == b as u32 && a >> 32 <= 0 && b >> 32 <= 0);
    // Per update: failures in all, by code, by site.
    type Tally = (u64, BTreeMap<i64, u64>, BTreeMap<NodeId, u64>);
    let mut by_update: BTreeMap<UpdateId, Tally> = BTreeMap::new();
    let mut by_code: BTreeMap<i64, u64> = BTreeMap::new();
    for f in counts {
        if sites.as_ref().is_some_and(|s| !s.contains(&f.site))
            || update.as_ref().is_some_and(|u| *u != f.update)
            || code.is_some_and(|c| !same_code(c, f.code))
        {
            continue;
        }
        let entry = by_update.entry(f.update.clone()).or_default();
        entry.0 += f.computers;
        *entry.1.entry(f.code).or_default() += f.computers;
        *entry.2.entry(f.site.clone()).or_default() += f.computers;
        *by_code.entry(f.code).or_default() += f.computers;
    }
    let code_row = |code: i64, computers: u64| CodeCount {
        code,
        code_hex: code_hex(code),
        meaning: code_meaning(code),
        computers,
    };
    let mut rows: Vec<FailedUpdate> = by_update
        .into_iter()
        .map(|(update, (failed, codes, sites))| {
            let mut codes: Vec<(i64, u64)> = codes.into_iter().collect();
            codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut sites: Vec<(NodeId, u64)> = sites.into_iter().collect();
            sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            FailedUpdate {
                title: titles.get(&update).cloned(),
                update,
                failed,
                codes: codes.into_iter().map(|(c, n)| code_row(c, n)).collect(),
                sites: sites
                    .into_iter()
                    .map(|(site, computers)| SiteCount { site, computers })
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.failed.cmp(&a.failed).then_with(|| a.update.cmp(&b.update)));
    let total_items = rows.len();
    let items: Vec<FailedUpdate> = rows.into_iter().skip(p.offset).take(limit).collect();
    let next_offset = (p.offset + items.len() < total_items).then_some(p.offset + items.len());
    let mut codes: Vec<(i64, u64)> = by_code.into_iter().collect();
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(FailuresPage {
        items,
        total_items,
        next_offset,
        by_code: codes.into_iter().map(|(c, n)| code_row(c, n)).collect(),
        node: ctx.node.id.clone(),
    })
}

// ---- reports.trend

impl Node {
    /// How many days of history this node keeps.
    pub fn history_days(&self) -> i64 {
        self.setting("reports.history_days")
            .ok()
            .flatten()
            .and_then(|v| v.as_i64())
            .filter(|d| (1..=3650).contains(d))
            .unwrap_or(DEFAULT_HISTORY_DAYS)
    }

    /// Today's aggregates, as the history keeps them.
    pub fn aggregates_now(&self, at: i64) -> Result<DayAggregates, cascade_store::StoreError> {
        Ok(DayAggregates::new(
            day_of(at),
            self.store.summary_by_site()?,
            self.store.summary_by_update()?,
        ))
    }

    /// Keeps today's aggregates in the history (replacing today's earlier
    /// ones) and drops the days past what is kept.
    pub fn record_history(&self, at: i64) -> Result<(), cascade_store::StoreError> {
        let today = self.aggregates_now(at)?;
        self.store.put_history(&today, self.history_days())
    }
}

/// A page of `reports.trend`: one line per group, a point per day.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TrendPage {
    pub items: Vec<TrendLine>,
    pub total_items: usize,
    pub days: i64,
    pub node: NodeId,
}

/// One group's line: named by the grouping asked for (`total` when none).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TrendLine {
    #[serde(flatten)]
    pub name: GroupName,
    pub points: Vec<TrendPoint>,
}

/// One day's counts.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TrendPoint {
    /// YYYY-MM-DD.
    pub day: String,
    #[serde(flatten)]
    pub counts: Counts,
}

async fn trend(ctx: Ctx, p: TrendReport) -> Out<TrendPage> {
    let keep = ctx.node.run(|n| n.history_days()).await;
    if !(1..=keep).contains(&p.days) {
        return Err(ApiError::Invalid(format!(
            "days: {} is not between 1 and the {keep} days kept (setting reports.history_days)",
            p.days
        )));
    }
    let limit = limit(p.limit)?;
    let by = p.by.clone().unwrap_or_else(|| "total".to_owned());
    if !["total", "site", "severity", "update"].contains(&by.as_str()) {
        return Err(ApiError::Invalid(format!(
            "by: {by:?} is not total, site, severity or update"
        )));
    }
    let sites = sites(&ctx.node, &p.site).await?;
    let sev = severity(&p.severity)?;
    let update = p.update.as_deref().map(UpdateId::new);
    if (by == "update" || update.is_some()) && (sites.is_some() || sev.is_some()) {
        return Err(ApiError::Invalid(
            "update trends cover the whole subtree: the history keeps updates without their sites".into(),
        ));
    }
    let node = ctx.node.clone();
    let now = ctx.node.now();
    let per_update = by == "update" || update.is_some();
    let per_site = by == "site" || sites.is_some();
    let days = node
        .run(move |node| -> Result<Vec<DayAggregates>, cascade_store::StoreError> {
            let today = day_of(now);
            let mut days = node
                .store
                .history(today - p.days + 1, today - 1, per_site, per_update)?;
            // Today as it is now, not as last kept.
            days.push(node.aggregates_now(now)?);
            Ok(days)
        })
        .await?;
    let mut lines: BTreeMap<String, Vec<TrendPoint>> = BTreeMap::new();
    for day in &days {
        let mut groups: BTreeMap<String, StateCounts> = BTreeMap::new();
        if per_update {
            for (u, counts) in &day.by_update {
                if update.as_ref().is_some_and(|x| x != u) {
                    continue;
                }
                let key = if by == "update" {
                    u.to_string()
                } else {
                    "total".to_owned()
                };
                add(groups.entry(key).or_default(), counts);
            }
        } else if !per_site {
            for (s, counts) in &day.by_severity {
                if sev.is_some_and(|x| x != *s) {
                    continue;
                }
                let key = if by == "severity" {
                    format!("{s:?}")
                } else {
                    "total".to_owned()
                };
                add(groups.entry(key).or_default(), counts);
            }
        } else {
            for ((site, s), counts) in &day.by_site {
                if sites.as_ref().is_some_and(|x| !x.contains(site)) || sev.is_some_and(|x| x != *s) {
                    continue;
                }
                let key = match by.as_str() {
                    "site" => site.to_string(),
                    "severity" => format!("{s:?}"),
                    _ => "total".to_owned(),
                };
                add(groups.entry(key).or_default(), counts);
            }
        }
        for (key, counts) in groups {
            lines.entry(key).or_default().push(TrendPoint {
                day: day_text(day.day),
                counts: Counts(counts),
            });
        }
    }
    let total_items = lines.len();
    let items = lines
        .into_iter()
        .take(limit)
        .map(|(key, points)| {
            let mut name = GroupName::default();
            name.set(&by, key);
            TrendLine { name, points }
        })
        .collect();
    Ok(TrendPage {
        items,
        total_items,
        days: p.days,
        node: ctx.node.id.clone(),
    })
}

pub static OPERATIONS: &[Operation] = &[
    op!(
        "reports.compliance",
        "Reports",
        Access::Read,
        "Compliance percentage (installed, superseded or not applicable, over every record) by site, severity, update or custom severity, with the counts behind it; filtered by site subtree, severity, custom severity, update, OS, release or last-scan age.",
        compliance,
        ComplianceReport,
        json!({"by": "site", "severity": "Critical", "sort": "percent"})
    ),
    op!(
        "reports.computers",
        "Reports",
        Access::Read,
        "The computers behind any count (an update and state, a site, a severity), or every computer of the subtree, each with its site, OS, last scan and, per record, its state, reason and age.",
        computers,
        ComputersReport,
        json!({"update": "KB5021233", "state": "failed", "limit": 50})
    ),
    op!(
        "reports.computer",
        "Reports",
        Access::Read,
        "One computer seen from this node: its summary, every update's state with its reason, age and installer code meaning, and its last install events (all those kept at its own site; above it, the latest few its summary carries).",
        computer,
        ComputerReport,
        json!({"computer": "pc-0042"})
    ),
    op!(
        "reports.failures",
        "Reports",
        Access::Read,
        "Updates with the most failures, each by installer code (with its meaning) and by site; and every code's count.",
        failures,
        FailuresReport,
        json!({"limit": 10})
    ),
    op!(
        "reports.trend",
        "Reports",
        Access::Read,
        "Compliance over the last days (from the daily history) in all, or per site, severity or update.",
        trend,
        TrendReport,
        json!({"days": 30, "by": "site"})
    ),
];

/// A computer's summary for a filter that cannot return an error: a store
/// error is kept in `failed` (the first one) for the caller to return.
fn summary_or_note(
    store: &cascade_store::Store,
    computer: &cascade_core::model::ComputerId,
    failed: &std::cell::RefCell<Option<cascade_store::StoreError>>,
) -> Option<ComputerSummary> {
    match store.summary_brief(computer) {
        Ok(summary) => summary,
        Err(e) => {
            failed.borrow_mut().get_or_insert(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn node(dir: &tempfile::TempDir) -> Arc<Node> {
        let id = NodeId::new("root").unwrap();
        let config = crate::Checked::standalone(id.clone(), dir.path().to_path_buf()).unwrap();
        Node::new(config, Arc::new(cascade_store::Store::temporary(id).unwrap()))
    }

    #[tokio::test]
    async fn one_report_that_reads_everything_at_a_time_and_the_next_is_told_to_wait() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(&dir);
        let first = heavy_permit_within(&node, Duration::from_millis(10)).await.unwrap();
        let refused = heavy_permit_within(&node, Duration::from_millis(10)).await.unwrap_err();
        assert!(matches!(refused, ApiError::Unavailable(_)), "{refused}");
        assert!(refused.to_string().contains("try again"), "{refused}");
        drop(first);
        assert!(heavy_permit_within(&node, Duration::from_millis(10)).await.is_ok());
    }

    #[test]
    fn codes_parse_signed_or_not_and_days_print_as_dates() {
        assert_eq!(parse_code("0x80070643").unwrap(), -2147023293);
        assert_eq!(parse_code("1603").unwrap(), 1603);
        assert!(parse_code("0xZZ").is_err());
        assert_eq!(day_text(day_of(1_764_547_200)), "2025-12-01");
        assert_eq!(day_of(-1), -1, "before 1970 is the day before");
    }
}
