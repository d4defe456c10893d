//! Per-origin change logs and the objects they produce, cursors, snapshots
//! and compaction (the downward flow of the design's one mechanism).

use std::collections::{BTreeMap, BTreeSet};

use cascade_core::exact::Exact;
use cascade_core::model::{Change, ChangeOp, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Override, SigningKey};
use cascade_core::seal::{Attack, Refused, Seal, Signer, StateHash, Tip, element};
use serde::{Deserialize, Serialize};

use crate::{Pending, Result, Store, StoreError, codec, keys};

/// An object with the origin that owns it and the sealed change that last
/// wrote it (so that it can be checked again wherever it goes).
pub use cascade_core::seal::SignedObject as StoredObject;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredOverride {
    seq: u64,
    over: Exact<Override>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<Seal>,
}

/// How many changes of one local batch share one signature.
const SEAL_BATCH: usize = 64;

/// Log entries removed per commit by [`Store::compact`].
pub const COMPACT_COMMIT: usize = 10_000;

/// Checks a change's signature given its origin's published keys as they
/// stand before it; `any_key` accepts any key the origin ever published
/// (objects of a snapshot were signed when they were written).
pub type SealCheck<'a> = &'a (dyn Fn(&Change, Option<&SigningKey>, bool) -> Result<(), Refused> + Sync);

/// What applying a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Already applied earlier; nothing changed.
    Duplicate,
}

/// The log of an origin was compacted past the requested point: send a
/// snapshot first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the log was compacted through {floor}; a snapshot is needed")]
pub struct NeedSnapshot {
    pub floor: u64,
}

/// The objects of some origins as of their cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub cursor: BTreeMap<NodeId, u64>,
    pub objects: Vec<StoredObject>,
    pub overrides: Vec<(NodeId, u64, Exact<Override>, Option<Seal>)>,
    /// Each origin's change at the cursor (its seal, without the
    /// operation): the state the snapshot must match, and what the
    /// origin's next change names as `prev`.
    #[serde(default)]
    pub tips: BTreeMap<NodeId, Tip>,
}

/// Checks the seal of an origin's last change in a snapshot.
pub type TipCheck<'a> = &'a (dyn Fn(&NodeId, &Tip, Option<&SigningKey>) -> Result<(), Refused> + Sync);

impl Store {
    /// Records a change made on this node: the next change of its own log.
    /// The operation is signed as given: this release's own canonical
    /// encoding of a [`ChangeOp`], or bytes made elsewhere.
    pub fn append_local(&self, op: impl Into<Exact<ChangeOp>>) -> Result<Change> {
        let op = op.into();
        let _guard = self.lock();
        let seq = self.get_u64(&keys::applied(&self.node))? + 1;
        let mut pending = Pending::default();
        let (change, state) = self.sealed(&pending, seq, op)?;
        self.stage_with(&mut pending, &change, state)?;
        self.commit_pending(pending)?;
        Ok(change)
    }

    /// Seals this node's keys into its own changes from now on.
    pub fn set_signer(&self, signer: std::sync::Arc<dyn Signer>) {
        *self.signer.0.write().unwrap_or_else(|e| e.into_inner()) = Some(signer);
    }

    /// A change of this node's own log, sealed when a signer is set.
    fn sealed(&self, pending: &Pending, seq: u64, op: Exact<ChangeOp>) -> Result<(Change, Option<StateHash>)> {
        let mut change = Change {
            origin: self.node.clone(),
            seq,
            op,
            seal: None,
        };
        let signer = self.signer.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(signer) = signer else {
            return Ok((change, None));
        };
        let prev = self.head_of(pending, &self.node)?;
        let state = self.state_after(pending, &change)?;
        change
            .seal_with(prev, state.digest(), signer.as_ref())
            .map_err(|e| StoreError::Invalid(format!("cannot sign change {}/{seq}: {e}", self.node)))?;
        Ok((change, Some(state)))
    }

    /// What `origin` owns as staged so far, as a set hash.
    fn state_of(&self, pending: &Pending, origin: &NodeId) -> Result<StateHash> {
        if let Some(state) = pending.states.get(origin) {
            return Ok(state.clone());
        }
        match pending.get(self, &keys::state(origin))? {
            Some(bytes) => StateHash::from_bytes(&bytes)
                .ok_or_else(|| self.corrupt(format!("state of {origin}: {} bytes", bytes.len()))),
            None => Ok(StateHash::default()),
        }
    }

    fn stored_override(
        &self,
        pending: &Pending,
        target: &ObjectKey,
        origin: &NodeId,
    ) -> Result<Option<StoredOverride>> {
        pending
            .get(self, &keys::override_of(target, origin))?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("override of {target}: {d}"))))
            .transpose()
    }

    /// The origin's state once `change` is applied: the element of what it
    /// replaces or removes out, the element of what it writes in.
    fn state_after(&self, pending: &Pending, change: &Change) -> Result<StateHash> {
        let origin = &change.origin;
        let mut state = self.state_of(pending, origin)?;
        let replaced = match change.op.value() {
            ChangeOp::Upsert(object) => {
                let key = object.key().map_err(|e| StoreError::Invalid(e.to_string()))?;
                self.stored(&key, pending)?
                    .filter(|s| s.origin == *origin)
                    .map(|s| element(origin, s.seq, &Exact::<ChangeOp>::upsert(&s.object)))
            }
            ChangeOp::Delete(key) => self
                .stored(key, pending)?
                .filter(|s| s.origin == *origin)
                .map(|s| element(origin, s.seq, &Exact::<ChangeOp>::upsert(&s.object))),
            ChangeOp::Override(over) => self
                .stored_override(pending, &over.target, origin)?
                .map(|o| element(origin, o.seq, &Exact::<ChangeOp>::override_with(&o.over))),
            ChangeOp::ClearOverride(target) => self
                .stored_override(pending, target, origin)?
                .map(|o| element(origin, o.seq, &Exact::<ChangeOp>::override_with(&o.over))),
        };
        if let Some(old) = replaced {
            state.remove(&old);
        }
        if matches!(change.op.value(), ChangeOp::Upsert(_) | ChangeOp::Override(_)) {
            state.add(&element(origin, change.seq, &change.op));
        }
        Ok(state)
    }

    fn head_of(&self, pending: &Pending, origin: &NodeId) -> Result<String> {
        Ok(pending
            .get(self, &keys::head(origin))?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    /// Applies changes received from the parent after checking each one's
    /// seal: strictly the next of its origin (an older one is a rollback),
    /// chained to the one before it as this node has it (or it is mixed
    /// from another history), and signed by the origin's published key.
    /// What checked out before a refused change is kept; the refusal names
    /// the attack. Returns how many were applied.
    pub fn apply_verified(&self, changes: &[Change], check: SealCheck<'_>) -> Result<usize> {
        let _guard = self.lock();
        let mut pending = Pending::default();
        let mut applied = 0;
        let mut refusal = None;
        for change in changes {
            let state = match self.verify_one(&pending, change, check) {
                Ok(state) => state,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            };
            match self.stage_with(&mut pending, change, Some(state)) {
                Ok(_) => applied += 1,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        if applied > 0 {
            self.commit_pending(pending)?;
        }
        match refusal {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    fn verify_one(&self, pending: &Pending, change: &Change, check: SealCheck<'_>) -> Result<StateHash> {
        let name = format!("change {}/{}", change.origin, change.seq);
        let applied = match pending.get(self, &keys::applied(&change.origin))? {
            Some(v) => codec::u64_from(&v).map_err(|d| self.corrupt(d))?,
            None => 0,
        };
        if change.seq <= applied {
            return Err(Refused::new(
                Attack::Rollback,
                format!("{name} is not after {}/{applied}, already applied here", change.origin),
            )
            .into());
        }
        let Some(seal) = &change.seal else {
            return Err(Refused::new(Attack::BadSignature, format!("{name} is unsigned")).into());
        };
        let head = self.head_of(pending, &change.origin)?;
        if change.seq == applied + 1 && seal.prev != head {
            return Err(Refused::new(
                Attack::MixAndMatch,
                format!(
                    "{name} does not follow {}/{applied} as this node has it (it names {} before it, this node has {})",
                    change.origin,
                    short(&seal.prev),
                    short(&head)
                ),
            )
            .into());
        }
        let key = ObjectKey {
            kind: ObjectKind::SigningKey,
            id: cascade_core::model::ObjectId::new(change.origin.as_str())
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
        };
        let keys = match self.stored(&key, pending)?.map(|s| s.object.into_value()) {
            Some(Object::SigningKey(k)) => Some(k),
            _ => None,
        };
        check(change, keys.as_ref(), false)?;
        let state = self.state_after(pending, change)?;
        if state.digest() != seal.state {
            return Err(Refused::new(
                Attack::MixAndMatch,
                format!(
                    "after {name}, what {} owns here is not what it signed: this node's copy was put together from other revisions",
                    change.origin
                ),
            )
            .into());
        }
        Ok(state)
    }

    /// Applies a change received from the parent, atomically with the
    /// cursor advance. A change already applied is a duplicate; one that
    /// skips ahead is refused.
    pub fn apply_change(&self, change: &Change) -> Result<Applied> {
        let _guard = self.lock();
        self.apply_locked(change)
    }

    fn apply_locked(&self, change: &Change) -> Result<Applied> {
        let mut pending = Pending::default();
        let applied = self.stage(&mut pending, change)?;
        if applied == Applied::Applied {
            self.commit_pending(pending)?;
        }
        Ok(applied)
    }

    /// Applies a run of changes (as they arrive from the parent) in one
    /// atomic, durable batch: all of them with their cursor advances, or none.
    /// Returns how many were new.
    pub fn apply_changes(&self, changes: &[Change]) -> Result<usize> {
        let _guard = self.lock();
        let mut pending = Pending::default();
        let mut applied = 0;
        for change in changes {
            if self.stage(&mut pending, change)? == Applied::Applied {
                applied += 1;
            }
        }
        if applied > 0 {
            self.commit_pending(pending)?;
        }
        Ok(applied)
    }

    /// Records several changes made on this node in one batch.
    pub fn append_local_many(&self, ops: Vec<ChangeOp>) -> Result<Vec<Change>> {
        let _guard = self.lock();
        let mut pending = Pending::default();
        let first = self.get_u64(&keys::applied(&self.node))? + 1;
        let signer = self.signer.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::with_capacity(ops.len());
        for (seq, op) in (first..).zip(ops) {
            let mut change = Change::new(self.node.clone(), seq, op);
            let mut state = None;
            if signer.is_some() {
                let prev = self.head_of(&pending, &self.node)?;
                let after = self.state_after(&pending, &change)?;
                change.unsigned_seal(prev, after.digest());
                state = Some(after);
            }
            self.stage_with(&mut pending, &change, state)?;
            out.push(change);
        }
        // One signature per batch of changes (an import is thousands).
        if let Some(signer) = signer {
            for chunk in out.chunks_mut(SEAL_BATCH) {
                cascade_core::seal::seal_batch(chunk, signer.as_ref())
                    .map_err(|e| StoreError::Invalid(format!("cannot sign changes of {}: {e}", self.node)))?;
            }
            for change in &out {
                self.restamp(&mut pending, change)?;
            }
        }
        if !out.is_empty() {
            self.commit_pending(pending)?;
        }
        Ok(out)
    }

    /// Writes a staged change again with its final seal.
    fn restamp(&self, pending: &mut Pending, change: &Change) -> Result<()> {
        let origin = &change.origin;
        pending.insert(keys::log(origin, change.seq), codec::json(change));
        match change.op.value() {
            ChangeOp::Upsert(object) => {
                let key = object.key().map_err(|e| StoreError::Invalid(e.to_string()))?;
                if let Some(mut stored) = self.stored(&key, pending)?
                    && stored.seq == change.seq
                {
                    pending.touch(key.kind);
                    stored.seal = change.seal.clone();
                    pending.insert(keys::object(&key), codec::json(&stored));
                }
            }
            ChangeOp::Override(over) => {
                if let Some(mut stored) = self.stored_override(pending, &over.target, origin)?
                    && stored.seq == change.seq
                {
                    pending.touch(over.target.kind);
                    stored.seal = change.seal.clone();
                    pending.insert(keys::override_of(&over.target, origin), codec::json(&stored));
                }
            }
            ChangeOp::Delete(_) | ChangeOp::ClearOverride(_) => {}
        }
        if let Some(tip) = change.tip() {
            pending.insert(keys::tip(origin), codec::json(&tip));
        }
        Ok(())
    }

    /// Checks one change against the cursor (as it stands with what is
    /// already staged) and stages it with its cursor advance.
    fn stage(&self, pending: &mut Pending, change: &Change) -> Result<Applied> {
        self.stage_with(pending, change, None)
    }

    /// [`Self::stage`] with the origin's state after the change when it is
    /// known already.
    fn stage_with(&self, pending: &mut Pending, change: &Change, state: Option<StateHash>) -> Result<Applied> {
        let key = keys::applied(&change.origin);
        let applied = match pending.get(self, &key)? {
            Some(v) => codec::u64_from(&v).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?,
            None => 0,
        };
        if change.seq <= applied {
            return Ok(Applied::Duplicate);
        }
        if change.seq != applied + 1 {
            return Err(StoreError::Gap {
                origin: change.origin.clone(),
                seq: change.seq,
                applied,
            });
        }
        let state = match state {
            Some(state) => state,
            None => self.state_after(pending, change)?,
        };
        self.write_op(pending, change)?;
        pending.insert(keys::log(&change.origin, change.seq), codec::json(change));
        pending.insert(key, change.seq.to_be_bytes().to_vec());
        pending.insert(keys::head(&change.origin), change.digest().into_bytes());
        pending.states.insert(change.origin.clone(), state);
        match change.tip() {
            Some(tip) => pending.insert(keys::tip(&change.origin), codec::json(&tip)),
            None => pending.remove(keys::tip(&change.origin)),
        }
        Ok(Applied::Applied)
    }

    fn write_op(&self, pending: &mut Pending, change: &Change) -> Result<()> {
        let origin = &change.origin;
        pending.touch(match change.op.value() {
            ChangeOp::Upsert(object) => object.kind(),
            ChangeOp::Delete(key) | ChangeOp::ClearOverride(key) => key.kind,
            ChangeOp::Override(over) => over.target.kind,
        });
        let invalid = |e: String| StoreError::Invalid(format!("change {origin}/{}: {e}", change.seq));
        match change.op.value() {
            ChangeOp::Upsert(_) => {
                let object = change
                    .op
                    .upserted()
                    .map_err(invalid)?
                    .ok_or_else(|| invalid("no object".into()))?;
                let key = object.key().map_err(|e| StoreError::Invalid(e.to_string()))?;
                if let Some(existing) = self.stored(&key, pending)?
                    && existing.origin != *origin
                {
                    return Err(StoreError::NotOwner {
                        origin: origin.clone(),
                        key: key.to_string(),
                        owner: existing.origin,
                    });
                }
                let stored = StoredObject {
                    origin: origin.clone(),
                    seq: change.seq,
                    object,
                    seal: change.seal.clone(),
                };
                pending.insert(keys::object(&key), codec::json(&stored));
            }
            ChangeOp::Delete(key) => {
                if let Some(existing) = self.stored(key, pending)? {
                    if existing.origin != *origin {
                        return Err(StoreError::NotOwner {
                            origin: origin.clone(),
                            key: key.to_string(),
                            owner: existing.origin,
                        });
                    }
                    pending.remove(keys::object(key));
                }
            }
            ChangeOp::Override(_) => {
                let over = change
                    .op
                    .overridden()
                    .map_err(invalid)?
                    .ok_or_else(|| invalid("no override".into()))?;
                let target = &over.target;
                let existing = self.stored(target, pending)?.ok_or_else(|| StoreError::NoSuchObject {
                    key: target.to_string(),
                })?;
                if existing.origin == *origin {
                    return Err(StoreError::Invalid(format!(
                        "{origin} owns {target}: change it instead of overriding it"
                    )));
                }
                // What the owner lets children override is in the object;
                // of a kind this release does not know it cannot be read
                // here (nor is the override ever applied here).
                let allowed = existing.object.overridable();
                let unknown_kind = matches!(existing.object.value(), Object::Unknown(_));
                if !unknown_kind && let Some(field) = over.fields.keys().find(|f| !allowed.contains(*f)) {
                    return Err(StoreError::NotOverridable {
                        origin: origin.clone(),
                        key: target.to_string(),
                        field: field.clone(),
                    });
                }
                let key = keys::override_of(target, origin);
                let stored = StoredOverride {
                    seq: change.seq,
                    over,
                    seal: change.seal.clone(),
                };
                pending.insert(key, codec::json(&stored));
            }
            ChangeOp::ClearOverride(target) => pending.remove(keys::override_of(target, origin)),
        }
        Ok(())
    }

    fn stored(&self, key: &ObjectKey, pending: &Pending) -> Result<Option<StoredObject>> {
        let raw = keys::object(key);
        match pending.get(self, &raw)? {
            Some(bytes) => codec::from_json(&bytes)
                .map(Some)
                .map_err(|d| self.corrupt(format!("{key}: {d}"))),
            None => Ok(None),
        }
    }

    /// The last applied change of `origin` (0 when none).
    pub fn applied_seq(&self, origin: &NodeId) -> Result<u64> {
        self.get_u64(&keys::applied(origin))
    }

    /// This node's cursor: the last applied change of every origin it knows.
    pub fn cursor(&self) -> Result<BTreeMap<NodeId, u64>> {
        let mut out = BTreeMap::new();
        for item in self.scan(keys::APPLIED) {
            let (key, value) = item?;
            let origin = node_from(&key[keys::APPLIED.len()..]).map_err(|d| self.corrupt(d))?;
            out.insert(origin, codec::u64_from(&value).map_err(|d| self.corrupt(d))?);
        }
        Ok(out)
    }

    /// Changes of `origin` after `after`, at most `limit`.
    pub fn changes_since(
        &self,
        origin: &NodeId,
        after: u64,
        limit: usize,
    ) -> Result<Result<Vec<Change>, NeedSnapshot>> {
        let floor = self.get_u64(&keys::floor(origin))?;
        if after < floor {
            return Ok(Err(NeedSnapshot { floor }));
        }
        let start = keys::log(origin, after + 1);
        let end = keys::log(origin, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree().range(start..=end).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            out.push(codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?);
        }
        Ok(Ok(out))
    }

    /// Records how far `subscriber` has applied `origin`'s log.
    pub fn set_subscriber_cursor(&self, subscriber: &NodeId, origin: &NodeId, seq: u64) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::subscriber(subscriber, origin), &seq.to_be_bytes());
        self.commit(batch)
    }

    /// Records how far `subscriber` has applied each origin's log, in one
    /// batch; origins not named keep what was recorded.
    pub fn set_subscriber_cursors(&self, subscriber: &NodeId, cursor: &BTreeMap<NodeId, u64>) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        for (origin, seq) in cursor {
            batch.insert(keys::subscriber(subscriber, origin), &seq.to_be_bytes());
        }
        self.commit(batch)
    }

    /// Moves `subscriber`'s recorded cursors up to what it says it has
    /// applied since it subscribed (a connected child tells as it goes), so
    /// that compaction need not wait for it to reconnect. Only a subscriber
    /// recorded at its subscribe, only origins this node has (one that came
    /// after the subscribe too), only up, and never past what this node has
    /// of the origin: a claim cannot make a subscriber known, hold the log
    /// for a subscriber that is gone, or cut another's. Returns how many
    /// moved.
    pub fn advance_subscriber_cursors(&self, subscriber: &NodeId, claimed: &BTreeMap<NodeId, u64>) -> Result<usize> {
        let _guard = self.lock();
        let prefix = keys::under(keys::SUBSCRIBER, &[subscriber.as_str().as_bytes()]);
        if self.scan(&prefix).next().transpose()?.is_none() {
            return Ok(0);
        }
        let mut batch = crate::Batch::default();
        let mut moved = 0;
        for (origin, own) in self.cursor()? {
            let Some(&claim) = claimed.get(&origin) else {
                continue;
            };
            let key = keys::subscriber(subscriber, &origin);
            let recorded = self.get_u64(&key)?;
            let next = claim.min(own);
            if next > recorded {
                batch.insert(key, &next.to_be_bytes());
                moved += 1;
            }
        }
        if moved > 0 {
            self.commit(batch)?;
        }
        Ok(moved)
    }

    /// How many changes `subscriber` lacks of what this node has, by what
    /// it last said it applied (summed over origins).
    pub fn subscriber_lag(&self, subscriber: &NodeId) -> Result<u64> {
        let mut lag = 0u64;
        for (origin, own) in self.cursor()? {
            let at = self.get_u64(&keys::subscriber(subscriber, &origin))?;
            lag = lag.saturating_add(own.saturating_sub(at));
        }
        Ok(lag)
    }

    /// Forgets a subscriber (a child removed or moved away).
    pub fn remove_subscriber(&self, subscriber: &NodeId) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        for item in self.scan(&keys::under(keys::SUBSCRIBER, &[subscriber.as_str().as_bytes()])) {
            batch.remove(item?.0);
        }
        self.commit(batch)
    }

    /// Subscriber cursors: subscriber -> origin -> last applied.
    pub fn subscriber_cursors(&self) -> Result<BTreeMap<NodeId, BTreeMap<NodeId, u64>>> {
        let mut out: BTreeMap<NodeId, BTreeMap<NodeId, u64>> = BTreeMap::new();
        for item in self.scan(keys::SUBSCRIBER) {
            let (key, value) = item?;
            let parts = keys::parts(&key, keys::SUBSCRIBER);
            let [subscriber, origin] = parts[..] else {
                return Err(self.corrupt(format!("bad key {}", keys::show(&key))));
            };
            let seq = codec::u64_from(&value).map_err(|d| self.corrupt(d))?;
            out.entry(node_from(subscriber).map_err(|d| self.corrupt(d))?)
                .or_default()
                .insert(node_from(origin).map_err(|d| self.corrupt(d))?, seq);
        }
        Ok(out)
    }

    /// Drops log entries every known subscriber has applied, keeping at
    /// least the last `retain` of each origin. Returns how many went. A
    /// commit removes at most [`COMPACT_COMMIT`] entries, and the writer
    /// lock is let go between commits: a node that applied a large catalog
    /// goes on taking its agents' reports while its log is cut.
    pub fn compact(&self, retain: u64) -> Result<usize> {
        self.compact_without(retain, &BTreeSet::new())
    }

    /// [`Self::compact`], the subscribers in `released` (children away for
    /// longer than their log is held) not waited for: each gets a snapshot
    /// when it comes back, its cursor kept to tell it.
    pub fn compact_without(&self, retain: u64, released: &BTreeSet<NodeId>) -> Result<usize> {
        let mut removed = 0;
        loop {
            let _guard = self.lock();
            let mut subscribers = self.subscriber_cursors()?;
            subscribers.retain(|subscriber, _| !released.contains(subscriber));
            let mut batch = crate::Batch::default();
            // The seqs this commit covers, whether or not each has an entry
            // here: every commit moves some floor.
            let mut span = 0;
            for (origin, applied) in self.cursor()? {
                let slowest = subscribers
                    .values()
                    .map(|c| c.get(&origin).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(applied);
                let new_floor = slowest.min(applied.saturating_sub(retain));
                let floor = self.get_u64(&keys::floor(&origin))?;
                if new_floor <= floor || span >= COMPACT_COMMIT {
                    continue;
                }
                // This commit's share, the floor moved to its end.
                let upto = new_floor.min(floor + (COMPACT_COMMIT - span) as u64);
                for key in self
                    .tree()
                    .range(keys::log(&origin, floor + 1)..=keys::log(&origin, upto))
                    .keys()
                {
                    batch.remove(key.map_err(|e| self.io_error(e))?);
                    removed += 1;
                }
                batch.insert(keys::floor(&origin), &upto.to_be_bytes());
                span += (upto - floor) as usize;
            }
            if span == 0 {
                return Ok(removed);
            }
            self.commit(batch)?;
        }
    }

    /// Everything `origins` own, with their cursors, as one consistent view.
    pub fn snapshot(&self, origins: &[NodeId]) -> Result<Snapshot> {
        let _guard = self.lock();
        let mut snapshot = Snapshot::default();
        for origin in origins {
            snapshot
                .cursor
                .insert(origin.clone(), self.get_u64(&keys::applied(origin))?);
            if let Some(tip) = self.get(&keys::tip(origin))? {
                let tip: Tip =
                    codec::from_json(&tip).map_err(|d| self.corrupt(format!("last change of {origin}: {d}")))?;
                snapshot.tips.insert(origin.clone(), tip);
            }
        }
        for item in self.scan(keys::OBJECT) {
            let (key, value) = item?;
            let stored: StoredObject =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            if snapshot.cursor.contains_key(&stored.origin) {
                snapshot.objects.push(stored);
            }
        }
        for item in self.scan(keys::OVERRIDE) {
            let (key, value) = item?;
            let origin = keys::parts(&key, keys::OVERRIDE)
                .last()
                .map(|o| node_from(o))
                .transpose()
                .map_err(|d| self.corrupt(d))?;
            let Some(origin) = origin.filter(|o| snapshot.cursor.contains_key(o)) else {
                continue;
            };
            let stored: StoredOverride =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            snapshot.overrides.push((origin, stored.seq, stored.over, stored.seal));
        }
        Ok(snapshot)
    }

    /// Checks every object and override of a snapshot against its seal,
    /// with the keys its origin published (in the snapshot), then applies it.
    pub fn apply_snapshot_verified(
        &self,
        snapshot: &Snapshot,
        check: SealCheck<'_>,
        check_tip: TipCheck<'_>,
    ) -> Result<()> {
        let keys_of = |origin: &NodeId| {
            snapshot.objects.iter().find_map(|s| match s.object.value() {
                Object::SigningKey(k) if s.origin == *origin && k.node == *origin => Some(k),
                _ => None,
            })
        };
        for stored in &snapshot.objects {
            check(&stored.change(), keys_of(&stored.origin), true)
                .map_err(|e| Refused::new(e.attack, format!("snapshot object {}: {}", stored.origin, e.detail)))?;
        }
        for (origin, seq, over, seal) in &snapshot.overrides {
            let change = Change {
                origin: origin.clone(),
                seq: *seq,
                op: Exact::<ChangeOp>::override_with(over),
                seal: seal.clone(),
            };
            check(&change, keys_of(origin), true)
                .map_err(|e| Refused::new(e.attack, format!("snapshot override of {origin}: {}", e.detail)))?;
        }
        // Each origin's part is exactly what it signed at the cursor: no
        // object left out, added or swapped for another revision, and never
        // older than what this node has.
        for (origin, seq) in &snapshot.cursor {
            if *seq == 0 {
                continue;
            }
            let applied = self.applied_seq(origin)?;
            if *seq <= applied {
                return Err(Refused::new(
                    Attack::Rollback,
                    format!("a snapshot of {origin} at {seq}, and this node has applied {applied}"),
                )
                .into());
            }
            let tip = snapshot.tips.get(origin).ok_or_else(|| {
                Refused::new(
                    Attack::BadSignature,
                    format!("the snapshot of {origin} comes without its last change"),
                )
            })?;
            check_tip(origin, tip, keys_of(origin))?;
            if tip.seq != *seq {
                return Err(Refused::new(
                    Attack::MixAndMatch,
                    format!(
                        "the snapshot of {origin} is at {seq} but its last change is {}",
                        tip.seq
                    ),
                )
                .into());
            }
            if snapshot_state(snapshot, origin).digest() != tip.seal.state {
                return Err(Refused::new(
                    Attack::MixAndMatch,
                    format!(
                        "the snapshot of {origin} is not what {origin} signed at {seq}: objects were left out, added or taken from other revisions"
                    ),
                )
                .into());
            }
        }
        self.apply_snapshot(snapshot)
    }

    /// Replaces everything the snapshot's origins own with the snapshot, and
    /// sets their cursors to it, in one batch.
    pub fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        let owned_by_snapshot = |origin: &NodeId| snapshot.cursor.contains_key(origin);
        for item in self.scan(keys::OBJECT) {
            let (key, value) = item?;
            let stored: StoredObject =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            if owned_by_snapshot(&stored.origin) {
                batch.remove(key);
            }
        }
        for item in self.scan(keys::OVERRIDE) {
            let (key, _) = item?;
            if let Some(origin) = keys::parts(&key, keys::OVERRIDE).last().and_then(|o| node_from(o).ok())
                && owned_by_snapshot(&origin)
            {
                batch.remove(key);
            }
        }
        for stored in &snapshot.objects {
            if !owned_by_snapshot(&stored.origin) {
                return Err(StoreError::Invalid(format!(
                    "snapshot object of {} without a cursor for it",
                    stored.origin
                )));
            }
            let key = stored.object.key().map_err(|e| StoreError::Invalid(e.to_string()))?;
            batch.insert(keys::object(&key), codec::json(stored));
        }
        for (origin, seq, over, seal) in &snapshot.overrides {
            batch.insert(
                keys::override_of(&over.target, origin),
                codec::json(&StoredOverride {
                    seq: *seq,
                    over: over.clone(),
                    seal: seal.clone(),
                }),
            );
        }
        for (origin, seq) in &snapshot.cursor {
            // The log before the snapshot is not here: ask for a snapshot again
            // rather than serve a history with holes.
            for item in self.scan(&keys::under(keys::LOG, &[origin.as_str().as_bytes()])) {
                batch.remove(item?.0);
            }
            if *seq == 0 {
                // An origin the sender does not have: forget it here too.
                batch.remove(keys::applied(origin));
                batch.remove(keys::floor(origin));
                batch.remove(keys::head(origin));
                batch.remove(keys::tip(origin));
                batch.remove(keys::state(origin));
            } else {
                batch.insert(keys::applied(origin), &seq.to_be_bytes());
                batch.insert(keys::floor(origin), &seq.to_be_bytes());
                match snapshot.tips.get(origin) {
                    Some(tip) => {
                        batch.insert(keys::head(origin), tip.digest(origin).into_bytes());
                        batch.insert(keys::tip(origin), codec::json(tip));
                    }
                    None => {
                        batch.remove(keys::head(origin));
                        batch.remove(keys::tip(origin));
                    }
                }
                batch.insert(keys::state(origin), snapshot_state(snapshot, origin).to_bytes());
            }
        }
        self.commit(batch)?;
        // A snapshot replaces every kind.
        self.touched(u32::MAX);
        Ok(())
    }

    /// An object as its owner wrote it.
    pub fn object(&self, key: &ObjectKey) -> Result<Option<StoredObject>> {
        self.stored(key, &Pending::default())
    }

    /// Every object of a kind, by id.
    pub fn objects(&self, kind: ObjectKind) -> Result<Vec<StoredObject>> {
        self.scan(&keys::objects_of(kind))
            .map(|item| {
                let (key, value) = item?;
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .collect()
    }

    /// The overrides of an object: origin -> fields, as signed.
    pub fn overrides(&self, key: &ObjectKey) -> Result<BTreeMap<NodeId, Exact<Override>>> {
        let mut out = BTreeMap::new();
        for change in self.override_changes(key)? {
            if let Some(over) = change.op.overridden().map_err(|d| self.corrupt(d))? {
                out.insert(change.origin, over);
            }
        }
        Ok(out)
    }

    /// Every override of objects of `kind`, by object: one read for a
    /// whole kind (a catalog's updates are many, their overrides few).
    pub fn overrides_of_kind(&self, kind: ObjectKind) -> Result<BTreeMap<ObjectId, BTreeMap<NodeId, Exact<Override>>>> {
        let mut out: BTreeMap<ObjectId, BTreeMap<NodeId, Exact<Override>>> = BTreeMap::new();
        for item in self.scan(&keys::under(keys::OVERRIDE, &[kind.as_str().as_bytes()])) {
            let (raw, value) = item?;
            let stored: StoredOverride =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&raw))))?;
            let origin = keys::parts(&raw, keys::OVERRIDE)
                .last()
                .map(|o| node_from(o))
                .transpose()
                .map_err(|d| self.corrupt(d))?
                .ok_or_else(|| self.corrupt(format!("{}: no origin", keys::show(&raw))))?;
            out.entry(stored.over.target.id.clone())
                .or_default()
                .insert(origin, stored.over);
        }
        Ok(out)
    }

    /// The overrides of an object as the changes that made them (sealed).
    pub fn override_changes(&self, key: &ObjectKey) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        for item in self.scan(&keys::overrides_of(key)) {
            let (raw, value) = item?;
            let origin = keys::parts(&raw, keys::OVERRIDE)
                .last()
                .map(|o| node_from(o))
                .transpose()
                .map_err(|d| self.corrupt(d))?;
            let stored: StoredOverride =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&raw))))?;
            if let Some(origin) = origin {
                out.push(Change {
                    origin,
                    seq: stored.seq,
                    op: Exact::<ChangeOp>::override_with(&stored.over),
                    seal: stored.seal,
                });
            }
        }
        Ok(out)
    }
}

/// The set hash of what `origin` owns in a snapshot.
fn snapshot_state(snapshot: &Snapshot, origin: &NodeId) -> StateHash {
    let mut state = StateHash::default();
    for stored in snapshot.objects.iter().filter(|s| s.origin == *origin) {
        state.add(&element(origin, stored.seq, &Exact::<ChangeOp>::upsert(&stored.object)));
    }
    for (o, seq, over, _) in snapshot.overrides.iter().filter(|(o, ..)| o == origin) {
        state.add(&element(o, *seq, &Exact::<ChangeOp>::override_with(over)));
    }
    state
}

fn short(digest: &str) -> &str {
    if digest.is_empty() {
        "nothing"
    } else {
        &digest[..digest.len().min(12)]
    }
}

pub(crate) fn node_from(bytes: &[u8]) -> Result<NodeId, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "node id is not UTF-8".to_owned())?;
    NodeId::new(s).map_err(|e| e.to_string())
}
