//! Compliance records with their indexes and aggregate counts, all updated
//! in the batch that writes the record. A computer's records are one value:
//! agents report per computer, so a batch reads and writes each computer once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::update::Severity;
use serde::Serialize;

use crate::{Pending, Result, Store, StoreError, codec, keys};

/// Counts per compliance state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; ComplianceState::COUNT]);

impl StateCounts {
    pub fn get(&self, state: &str) -> u64 {
        codec::STATE_NAMES
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.0[i])
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Installed, not applicable or superseded.
    pub fn compliant(&self) -> u64 {
        [
            ComplianceState::Installed,
            ComplianceState::NotApplicable,
            ComplianceState::Superseded,
        ]
        .iter()
        .map(|s| self.0[s.index()])
        .sum()
    }
}

impl Serialize for StateCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (name, n) in codec::STATE_NAMES.iter().zip(self.0) {
            if n > 0 {
                map.serialize_entry(name, &n)?;
            }
        }
        map.end()
    }
}

/// An object of the states with at least one computer: state name -> count.
impl schemars::JsonSchema for StateCounts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StateCounts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let properties: serde_json::Map<String, serde_json::Value> = codec::STATE_NAMES
            .iter()
            .map(|name| ((*name).to_owned(), serde_json::json!({"type": "integer", "minimum": 1})))
            .collect();
        schemars::json_schema!({
            "type": "object",
            "description": "Computers per compliance state; states with none are left out.",
            "properties": properties,
            "additionalProperties": false
        })
    }
}

/// Counts per (site, severity).
pub type SeverityCounts = BTreeMap<(NodeId, Severity), StateCounts>;

/// What ingesting a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The batch was seen before (its sequence is at or below the source's
    /// high-water mark): nothing changed.
    pub duplicate: bool,
    pub applied: usize,
    /// Records older (by their agent's counter) than what is stored.
    pub stale: usize,
}

/// One page of a listing; `next` continues it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Aggregate deltas of a batch, written with it.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    deltas: HashMap<Vec<u8>, i64>,
}

impl Overlay {
    pub(crate) fn write(&self, pending: &mut Pending, store: &Store) -> Result<()> {
        for (key, delta) in &self.deltas {
            if *delta == 0 {
                continue;
            }
            let current = match pending.get(store, key)? {
                Some(v) => codec::u64_from(&v).map_err(|d| store.corrupt(format!("{}: {d}", keys::show(key))))?,
                None => 0,
            };
            let next = (current as i64 + delta).max(0) as u64;
            if next == 0 {
                pending.remove(key.clone());
            } else {
                pending.insert(key.clone(), next.to_be_bytes().to_vec());
            }
        }
        Ok(())
    }

    fn add(&mut self, update: &UpdateId, site: &str, severity: u8, state: u8, sign: i64) {
        *self.deltas.entry(keys::count_update(update, state)).or_default() += sign;
        *self
            .deltas
            .entry(keys::count_site_raw(site, severity, state))
            .or_default() += sign;
    }
}

pub(crate) fn count(overlay: &mut Overlay, r: &ComplianceRecord, sign: i64) {
    overlay.add(
        &r.update,
        r.site.as_str(),
        codec::severity_tag(r.severity),
        codec::state_tag(&r.state),
        sign,
    );
    count_failure(overlay, r, sign);
}

/// Failures are few: counted by their installer code and site too.
pub(crate) fn count_failure(overlay: &mut Overlay, r: &ComplianceRecord, sign: i64) {
    if let ComplianceState::Failed { code } = r.state {
        *overlay
            .deltas
            .entry(keys::count_failure(&r.update, code, r.site.as_str()))
            .or_default() += sign;
    }
}

/// The sites a computer's records name.
fn sites(records: &[ComplianceRecord]) -> BTreeSet<&str> {
    records.iter().map(|r| r.site.as_str()).collect()
}

/// Writes a computer's records and the index entries that changed.
pub(crate) fn write_doc(
    pending: &mut Pending,
    computer: &ComputerId,
    before: &[ComplianceRecord],
    after: &[ComplianceRecord],
) {
    pending.insert(keys::compliance(computer), codec::encode_doc(after));
    let (old_sites, new_sites) = (sites(before), sites(after));
    for site in old_sites.difference(&new_sites) {
        pending.remove(keys::by_site(site, computer));
    }
    for site in new_sites.difference(&old_sites) {
        pending.insert(keys::by_site(site, computer), Vec::new());
    }
    index_needs(pending, computer, before, after);
}

/// The index entries of a computer's records that are not compliant, by
/// update, state and site: what an admin asks for most ("who still needs X") is
/// read without the records that do not answer it, and compliant records,
/// usually most of them, cost no entry.
pub(crate) fn index_needs(
    pending: &mut Pending,
    computer: &ComputerId,
    before: &[ComplianceRecord],
    after: &[ComplianceRecord],
) {
    let (old_needs, new_needs) = (needs(before), needs(after));
    for (update, state, site) in old_needs.difference(&new_needs) {
        pending.remove(keys::needs(update, *state, site, computer));
    }
    for (update, state, site) in new_needs.difference(&old_needs) {
        pending.insert(keys::needs(update, *state, site, computer), Vec::new());
    }
}

/// The (update, state tag, site) of a computer's records that are not
/// compliant.
fn needs(records: &[ComplianceRecord]) -> BTreeSet<(&UpdateId, u8, &str)> {
    records
        .iter()
        .filter(|r| !r.state.is_compliant())
        .map(|r| (&r.update, codec::state_tag(&r.state), r.site.as_str()))
        .collect()
}

/// The states of the records a listing keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum States {
    Any,
    /// The state at this index of `ComplianceState::NAMES`.
    Only(usize),
    /// Every state that is not compliant.
    NotCompliant,
}

impl States {
    fn keeps(self, state: &ComplianceState) -> bool {
        match self {
            States::Any => true,
            States::Only(i) => state.index() == i,
            States::NotCompliant => !state.is_compliant(),
        }
    }

    /// The state tags whose index entries hold every record kept, when
    /// those are only states that are not compliant (which are indexed).
    fn indexed(self) -> Option<Vec<u8>> {
        let not_compliant = |i: &usize| !ComplianceState::index_is_compliant(*i);
        match self {
            States::Any => None,
            States::Only(i) => Some(vec![i as u8]).filter(|_| not_compliant(&i)),
            States::NotCompliant => Some(
                (0..ComplianceState::COUNT)
                    .filter(not_compliant)
                    .map(|i| i as u8)
                    .collect(),
            ),
        }
    }
}

pub(crate) fn token(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn untoken(token: &str, prefix: &[u8]) -> Result<Vec<u8>> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    match bytes {
        Some(b) if b.starts_with(prefix) => Ok(b),
        _ => Err(StoreError::Invalid(format!(
            "page token {token:?} does not belong to this listing"
        ))),
    }
}

impl Store {
    /// Stores a batch of compliance records from `source` (an agent or a
    /// child node) with sequence `seq`, in one atomic, durable batch with
    /// the indexes, the aggregates and the source's high-water mark. A batch
    /// at or below the mark changes nothing; a record older (by its agent's
    /// counter) than the stored one is skipped. With `forward`, what was
    /// applied is also queued for this node's parent.
    pub fn ingest(&self, source: &str, seq: u64, records: &[ComplianceRecord], forward: bool) -> Result<IngestOutcome> {
        if source.is_empty() || source.contains('\0') {
            return Err(StoreError::Invalid(format!("source {source:?} is not a valid id")));
        }
        self.ingest_inner(Some((source, seq)), records, forward)
    }

    /// Stores records that carry no batch sequence (a child's snapshot of its
    /// whole state): only the agents' counters decide what is newer.
    pub fn ingest_snapshot(&self, records: &[ComplianceRecord], forward: bool) -> Result<IngestOutcome> {
        self.ingest_inner(None, records, forward)
    }

    fn ingest_inner(
        &self,
        batch: Option<(&str, u64)>,
        records: &[ComplianceRecord],
        forward: bool,
    ) -> Result<IngestOutcome> {
        let _guard = self.lock();
        let hwm_key = batch.map(|(source, _)| keys::inbox(source));
        if let (Some(key), Some((_, seq))) = (&hwm_key, batch)
            && seq <= self.get_u64(key)?
        {
            return Ok(IngestOutcome {
                duplicate: true,
                ..IngestOutcome::default()
            });
        }
        let mut pending = Pending::default();
        let mut overlay = Overlay::default();
        let mut outcome = IngestOutcome::default();
        let mut forwarded = Vec::new();
        // Each computer's records are one value: read once, changed in
        // memory, written once.
        let mut docs: HashMap<&ComputerId, (Vec<ComplianceRecord>, Vec<ComplianceRecord>)> = HashMap::new();
        for record in records {
            let (_, doc) = match docs.entry(&record.computer) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let before = self.computer_records(&record.computer)?;
                    e.insert((before.clone(), before))
                }
            };
            match doc.binary_search_by(|r| r.update.cmp(&record.update)) {
                Ok(i) => {
                    if doc[i].counter >= record.counter {
                        outcome.stale += 1;
                        continue;
                    }
                    count(&mut overlay, &doc[i], -1);
                    doc[i] = record.clone();
                }
                Err(i) => doc.insert(i, record.clone()),
            }
            count(&mut overlay, record, 1);
            if forward {
                forwarded.push((record.computer.clone(), record.update.clone()));
            }
            outcome.applied += 1;
        }
        for (computer, (before, after)) in &docs {
            if before != after {
                // Ingest never empties a computer's records: an empty
                // `before` is a computer new here.
                if before.is_empty() {
                    *overlay.deltas.entry(keys::COUNT_COMPUTERS.to_vec()).or_default() += 1;
                }
                write_doc(&mut pending, computer, before, after);
            }
        }
        overlay.write(&mut pending, self)?;
        if let (Some(key), Some((_, seq))) = (hwm_key, batch) {
            pending.insert(key, seq.to_be_bytes().to_vec());
        }
        if !forwarded.is_empty() {
            self.queue_upward(&mut pending, &crate::outbox::Queued::compliance(forwarded))?;
        }
        self.commit_pending(pending)?;
        Ok(outcome)
    }

    /// The high-water mark of a source's batches.
    pub fn inbox_mark(&self, source: &str) -> Result<u64> {
        self.get_u64(&keys::inbox(source))
    }

    /// A computer's records, by update.
    /// How many computers this store has compliance of (kept as a count,
    /// updated in the batch that adds a computer).
    pub fn computer_count(&self) -> Result<u64> {
        self.get_u64(keys::COUNT_COMPUTERS)
    }

    pub fn computer_records(&self, computer: &ComputerId) -> Result<Vec<ComplianceRecord>> {
        let key = keys::compliance(computer);
        match self.get(&key)? {
            Some(v) => codec::decode_doc(computer, &v).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key)))),
            None => Ok(Vec::new()),
        }
    }

    /// A computer's records (of `update` only, when given) as reports show
    /// them: without their attestations.
    pub fn plain_records(&self, computer: &ComputerId, update: Option<&UpdateId>) -> Result<Vec<ComplianceRecord>> {
        let key = keys::compliance(computer);
        match self.get(&key)? {
            Some(v) => codec::decode_plain(computer, &v, update)
                .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key)))),
            None => Ok(Vec::new()),
        }
    }

    pub fn record(&self, computer: &ComputerId, update: &UpdateId) -> Result<Option<ComplianceRecord>> {
        Ok(self
            .computer_records(computer)?
            .into_iter()
            .find(|r| r.update == *update))
    }

    /// A page of the records in `states` that `keep` accepts, read through
    /// the narrowest index: for one update and states that are not
    /// compliant, the computers in those states (state by state, then site
    /// by site); else the given sites' computers (site by site), or every
    /// computer. Pages hold at least `limit` records unless the listing
    /// ends; `next` continues it. The records come without their
    /// attestations, as reports show them.
    pub fn records_page(
        &self,
        update: Option<&UpdateId>,
        sites: Option<&[NodeId]>,
        states: States,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&ComplianceRecord) -> bool,
    ) -> Result<Page<ComplianceRecord>> {
        let indexed = update.zip(states.indexed());
        // A computer's record of an update is under one of the index's
        // keys only; its document is under each of its sites' keys, so what
        // is read through a site's key is that site's records only.
        let mut prefixes: Vec<(Vec<u8>, Option<&NodeId>)> = match (indexed, sites) {
            (Some((u, tags)), Some(sites)) => tags
                .iter()
                .flat_map(|tag| {
                    sites.iter().map(move |s| {
                        let prefix = keys::under(keys::NEEDS, &[u.as_str().as_bytes(), &[*tag], s.as_str().as_bytes()]);
                        (prefix, None)
                    })
                })
                .collect(),
            (Some((u, tags)), None) => tags
                .iter()
                .map(|tag| (keys::under(keys::NEEDS, &[u.as_str().as_bytes(), &[*tag]]), None))
                .collect(),
            (None, Some(sites)) => sites
                .iter()
                .map(|s| (keys::under(keys::BY_SITE, &[s.as_str().as_bytes()]), Some(s)))
                .collect(),
            (None, None) => vec![(keys::COMPLIANCE.to_vec(), None)],
        };
        prefixes.sort();
        prefixes.dedup();
        let from = match after {
            Some(t) => {
                let key = untoken(t, b"")?;
                if !prefixes.iter().any(|(p, _)| key.starts_with(p)) {
                    return Err(StoreError::Invalid(format!(
                        "page token {t:?} does not belong to this listing"
                    )));
                }
                Some(key)
            }
            None => None,
        };
        let limit = limit.max(1);
        let mut items = Vec::new();
        for (prefix, of_site) in &prefixes {
            let start = match &from {
                Some(t) if t.starts_with(prefix) => {
                    let mut k = t.clone();
                    k.push(0);
                    k
                }
                Some(t) if t > prefix => continue,
                _ => prefix.clone(),
            };
            for item in self.tree().range(start..) {
                let (key, value) = item.map_err(|e| self.io_error(e))?;
                if !key.starts_with(prefix) {
                    break;
                }
                // Every index key ends in its computer (an update's
                // states of all sites have the site before it).
                let rest = &key[prefix.len()..];
                let computer = self.computer_in(rest.rsplit(|b| *b == 0).next().unwrap_or(rest))?;
                let records = if prefix.as_slice() == keys::COMPLIANCE {
                    codec::decode_plain(&computer, &value, update)
                        .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?
                } else {
                    self.plain_records(&computer, update)?
                };
                items.extend(records.into_iter().filter(|r| {
                    update.is_none_or(|u| r.update == *u)
                        && of_site.map_or_else(|| sites.is_none_or(|s| s.contains(&r.site)), |s| r.site == *s)
                        && states.keeps(&r.state)
                        && keep(r)
                }));
                if items.len() >= limit {
                    return Ok(Page {
                        items,
                        next: Some(token(&key)),
                    });
                }
            }
        }
        Ok(Page { items, next: None })
    }

    /// A computer's records as one page.
    pub fn by_computer(&self, computer: &ComputerId) -> Result<Vec<ComplianceRecord>> {
        self.computer_records(computer)
    }

    /// An update's records (without their attestations), by computer; with
    /// `non_compliant`, only those
    /// that are not installed, not applicable or superseded (by state, site,
    /// then computer). Pages hold at least `limit` records unless the listing
    /// ends.
    pub fn by_update(
        &self,
        update: &UpdateId,
        non_compliant: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ComplianceRecord>> {
        let states = if non_compliant {
            States::NotCompliant
        } else {
            States::Any
        };
        self.records_page(Some(update), None, states, after, limit, |_| true)
    }

    /// A site's records, by computer and update (without their
    /// attestations).
    pub fn by_site(
        &self,
        site: &NodeId,
        non_compliant: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ComplianceRecord>> {
        let states = if non_compliant {
            States::NotCompliant
        } else {
            States::Any
        };
        self.records_page(None, Some(std::slice::from_ref(site)), states, after, limit, |_| true)
    }

    pub(crate) fn computer_in(&self, bytes: &[u8]) -> Result<ComputerId> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|c| ComputerId::new(c).ok())
            .ok_or_else(|| self.corrupt(format!("bad computer in an index key: {}", keys::show(bytes))))
    }

    /// Counts per state for every update of the subtree.
    pub fn summary_by_update(&self) -> Result<BTreeMap<UpdateId, StateCounts>> {
        let mut out: BTreeMap<UpdateId, StateCounts> = BTreeMap::new();
        for item in self.scan(keys::COUNT_UPDATE) {
            let (key, value) = item?;
            // prefix, update, NUL, state byte (which may itself be 0).
            let body = &key[keys::COUNT_UPDATE.len()..];
            let (Some(update), Some(state)) = (
                body.len()
                    .checked_sub(2)
                    .and_then(|end| std::str::from_utf8(&body[..end]).ok()),
                body.last(),
            ) else {
                return Err(self.corrupt(format!("bad count key {}", keys::show(&key))));
            };
            let n = codec::u64_from(&value).map_err(|d| self.corrupt(d))?;
            if let Some(slot) = out.entry(UpdateId::new(update)).or_default().0.get_mut(*state as usize) {
                *slot = n;
            }
        }
        Ok(out)
    }

    /// Counts per state for one update.
    pub fn summary_for_update(&self, update: &UpdateId) -> Result<StateCounts> {
        let mut counts = StateCounts::default();
        for item in self.scan(&keys::under(keys::COUNT_UPDATE, &[update.as_str().as_bytes()])) {
            let (key, value) = item?;
            if let Some(state) = key.last()
                && let Some(slot) = counts.0.get_mut(*state as usize)
            {
                *slot = codec::u64_from(&value).map_err(|d| self.corrupt(d))?;
            }
        }
        Ok(counts)
    }

    /// Counts per state for every (site, severity).
    pub fn summary_by_site(&self) -> Result<SeverityCounts> {
        let mut out: SeverityCounts = BTreeMap::new();
        for item in self.scan(keys::COUNT_SITE) {
            let (key, value) = item?;
            // prefix, site, NUL, severity byte, NUL, state byte.
            let body = &key[keys::COUNT_SITE.len()..];
            if body.len() < 5 {
                return Err(self.corrupt(format!("bad count key {}", keys::show(&key))));
            }
            let (site, tail) = body.split_at(body.len() - 4);
            let site = crate::replication::node_from(site).map_err(|d| self.corrupt(d))?;
            let severity = codec::severity_from(tail[1]).ok_or_else(|| self.corrupt("bad severity in a count key"))?;
            let n = codec::u64_from(&value).map_err(|d| self.corrupt(d))?;
            if let Some(slot) = out.entry((site, severity)).or_default().0.get_mut(tail[3] as usize) {
                *slot = n;
            }
        }
        Ok(out)
    }

    /// Every compliance record (a snapshot for the parent, or a recount).
    pub fn all_records(&self) -> impl Iterator<Item = Result<Vec<ComplianceRecord>>> + '_ {
        self.scan(keys::COMPLIANCE).map(move |item| {
            let (key, value) = item?;
            let computer = self.computer_in(&key[keys::COMPLIANCE.len()..])?;
            codec::decode_doc(&computer, &value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
        })
    }

    /// The records of up to `limit` computers after `after` (in key order),
    /// as the agent reports they came in (nothing rebuilt; records of no
    /// report apart), and the last computer read: a whole store read in
    /// bounded pages.
    pub fn records_after(
        &self,
        after: Option<&ComputerId>,
        limit: usize,
    ) -> Result<(
        Vec<cascade_core::report::Report>,
        Vec<ComplianceRecord>,
        Option<ComputerId>,
    )> {
        let start = match after {
            Some(c) => {
                let mut key = keys::compliance(c);
                key.push(0);
                key
            }
            None => keys::COMPLIANCE.to_vec(),
        };
        let (mut reports, mut loose) = (Vec::new(), Vec::new());
        let mut last = None;
        for item in self.tree().range(start..).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(keys::COMPLIANCE) {
                break;
            }
            let computer = self.computer_in(&key[keys::COMPLIANCE.len()..])?;
            let (mut of_computer, mut apart) = codec::decode_reports(&computer, &value, &|_| true)
                .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            reports.append(&mut of_computer);
            loose.append(&mut apart);
            last = Some(computer);
        }
        Ok((reports, loose, last))
    }

    /// The aggregates recounted from the raw records, to check the
    /// maintained ones.
    pub fn recount(&self) -> Result<(BTreeMap<UpdateId, StateCounts>, SeverityCounts)> {
        let mut by_update: BTreeMap<UpdateId, StateCounts> = BTreeMap::new();
        let mut by_site: SeverityCounts = BTreeMap::new();
        for records in self.all_records() {
            for r in records? {
                let tag = codec::state_tag(&r.state) as usize;
                by_update.entry(r.update.clone()).or_default().0[tag] += 1;
                by_site.entry((r.site.clone(), r.severity)).or_default().0[tag] += 1;
            }
        }
        Ok((by_update, by_site))
    }
}
