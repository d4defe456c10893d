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
    state.index() as u8
}

/// Set on the state byte when the agent's attestation follows the record.
const ATTESTED: u8 = 0x80;

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One computer's records (format 2): `[2][count u32]` then per record
/// `[state (+0x80 when attested)][severity][counter u64][observed_at i64]
/// [code i64 if failed][update][site][reason if unknown or stale]
/// [attestation if attested]`, strings as u16 length + UTF-8, sorted by
/// update.
pub fn encode_doc(records: &[ComplianceRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + records.len() * 48);
    out.push(RECORD_V2);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        out.push(state_tag(&r.state) | if r.attestation.is_some() { ATTESTED } else { 0 });
        out.push(severity_tag(r.severity));
        out.extend_from_slice(&r.counter.to_be_bytes());
        out.extend_from_slice(&r.observed_at.to_be_bytes());
        if let ComplianceState::Failed { code } = r.state {
            out.extend_from_slice(&code.to_be_bytes());
        }
        put_str(&mut out, r.update.as_str());
        put_str(&mut out, r.site.as_str());
        if let ComplianceState::Unknown { reason } | ComplianceState::Stale { reason } = &r.state {
            put_str(&mut out, reason);
        }
        if let Some(a) = &r.attestation {
            // [index u32][count u32][proof count u8][proof 32 each][scheme u16][sig u16 + bytes]
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

/// Decodes one computer's records.
pub fn decode_doc(computer: &ComputerId, bytes: &[u8]) -> Result<Vec<ComplianceRecord>, String> {
    let Some((&RECORD_V2, body)) = bytes.split_first() else {
        return Err(format!("unknown compliance encoding {:?}", bytes.first()));
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
            8 => ComplianceState::Stale {
                reason: r.string()?.to_owned(),
            },
            other => return Err(format!("unknown compliance state {other}")),
        };
        let attestation = if tagged & ATTESTED != 0 {
            let index = u32_from(r.take(4)?)?;
            let count = u32_from(r.take(4)?)?;
            let n = r.u8()? as usize;
            let mut proof = Vec::with_capacity(n);
            for _ in 0..n {
                let mut h = [0u8; 32];
                h.copy_from_slice(r.take(32)?);
                proof.push(h);
            }
            let scheme = u16::from_be_bytes([r.u8()?, r.u8()?]);
            let len = u16::from_be_bytes([r.u8()?, r.u8()?]) as usize;
            let sig = r.take(len)?.to_vec();
            Some(cascade_core::seal::Attestation {
                index,
                count,
                proof,
                scheme,
                sig,
            })
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

    #[test]
    fn doc_round_trip() {
        let computer = ComputerId::new("ws-1").unwrap();
        let records: Vec<ComplianceRecord> = [
            ComplianceState::Installed,
            ComplianceState::Failed { code: -2147024784 },
            ComplianceState::Unknown {
                reason: "no inventory".into(),
            },
            ComplianceState::Stale {
                reason: "freeze: old".into(),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(n, state)| ComplianceRecord {
            computer: computer.clone(),
            update: UpdateId::kb(5021233 + n as u64),
            site: NodeId::new("site-a").unwrap(),
            state,
            severity: Severity::Critical,
            counter: 42,
            observed_at: 1_700_000_000,
            attestation: (n % 2 == 0).then(|| cascade_core::seal::Attestation {
                index: n as u32,
                count: 4,
                proof: vec![[n as u8; 32], [7; 32]],
                scheme: 0x0403,
                sig: vec![1, 2, 3, n as u8],
            }),
        })
        .collect();
        let bytes = encode_doc(&records);
        assert_eq!(decode_doc(&computer, &bytes).unwrap(), records);
        assert!(decode_doc(&computer, &bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            decode_v1_record(&json(&records[1])).unwrap(),
            records[1],
            "format 1 records still read"
        );
    }
}
