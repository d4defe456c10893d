//! What reports read beside the compliance aggregates: computer summaries
//! (every computer of the subtree, without its inventory), failures by
//! installer code, and a daily history of the aggregates.

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComputerId, ComputerSummary, NodeId, Upward};
use cascade_core::update::Severity;
use serde::{Deserialize, Serialize};

use crate::compliance::{token, untoken};
use crate::{Page, Pending, Result, SeverityCounts, StateCounts, Store, codec, keys};

/// Failed records of one update at one site with one installer code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    pub update: UpdateId,
    pub code: i64,
    pub site: NodeId,
    pub computers: u64,
}

/// One day's aggregates as kept in the history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayAggregates {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    /// Per severity over every site (kept apart: a trend in all or per
    /// severity reads a few rows a day, not every site's).
    pub by_severity: BTreeMap<Severity, StateCounts>,
    pub by_site: SeverityCounts,
    pub by_update: BTreeMap<UpdateId, StateCounts>,
}

impl DayAggregates {
    /// One day's aggregates, with the per-severity sums made from `by_site`.
    pub fn new(day: i64, by_site: SeverityCounts, by_update: BTreeMap<UpdateId, StateCounts>) -> DayAggregates {
        let mut by_severity: BTreeMap<Severity, StateCounts> = BTreeMap::new();
        for ((_, severity), counts) in &by_site {
            let slot = by_severity.entry(*severity).or_default();
            for (a, b) in slot.0.iter_mut().zip(counts.0) {
                *a += b;
            }
        }
        DayAggregates {
            day,
            by_severity,
            by_site,
            by_update,
        }
    }
}

/// How a day's aggregate is kept: rows of names and the counts per state.
#[derive(Serialize, Deserialize)]
struct SiteRow(NodeId, Severity, [u64; ComplianceState::COUNT]);

#[derive(Serialize, Deserialize)]
struct UpdateRow(UpdateId, [u64; ComplianceState::COUNT]);

#[derive(Serialize, Deserialize)]
struct SeverityRow(Severity, [u64; ComplianceState::COUNT]);

const HISTORY_SEVERITIES: u8 = b'v';
const HISTORY_SITES: u8 = b's';
const HISTORY_UPDATES: u8 = b'u';

impl Store {
    /// Keeps computer summaries, each unless the one held for the computer
    /// is the same or later (a computer that moved between sites is where
    /// it was heard from last); returns how many were kept. What was kept
    /// is sent on up when `forward`.
    pub fn put_summaries(&self, summaries: &[ComputerSummary], forward: bool) -> Result<usize> {
        if summaries.is_empty() {
            return Ok(0);
        }
        let _guard = self.lock();
        let mut pending = Pending::default();
        let kept = self.stage_summaries(&mut pending, summaries)?;
        let count = kept.len();
        if forward && !kept.is_empty() {
            let items = kept.into_iter().map(Upward::Computer).collect();
            self.queue_upward(&mut pending, &crate::outbox::Queued::Items(items))?;
        }
        self.commit_pending(pending)?;
        Ok(count)
    }

    /// Writes the summaries that change what is held, with the site index,
    /// into `pending`; returns them.
    pub(crate) fn stage_summaries(
        &self,
        pending: &mut Pending,
        summaries: &[ComputerSummary],
    ) -> Result<Vec<ComputerSummary>> {
        let mut kept = Vec::new();
        for summary in summaries {
            let key = keys::summary(&summary.computer);
            let held: Option<ComputerSummary> = pending
                .get(self, &key)?
                .map(|v| {
                    codec::decode_summary(&summary.computer, &v, true)
                        .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
                })
                .transpose()?;
            if let Some(held) = &held {
                if held == summary || held.heard() > summary.heard() {
                    continue;
                }
                if held.site != summary.site {
                    pending.remove(keys::summary_site(&held.site, &held.computer));
                }
            }
            pending.insert(key, codec::encode_summary(summary));
            pending.insert(keys::summary_site(&summary.site, &summary.computer), Vec::new());
            kept.push(summary.clone());
        }
        Ok(kept)
    }

    /// The summary stored under `key`, with its recent events or not.
    fn summary_at(&self, key: &[u8], value: &[u8], with_events: bool) -> Result<ComputerSummary> {
        let computer = self.computer_in(&key[keys::SUMMARY.len()..])?;
        codec::decode_summary(&computer, value, with_events)
            .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(key))))
    }

    fn summary_of(&self, computer: &ComputerId, with_events: bool) -> Result<Option<ComputerSummary>> {
        let key = keys::summary(computer);
        self.get(&key)?
            .map(|v| {
                codec::decode_summary(computer, &v, with_events)
                    .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .transpose()
    }

    /// A computer's summary, when one reached this node.
    pub fn summary(&self, computer: &ComputerId) -> Result<Option<ComputerSummary>> {
        self.summary_of(computer, true)
    }

    /// A computer's summary without its recent events, as a listing's row
    /// shows it.
    pub fn summary_brief(&self, computer: &ComputerId) -> Result<Option<ComputerSummary>> {
        self.summary_of(computer, false)
    }

    /// A page of the summaries (without their recent events) that `keep` accepts: of the given sites
    /// (by site, then computer, read through each site's index), or of
    /// every computer (by computer). A page holds `limit` summaries unless
    /// the listing ends; `next` continues it.
    pub fn summaries(
        &self,
        sites: Option<&[NodeId]>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&ComputerSummary) -> bool,
    ) -> Result<Page<ComputerSummary>> {
        let limit = limit.max(1);
        let mut items = Vec::new();
        let mut take = |key: &[u8], summary: ComputerSummary| -> Option<String> {
            if keep(&summary) {
                items.push(summary);
                if items.len() >= limit {
                    return Some(token(key));
                }
            }
            None
        };
        let next = match sites {
            None => {
                let start = match after {
                    Some(t) => successor(untoken(t, keys::SUMMARY)?),
                    None => keys::SUMMARY.to_vec(),
                };
                let mut next = None;
                for item in self.tree().range(start..) {
                    let (key, value) = item.map_err(|e| self.io_error(e))?;
                    if !key.starts_with(keys::SUMMARY) {
                        break;
                    }
                    let summary = self.summary_at(&key, &value, false)?;
                    if let Some(t) = take(&key, summary) {
                        next = Some(t);
                        break;
                    }
                }
                next
            }
            Some(sites) => {
                let from = after.map(|t| untoken(t, keys::SUMMARY_SITE)).transpose()?;
                let mut sites: Vec<&NodeId> = sites.iter().collect();
                sites.sort();
                sites.dedup();
                let mut next = None;
                'sites: for site in sites {
                    let prefix = keys::under(keys::SUMMARY_SITE, &[site.as_str().as_bytes()]);
                    let start = match &from {
                        Some(t) if t.starts_with(&prefix) => successor(t.clone()),
                        Some(t) if t.as_slice() > prefix.as_slice() => continue,
                        _ => prefix.clone(),
                    };
                    for item in self.tree().range(start..) {
                        let (key, _) = item.map_err(|e| self.io_error(e))?;
                        if !key.starts_with(&prefix) {
                            break;
                        }
                        let computer = self.computer_in(&key[prefix.len()..])?;
                        // An index entry without its summary is not listed.
                        let Some(summary) = self.summary_brief(&computer)? else {
                            continue;
                        };
                        if let Some(t) = take(&key, summary) {
                            next = Some(t);
                            break 'sites;
                        }
                    }
                }
                next
            }
        };
        Ok(Page { items, next })
    }

    /// The summaries of up to `limit` computers after `after`, by computer
    /// (a snapshot for the parent, read in bounded pages).
    pub fn summaries_after(&self, after: Option<&ComputerId>, limit: usize) -> Result<Vec<ComputerSummary>> {
        let start = match after {
            Some(c) => successor(keys::summary(c)),
            None => keys::SUMMARY.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.tree().range(start..).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(keys::SUMMARY) {
                break;
            }
            out.push(self.summary_at(&key, &value, true)?);
        }
        Ok(out)
    }

    /// Failed records counted by update, installer code and site.
    pub fn failure_counts(&self) -> Result<Vec<FailureCount>> {
        let mut out = Vec::new();
        for item in self.scan(keys::COUNT_FAILURE) {
            let (key, value) = item?;
            let bad = || self.corrupt(format!("bad failure count key {}", keys::show(&key)));
            // prefix, update, NUL, code (8 bytes), NUL, site.
            let body = &key[keys::COUNT_FAILURE.len()..];
            let split = body.iter().position(|b| *b == 0).ok_or_else(bad)?;
            let update = std::str::from_utf8(&body[..split]).map_err(|_| bad())?;
            let code = body
                .get(split + 1..split + 9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes)
                .ok_or_else(bad)?;
            let site = body.get(split + 10..).ok_or_else(bad)?;
            let site = crate::replication::node_from(site).map_err(|d| self.corrupt(d))?;
            out.push(FailureCount {
                update: UpdateId::new(update),
                code,
                site,
                computers: codec::u64_from(&value).map_err(|d| self.corrupt(d))?,
            });
        }
        Ok(out)
    }

    /// Keeps `day`'s aggregates (replacing an earlier snapshot of the same
    /// day) and drops the days before `day - keep_days`.
    pub fn put_history(&self, aggregates: &DayAggregates, keep_days: i64) -> Result<()> {
        let sites: Vec<SiteRow> = aggregates
            .by_site
            .iter()
            .map(|((site, severity), counts)| SiteRow(site.clone(), *severity, counts.0))
            .collect();
        let updates: Vec<UpdateRow> = aggregates
            .by_update
            .iter()
            .map(|(update, counts)| UpdateRow(update.clone(), counts.0))
            .collect();
        let severities: Vec<SeverityRow> = aggregates
            .by_severity
            .iter()
            .map(|(severity, counts)| SeverityRow(*severity, counts.0))
            .collect();
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(
            keys::history(aggregates.day, HISTORY_SEVERITIES),
            codec::json(&severities),
        );
        batch.insert(keys::history(aggregates.day, HISTORY_SITES), codec::json(&sites));
        batch.insert(keys::history(aggregates.day, HISTORY_UPDATES), codec::json(&updates));
        let oldest = keys::history(aggregates.day - keep_days.max(1) + 1, 0);
        for item in self.tree().range(keys::HISTORY.to_vec()..oldest) {
            batch.remove(item.map_err(|e| self.io_error(e))?.0);
        }
        self.commit(batch)
    }

    /// The kept days from `from` through `to` (days since 1970-01-01),
    /// oldest first, each with its per-severity sums; with `sites` and
    /// `updates`, the per-site and per-update aggregates too (they are the
    /// larger part).
    pub fn history(&self, from: i64, to: i64, sites: bool, updates: bool) -> Result<Vec<DayAggregates>> {
        let mut days: BTreeMap<i64, DayAggregates> = BTreeMap::new();
        for item in self
            .tree()
            .range(keys::history(from, 0)..keys::history(to.saturating_add(1), 0))
        {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            let bad = |d: String| self.corrupt(format!("{}: {d}", keys::show(&key)));
            let body = &key[keys::HISTORY.len()..];
            let (Some(day), Some(kind)) = (
                body.get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(i64::from_be_bytes),
                body.get(9),
            ) else {
                return Err(bad("bad history key".to_owned()));
            };
            let entry = days.entry(day).or_insert_with(|| DayAggregates {
                day,
                ..DayAggregates::default()
            });
            match *kind {
                HISTORY_SEVERITIES => {
                    let rows: Vec<SeverityRow> = codec::from_json(&value).map_err(bad)?;
                    entry.by_severity = rows
                        .into_iter()
                        .map(|SeverityRow(severity, counts)| (severity, StateCounts(counts)))
                        .collect();
                }
                HISTORY_SITES if sites => {
                    let rows: Vec<SiteRow> = codec::from_json(&value).map_err(bad)?;
                    entry.by_site = rows
                        .into_iter()
                        .map(|SiteRow(site, severity, counts)| ((site, severity), StateCounts(counts)))
                        .collect();
                }
                HISTORY_UPDATES if updates => {
                    let rows: Vec<UpdateRow> = codec::from_json(&value).map_err(bad)?;
                    entry.by_update = rows
                        .into_iter()
                        .map(|UpdateRow(update, counts)| (update, StateCounts(counts)))
                        .collect();
                }
                _ => {}
            }
        }
        Ok(days.into_values().collect())
    }
}

/// The least key after `key` (computer ids hold no NUL).
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}
