//! Conversions between protobuf messages and domain types, at the edge.

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{Change, ChangeOp, ComplianceRecord, ComputerId, NodeId};
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

// ---- changes, snapshots and the declared subtree

/// A change for the wire: its operation as its origin signed it.
pub fn change_to_wire(change: &Change) -> v1::Change {
    v1::Change {
        origin: change.origin.to_string(),
        seq: change.seq,
        op: change.op.raw().as_bytes().to_vec(),
        seal: change.seal.as_ref().map(seal_to_wire),
    }
}

/// A change from the wire, its operation kept as signed and decoded for
/// this node's use.
pub fn change_from_wire(c: v1::Change) -> Result<Change, String> {
    let origin = NodeId::new(&c.origin).map_err(|e| format!("change from a bad origin: {e}"))?;
    let text =
        std::str::from_utf8(&c.op).map_err(|_| format!("change {origin}/{}: its operation is not UTF-8", c.seq))?;
    let op: cascade_core::exact::Exact<ChangeOp> =
        cascade_core::exact::Exact::from_json(text).map_err(|e| format!("change {origin}/{}: {e}", c.seq))?;
    if let Some(why) = op.unknown_reason() {
        tracing::info!(%origin, seq = c.seq, "kept and forwarded as signed, not acted on here: {why}");
    }
    let seal = c
        .seal
        .map(seal_from_wire)
        .transpose()
        .map_err(|e| format!("change {origin}/{}: {e}", c.seq))?;
    Ok(Change {
        origin,
        seq: c.seq,
        op,
        seal,
    })
}

/// A snapshot in parts of at most `per_part` objects and overrides each;
/// the first part carries the cursor and each origin's last change. Objects
/// and overrides go as the exact bytes their origins signed.
pub fn snapshot_parts(snapshot: &cascade_store::Snapshot, per_part: usize) -> Vec<v1::SnapshotPart> {
    let per_part = per_part.max(1);
    let objects: Vec<_> = snapshot.objects.chunks(per_part).collect();
    let overrides: Vec<_> = snapshot.overrides.chunks(per_part).collect();
    let parts = objects.len().max(overrides.len()).max(1);
    (0..parts)
        .map(|i| v1::SnapshotPart {
            cursor: if i == 0 {
                snapshot.cursor.iter().map(|(o, s)| (o.to_string(), *s)).collect()
            } else {
                Default::default()
            },
            first: i == 0,
            last: i + 1 == parts,
            tips: if i == 0 {
                snapshot
                    .tips
                    .iter()
                    .map(|(origin, tip)| v1::Tip {
                        origin: origin.to_string(),
                        seq: tip.seq,
                        op: tip.op.clone(),
                        seal: Some(seal_to_wire(&tip.seal)),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            objects: objects
                .get(i)
                .into_iter()
                .flat_map(|chunk| chunk.iter())
                .map(|o| v1::SignedObject {
                    origin: o.origin.to_string(),
                    seq: o.seq,
                    object: o.object.raw().as_bytes().to_vec(),
                    seal: o.seal.as_ref().map(seal_to_wire),
                })
                .collect(),
            overrides: overrides
                .get(i)
                .into_iter()
                .flat_map(|chunk| chunk.iter())
                .map(|(origin, seq, over, seal)| v1::SignedOverride {
                    origin: origin.to_string(),
                    seq: *seq,
                    r#override: over.raw().as_bytes().to_vec(),
                    seal: seal.as_ref().map(seal_to_wire),
                })
                .collect(),
        })
        .collect()
}

/// Adds one part from the wire to a snapshot being put together (the
/// cursor of the first part is read by the caller).
pub fn add_snapshot_part(snapshot: &mut cascade_store::Snapshot, part: v1::SnapshotPart) -> Result<(), String> {
    fn exact<T: cascade_core::exact::Decode>(
        what: &str,
        bytes: &[u8],
    ) -> Result<cascade_core::exact::Exact<T>, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| format!("snapshot: {what} is not UTF-8"))?;
        cascade_core::exact::Exact::from_json(text).map_err(|e| format!("snapshot: {what}: {e}"))
    }
    fn origin(s: &str) -> Result<NodeId, String> {
        NodeId::new(s).map_err(|e| format!("snapshot: origin {s:?}: {e}"))
    }
    fn seal_of(seal: Option<v1::Seal>) -> Result<Option<Seal>, String> {
        seal.map(seal_from_wire)
            .transpose()
            .map_err(|e| format!("snapshot: {e}"))
    }
    for tip in part.tips {
        let from = origin(&tip.origin)?;
        let seal = seal_of(tip.seal)?.ok_or_else(|| format!("snapshot: the last change of {from} has no seal"))?;
        snapshot.tips.insert(
            from,
            seal::Tip {
                seq: tip.seq,
                op: tip.op,
                seal,
            },
        );
    }
    for o in part.objects {
        snapshot.objects.push(cascade_store::StoredObject {
            origin: origin(&o.origin)?,
            seq: o.seq,
            object: exact("an object", &o.object)?,
            seal: seal_of(o.seal)?,
        });
    }
    for o in part.overrides {
        snapshot.overrides.push((
            origin(&o.origin)?,
            o.seq,
            exact("an override", &o.r#override)?,
            seal_of(o.seal)?,
        ));
    }
    Ok(())
}

/// The sites below a node, each with its parent where known.
pub fn subtree_to_wire(
    sites: &std::collections::BTreeSet<NodeId>,
    parents: &std::collections::BTreeMap<NodeId, NodeId>,
) -> v1::Subtree {
    v1::Subtree {
        sites: sites
            .iter()
            .map(|site| v1::SubtreeSite {
                site: site.to_string(),
                parent: parents.get(site).map(ToString::to_string).unwrap_or_default(),
            })
            .collect(),
    }
}

/// A child's declared subtree: its sites, and each one's parent where the
/// child named it.
pub fn subtree_from_wire(
    subtree: v1::Subtree,
) -> Result<
    (
        std::collections::BTreeSet<NodeId>,
        std::collections::BTreeMap<NodeId, NodeId>,
    ),
    String,
> {
    let mut sites = std::collections::BTreeSet::new();
    let mut parents = std::collections::BTreeMap::new();
    for entry in subtree.sites {
        let site = NodeId::new(&entry.site).map_err(|e| format!("declared subtree: site {:?}: {e}", entry.site))?;
        if !entry.parent.is_empty() {
            let parent = NodeId::new(&entry.parent)
                .map_err(|e| format!("declared subtree: the parent of {site}: {:?}: {e}", entry.parent))?;
            parents.insert(site.clone(), parent);
        }
        sites.insert(site);
    }
    Ok((sites, parents))
}

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
