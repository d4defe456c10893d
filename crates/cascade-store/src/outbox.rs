//! The outbox of the upward flow: a log of upserts for the parent, trimmed
//! by its acknowledgements.
//!
//! Compliance is queued by reference, one entry per ingested batch naming
//! the records it changed; sending reads their current state. That is the
//! upsert semantics (the latest state per key) without a second copy of
//! every record.

use std::collections::HashSet;

use cascade_core::UpdateId;
use cascade_core::model::{ComputerId, Upward};
use serde::{Deserialize, Serialize};

use crate::{Pending, Result, Store, StoreError, codec, keys};

/// What one outbox entry holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Queued {
    /// Compliance records, by computer and update (sorted); their current
    /// state is sent.
    Compliance(Vec<(ComputerId, Vec<UpdateId>)>),
    Items(Vec<Upward>),
}

/// An outbox entry as JSON: items always, compliance in entries written
/// before it was binary (one key per record).
#[derive(Deserialize)]
enum Json {
    Compliance(Vec<(ComputerId, UpdateId)>),
    Items(Vec<Upward>),
}

/// Items as [`Json`] reads them.
#[derive(Serialize)]
enum JsonItems<'a> {
    Items(&'a [Upward]),
}

impl Queued {
    /// Compliance records by key, grouped by computer.
    pub(crate) fn compliance(mut keys: Vec<(ComputerId, UpdateId)>) -> Queued {
        keys.sort_unstable();
        keys.dedup();
        let mut grouped: Vec<(ComputerId, Vec<UpdateId>)> = Vec::new();
        for (computer, update) in keys {
            match grouped.last_mut() {
                Some((c, updates)) if *c == computer => updates.push(update),
                _ => grouped.push((computer, vec![update])),
            }
        }
        Queued::Compliance(grouped)
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Queued::Compliance(keys) => codec::encode_keys(keys),
            Queued::Items(items) => codec::json(&JsonItems::Items(items)),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Queued, String> {
        match bytes.split_first() {
            Some((&codec::QUEUED_KEYS, body)) => Ok(Queued::Compliance(codec::decode_keys(body)?)),
            _ => Ok(match codec::from_json::<Json>(bytes)? {
                Json::Compliance(keys) => Queued::compliance(keys),
                Json::Items(items) => Queued::Items(items),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    pub seq: u64,
    pub items: Vec<Upward>,
    /// Compliance, by the agent reports it came in.
    pub reports: Vec<cascade_core::report::Report>,
}

/// How far an upward snapshot got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotProgress {
    /// Required; nothing sent yet.
    Start,
    /// The agents' certificates are acknowledged; the snapshot covers the
    /// outbox through `upto`.
    Certificates { upto: u64 },
    /// The summaries of every computer through `computer` too.
    Computers { upto: u64, computer: ComputerId },
    /// Every computer's summary too.
    Summarized { upto: u64 },
    /// The records of every computer through `computer` too.
    After { upto: u64, computer: ComputerId },
}

impl SnapshotProgress {
    /// The outbox sequence the snapshot covers, once it started.
    pub fn upto(&self) -> Option<u64> {
        match self {
            SnapshotProgress::Start => None,
            SnapshotProgress::Certificates { upto }
            | SnapshotProgress::Summarized { upto }
            | SnapshotProgress::Computers { upto, .. }
            | SnapshotProgress::After { upto, .. } => Some(*upto),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// The last sequence number given out.
    pub last: u64,
    /// The highest sequence the parent acknowledged.
    pub acked: u64,
    /// Entries not yet acknowledged.
    pub pending: u64,
    /// Entries were dropped before the parent had them: send the current
    /// state as a snapshot.
    pub snapshot_required: bool,
}

impl Store {
    pub(crate) fn queue_upward(&self, pending: &mut Pending, queued: &Queued) -> Result<u64> {
        let next = match pending.get(self, keys::OUTBOX_NEXT)? {
            Some(v) => codec::u64_from(&v).map_err(|d| self.corrupt(d))? + 1,
            None => 1,
        };
        pending.insert(keys::outbox(next), queued.encode());
        pending.insert(keys::OUTBOX_NEXT.to_vec(), next.to_be_bytes().to_vec());
        Ok(next)
    }

    /// Queues items for the parent as one entry; returns its sequence.
    pub fn push_upward(&self, items: Vec<Upward>) -> Result<u64> {
        let _guard = self.lock();
        let mut pending = Pending::default();
        let seq = self.queue_upward(&mut pending, &Queued::Items(items))?;
        self.commit_pending(pending)?;
        Ok(seq)
    }

    fn queued(&self, after: u64, limit: usize) -> Result<Vec<(u64, Queued)>> {
        let mut out = Vec::new();
        for item in self.tree().range(keys::outbox(after.saturating_add(1))..).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(keys::OUTBOX) {
                break;
            }
            out.push(self.queued_entry(&key, &value)?);
        }
        Ok(out)
    }

    /// One outbox entry, read from its key and value.
    fn queued_entry(&self, key: &[u8], value: &[u8]) -> Result<(u64, Queued)> {
        let seq = keys::seq_of(&key[keys::OUTBOX.len()..])
            .ok_or_else(|| self.corrupt(format!("bad key {}", keys::show(key))))?;
        let queued = Queued::decode(value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(key))))?;
        Ok((seq, queued))
    }

    /// Entries after `after`, oldest first, with compliance records in their
    /// current state.
    pub fn outbox(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.outbox_items(after, limit, usize::MAX)
    }

    /// [`Self::outbox`], stopping after the entry that brings the items to
    /// `items` (at least one entry): what one batch to the parent takes,
    /// without reading what the next will.
    pub fn outbox_items(&self, after: u64, limit: usize, items: usize) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        for item in self.tree().range(keys::outbox(after.saturating_add(1))..).take(limit) {
            if taken >= items {
                break;
            }
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(keys::OUTBOX) {
                break;
            }
            let (seq, queued) = self.queued_entry(&key, &value)?;
            let (items, reports) = match queued {
                Queued::Items(items) => (items, Vec::new()),
                Queued::Compliance(keys) => {
                    // Each computer's records are read once for the entry,
                    // as the reports they came in.
                    let mut items = Vec::new();
                    let mut reports = Vec::new();
                    for (computer, updates) in keys {
                        let key = keys::compliance(&computer);
                        let Some(bytes) = self.get(&key)? else { continue };
                        let (mut of_computer, loose) =
                            codec::decode_reports(&computer, &bytes, &|u| updates.binary_search(u).is_ok())
                                .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
                        reports.append(&mut of_computer);
                        items.extend(loose.into_iter().map(Upward::Compliance));
                    }
                    (items, reports)
                }
            };
            taken += items.len() + reports.iter().map(|r| r.records.len()).sum::<usize>();
            out.push(OutboxEntry { seq, items, reports });
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
        let last = self.get_u64(keys::OUTBOX_NEXT)?;
        if seq > last {
            return Err(StoreError::Invalid(format!(
                "acknowledgement of outbox entry {seq}, but the last entry is {last}"
            )));
        }
        let mut batch = crate::Batch::default();
        for item in self.tree().range(keys::outbox(0)..=keys::outbox(seq)) {
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
        let mut batch = crate::Batch::default();
        batch.remove(keys::OUTBOX_SNAPSHOT);
        self.commit(batch)
    }

    /// [`Self::outbox_snapshot_sent`] for the snapshot that got to `at`,
    /// unless a new one was required meanwhile; returns whether it was done.
    pub fn outbox_snapshot_finished(&self, at: &SnapshotProgress, seq: u64) -> Result<bool> {
        let _guard = self.lock();
        if self.outbox_snapshot_progress()?.as_ref() != Some(at) {
            return Ok(false);
        }
        let mut batch = crate::Batch::default();
        if seq > self.get_u64(keys::OUTBOX_ACKED)? {
            for item in self.tree().range(keys::outbox(0)..=keys::outbox(seq)) {
                batch.remove(item.map_err(|e| self.io_error(e))?.0);
            }
            batch.insert(
                keys::OUTBOX_ACKED,
                &seq.min(self.get_u64(keys::OUTBOX_NEXT)?).to_be_bytes(),
            );
        }
        batch.remove(keys::OUTBOX_SNAPSHOT);
        self.commit(batch)?;
        Ok(true)
    }

    /// How far an upward snapshot got, when one is required: a snapshot
    /// broken off (a lost connection) goes on from there, not from the start.
    pub fn outbox_snapshot_progress(&self) -> Result<Option<SnapshotProgress>> {
        let Some(value) = self.get(keys::OUTBOX_SNAPSHOT)? else {
            return Ok(None);
        };
        let bad = || self.corrupt(format!("{}: {} bytes", keys::show(keys::OUTBOX_SNAPSHOT), value.len()));
        let upto = |v: &[u8]| {
            v.get(1..9)
                .ok_or_else(bad)
                .and_then(|b| codec::u64_from(b).map_err(|_| bad()))
        };
        Ok(Some(match value.first() {
            Some(1) => SnapshotProgress::Start,
            Some(2) => SnapshotProgress::Certificates { upto: upto(&value)? },
            Some(3) => SnapshotProgress::After {
                upto: upto(&value)?,
                computer: self.computer_in(&value[9..]).map_err(|_| bad())?,
            },
            Some(4) => SnapshotProgress::Computers {
                upto: upto(&value)?,
                computer: self.computer_in(&value[9..]).map_err(|_| bad())?,
            },
            Some(5) => SnapshotProgress::Summarized { upto: upto(&value)? },
            _ => return Err(bad()),
        }))
    }

    /// Records that a snapshot got from `from` to `to` (acknowledged by the
    /// parent), unless a new one was required meanwhile. Returns whether
    /// it was recorded.
    pub fn outbox_snapshot_progressed(&self, from: &SnapshotProgress, to: &SnapshotProgress) -> Result<bool> {
        let _guard = self.lock();
        if self.outbox_snapshot_progress()?.as_ref() != Some(from) {
            return Ok(false);
        }
        let mut value = Vec::new();
        match to {
            SnapshotProgress::Start => value.push(1),
            SnapshotProgress::Certificates { upto } => {
                value.push(2);
                value.extend_from_slice(&upto.to_be_bytes());
            }
            SnapshotProgress::After { upto, computer } => {
                value.push(3);
                value.extend_from_slice(&upto.to_be_bytes());
                value.extend_from_slice(computer.as_str().as_bytes());
            }
            SnapshotProgress::Computers { upto, computer } => {
                value.push(4);
                value.extend_from_slice(&upto.to_be_bytes());
                value.extend_from_slice(computer.as_str().as_bytes());
            }
            SnapshotProgress::Summarized { upto } => {
                value.push(5);
                value.extend_from_slice(&upto.to_be_bytes());
            }
        }
        let mut batch = crate::Batch::default();
        batch.insert(keys::OUTBOX_SNAPSHOT, value);
        self.commit(batch)?;
        Ok(true)
    }

    /// Records which parent this node reports to. When it is a different one
    /// than before (the site moved), the new parent gets a snapshot of the
    /// whole state first. Returns whether it changed.
    pub fn note_parent(&self, parent: &str) -> Result<bool> {
        let _guard = self.lock();
        let previous = self.get(keys::PARENT)?;
        if previous.as_deref() == Some(parent.as_bytes()) {
            return Ok(false);
        }
        let mut batch = crate::Batch::default();
        batch.insert(keys::PARENT, parent.as_bytes());
        if previous.is_some() {
            batch.insert(keys::OUTBOX_SNAPSHOT, &[1]);
        }
        self.commit(batch)?;
        Ok(previous.is_some())
    }

    /// Asks for a snapshot to be sent up (a move to a new parent).
    pub fn require_upward_snapshot(&self) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::OUTBOX_SNAPSHOT, &[1]);
        self.commit(batch)
    }

    pub fn outbox_state(&self) -> Result<OutboxState> {
        Ok(OutboxState {
            last: self.get_u64(keys::OUTBOX_NEXT)?,
            acked: self.get_u64(keys::OUTBOX_ACKED)?,
            pending: self.tree().scan_prefix(keys::OUTBOX).count() as u64,
            snapshot_required: self.get(keys::OUTBOX_SNAPSHOT)?.is_some(),
        })
    }

    /// Keeps the outbox at most `max` entries: first upserts that a later
    /// entry repeats go (an entry left empty goes with them); if that is not
    /// enough, the oldest entries go and a snapshot is required. Returns how
    /// many entries were dropped.
    pub fn outbox_compact(&self, max: u64) -> Result<u64> {
        let _guard = self.lock();
        let entries = self.queued(0, usize::MAX)?;
        if (entries.len() as u64) <= max {
            return Ok(0);
        }
        let mut pending = Pending::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut kept = Vec::new();
        let mut dropped = 0;
        // Newest first: an upsert seen already is repeated later.
        for (seq, queued) in entries.into_iter().rev() {
            let compacted = match queued {
                Queued::Compliance(keys) => {
                    let left: Vec<_> = keys
                        .into_iter()
                        .filter_map(|(c, updates)| {
                            let updates: Vec<UpdateId> = updates
                                .into_iter()
                                .filter(|u| seen.insert(format!("c\0{c}\0{u}")))
                                .collect();
                            (!updates.is_empty()).then_some((c, updates))
                        })
                        .collect();
                    (!left.is_empty()).then_some(Queued::Compliance(left))
                }
                Queued::Items(items) => {
                    let left: Vec<_> = items
                        .into_iter()
                        .filter(|i| i.upsert_key().is_none_or(|k| seen.insert(k)))
                        .collect();
                    (!left.is_empty()).then_some(Queued::Items(left))
                }
            };
            match compacted {
                Some(q) => {
                    pending.insert(keys::outbox(seq), q.encode());
                    kept.push(seq);
                }
                None => {
                    pending.remove(keys::outbox(seq));
                    dropped += 1;
                }
            }
        }
        kept.reverse();
        let excess = (kept.len() as u64).saturating_sub(max);
        if excess > 0 {
            for seq in kept.iter().take(excess as usize) {
                pending.remove(keys::outbox(*seq));
            }
            dropped += excess;
            pending.insert(keys::OUTBOX_SNAPSHOT.to_vec(), vec![1]);
        }
        self.commit_pending(pending)?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(computer: &str, update: &str) -> (ComputerId, UpdateId) {
        (ComputerId::new(computer).unwrap(), UpdateId::new(update))
    }

    #[test]
    fn compliance_entries_are_binary_and_older_json_ones_still_read() {
        let queued = Queued::compliance(vec![
            key("pc-2", "KB2"),
            key("pc-1", "KB9"),
            key("pc-1", "KB1"),
            key("pc-2", "KB2"),
        ]);
        let grouped = Queued::Compliance(vec![
            (
                ComputerId::new("pc-1").unwrap(),
                vec![UpdateId::new("KB1"), UpdateId::new("KB9")],
            ),
            (ComputerId::new("pc-2").unwrap(), vec![UpdateId::new("KB2")]),
        ]);
        assert_eq!(queued, grouped);
        let bytes = queued.encode();
        assert_eq!(bytes[0], codec::QUEUED_KEYS);
        assert_eq!(Queued::decode(&bytes).unwrap(), grouped);
        // An entry a node wrote before the binary form, one key per record.
        let mut old = vec![codec::JSON];
        old.extend_from_slice(br#"{"Compliance":[["pc-2","KB2"],["pc-1","KB9"],["pc-1","KB1"]]}"#);
        assert_eq!(Queued::decode(&old).unwrap(), grouped);
        // Items stay JSON, as before.
        let items = Queued::Items(Vec::new());
        assert_eq!(items.encode(), codec::json(&serde_json::json!({"Items": []})));
        assert_eq!(Queued::decode(&items.encode()).unwrap(), items);
        // A damaged entry is an error that says what is wrong.
        for cut in 1..bytes.len() {
            let err = Queued::decode(&bytes[..cut]).unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Queued::decode(&trailing).unwrap_err().contains("trailing"));
    }
}
