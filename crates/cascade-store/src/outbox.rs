//! The outbox of the upward flow: a log of upserts for the parent, trimmed
//! by its acknowledgements.

use std::collections::HashMap;

use cascade_core::model::Upward;

use crate::{Result, Store, codec, keys};

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    pub seq: u64,
    pub item: Upward,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// The last sequence number given out.
    pub last: u64,
    /// The highest sequence the parent acknowledged.
    pub acked: u64,
    pub pending: u64,
    /// Entries were dropped before the parent had them: send the current
    /// state as a snapshot.
    pub snapshot_required: bool,
}

impl Store {
    /// Queues items for the parent.
    pub fn push_upward(&self, items: &[Upward]) -> Result<u64> {
        let _guard = self.lock();
        let mut next = self.get_u64(keys::OUTBOX_NEXT)?;
        let mut batch = sled::Batch::default();
        for item in items {
            next += 1;
            batch.insert(keys::outbox(next), codec::json(item));
        }
        batch.insert(keys::OUTBOX_NEXT, &next.to_be_bytes());
        self.commit(batch)?;
        Ok(next)
    }

    /// Entries after `after`, oldest first.
    pub fn outbox(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for item in self.tree.range(keys::outbox(after.saturating_add(1))..).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(keys::OUTBOX) {
                break;
            }
            let seq = keys::seq_of(&key[keys::OUTBOX.len()..])
                .ok_or_else(|| self.corrupt(format!("bad outbox key {}", keys::show(&key))))?;
            let item = codec::from_json(&value).map_err(|d| self.corrupt(format!("outbox {seq}: {d}")))?;
            out.push(OutboxEntry { seq, item });
        }
        Ok(out)
    }

    /// The parent has durably stored everything up to `seq`.
    pub fn outbox_ack(&self, seq: u64) -> Result<()> {
        let _guard = self.lock();
        let acked = self.get_u64(keys::OUTBOX_ACKED)?;
        if seq <= acked {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for item in self.tree.range(keys::outbox(0)..=keys::outbox(seq)) {
            batch.remove(item.map_err(|e| self.io_error(e))?.0);
        }
        batch.insert(keys::OUTBOX_ACKED, &seq.to_be_bytes());
        self.commit(batch)
    }

    /// The parent took a snapshot of this node's state up to `seq` (after a
    /// compaction or a move to a new parent): everything before is done.
    pub fn outbox_snapshot_sent(&self, seq: u64) -> Result<()> {
        self.outbox_ack(seq)?;
        let _guard = self.lock();
        let mut batch = sled::Batch::default();
        batch.remove(keys::OUTBOX_SNAPSHOT);
        self.commit(batch)
    }

    /// Asks for a snapshot to be sent up (a move to a new parent).
    pub fn require_upward_snapshot(&self) -> Result<()> {
        let _guard = self.lock();
        let mut batch = sled::Batch::default();
        batch.insert(keys::OUTBOX_SNAPSHOT, &[1]);
        self.commit(batch)
    }

    pub fn outbox_state(&self) -> Result<OutboxState> {
        Ok(OutboxState {
            last: self.get_u64(keys::OUTBOX_NEXT)?,
            acked: self.get_u64(keys::OUTBOX_ACKED)?,
            pending: self.tree.scan_prefix(keys::OUTBOX).count() as u64,
            snapshot_required: self.get(keys::OUTBOX_SNAPSHOT)?.is_some(),
        })
    }

    /// Keeps the outbox at most `max` entries: first an upsert replaced by a
    /// newer one with the same key goes; if that is not enough, the oldest
    /// go and a snapshot is required. Returns how many were dropped.
    pub fn outbox_compact(&self, max: u64) -> Result<u64> {
        let _guard = self.lock();
        let entries = self.outbox(0, usize::MAX)?;
        if (entries.len() as u64) <= max {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let mut newest: HashMap<String, u64> = HashMap::new();
        for e in &entries {
            if let Some(k) = e.item.upsert_key() {
                newest.insert(k, e.seq);
            }
        }
        let mut kept = Vec::new();
        let mut dropped = 0;
        for e in &entries {
            match e.item.upsert_key() {
                Some(k) if newest.get(&k) != Some(&e.seq) => {
                    batch.remove(keys::outbox(e.seq));
                    dropped += 1;
                }
                _ => kept.push(e.seq),
            }
        }
        let excess = (kept.len() as u64).saturating_sub(max);
        if excess > 0 {
            for seq in kept.iter().take(excess as usize) {
                batch.remove(keys::outbox(*seq));
            }
            dropped += excess;
            batch.insert(keys::OUTBOX_SNAPSHOT, &[1]);
        }
        self.commit(batch)?;
        Ok(dropped)
    }
}
