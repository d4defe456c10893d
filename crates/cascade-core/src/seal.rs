//! What makes changes and reports verifiable end to end, whatever node
//! relays them: the signed form of a change (chained to the origin's
//! previous one), the signed form of an agent's report (one signature over
//! a Merkle root, so that each record can travel up on its own with its
//! proof), and the attacks a failed check names.
//!
//! The cryptography itself (keys, certificates) is in `cascade-trust`; this
//! module fixes the exact bytes that are signed.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exact::{self, Exact};
use crate::model::{Change, ChangeOp, ComplianceRecord, ComputerId, NodeId, Object};
use crate::signed::hex;
pub use crate::signed::{Attestation, BatchProof, Seal, Tip, hash_from_hex, hash_hex};

/// The bytes signed for a batch of changes: the Merkle root of their
/// digests.
pub fn batch_message(root: &[u8; 32]) -> Vec<u8> {
    let mut out = b"cascade-batch-v1\n".to_vec();
    out.extend(root);
    out
}

impl Seal {
    /// The bytes the signature is over, given the message of the change it
    /// seals; `None` when a batch proof does not fit.
    pub fn signed_message(&self, change_message: Vec<u8>) -> Option<Vec<u8>> {
        let Some(batch) = &self.batch else {
            return Some(change_message);
        };
        let proof: Vec<[u8; 32]> = batch.proof.iter().map(|h| hash_from_hex(h)).collect::<Option<_>>()?;
        let leaf: [u8; 32] = Sha256::digest(&change_message).into();
        merkle_root_from(leaf, batch.index, batch.count, &proof).map(|root| batch_message(&root))
    }
}

/// Seals a batch of changes of this node's own log with one signature:
/// each must already carry its seal without a signature (prev and state
/// set), in log order.
pub fn seal_batch(changes: &mut [Change], signer: &dyn Signer) -> Result<(), String> {
    if let [one] = changes {
        let seal = one.seal.clone().ok_or("a change to seal has no prev and state")?;
        return one.seal_with(seal.prev, seal.state, signer);
    }
    let leaves: Vec<[u8; 32]> = changes.iter().map(|c| Sha256::digest(c.message()).into()).collect();
    let (root, proofs) = merkle(&leaves);
    let (scheme, sig) = signer.sign(&batch_message(&root))?;
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.encode(sig);
    let count = changes.len() as u32;
    for (i, (change, proof)) in changes.iter_mut().zip(proofs).enumerate() {
        let seal = change.seal.as_mut().ok_or("a change to seal has no prev and state")?;
        seal.key = signer.key().to_owned();
        seal.scheme = scheme;
        seal.sig = sig.clone();
        seal.batch = Some(BatchProof {
            index: i as u32,
            count,
            proof: proof.iter().map(hash_hex).collect(),
        });
    }
    Ok(())
}

/// An object with the origin that owns it and the sealed change that last
/// wrote it: how nodes keep objects, and how agents receive the ones their
/// assignment rests on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignedObject {
    pub origin: NodeId,
    pub seq: u64,
    /// As its origin signed it.
    pub object: Exact<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
}

impl SignedObject {
    /// The change that wrote it, as its origin signed it.
    pub fn change(&self) -> Change {
        Change {
            origin: self.origin.clone(),
            seq: self.seq,
            op: Exact::<ChangeOp>::upsert(&self.object),
            seal: self.seal.clone(),
        }
    }
}

/// What an agent is given with its assignment to check it: the signed
/// objects it rests on and the signed overrides of its policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub objects: Vec<SignedObject>,
    #[serde(default)]
    pub overrides: Vec<Change>,
}

/// What a failed check stopped, named as The Update Framework names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// A sequence that goes backwards: an older change or report again.
    Rollback,
    /// A view that stopped moving: the root's newest timestamp is too old.
    Freeze,
    /// Not signed, or not by the key the origin published.
    BadSignature,
    /// Pieces of different revisions put together.
    MixAndMatch,
    /// More data than allowed.
    TooLarge,
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attack::Rollback => "rollback",
            Attack::Freeze => "freeze",
            Attack::BadSignature => "bad signature",
            Attack::MixAndMatch => "mix-and-match",
            Attack::TooLarge => "too large",
        })
    }
}

/// A change, report or timestamp that was refused, with the attack it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{attack}: {detail}")]
pub struct Refused {
    pub attack: Attack,
    pub detail: String,
}

impl Refused {
    pub fn new(attack: Attack, detail: impl Into<String>) -> Refused {
        Refused {
            attack,
            detail: detail.into(),
        }
    }
}

/// Signs messages with a node's or agent's certificate key.
pub trait Signer: Send + Sync {
    /// Hex SHA-256 of the certificate whose key signs.
    fn key(&self) -> &str;
    /// The TLS signature scheme code and the signature.
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String>;
}

/// Hex SHA-256 of an operation's bytes as its origin signed them.
pub fn op_digest(op: &Exact<ChangeOp>) -> String {
    hex(&op.digest())
}

/// The bytes an origin signs for one change in signed format `format`:
/// its place in the log, the change before it, the state after it and the
/// operation's digest. The format is bound in, so a seal cannot be passed
/// off as another format's.
pub fn change_message(format: u16, origin: &NodeId, seq: u64, prev: &str, state: &str, op_digest: &str) -> Vec<u8> {
    let mut out = format!("cascade-change-v{format}\n").into_bytes();
    // A tuple of strings and an integer: serializing cannot fail.
    out.extend(serde_json::to_vec(&(origin, seq, prev, state, op_digest)).unwrap_or_default());
    out
}

/// Why a seal of `format` cannot be checked here, if it cannot.
pub fn unverifiable_format(format: u16) -> Option<String> {
    if format > exact::FORMAT {
        Some(format!(
            "it is sealed in signed format {format}, newer than this node's {}: upgrade this node",
            exact::FORMAT
        ))
    } else if format < exact::OLDEST_FORMAT {
        Some(format!("signed format {format} is no longer verified"))
    } else {
        None
    }
}

impl Tip {
    pub fn message(&self, origin: &NodeId) -> Vec<u8> {
        change_message(
            self.seal.format,
            origin,
            self.seq,
            &self.seal.prev,
            &self.seal.state,
            &self.op,
        )
    }

    /// The digest the origin's next change names as `prev`.
    pub fn digest(&self, origin: &NodeId) -> String {
        hex(&Sha256::digest(self.message(origin)))
    }
}

impl Change {
    /// The bytes its origin signed (or has to sign).
    pub fn message(&self) -> Vec<u8> {
        let (format, prev, state) = self
            .seal
            .as_ref()
            .map(|s| (s.format, s.prev.as_str(), s.state.as_str()))
            .unwrap_or((exact::FORMAT, "", ""));
        change_message(format, &self.origin, self.seq, prev, state, &op_digest(&self.op))
    }

    /// The digest the origin's next change names as `prev`.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.message()))
    }

    /// What a snapshot carries of it when it is its origin's last.
    pub fn tip(&self) -> Option<Tip> {
        Some(Tip {
            seq: self.seq,
            op: op_digest(&self.op),
            seal: self.seal.clone()?,
        })
    }

    /// Seals a change of this node's own log, chained to `prev`, with the
    /// digest of the origin's state once it is applied.
    pub fn seal_with(&mut self, prev: String, state: String, signer: &dyn Signer) -> Result<(), String> {
        let message = change_message(
            exact::FORMAT,
            &self.origin,
            self.seq,
            &prev,
            &state,
            &op_digest(&self.op),
        );
        let (scheme, sig) = signer.sign(&message)?;
        use base64::Engine;
        self.seal = Some(Seal {
            format: exact::FORMAT,
            prev,
            state,
            key: signer.key().to_owned(),
            scheme,
            sig: base64::engine::general_purpose::STANDARD.encode(sig),
            batch: None,
        });
        Ok(())
    }

    /// Sets the seal's chain and state, to be signed with its batch.
    pub fn unsigned_seal(&mut self, prev: String, state: String) {
        self.seal = Some(Seal {
            format: exact::FORMAT,
            prev,
            state,
            key: String::new(),
            scheme: 0,
            sig: String::new(),
            batch: None,
        });
    }
}

/// Lanes of a [`StateHash`].
pub const STATE_LANES: usize = 1024;

/// A homomorphic set hash (LtHash with 1024 16-bit lanes) of everything an
/// origin owns: objects and overrides, each as the change that last wrote
/// it. Adding or removing one element costs one 2 KB expansion, so the
/// state after every change is kept up to date cheaply, and a snapshot is
/// checked by hashing what it holds.
#[derive(Clone, PartialEq, Eq)]
pub struct StateHash(Box<[u16; STATE_LANES]>);

impl std::fmt::Debug for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateHash({})", self.digest())
    }
}

impl Default for StateHash {
    fn default() -> Self {
        StateHash(Box::new([0; STATE_LANES]))
    }
}

/// The element of one object or override: the change that wrote it.
pub fn element(origin: &NodeId, seq: u64, op: &Exact<ChangeOp>) -> [u8; 32] {
    element_of(origin, seq, &op_digest(op))
}

/// [`element`] from the operation's digest.
pub fn element_of(origin: &NodeId, seq: u64, op_digest: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cascade-element-v1\n");
    h.update(origin.as_str().as_bytes());
    h.update([0]);
    h.update(seq.to_be_bytes());
    h.update(op_digest.as_bytes());
    h.finalize().into()
}

impl StateHash {
    fn expand(element: &[u8; 32]) -> [u16; STATE_LANES] {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut bytes = [0u8; STATE_LANES * 2];
        rand_chacha::ChaCha20Rng::from_seed(*element).fill_bytes(&mut bytes);
        let mut lanes = [0u16; STATE_LANES];
        for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        lanes
    }

    pub fn add(&mut self, element: &[u8; 32]) {
        for (lane, x) in self.0.iter_mut().zip(Self::expand(element)) {
            *lane = lane.wrapping_add(x);
        }
    }

    pub fn remove(&mut self, element: &[u8; 32]) {
        for (lane, x) in self.0.iter_mut().zip(Self::expand(element)) {
            *lane = lane.wrapping_sub(x);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<StateHash> {
        if bytes.len() != STATE_LANES * 2 {
            return None;
        }
        let mut lanes = Box::new([0u16; STATE_LANES]);
        for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(StateHash(lanes))
    }

    /// Hex SHA-256 of the lanes: what a seal names.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.to_bytes()))
    }
}

/// The leaf hash of one record: everything the agent decided (the serving
/// node sets the site; the counter is in the signed message).
pub fn record_leaf(record: &ComplianceRecord) -> [u8; 32] {
    let fields = (
        &record.computer,
        &record.update,
        &record.state,
        &record.severity,
        record.observed_at,
    );
    crate::signed::json_digest(&[0u8], &fields)
}

pub(crate) fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle root of `leaves` and each leaf's path to it. An odd node at
/// the end of a level is carried up unchanged.
pub fn merkle(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Vec<[u8; 32]>>) {
    let mut proofs = vec![Vec::new(); leaves.len()];
    let mut positions: Vec<usize> = (0..leaves.len()).collect();
    let mut level = leaves.to_vec();
    if level.is_empty() {
        return ([0; 32], proofs);
    }
    while level.len() > 1 {
        for (leaf, pos) in positions.iter_mut().enumerate() {
            let sibling = *pos ^ 1;
            if sibling < level.len() {
                proofs[leaf].push(level[sibling]);
            }
            *pos /= 2;
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [one] => *one,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    (level[0], proofs)
}

/// The root that `leaf` at `index` of `count` leaves leads to along `proof`;
/// `None` when the proof does not fit the count.
pub fn merkle_root_from(leaf: [u8; 32], index: u32, count: u32, proof: &[[u8; 32]]) -> Option<[u8; 32]> {
    if index >= count {
        return None;
    }
    let (mut pos, mut len, mut hash) = (index as usize, count as usize, leaf);
    let mut path = proof.iter();
    while len > 1 {
        let sibling = pos ^ 1;
        if sibling < len {
            let s = path.next()?;
            hash = if pos % 2 == 0 {
                node_hash(&hash, s)
            } else {
                node_hash(s, &hash)
            };
        }
        pos /= 2;
        len = len.div_ceil(2);
    }
    path.next().is_none().then_some(hash)
}

/// The bytes an agent signs for one report.
pub fn report_message(computer: &ComputerId, counter: u64, root: &[u8; 32]) -> Vec<u8> {
    let mut out = b"cascade-report-v1\n".to_vec();
    out.extend(computer.as_str().as_bytes());
    out.push(0);
    out.extend(counter.to_be_bytes());
    out.extend(root);
    out
}

/// Gives each record of one report (signed with `scheme`/`sig` over
/// [`report_message`] of their Merkle root) its attestation.
pub fn attest(records: &mut [ComplianceRecord], scheme: u16, sig: &[u8]) {
    let leaves: Vec<[u8; 32]> = records.iter().map(record_leaf).collect();
    let (_, proofs) = merkle(&leaves);
    let count = records.len() as u32;
    for (i, (record, proof)) in records.iter_mut().zip(proofs).enumerate() {
        record.attestation = Some(Attestation {
            index: i as u32,
            count,
            proof,
            scheme,
            sig: sig.to_vec(),
        });
    }
}

/// Signs one report: the records' Merkle root with the computer and counter.
pub fn sign_report(
    signer: &dyn Signer,
    computer: &ComputerId,
    counter: u64,
    records: &[ComplianceRecord],
) -> Result<(u16, Vec<u8>), String> {
    let leaves: Vec<[u8; 32]> = records.iter().map(record_leaf).collect();
    signer.sign(&report_message(computer, counter, &merkle(&leaves).0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| Sha256::digest(i.to_be_bytes()).into()).collect()
    }

    #[test]
    fn a_record_leaf_hashes_its_signed_fields_as_json() {
        // What agents have signed: byte 0, then the JSON of the fields.
        let record = ComplianceRecord {
            computer: ComputerId::new("pc-\"quoted\"-1").unwrap(),
            update: crate::UpdateId::kb(5_034_441),
            site: crate::model::NodeId::new("site-a").unwrap(),
            state: crate::compliance::ComplianceState::Failed { code: -2_145_124_329 },
            severity: crate::update::Severity::Critical,
            counter: 7,
            observed_at: 1_700_000_000,
            attestation: None,
        };
        let json = serde_json::to_vec(&(
            &record.computer,
            &record.update,
            &record.state,
            &record.severity,
            record.observed_at,
        ))
        .unwrap();
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(&json);
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(record_leaf(&record), expected);
    }

    #[test]
    fn every_leaf_proves_the_root_and_nothing_else_does() {
        for n in 1..=17 {
            let leaves = leaves(n);
            let (root, proofs) = merkle(&leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                assert_eq!(
                    merkle_root_from(*leaf, i as u32, n as u32, &proofs[i]),
                    Some(root),
                    "{i} of {n}"
                );
                let mut other = *leaf;
                other[0] ^= 1;
                assert_ne!(merkle_root_from(other, i as u32, n as u32, &proofs[i]), Some(root));
                if n > 1 {
                    let j = (i + 1) % n;
                    assert_ne!(
                        merkle_root_from(*leaf, j as u32, n as u32, &proofs[i]),
                        Some(root),
                        "a leaf does not prove another place"
                    );
                }
            }
            assert_eq!(merkle_root_from(leaves[0], n as u32, n as u32, &proofs[0]), None);
        }
    }

    #[test]
    fn the_state_hash_is_the_set_whatever_the_order() {
        let node = NodeId::new("root").unwrap();
        let op = |n: i64| {
            Exact::new(ChangeOp::Upsert(crate::model::Object::Setting(crate::model::Setting {
                id: crate::model::ObjectId::new(&format!("s{n}")).unwrap(),
                value: n.into(),
                overridable: false,
            })))
        };
        let elements: Vec<[u8; 32]> = (1..=5).map(|n| element(&node, n as u64, &op(n))).collect();
        let mut a = StateHash::default();
        elements.iter().for_each(|e| a.add(e));
        let mut b = StateHash::default();
        elements.iter().rev().for_each(|e| b.add(e));
        assert_eq!(a.digest(), b.digest());
        // One element less, or another in its place, is another state.
        let mut c = a.clone();
        c.remove(&elements[2]);
        assert_ne!(c.digest(), a.digest());
        let mut d = c.clone();
        d.add(&element(&node, 9, &op(3)));
        assert_ne!(d.digest(), a.digest());
        d.remove(&element(&node, 9, &op(3)));
        d.add(&elements[2]);
        assert_eq!(d.digest(), a.digest());
        assert_eq!(StateHash::from_bytes(&a.to_bytes()), Some(a));
        assert_ne!(StateHash::default().digest(), c.digest());
    }

    #[test]
    fn attacks_are_named() {
        let r = Refused::new(Attack::MixAndMatch, "change a/3 does not follow a/2");
        assert_eq!(r.to_string(), "mix-and-match: change a/3 does not follow a/2");
        assert_eq!(Attack::BadSignature.to_string(), "bad signature");
        assert_eq!(Attack::TooLarge.to_string(), "too large");
    }
}
