//! Conversions between protobuf messages and domain types, at the edge.

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::report::Report;
use cascade_core::seal::{self, Attestation, Seal};
use cascade_core::update::Severity;
use cascade_proto::v1;

/// A compliance record from the wire that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compliance record: {0}")]
pub struct InvalidRecord(pub String);

pub fn record_to_wire(r: &ComplianceRecord) -> v1::ComplianceRecord {
    let (state, failure_code, unknown_reason) = match &r.state {
        ComplianceState::Installed => (v1::ComplianceState::Installed, 0, String::new()),
        ComplianceState::Required => (v1::ComplianceState::Required, 0, String::new()),
        ComplianceState::NotApplicable => (v1::ComplianceState::NotApplicable, 0, String::new()),
        ComplianceState::Superseded => (v1::ComplianceState::Superseded, 0, String::new()),
        ComplianceState::Downloaded => (v1::ComplianceState::Downloaded, 0, String::new()),
        ComplianceState::PendingRestart => (v1::ComplianceState::PendingRestart, 0, String::new()),
        ComplianceState::Failed { code } => (v1::ComplianceState::Failed, *code, String::new()),
        ComplianceState::Unknown { reason } => (v1::ComplianceState::Unknown, 0, reason.clone()),
        ComplianceState::Stale { reason } => (v1::ComplianceState::Stale, 0, reason.clone()),
    };
    let severity = match r.severity {
        Severity::Unspecified => v1::Severity::Unspecified,
        Severity::Low => v1::Severity::Low,
        Severity::Moderate => v1::Severity::Moderate,
        Severity::Important => v1::Severity::Important,
        Severity::Critical => v1::Severity::Critical,
    };
    v1::ComplianceRecord {
        computer: r.computer.to_string(),
        update: r.update.to_string(),
        site: r.site.to_string(),
        state: state as i32,
        failure_code,
        unknown_reason,
        severity: severity as i32,
        counter: r.counter,
        observed_at: r.observed_at,
        attestation: r.attestation.as_ref().map(attestation_to_wire),
    }
}

fn attestation_to_wire(a: &Attestation) -> v1::Attestation {
    v1::Attestation {
        index: a.index,
        count: a.count,
        proof: a.proof.iter().map(|h| h.to_vec()).collect(),
        scheme: u32::from(a.scheme),
        signature: a.sig.clone(),
    }
}

fn attestation_from_wire(w: v1::Attestation) -> Result<Attestation, String> {
    if w.proof.len() > 40 {
        return Err("attestation proof is longer than any report".to_owned());
    }
    let proof = w
        .proof
        .iter()
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).map_err(|_| "attestation proof hash is not 32 bytes".to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Attestation {
        index: w.index,
        count: w.count,
        proof,
        scheme: u16::try_from(w.scheme).map_err(|_| "attestation scheme is not a TLS scheme code".to_owned())?,
        sig: w.signature,
    })
}

/// A seal on the wire.
pub fn seal_to_wire(s: &Seal) -> v1::Seal {
    use base64::Engine;
    let (batch_index, batch_count, batch_proof) = match &s.batch {
        Some(b) => (
            b.index,
            b.count,
            b.proof
                .iter()
                .map(|h| seal::hash_from_hex(h).map(|h| h.to_vec()).unwrap_or_default())
                .collect(),
        ),
        None => (0, 0, Vec::new()),
    };
    v1::Seal {
        format: u32::from(s.format),
        batch_index,
        batch_count,
        batch_proof,
        prev: s.prev.clone(),
        state: s.state.clone(),
        key: s.key.clone(),
        scheme: u32::from(s.scheme),
        signature: base64::engine::general_purpose::STANDARD
            .decode(&s.sig)
            .unwrap_or_default(),
    }
}

/// A seal from the wire.
pub fn seal_from_wire(w: v1::Seal) -> Result<Seal, String> {
    use base64::Engine;
    let batch = if w.batch_count == 0 {
        None
    } else {
        if w.batch_proof.len() > 40 {
            return Err("seal batch proof is longer than any batch".to_owned());
        }
        Some(seal::BatchProof {
            index: w.batch_index,
            count: w.batch_count,
            proof: w
                .batch_proof
                .iter()
                .map(|h| {
                    <[u8; 32]>::try_from(h.as_slice())
                        .map(|h| seal::hash_hex(&h))
                        .map_err(|_| "seal batch proof hash is not 32 bytes".to_owned())
                })
                .collect::<Result<_, _>>()?,
        })
    };
    Ok(Seal {
        // 0: a sender of format 2, which had no version on the wire.
        format: match w.format {
            0 => 2,
            f => u16::try_from(f).map_err(|_| "seal format is out of range".to_owned())?,
        },
        batch,
        prev: w.prev,
        state: w.state,
        key: w.key,
        scheme: u16::try_from(w.scheme).map_err(|_| "seal scheme is not a TLS scheme code".to_owned())?,
        sig: base64::engine::general_purpose::STANDARD.encode(&w.signature),
    })
}

impl TryFrom<v1::ComplianceRecord> for crate::wire::Record {
    type Error = InvalidRecord;

    fn try_from(w: v1::ComplianceRecord) -> Result<Self, InvalidRecord> {
        let bad = |what: &str| InvalidRecord(format!("{what} ({}/{})", w.computer, w.update));
        let state = match v1::ComplianceState::try_from(w.state).map_err(|_| bad("unknown state"))? {
            v1::ComplianceState::Unspecified => return Err(bad("no state")),
            v1::ComplianceState::Installed => ComplianceState::Installed,
            v1::ComplianceState::Required => ComplianceState::Required,
            v1::ComplianceState::NotApplicable => ComplianceState::NotApplicable,
            v1::ComplianceState::Superseded => ComplianceState::Superseded,
            v1::ComplianceState::Downloaded => ComplianceState::Downloaded,
            v1::ComplianceState::PendingRestart => ComplianceState::PendingRestart,
            v1::ComplianceState::Failed => ComplianceState::Failed { code: w.failure_code },
            v1::ComplianceState::Unknown => ComplianceState::Unknown {
                reason: w.unknown_reason.clone(),
            },
            v1::ComplianceState::Stale => ComplianceState::Stale {
                reason: w.unknown_reason.clone(),
            },
        };
        let severity = match v1::Severity::try_from(w.severity).map_err(|_| bad("unknown severity"))? {
            v1::Severity::Unspecified => Severity::Unspecified,
            v1::Severity::Low => Severity::Low,
            v1::Severity::Moderate => Severity::Moderate,
            v1::Severity::Important => Severity::Important,
            v1::Severity::Critical => Severity::Critical,
        };
        if w.update.trim().is_empty() {
            return Err(bad("no update"));
        }
        Ok(Record(ComplianceRecord {
            computer: ComputerId::new(&w.computer).map_err(|e| InvalidRecord(e.to_string()))?,
            update: UpdateId::new(&w.update),
            site: NodeId::new(&w.site).map_err(|e| InvalidRecord(e.to_string()))?,
            state,
            severity,
            counter: w.counter,
            observed_at: w.observed_at,
            attestation: w
                .attestation
                .clone()
                .map(attestation_from_wire)
                .transpose()
                .map_err(|e| bad(&e))?,
        }))
    }
}

/// A checked compliance record from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record(pub ComplianceRecord);

/// One agent report on the wire: the signature once, the records without
/// their computer, counter and attestation.
pub fn report_to_wire(report: &Report) -> v1::Report {
    let (places, records) = report
        .records
        .iter()
        .map(|(place, r)| {
            let mut w = record_to_wire(r);
            w.computer.clear();
            w.counter = 0;
            w.attestation = None;
            (*place, w)
        })
        .unzip();
    v1::Report {
        computer: report.computer.to_string(),
        counter: report.counter,
        count: report.count,
        scheme: u32::from(report.scheme),
        signature: report.sig.clone(),
        nodes: report
            .nodes
            .iter()
            .map(|n| v1::TreeNode {
                level: u32::from(n.level),
                position: n.position,
                hash: n.hash.to_vec(),
            })
            .collect(),
        records,
        places,
    }
}

/// A report from the wire, its records whole again (their attestations are
/// rebuilt by [`Report::attested`], which also checks that the records and
/// nodes make one tree).
impl TryFrom<v1::Report> for crate::wire::WireReport {
    type Error = InvalidRecord;

    fn try_from(w: v1::Report) -> Result<Self, InvalidRecord> {
        let bad = |what: &str| InvalidRecord(format!("report {} of {}: {what}", w.counter, w.computer));
        let computer = ComputerId::new(&w.computer).map_err(|e| bad(&e.to_string()))?;
        if w.count == 0 || w.count > cascade_core::report::MAX_RECORDS {
            return Err(bad(&format!("{} records", w.count)));
        }
        // No tree needs more nodes than it has leaves.
        if w.records.len() != w.places.len() || w.records.len() > w.count as usize || w.nodes.len() > w.count as usize {
            return Err(bad("its records, places and nodes do not fit its count"));
        }
        let nodes = w
            .nodes
            .iter()
            .map(|n| {
                Ok(cascade_core::report::TreeNode {
                    level: u8::try_from(n.level).map_err(|_| bad("a tree node above any tree"))?,
                    position: n.position,
                    hash: <[u8; 32]>::try_from(n.hash.as_slice())
                        .map_err(|_| bad("a tree node hash is not 32 bytes"))?,
                })
            })
            .collect::<Result<Vec<_>, InvalidRecord>>()?;
        let mut records = Vec::with_capacity(w.records.len());
        for (mut r, place) in w.records.into_iter().zip(w.places) {
            r.computer = w.computer.clone();
            r.counter = w.counter;
            let Record(record) = Record::try_from(r)?;
            records.push((place, record));
        }
        Ok(WireReport(Report {
            computer,
            counter: w.counter,
            count: w.count,
            scheme: u16::try_from(w.scheme).map_err(|_| bad("its scheme is not a TLS scheme code"))?,
            sig: w.signature,
            nodes,
            records,
        }))
    }
}

/// A report from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireReport(pub Report);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusal() {
        let r = ComplianceRecord {
            computer: ComputerId::new("pc-1").unwrap(),
            update: UpdateId::new("KB5021233"),
            site: NodeId::new("site-a").unwrap(),
            state: ComplianceState::Failed { code: 1603 },
            severity: Severity::Critical,
            counter: 9,
            observed_at: 5,
            attestation: None,
        };
        assert_eq!(Record::try_from(record_to_wire(&r)).unwrap().0, r);
        let mut bad = record_to_wire(&r);
        bad.state = 99;
        assert!(Record::try_from(bad).unwrap_err().0.contains("unknown state"));
        let mut bad = record_to_wire(&r);
        bad.computer = String::new();
        assert!(Record::try_from(bad).is_err());
    }
}
