//! Value encodings. Every value starts with a marker byte naming its
//! encoding, so that formats can change and old values still be read.

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::update::Severity;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON (objects, changes, agents, audit, outbox entries); also format 1's
/// compliance records.
pub const JSON: u8 = 1;
/// The compact binary compliance record of format 2.
pub const RECORD_V2: u8 = 2;
/// Format 3: each agent report's attestation once per computer.
pub const RECORD_V3: u8 = 3;
/// A computer summary, compact: read for every row of a report.
pub const SUMMARY_V1: u8 = 4;
/// An outbox entry that names compliance records, in binary (entries
/// written before it are JSON).
pub const QUEUED_KEYS: u8 = 5;

pub fn json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![JSON];
    // Serialising our own plain data types to a Vec cannot fail.
    serde_json::to_writer(&mut out, value).unwrap_or_default();
    out
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&JSON, rest)) => serde_json::from_slice(rest).map_err(|e| format!("undecodable value: {e}")),
        Some((marker, _)) => Err(format!("unknown value encoding {marker}")),
        None => Err("empty value".to_owned()),
    }
}

pub fn u64_from(bytes: &[u8]) -> Result<u64, String> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| format!("expected 8 bytes, found {}", bytes.len()))
}

pub fn u32_from(bytes: &[u8]) -> Result<u32, String> {
    bytes
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| format!("expected 4 bytes, found {}", bytes.len()))
}

pub fn state_tag(state: &ComplianceState) -> u8 {
    state.index() as u8
}

/// Set on the state byte when the agent's attestation follows the record.
const ATTESTED: u8 = 0x80;
/// Format 3: set on the state byte when the record belongs to a report of
/// the computer's entry.
const IN_REPORT: u8 = 0x40;
/// Format 3: with `IN_REPORT`, the record's time is not its report's.
const OWN_TIME: u8 = 0x20;

/// State names by tag, for summaries.
pub const STATE_NAMES: [&str; ComplianceState::COUNT] = ComplianceState::NAMES;

pub fn severity_tag(severity: Severity) -> u8 {
    severity as u8
}

pub fn severity_from(tag: u8) -> Option<Severity> {
    [
        Severity::Unspecified,
        Severity::Low,
        Severity::Moderate,
        Severity::Important,
        Severity::Critical,
    ]
    .get(tag as usize)
    .copied()
}

/// One computer's records (format 3), each agent report's attestation once:
/// `[3]`, the sites `[n][site]…`, the reports `[n]` then per report
/// `[counter u64][observed_at i64][count u32][scheme u16][sig]
/// [nodes: n, then level u8, position u32, hash 32 each]`, then the records
/// `[n]` and per record `[state | flags][severity][report no. + place if in
/// a report][counter u64 if not][observed_at i64 if not the report's]
/// [code i64 if failed][update][site no.][reason if unknown or stale]
/// [attestation as in format 2 if its own]`. Counts and numbers are LEB128,
/// strings a LEB128 length and UTF-8; records sorted by update. A record's
/// path to its report's root is rebuilt when it is read.
pub fn encode_doc(records: &[ComplianceRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * 24);
    out.push(RECORD_V3);
    let mut sites: Vec<&str> = records.iter().map(|r| r.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    put_varint(&mut out, sites.len() as u64);
    for site in &sites {
        put_vstr(&mut out, site);
    }
    // Reports: the records of one (counter, signature) share one entry,
    // with the multiproof their own paths make.
    let mut reports: Vec<(&ComplianceRecord, Vec<usize>)> = Vec::new();
    let mut report_of: Vec<Option<usize>> = vec![None; records.len()];
    for (i, r) in records.iter().enumerate() {
        let Some(a) = &r.attestation else { continue };
        let found = reports.iter().position(|(first, _)| {
            let b = first.attestation.as_ref();
            first.counter == r.counter
                && b.is_some_and(|b| b.sig == a.sig && b.scheme == a.scheme && b.count == a.count)
        });
        match found {
            Some(n) => reports[n].1.push(i),
            None => reports.push((r, vec![i])),
        }
    }
    let mut kept = Vec::with_capacity(reports.len());
    for (first, members) in reports {
        let Some(a) = &first.attestation else { continue };
        let paths: Vec<(u32, &[[u8; 32]])> = members
            .iter()
            .filter_map(|&i| records[i].attestation.as_ref().map(|a| (a.index, a.proof.as_slice())))
            .collect();
        let mut places: Vec<u32> = paths.iter().map(|(p, _)| *p).collect();
        places.sort_unstable();
        places.dedup();
        // Paths that do not make one tree keep their own attestations.
        let Some(nodes) = cascade_core::report::multiproof(a.count, &paths).filter(|_| places.len() == paths.len())
        else {
            continue;
        };
        for &i in &members {
            report_of[i] = Some(kept.len());
        }
        kept.push((first, nodes));
    }
    put_varint(&mut out, kept.len() as u64);
    for (first, nodes) in &kept {
        let Some(a) = &first.attestation else { continue };
        out.extend_from_slice(&first.counter.to_be_bytes());
        out.extend_from_slice(&first.observed_at.to_be_bytes());
        out.extend_from_slice(&a.count.to_be_bytes());
        out.extend_from_slice(&a.scheme.to_be_bytes());
        put_vbytes(&mut out, &a.sig);
        put_varint(&mut out, nodes.len() as u64);
        for n in nodes {
            out.push(n.level);
            out.extend_from_slice(&n.position.to_be_bytes());
            out.extend_from_slice(&n.hash);
        }
    }
    put_varint(&mut out, records.len() as u64);
    for (r, report) in records.iter().zip(&report_of) {
        let own_time = report.is_some_and(|n| kept[n].0.observed_at != r.observed_at);
        let flags = match (report, &r.attestation) {
            (Some(_), _) => IN_REPORT | if own_time { OWN_TIME } else { 0 },
            (None, Some(_)) => ATTESTED,
            (None, None) => 0,
        };
        out.push(state_tag(&r.state) | flags);
        out.push(severity_tag(r.severity));
        match report {
            Some(n) => {
                put_varint(&mut out, *n as u64);
                put_varint(&mut out, u64::from(r.attestation.as_ref().map_or(0, |a| a.index)));
                if own_time {
                    out.extend_from_slice(&r.observed_at.to_be_bytes());
                }
            }
            None => {
                out.extend_from_slice(&r.counter.to_be_bytes());
                out.extend_from_slice(&r.observed_at.to_be_bytes());
            }
        }
        if let ComplianceState::Failed { code } = r.state {
            out.extend_from_slice(&code.to_be_bytes());
        }
        put_vstr(&mut out, r.update.as_str());
        put_varint(&mut out, sites.binary_search(&r.site.as_str()).unwrap_or(0) as u64);
        if let ComplianceState::Unknown { reason } | ComplianceState::Stale { reason } = &r.state {
            put_vstr(&mut out, reason);
        }
        if let (None, Some(a)) = (report, &r.attestation) {
            put_attestation(&mut out, a);
        }
    }
    out
}

/// An attestation of its own: `[index u32][count u32][proof count u8]
/// [proof 32 each][scheme u16][sig u16 + bytes]`.
fn put_attestation(out: &mut Vec<u8>, a: &cascade_core::seal::Attestation) {
    out.extend_from_slice(&a.index.to_be_bytes());
    out.extend_from_slice(&a.count.to_be_bytes());
    out.push(a.proof.len().min(255) as u8);
    for h in a.proof.iter().take(255) {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&a.scheme.to_be_bytes());
    let sig = &a.sig[..a.sig.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    out.extend_from_slice(sig);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_vbytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_vstr(out: &mut Vec<u8>, s: &str) {
    put_vbytes(out, s.as_bytes());
}

/// The records an outbox entry names, by computer:
/// `[QUEUED_KEYS][computers]` then per computer `[id][updates][id]…`, as
/// counts and strings of format 3.
pub(crate) fn encode_keys(keys: &[(ComputerId, Vec<UpdateId>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + keys.iter().map(|(_, u)| 24 + u.len() * 12).sum::<usize>());
    out.push(QUEUED_KEYS);
    put_varint(&mut out, keys.len() as u64);
    for (computer, updates) in keys {
        put_vstr(&mut out, computer.as_str());
        put_varint(&mut out, updates.len() as u64);
        for update in updates {
            put_vstr(&mut out, update.as_str());
        }
    }
    out
}

/// Reads [`encode_keys`]' bytes (after the first); each computer's updates
/// sorted.
pub(crate) fn decode_keys(body: &[u8]) -> Result<Vec<(ComputerId, Vec<UpdateId>)>, String> {
    let mut r = Reader(body);
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let computer = ComputerId::new(r.vstr()?).map_err(|e| e.to_string())?;
        let m = r.count()?;
        let mut updates = Vec::with_capacity(m);
        for _ in 0..m {
            updates.push(UpdateId::new(r.vstr()?));
        }
        updates.sort_unstable();
        out.push((computer, updates));
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the records an outbox entry names".to_owned());
    }
    Ok(out)
}

/// A computer summary as stored (its computer is the key's).
pub fn encode_summary(s: &cascade_core::model::ComputerSummary) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.os.len() + s.agent_version.len());
    out.push(SUMMARY_V1);
    put_vstr(&mut out, s.site.as_str());
    put_vstr(&mut out, &s.os);
    put_vstr(&mut out, s.release.as_deref().unwrap_or_default());
    put_vstr(&mut out, s.version.as_deref().unwrap_or_default());
    out.extend_from_slice(&s.last_scan.to_be_bytes());
    out.extend_from_slice(&s.last_report.to_be_bytes());
    put_vstr(&mut out, &s.agent_version);
    out.push(u8::from(s.pending_restart));
    if !s.recent_events.is_empty() {
        put_vbytes(&mut out, &serde_json::to_vec(&s.recent_events).unwrap_or_default());
    }
    out
}

/// Decodes a computer summary; its recent events only `with_events` (a
/// listing's rows show none, and they cost more to decode than the rest).
pub fn decode_summary(
    computer: &ComputerId,
    bytes: &[u8],
    with_events: bool,
) -> Result<cascade_core::model::ComputerSummary, String> {
    let Some((&SUMMARY_V1, body)) = bytes.split_first() else {
        return from_json(bytes);
    };
    let mut r = Reader(body);
    let site = NodeId::new(r.vstr()?).map_err(|e| e.to_string())?;
    let os = r.vstr()?.to_owned();
    let text = |t: &str| (!t.is_empty()).then(|| t.to_owned());
    let release = text(r.vstr()?);
    let version = text(r.vstr()?);
    let last_scan = r.u64()? as i64;
    let last_report = r.u64()? as i64;
    let agent_version = r.vstr()?.to_owned();
    let pending_restart = r.u8()? != 0;
    let recent_events = if r.0.is_empty() {
        Vec::new()
    } else {
        let events = r.vbytes()?;
        if with_events {
            serde_json::from_slice(events).map_err(|e| format!("a computer summary's events: {e}"))?
        } else {
            Vec::new()
        }
    };
    if !r.0.is_empty() {
        return Err("bytes after a computer summary".to_owned());
    }
    Ok(cascade_core::model::ComputerSummary {
        computer: computer.clone(),
        site,
        os,
        release,
        version,
        last_scan,
        last_report,
        agent_version,
        pending_restart,
        recent_events,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated compliance record".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        u64_from(self.take(8)?)
    }
    fn string(&mut self) -> Result<&'a str, String> {
        let len = u16::from_be_bytes([self.u8()?, self.u8()?]) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| "compliance record text is not UTF-8".to_owned())
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number in a compliance record is too long".to_owned())
    }
    /// A count of things that each take at least one byte.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        if n > self.0.len() as u64 {
            return Err("truncated compliance record".to_owned());
        }
        Ok(n as usize)
    }
    fn vbytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.count()?;
        self.take(len)
    }
    fn vstr(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.vbytes()?).map_err(|_| "compliance record text is not UTF-8".to_owned())
    }
    fn attestation(&mut self) -> Result<cascade_core::seal::Attestation, String> {
        let index = u32_from(self.take(4)?)?;
        let count = u32_from(self.take(4)?)?;
        let n = self.u8()? as usize;
        let mut proof = Vec::with_capacity(n);
        for _ in 0..n {
            let mut h = [0u8; 32];
            h.copy_from_slice(self.take(32)?);
            proof.push(h);
        }
        let scheme = u16::from_be_bytes([self.u8()?, self.u8()?]);
        let len = u16::from_be_bytes([self.u8()?, self.u8()?]) as usize;
        let sig = self.take(len)?.to_vec();
        Ok(cascade_core::seal::Attestation {
            index,
            count,
            proof,
            scheme,
            sig,
        })
    }
}

fn state_from(tag: u8, code: Option<i64>, reason: Option<&str>) -> Result<ComplianceState, String> {
    let reason = || reason.unwrap_or_default().to_owned();
    Ok(match tag {
        0 => ComplianceState::Installed,
        1 => ComplianceState::Required,
        2 => ComplianceState::NotApplicable,
        3 => ComplianceState::Superseded,
        4 => ComplianceState::Downloaded,
        5 => ComplianceState::PendingRestart,
        6 => ComplianceState::Failed {
            code: code.unwrap_or_default(),
        },
        7 => ComplianceState::Unknown { reason: reason() },
        8 => ComplianceState::Stale { reason: reason() },
        other => return Err(format!("unknown compliance state {other}")),
    })
}

/// A report's entry in a computer's format 3 value.
struct Entry {
    counter: u64,
    observed_at: i64,
    count: u32,
    scheme: u16,
    sig: Vec<u8>,
    nodes: Vec<cascade_core::report::TreeNode>,
    /// The records of it: their number in the value and place in the report.
    members: Vec<(usize, u32)>,
}

/// How much of a format 3 value a read wants.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Every record, and the reports' entries to rebuild or send their
    /// attestations.
    Signed,
    /// The records (of one update, when given) without attestations, as a
    /// report shows them: no signature or tree node is copied.
    Plain(Option<&'a UpdateId>),
}

/// Reads a format 3 value: the records (those of a report without their
/// attestation yet) and, as `want` says, the reports' entries.
fn parse_v3(computer: &ComputerId, body: &[u8], want: Want<'_>) -> Result<(Vec<ComplianceRecord>, Vec<Entry>), String> {
    let signed = matches!(want, Want::Signed);
    let mut r = Reader(body);
    let n_sites = r.count()?;
    let mut sites = Vec::with_capacity(n_sites);
    for _ in 0..n_sites {
        sites.push(NodeId::new(r.vstr()?).map_err(|e| e.to_string())?);
    }
    let n_reports = r.count()?;
    let mut reports = Vec::with_capacity(n_reports);
    for _ in 0..n_reports {
        let counter = r.u64()?;
        let observed_at = r.u64()? as i64;
        let count = u32_from(r.take(4)?)?;
        let scheme = u16::from_be_bytes([r.u8()?, r.u8()?]);
        let sig = r.vbytes()?;
        let n_nodes = r.count()?;
        if !signed {
            // Level, position and hash of each node.
            r.take(n_nodes.checked_mul(37).ok_or("too many tree nodes")?)?;
            reports.push(Entry {
                counter,
                observed_at,
                count,
                scheme,
                sig: Vec::new(),
                nodes: Vec::new(),
                members: Vec::new(),
            });
            continue;
        }
        let sig = sig.to_vec();
        let mut nodes = Vec::with_capacity(n_nodes);
        for _ in 0..n_nodes {
            let level = r.u8()?;
            let position = u32_from(r.take(4)?)?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(r.take(32)?);
            nodes.push(cascade_core::report::TreeNode { level, position, hash });
        }
        reports.push(Entry {
            counter,
            observed_at,
            count,
            scheme,
            sig,
            nodes,
            members: Vec::new(),
        });
    }
    let n_records = r.count()?;
    let mut out = Vec::with_capacity(n_records);
    for i in 0..n_records {
        let tagged = r.u8()?;
        let tag = tagged & !(ATTESTED | IN_REPORT | OWN_TIME);
        let severity = severity_from(r.u8()?).ok_or("unknown severity in compliance record")?;
        let (counter, observed_at) = if tagged & IN_REPORT != 0 {
            let n = r.varint()? as usize;
            let place = u32::try_from(r.varint()?).map_err(|_| "a record's place is out of range".to_owned())?;
            let entry = reports
                .get_mut(n)
                .ok_or("a record names a report its computer does not have")?;
            if signed {
                entry.members.push((i, place));
            }
            let time = if tagged & OWN_TIME != 0 {
                r.u64()? as i64
            } else {
                entry.observed_at
            };
            (entry.counter, time)
        } else {
            (r.u64()?, r.u64()? as i64)
        };
        let code = if tag == 6 { Some(r.u64()? as i64) } else { None };
        let update = r.vstr()?;
        let site = sites
            .get(r.varint()? as usize)
            .ok_or("a record names a site its computer does not have")?;
        let reason = if tag == 7 || tag == 8 { Some(r.vstr()?) } else { None };
        let state = state_from(tag, code, reason)?;
        let attestation = if tagged & ATTESTED != 0 && tagged & IN_REPORT == 0 {
            let attestation = r.attestation()?;
            signed.then_some(attestation)
        } else {
            None
        };
        // Stored ids are written as `UpdateId` keeps them.
        if let Want::Plain(Some(only)) = want
            && update != only.as_str()
        {
            continue;
        }
        let (update, site) = (UpdateId::new(update), site.clone());
        out.push(ComplianceRecord {
            computer: computer.clone(),
            update,
            site,
            state,
            severity,
            counter,
            observed_at,
            attestation,
        });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the compliance records".to_owned());
    }
    Ok((out, reports))
}

/// Decodes one computer's records of format 3, rebuilding each attested
/// record's path from its report's entry.
fn decode_v3(computer: &ComputerId, body: &[u8]) -> Result<Vec<ComplianceRecord>, String> {
    let (mut out, reports) = parse_v3(computer, body, Want::Signed)?;
    for entry in reports {
        let leaves: Vec<(u32, [u8; 32])> = entry
            .members
            .iter()
            .map(|&(i, place)| (place, cascade_core::seal::record_leaf(&out[i])))
            .collect();
        let (_, proofs) = cascade_core::report::rebuild(entry.count, &leaves, &entry.nodes)
            .ok_or("a report's records and tree nodes do not make one tree")?;
        for (&(i, place), proof) in entry.members.iter().zip(proofs) {
            out[i].attestation = Some(cascade_core::seal::Attestation {
                index: place,
                count: entry.count,
                proof,
                scheme: entry.scheme,
                sig: entry.sig.clone(),
            });
        }
    }
    Ok(out)
}

/// Some of a computer's records as the agent reports they came in, to send
/// on: for each report with a wanted record, those records, with the
/// report's nodes and the leaves of its records not sent standing for the
/// rest (nothing is rebuilt); wanted records of no report apart.
pub fn decode_reports(
    computer: &ComputerId,
    bytes: &[u8],
    wanted: &dyn Fn(&UpdateId) -> bool,
) -> Result<(Vec<cascade_core::report::Report>, Vec<ComplianceRecord>), String> {
    let Some((&RECORD_V3, body)) = bytes.split_first() else {
        let records: Vec<ComplianceRecord> = decode_doc(computer, bytes)?
            .into_iter()
            .filter(|r| wanted(&r.update))
            .collect();
        return Ok(cascade_core::report::group(records));
    };
    let (records, entries) = parse_v3(computer, body, Want::Signed)?;
    let mut in_report = vec![false; records.len()];
    let mut reports = Vec::new();
    for entry in entries {
        let mut nodes = entry.nodes;
        let mut members = Vec::new();
        for &(i, place) in &entry.members {
            in_report[i] = true;
            if wanted(&records[i].update) {
                members.push((place, i));
            } else {
                nodes.push(cascade_core::report::TreeNode {
                    level: 0,
                    position: place,
                    hash: cascade_core::seal::record_leaf(&records[i]),
                });
            }
        }
        if members.is_empty() {
            continue;
        }
        let nodes = cascade_core::report::minimize(entry.count, nodes);
        reports.push(cascade_core::report::Report {
            computer: computer.clone(),
            counter: entry.counter,
            count: entry.count,
            scheme: entry.scheme,
            sig: entry.sig,
            nodes,
            records: members
                .into_iter()
                .map(|(place, i)| (place, records[i].clone()))
                .collect(),
        });
    }
    let loose = records
        .into_iter()
        .zip(in_report)
        .filter(|(r, in_report)| !in_report && wanted(&r.update))
        .map(|(r, _)| r)
        .collect();
    Ok((reports, loose))
}

/// One computer's records as a report shows them: without attestations
/// (nothing is rebuilt or hashed), of `update` only when given.
pub fn decode_plain(
    computer: &ComputerId,
    bytes: &[u8],
    update: Option<&UpdateId>,
) -> Result<Vec<ComplianceRecord>, String> {
    if let Some((&RECORD_V3, body)) = bytes.split_first() {
        return Ok(parse_v3(computer, body, Want::Plain(update))?.0);
    }
    let mut records = decode_doc(computer, bytes)?;
    records.retain(|r| update.is_none_or(|u| r.update == *u));
    for r in &mut records {
        r.attestation = None;
    }
    Ok(records)
}

/// Decodes one computer's records.
pub fn decode_doc(computer: &ComputerId, bytes: &[u8]) -> Result<Vec<ComplianceRecord>, String> {
    let body = match bytes.split_first() {
        Some((&RECORD_V3, body)) => return decode_v3(computer, body),
        Some((&RECORD_V2, body)) => body,
        _ => return Err(format!("unknown compliance encoding {:?}", bytes.first())),
    };
    let mut r = Reader(body);
    let count = u32_from(r.take(4)?)? as usize;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let tagged = r.u8()?;
        let tag = tagged & !ATTESTED;
        let severity = severity_from(r.u8()?).ok_or("unknown severity in compliance record")?;
        let counter = r.u64()?;
        let observed_at = r.u64()? as i64;
        let code = if tag == 6 { Some(r.u64()? as i64) } else { None };
        let update = UpdateId::new(r.string()?);
        let site = NodeId::new(r.string()?).map_err(|e| e.to_string())?;
        let reason = if tag == 7 || tag == 8 { Some(r.string()?) } else { None };
        let state = state_from(tag, code, reason)?;
        let attestation = if tagged & ATTESTED != 0 {
            Some(r.attestation()?)
        } else {
            None
        };
        out.push(ComplianceRecord {
            computer: computer.clone(),
            update,
            site,
            state,
            severity,
            counter,
            observed_at,
            attestation,
        });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the compliance records".to_owned());
    }
    Ok(out)
}

/// A format 1 compliance record (JSON, one key per record).
pub fn decode_v1_record(bytes: &[u8]) -> Result<ComplianceRecord, String> {
    from_json(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(computer: &ComputerId, counter: u64) -> Vec<ComplianceRecord> {
        [
            ComplianceState::Installed,
            ComplianceState::Failed { code: -2147024784 },
            ComplianceState::Unknown {
                reason: "no inventory".into(),
            },
            ComplianceState::Stale {
                reason: "freeze: old".into(),
            },
            ComplianceState::Required,
        ]
        .into_iter()
        .enumerate()
        .map(|(n, state)| ComplianceRecord {
            computer: computer.clone(),
            update: UpdateId::kb(5021233 + n as u64),
            site: NodeId::new(if n == 4 { "site-b" } else { "site-a" }).unwrap(),
            state,
            severity: Severity::Critical,
            counter,
            observed_at: 1_700_000_000 + (n == 3) as i64,
            attestation: None,
        })
        .collect()
    }

    /// Format 2 as it was written, to check that it is still read.
    fn encode_v2(records: &[ComplianceRecord]) -> Vec<u8> {
        let mut out = vec![RECORD_V2];
        out.extend_from_slice(&(records.len() as u32).to_be_bytes());
        for r in records {
            out.push(state_tag(&r.state) | if r.attestation.is_some() { ATTESTED } else { 0 });
            out.push(severity_tag(r.severity));
            out.extend_from_slice(&r.counter.to_be_bytes());
            out.extend_from_slice(&r.observed_at.to_be_bytes());
            if let ComplianceState::Failed { code } = r.state {
                out.extend_from_slice(&code.to_be_bytes());
            }
            let put = |out: &mut Vec<u8>, s: &str| {
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            };
            put(&mut out, r.update.as_str());
            put(&mut out, r.site.as_str());
            if let ComplianceState::Unknown { reason } | ComplianceState::Stale { reason } = &r.state {
                put(&mut out, reason);
            }
            if let Some(a) = &r.attestation {
                put_attestation(&mut out, a);
            }
        }
        out
    }

    #[test]
    fn summary_round_trip_with_and_without_its_events() {
        use cascade_core::model::{Agent, EventKind, InstallEvent, PatchMethod};
        let computer = ComputerId::new("ws-1").unwrap();
        let mut agent = Agent::new(computer.clone(), NodeId::new("site-a").unwrap(), 1_700_000_000);
        agent.agent_version = "1.2.3".into();
        let plain = agent.summary();
        let bytes = encode_summary(&plain);
        assert_eq!(decode_summary(&computer, &bytes, true).unwrap(), plain);
        agent.note_events(&[InstallEvent {
            at: 1_700_000_100,
            update: UpdateId::new("KB1"),
            method: PatchMethod::default(),
            kind: EventKind::Failed { code: 112 },
            detail: "é".repeat(150),
        }]);
        let full = agent.summary();
        assert!(full.check().is_ok());
        let bytes = encode_summary(&full);
        assert_eq!(decode_summary(&computer, &bytes, true).unwrap(), full);
        // A listing's row skips the events.
        assert_eq!(decode_summary(&computer, &bytes, false).unwrap(), plain);
        assert!(decode_summary(&computer, &bytes[..bytes.len() - 1], true).is_err());
    }

    #[test]
    fn doc_round_trip() {
        let computer = ComputerId::new("ws-1").unwrap();
        // Unsigned records.
        let plain = records(&computer, 42);
        let bytes = encode_doc(&plain);
        assert_eq!(decode_doc(&computer, &bytes).unwrap(), plain);
        assert!(decode_doc(&computer, &bytes[..bytes.len() - 1]).is_err());
        // One whole report, then two records of it replaced by a newer
        // report (the older one keeps the nodes that stand for them).
        let mut signed = records(&computer, 42);
        cascade_core::seal::attest(&mut signed, 0x0403, &[7; 70]);
        let bytes = encode_doc(&signed);
        assert_eq!(decode_doc(&computer, &bytes).unwrap(), signed);
        let mut newer = records(&computer, 43)[1..3].to_vec();
        newer[0].state = ComplianceState::Installed;
        cascade_core::seal::attest(&mut newer, 0x0403, &[8; 70]);
        let mut mixed = signed.clone();
        mixed[1] = newer[0].clone();
        mixed[2] = newer[1].clone();
        let bytes = encode_doc(&mixed);
        assert_eq!(decode_doc(&computer, &bytes).unwrap(), mixed);
        // Each report's signature is there once, not once a record.
        let v2 = encode_v2(&mixed);
        assert!(
            bytes.len() * 2 < v2.len(),
            "{} bytes against {} in format 2",
            bytes.len(),
            v2.len()
        );
        // As reports read them: no attestations, one update's record alone.
        let plain: Vec<ComplianceRecord> = mixed
            .iter()
            .map(|r| ComplianceRecord {
                attestation: None,
                ..r.clone()
            })
            .collect();
        for doc in [&bytes, &v2] {
            assert_eq!(decode_plain(&computer, doc, None).unwrap(), plain);
            assert_eq!(
                decode_plain(&computer, doc, Some(&plain[2].update)).unwrap(),
                vec![plain[2].clone()]
            );
            assert_eq!(
                decode_plain(&computer, doc, Some(&UpdateId::new("KB1"))).unwrap(),
                vec![]
            );
        }
        assert!(decode_plain(&computer, &bytes[..bytes.len() - 1], None).is_err());
        // Formats 2 and 1 are still read.
        assert_eq!(decode_doc(&computer, &v2).unwrap(), mixed);
        assert_eq!(
            decode_v1_record(&json(&plain[1])).unwrap(),
            plain[1],
            "format 1 records still read"
        );
        // Some records read as the reports they came in: each report's
        // records and nodes rebuild exactly what was stored.
        for wanted in [vec![0usize], vec![1], vec![0, 2, 4], vec![0, 1, 2, 3, 4]] {
            let updates: Vec<UpdateId> = wanted.iter().map(|&i| mixed[i].update.clone()).collect();
            let (reports, loose) = decode_reports(&computer, &bytes, &|u| updates.contains(u)).unwrap();
            assert!(loose.is_empty());
            let mut got: Vec<ComplianceRecord> = reports.into_iter().flat_map(|r| r.attested().unwrap().1).collect();
            got.sort_by(|a, b| a.update.cmp(&b.update));
            let expected: Vec<ComplianceRecord> = wanted.iter().map(|&i| mixed[i].clone()).collect();
            assert_eq!(got, expected, "{wanted:?}");
        }
        // A record whose path does not fit its report keeps its own.
        let mut odd = signed.clone();
        if let Some(a) = odd[0].attestation.as_mut() {
            a.proof.pop();
        }
        assert_eq!(decode_doc(&computer, &encode_doc(&odd)).unwrap(), odd);
    }

    #[test]
    fn damaged_format_3_is_an_error_not_a_panic() {
        let computer = ComputerId::new("ws-1").unwrap();
        let mut signed = records(&computer, 42);
        cascade_core::seal::attest(&mut signed, 0x0403, &[7; 70]);
        let bytes = encode_doc(&signed[..3]);
        for cut in 0..bytes.len() {
            assert!(decode_doc(&computer, &bytes[..cut]).is_err());
        }
        for i in 1..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = decode_doc(&computer, &b);
        }
    }
}
