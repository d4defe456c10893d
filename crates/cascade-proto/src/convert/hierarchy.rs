//! Conversions of `hierarchy.proto`: compliance records and agents'
//! reports as they travel up; seals, changes and snapshots as they travel
//! down; the subtree a child declares.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::exact::Exact;
use cascade_core::model::{Change, ChangeOp, ComplianceRecord, ComputerId, NodeId, Override};
use cascade_core::report::{Report, TreeNode};
use cascade_core::seal::{self, Attestation, BatchProof, Seal, SignedObject, Tip};
use cascade_core::update::Severity;

use super::{Invalid, MAX_PROOF, exact, hash32, invalid, node_id, scheme};
use crate::v1;

impl From<&ComplianceRecord> for v1::ComplianceRecord {
    fn from(r: &ComplianceRecord) -> v1::ComplianceRecord {
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
            attestation: r.attestation.as_ref().map(v1::Attestation::from),
        }
    }
}

impl TryFrom<v1::ComplianceRecord> for ComplianceRecord {
    type Error = Invalid;

    fn try_from(w: v1::ComplianceRecord) -> Result<ComplianceRecord, Invalid> {
        let bad = |what: &str| invalid(format!("compliance record {}/{}: {what}", w.computer, w.update));
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
        Ok(ComplianceRecord {
            computer: ComputerId::new(&w.computer).map_err(|e| bad(&e.to_string()))?,
            update: UpdateId::new(&w.update),
            site: NodeId::new(&w.site).map_err(|e| bad(&e.to_string()))?,
            state,
            severity,
            counter: w.counter,
            observed_at: w.observed_at,
            attestation: w
                .attestation
                .clone()
                .map(Attestation::try_from)
                .transpose()
                .map_err(|e| bad(&e.0))?,
        })
    }
}

impl From<&Attestation> for v1::Attestation {
    fn from(a: &Attestation) -> v1::Attestation {
        v1::Attestation {
            index: a.index,
            count: a.count,
            proof: a.proof.iter().map(|h| h.to_vec()).collect(),
            scheme: u32::from(a.scheme),
            signature: a.sig.clone(),
        }
    }
}

impl TryFrom<v1::Attestation> for Attestation {
    type Error = Invalid;

    fn try_from(w: v1::Attestation) -> Result<Attestation, Invalid> {
        if w.proof.len() > MAX_PROOF {
            return Err(invalid("attestation proof is longer than any report"));
        }
        Ok(Attestation {
            index: w.index,
            count: w.count,
            proof: w
                .proof
                .iter()
                .map(|h| hash32(h, "attestation proof hash"))
                .collect::<Result<_, _>>()?,
            scheme: scheme(w.scheme, "attestation scheme")?,
            sig: w.signature,
        })
    }
}

/// One agent report: the signature once, the records without their
/// computer, counter and attestation.
impl From<&Report> for v1::Report {
    fn from(report: &Report) -> v1::Report {
        let (places, records) = report
            .records
            .iter()
            .map(|(place, r)| {
                let mut w = v1::ComplianceRecord::from(r);
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
}

/// A report from the wire, its records whole again (their attestations are
/// rebuilt by [`Report::attested`], which also checks that the records and
/// nodes make one tree).
impl TryFrom<v1::Report> for Report {
    type Error = Invalid;

    fn try_from(w: v1::Report) -> Result<Report, Invalid> {
        let bad = |what: &str| invalid(format!("report {} of {}: {what}", w.counter, w.computer));
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
                Ok(TreeNode {
                    level: u8::try_from(n.level).map_err(|_| bad("a tree node above any tree"))?,
                    position: n.position,
                    hash: hash32(&n.hash, "a tree node hash").map_err(|e| bad(&e.0))?,
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        let mut records = Vec::with_capacity(w.records.len());
        for (mut r, place) in w.records.into_iter().zip(w.places) {
            r.computer = w.computer.clone();
            r.counter = w.counter;
            records.push((place, ComplianceRecord::try_from(r)?));
        }
        Ok(Report {
            computer,
            counter: w.counter,
            count: w.count,
            scheme: scheme(w.scheme, "its scheme").map_err(|e| bad(&e.0))?,
            sig: w.signature,
            nodes,
            records,
        })
    }
}

// ---- seals, changes and snapshots as they travel down

impl From<&Seal> for v1::Seal {
    fn from(s: &Seal) -> v1::Seal {
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
            // A seal's signature is base64 in JSON and raw on the wire; one
            // that is not base64 cannot verify either way.
            signature: base64::engine::general_purpose::STANDARD
                .decode(&s.sig)
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<v1::Seal> for Seal {
    type Error = Invalid;

    fn try_from(w: v1::Seal) -> Result<Seal, Invalid> {
        let batch = if w.batch_count == 0 {
            None
        } else {
            if w.batch_proof.len() > MAX_PROOF {
                return Err(invalid("seal batch proof is longer than any batch"));
            }
            Some(BatchProof {
                index: w.batch_index,
                count: w.batch_count,
                proof: w
                    .batch_proof
                    .iter()
                    .map(|h| hash32(h, "seal batch proof hash").map(|h| seal::hash_hex(&h)))
                    .collect::<Result<_, _>>()?,
            })
        };
        Ok(Seal {
            // 0: a sender of format 2, which had no version on the wire.
            format: match w.format {
                0 => 2,
                f => u16::try_from(f).map_err(|_| invalid("seal format is out of range"))?,
            },
            batch,
            prev: w.prev,
            state: w.state,
            key: w.key,
            scheme: scheme(w.scheme, "seal scheme")?,
            sig: base64::engine::general_purpose::STANDARD.encode(&w.signature),
        })
    }
}

fn seal_of(seal: Option<v1::Seal>) -> Result<Option<Seal>, Invalid> {
    seal.map(Seal::try_from).transpose()
}

/// A change: its operation as its origin signed it.
impl From<&Change> for v1::Change {
    fn from(change: &Change) -> v1::Change {
        v1::Change {
            origin: change.origin.to_string(),
            seq: change.seq,
            op: change.op.raw().as_bytes().to_vec(),
            seal: change.seal.as_ref().map(v1::Seal::from),
        }
    }
}

/// A change from the wire, its operation kept as signed and decoded for
/// this release's use (what it does not know is in `op.unknown_reason()`).
impl TryFrom<v1::Change> for Change {
    type Error = Invalid;

    fn try_from(c: v1::Change) -> Result<Change, Invalid> {
        let origin = node_id(&c.origin, "change from origin")?;
        let at = |e: Invalid| invalid(format!("change {origin}/{}: {e}", c.seq));
        let op: Exact<ChangeOp> = exact(&c.op, "its operation").map_err(at)?;
        let seal = seal_of(c.seal).map_err(at)?;
        Ok(Change {
            origin,
            seq: c.seq,
            op,
            seal,
        })
    }
}

/// An origin's last change as a snapshot carries it.
impl From<(&NodeId, &Tip)> for v1::Tip {
    fn from((origin, tip): (&NodeId, &Tip)) -> v1::Tip {
        v1::Tip {
            origin: origin.to_string(),
            seq: tip.seq,
            op: tip.op.clone(),
            seal: Some(v1::Seal::from(&tip.seal)),
        }
    }
}

impl TryFrom<v1::Tip> for (NodeId, Tip) {
    type Error = Invalid;

    fn try_from(tip: v1::Tip) -> Result<(NodeId, Tip), Invalid> {
        let origin = node_id(&tip.origin, "origin")?;
        let seal = seal_of(tip.seal)?.ok_or_else(|| invalid(format!("the last change of {origin} has no seal")))?;
        Ok((
            origin,
            Tip {
                seq: tip.seq,
                op: tip.op,
                seal,
            },
        ))
    }
}

/// An object as its origin signed it.
impl From<&SignedObject> for v1::SignedObject {
    fn from(o: &SignedObject) -> v1::SignedObject {
        v1::SignedObject {
            origin: o.origin.to_string(),
            seq: o.seq,
            object: o.object.raw().as_bytes().to_vec(),
            seal: o.seal.as_ref().map(v1::Seal::from),
        }
    }
}

impl TryFrom<v1::SignedObject> for SignedObject {
    type Error = Invalid;

    fn try_from(o: v1::SignedObject) -> Result<SignedObject, Invalid> {
        Ok(SignedObject {
            origin: node_id(&o.origin, "origin")?,
            seq: o.seq,
            object: exact(&o.object, "an object")?,
            seal: seal_of(o.seal)?,
        })
    }
}

/// An override as a snapshot carries it: its origin, the sequence of the
/// change that made it, the override as signed, and that change's seal.
pub type SignedOverride = (NodeId, u64, Exact<Override>, Option<Seal>);

impl From<&SignedOverride> for v1::SignedOverride {
    fn from((origin, seq, over, seal): &SignedOverride) -> v1::SignedOverride {
        v1::SignedOverride {
            origin: origin.to_string(),
            seq: *seq,
            r#override: over.raw().as_bytes().to_vec(),
            seal: seal.as_ref().map(v1::Seal::from),
        }
    }
}

impl TryFrom<v1::SignedOverride> for SignedOverride {
    type Error = Invalid;

    fn try_from(o: v1::SignedOverride) -> Result<SignedOverride, Invalid> {
        Ok((
            node_id(&o.origin, "origin")?,
            o.seq,
            exact(&o.r#override, "an override")?,
            seal_of(o.seal)?,
        ))
    }
}

/// The sites below a node as it declares them to its parent, each with
/// its parent where known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredSubtree {
    pub sites: BTreeSet<NodeId>,
    pub parents: BTreeMap<NodeId, NodeId>,
}

impl From<&DeclaredSubtree> for v1::Subtree {
    fn from(subtree: &DeclaredSubtree) -> v1::Subtree {
        v1::Subtree {
            sites: subtree
                .sites
                .iter()
                .map(|site| v1::SubtreeSite {
                    site: site.to_string(),
                    parent: subtree.parents.get(site).map(ToString::to_string).unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::Subtree> for DeclaredSubtree {
    type Error = Invalid;

    fn try_from(subtree: v1::Subtree) -> Result<DeclaredSubtree, Invalid> {
        let mut out = DeclaredSubtree::default();
        for entry in subtree.sites {
            let site = node_id(&entry.site, "declared subtree: site")?;
            if !entry.parent.is_empty() {
                let parent = node_id(&entry.parent, &format!("declared subtree: the parent of {site}:"))?;
                out.parents.insert(site.clone(), parent);
            }
            out.sites.insert(site);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cascade_core::model::{Object, Setting};

    use super::*;

    fn record() -> ComplianceRecord {
        ComplianceRecord {
            computer: ComputerId::new("pc-1").unwrap(),
            update: UpdateId::new("KB5021233"),
            site: NodeId::new("site-a").unwrap(),
            state: ComplianceState::Failed { code: 1603 },
            severity: Severity::Critical,
            counter: 9,
            observed_at: 5,
            attestation: Some(Attestation {
                index: 1,
                count: 3,
                proof: vec![[7; 32], [8; 32]],
                scheme: 0x0807,
                sig: vec![1, 2, 3],
            }),
        }
    }

    #[test]
    fn records_round_trip_and_a_bad_one_is_named() {
        let r = record();
        assert_eq!(ComplianceRecord::try_from(v1::ComplianceRecord::from(&r)).unwrap(), r);
        let mut bad = v1::ComplianceRecord::from(&r);
        bad.state = 99;
        let e = ComplianceRecord::try_from(bad).unwrap_err();
        assert_eq!(e.0, "compliance record pc-1/KB5021233: unknown state");
        let mut bad = v1::ComplianceRecord::from(&r);
        bad.computer = String::new();
        assert!(ComplianceRecord::try_from(bad).is_err());
        let mut bad = v1::ComplianceRecord::from(&r);
        if let Some(a) = bad.attestation.as_mut() {
            a.proof[0].pop();
        }
        assert!(ComplianceRecord::try_from(bad).unwrap_err().0.contains("not 32 bytes"));
    }

    #[test]
    fn changes_keep_their_signed_bytes_and_seals_round_trip() {
        let op = Exact::<ChangeOp>::upsert(&Exact::new(Object::Setting(Setting {
            id: cascade_core::model::ObjectId::new("reports.history_days").unwrap(),
            value: serde_json::json!(90),
            overridable: false,
        })));
        let change = Change {
            origin: NodeId::new("root").unwrap(),
            seq: 4,
            op,
            seal: Some(Seal {
                format: 3,
                batch: Some(BatchProof {
                    index: 0,
                    count: 2,
                    proof: vec![seal::hash_hex(&[9; 32])],
                }),
                prev: "aa".into(),
                state: "bb".into(),
                key: "cc".into(),
                scheme: 0x0807,
                sig: base64::engine::general_purpose::STANDARD.encode([5u8; 64]),
            }),
        };
        let wire = v1::Change::from(&change);
        let back = Change::try_from(wire.clone()).unwrap();
        assert_eq!(back.op.raw(), change.op.raw());
        assert_eq!(back.seal, change.seal);
        // A sender of format 2 put no format on the wire.
        let mut old = wire.clone();
        if let Some(s) = old.seal.as_mut() {
            s.format = 0;
        }
        assert_eq!(Change::try_from(old).unwrap().seal.unwrap().format, 2);
        let mut bad = wire;
        bad.op = vec![0xff, 0xfe];
        assert_eq!(
            Change::try_from(bad).unwrap_err().0,
            "change root/4: its operation is not UTF-8"
        );
    }

    #[test]
    fn the_declared_subtree_round_trips_and_a_bad_site_is_named() {
        let a = NodeId::new("region-a").unwrap();
        let b = NodeId::new("site-b").unwrap();
        let subtree = DeclaredSubtree {
            sites: [a.clone(), b.clone()].into(),
            parents: [(b, a)].into(),
        };
        assert_eq!(DeclaredSubtree::try_from(v1::Subtree::from(&subtree)).unwrap(), subtree);
        let bad = v1::Subtree {
            sites: vec![v1::SubtreeSite {
                site: "tab\there".into(),
                parent: String::new(),
            }],
        };
        assert!(
            DeclaredSubtree::try_from(bad)
                .unwrap_err()
                .0
                .starts_with("declared subtree: site")
        );
    }
}
