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
    match state {
        ComplianceState::Installed => 0,
        ComplianceState::Required => 1,
        ComplianceState::NotApplicable => 2,
        ComplianceState::Superseded => 3,
        ComplianceState::Downloaded => 4,
        ComplianceState::PendingRestart => 5,
        ComplianceState::Failed { .. } => 6,
        ComplianceState::Unknown { .. } => 7,
    }
}

/// State names by tag, for summaries.
pub const STATE_NAMES: [&str; 8] = [
    "installed",
    "required",
    "not_applicable",
    "superseded",
    "downloaded",
    "pending_restart",
    "failed",
    "unknown",
];

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
}

/// `[2][state][severity][counter u64][observed_at i64][code i64 if failed]
/// [computer][update][site][reason if unknown]`, strings as u16 length + UTF-8.
pub fn encode_record(r: &ComplianceRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(RECORD_V2);
    out.push(state_tag(&r.state));
    out.push(severity_tag(r.severity));
    out.extend_from_slice(&r.counter.to_be_bytes());
    out.extend_from_slice(&r.observed_at.to_be_bytes());
    if let ComplianceState::Failed { code } = r.state {
        out.extend_from_slice(&code.to_be_bytes());
    }
    put_str(&mut out, r.computer.as_str());
    put_str(&mut out, r.update.as_str());
    put_str(&mut out, r.site.as_str());
    if let ComplianceState::Unknown { reason } = &r.state {
        put_str(&mut out, reason);
    }
    out
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
}

/// Decodes a compliance record of either format.
pub fn decode_record(bytes: &[u8]) -> Result<ComplianceRecord, String> {
    match bytes.first() {
        Some(&JSON) => from_json(bytes),
        Some(&RECORD_V2) => {
            let mut r = Reader(&bytes[1..]);
            let tag = r.u8()?;
            let severity = severity_from(r.u8()?).ok_or("unknown severity in compliance record")?;
            let counter = r.u64()?;
            let observed_at = r.u64()? as i64;
            let code = if tag == 6 { Some(r.u64()? as i64) } else { None };
            let computer = ComputerId::new(r.string()?).map_err(|e| e.to_string())?;
            let update = UpdateId::new(r.string()?);
            let site = NodeId::new(r.string()?).map_err(|e| e.to_string())?;
            let state = match tag {
                0 => ComplianceState::Installed,
                1 => ComplianceState::Required,
                2 => ComplianceState::NotApplicable,
                3 => ComplianceState::Superseded,
                4 => ComplianceState::Downloaded,
                5 => ComplianceState::PendingRestart,
                6 => ComplianceState::Failed {
                    code: code.unwrap_or_default(),
                },
                7 => ComplianceState::Unknown {
                    reason: r.string()?.to_owned(),
                },
                other => return Err(format!("unknown compliance state {other}")),
            };
            Ok(ComplianceRecord {
                computer,
                update,
                site,
                state,
                severity,
                counter,
                observed_at,
            })
        }
        Some(other) => Err(format!("unknown value encoding {other}")),
        None => Err("empty value".to_owned()),
    }
}

/// What the aggregates need of a stored record: state, severity, counter
/// and site, read without decoding the rest.
pub struct RecordMeta<'a> {
    pub state: u8,
    pub severity: u8,
    pub counter: u64,
    pub site: std::borrow::Cow<'a, str>,
}

pub fn record_meta(bytes: &[u8]) -> Result<RecordMeta<'_>, String> {
    if bytes.first() == Some(&RECORD_V2) {
        let mut r = Reader(&bytes[1..]);
        let state = r.u8()?;
        let severity = r.u8()?;
        let counter = r.u64()?;
        r.u64()?;
        if state == 6 {
            r.u64()?;
        }
        r.string()?;
        r.string()?;
        let site = r.string()?;
        return Ok(RecordMeta { state, severity, counter, site: std::borrow::Cow::Borrowed(site) });
    }
    let record = decode_record(bytes)?;
    Ok(RecordMeta {
        state: state_tag(&record.state),
        severity: severity_tag(record.severity),
        counter: record.counter,
        site: std::borrow::Cow::Owned(record.site.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        for state in [
            ComplianceState::Installed,
            ComplianceState::Failed { code: -2147024784 },
            ComplianceState::Unknown {
                reason: "no inventory".into(),
            },
        ] {
            let r = ComplianceRecord {
                computer: ComputerId::new("ws-1").unwrap(),
                update: UpdateId::new("KB5021233"),
                site: NodeId::new("site-a").unwrap(),
                state,
                severity: Severity::Critical,
                counter: 42,
                observed_at: 1_700_000_000,
            };
            let bytes = encode_record(&r);
            assert_eq!(decode_record(&bytes).unwrap(), r);
            let meta = record_meta(&bytes).unwrap();
            assert_eq!((meta.counter, meta.site.as_ref(), meta.state), (42, "site-a", state_tag(&r.state)));
            assert_eq!(decode_record(&json(&r)).unwrap(), r, "format 1 records still read");
            assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        }
    }
}
