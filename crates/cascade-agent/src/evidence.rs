//! The agent's own check of what its node hands it: the node computes the
//! assignment, but every update it says to install must be one its origin
//! signed (same content hashes, same command), and the root's signed
//! timestamp says how fresh the view is. A node that lies cannot make the
//! agent install something else, and cannot freeze it unnoticed.

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::assignment::Step;
use cascade_core::model::{NodeId, Object, SigningKey};
use cascade_core::seal::{Attack, Refused, SignedObject};

/// What the evidence says about one assignment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Steps that must not be installed, with the attack.
    pub refused: BTreeMap<UpdateId, Refused>,
    /// Why the view is stale (a freeze), when it is.
    pub stale: Option<Refused>,
    /// The newest root timestamp known, this one included.
    pub newest_timestamp: Option<i64>,
}

/// Checks `evidence` (as the node sent it) for `steps`.
pub fn check(
    roots: &[Vec<u8>],
    root: Option<&NodeId>,
    evidence: &[SignedObject],
    steps: &[Step],
    newest_seen: Option<i64>,
    now: i64,
    max_age: i64,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut keys: BTreeMap<&NodeId, &SigningKey> = BTreeMap::new();
    for item in evidence {
        if let Object::SigningKey(k) = &item.object {
            match cascade_trust::sign::check_change(roots, &item.change(), None, true) {
                Ok(()) if k.node == item.origin => {
                    keys.insert(&item.origin, k);
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(origin = %item.origin, "refused the signing keys sent: {e}"),
            }
        }
    }
    let mut updates = BTreeMap::new();
    let mut timestamp: Option<i64> = None;
    for item in evidence {
        if matches!(item.object, Object::SigningKey(_)) {
            continue;
        }
        if let Err(e) = cascade_trust::sign::check_change(roots, &item.change(), keys.get(&item.origin).copied(), true)
        {
            tracing::warn!(origin = %item.origin, "refused evidence: {e}");
            if let Object::Update(u) = &item.object {
                verdict.refused.insert(u.id.clone(), e);
            }
            continue;
        }
        match &item.object {
            Object::Update(u) => {
                updates.insert(u.id.clone(), u.as_ref());
            }
            Object::Timestamp(t) if t.node == item.origin && root.is_none_or(|r| *r == item.origin) => {
                timestamp = Some(timestamp.map_or(t.at, |old| old.max(t.at)));
            }
            _ => {}
        }
    }
    for step in steps {
        if verdict.refused.contains_key(&step.update) {
            continue;
        }
        let problem = match updates.get(&step.update) {
            None => Some(Refused::new(
                Attack::BadSignature,
                format!("{}: the node sent no signed update for it", step.update),
            )),
            Some(u) if u.content != step.content => Some(Refused::new(
                Attack::BadSignature,
                format!("{}: its content differs from what its origin signed", step.update),
            )),
            Some(u) if u.install != step.install => Some(Refused::new(
                Attack::BadSignature,
                format!(
                    "{}: its install command differs from what its origin signed",
                    step.update
                ),
            )),
            Some(_) => None,
        };
        if let Some(p) = problem {
            verdict.refused.insert(step.update.clone(), p);
        }
    }
    if let (Some(got), Some(seen)) = (timestamp, newest_seen)
        && got < seen
    {
        tracing::warn!(
            "{}",
            Refused::new(
                Attack::Rollback,
                format!("the node sent a root timestamp ({got}) older than one seen before ({seen})")
            )
        );
    }
    verdict.newest_timestamp = match (timestamp, newest_seen) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    verdict.stale = match verdict.newest_timestamp {
        None => Some(Refused::new(
            Attack::Freeze,
            "no signed timestamp from the root was received",
        )),
        Some(at) if now - at > max_age => Some(Refused::new(
            Attack::Freeze,
            format!(
                "the newest signed timestamp from the root is {} s old (limit {max_age} s)",
                now - at
            ),
        )),
        Some(_) => None,
    };
    verdict
}
