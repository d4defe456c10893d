//! The agent's durable state and its report queue. A report is written to
//! disk (and synced) before it is sent, and removed only once the node
//! acknowledged it, so a result survives a crash, a restart or weeks
//! without a reachable node. The simulator keeps the same journal in memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, InstallEvent, PatchMethod};
use cascade_core::update::Severity;
use serde::{Deserialize, Serialize};

/// Queued reports beyond this are folded into one (latest state per
/// update, newest events), so a long outage cannot fill the disk.
pub const QUEUE_MAX: usize = 1000;
/// Events a folded report keeps.
const FOLDED_EVENTS: usize = 500;
/// Events one sent report carries at most (a message size the node takes).
const COALESCED_EVENTS: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path}: the agent's state is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
}

/// What the agent remembers between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The counter of the next report (starts at 1).
    pub next_counter: u64,
    /// The inventory hash the node last accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory_hash: Option<String>,
    /// The state last queued per update: only changes are reported.
    #[serde(default)]
    pub reported: BTreeMap<UpdateId, ComplianceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<PendingRestart>,
    /// The node used last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_node: Option<String>,
    /// The site of the last assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<cascade_core::model::NodeId>,
    /// Catalog updates this agent installed; its inventory lists them as
    /// installed, as Windows lists the hotfixes it installed, since many
    /// vendor updates carry no detection rule of their own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub installed: std::collections::BTreeSet<UpdateId>,
    /// The newest signed timestamp from the root seen (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_timestamp: Option<i64>,
    /// Why the view is stale (a freeze), while it is: nothing is reported
    /// compliant meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// Installs waiting for a restart to finish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingRestart {
    /// The boot id when they were installed; a different one means the
    /// computer restarted.
    pub boot_id: Option<String>,
    /// Unix seconds.
    pub since: i64,
    pub updates: Vec<(UpdateId, Severity, PatchMethod)>,
    /// Whether the restart was started (by the agent or an installer).
    pub started: bool,
    /// Unix seconds the agent last asked for it.
    #[serde(default)]
    pub requested_at: Option<i64>,
}

/// One report: records and events under one counter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub counter: u64,
    pub records: Vec<ComplianceRecord>,
    pub events: Vec<InstallEvent>,
}

/// State and queue, on disk or in memory.
#[derive(Debug)]
pub struct Journal {
    state: State,
    dir: Option<PathBuf>,
    queue: BTreeMap<u64, Batch>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Writes a file so that after a crash it holds either the old or the new
/// content: a synced temporary file renamed over it, then the directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    // The rename is durable once the directory is (Windows cannot open a
    // directory as a file; NTFS journals the rename).
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl Journal {
    /// A journal that lives only in memory (the simulator's agents).
    pub fn memory() -> Journal {
        Journal {
            state: State {
                next_counter: 1,
                ..State::default()
            },
            dir: None,
            queue: BTreeMap::new(),
        }
    }

    /// Opens the journal in `dir` (`state.json` and `queue/`).
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let queue_dir = dir.join("queue");
        std::fs::create_dir_all(&queue_dir).map_err(|e| io(&queue_dir, e))?;
        let state_path = dir.join("state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError::Damaged {
                path: state_path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&state_path, e)),
        };
        let mut queue = BTreeMap::new();
        for entry in std::fs::read_dir(&queue_dir).map_err(|e| io(&queue_dir, e))? {
            let path = entry.map_err(|e| io(&queue_dir, e))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {}
                // A report whose write did not finish was never queued.
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                _ => continue,
            }
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let batch: Batch = serde_json::from_slice(&bytes).map_err(|e| JournalError::Damaged {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            queue.insert(batch.counter, batch);
        }
        // A report queued just before a crash may be newer than the saved state.
        let after_queue = queue.keys().next_back().map_or(1, |c| c + 1);
        state.next_counter = state.next_counter.max(after_queue).max(1);
        Ok(Journal {
            state,
            dir: Some(dir.to_path_buf()),
            queue,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn save(&mut self, state: State) -> Result<(), JournalError> {
        if let Some(dir) = &self.dir {
            let bytes = serde_json::to_vec_pretty(&state).map_err(|e| io(dir, e))?;
            write_durably(&dir.join("state.json"), &bytes)?;
        }
        self.state = state;
        Ok(())
    }

    fn batch_path(dir: &Path, counter: u64) -> PathBuf {
        dir.join("queue").join(format!("{counter:020}.json"))
    }

    fn write_batch(&self, batch: &Batch) -> Result<(), JournalError> {
        if let Some(dir) = &self.dir {
            let path = Self::batch_path(dir, batch.counter);
            let bytes = serde_json::to_vec(batch).map_err(|e| io(&path, e))?;
            write_durably(&path, &bytes)?;
        }
        Ok(())
    }

    fn remove_batch(&self, counter: u64) -> Result<(), JournalError> {
        if let Some(dir) = &self.dir {
            let path = Self::batch_path(dir, counter);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        Ok(())
    }

    /// Changes the state in memory at once, then on disk. When the disk
    /// write fails the memory is still ahead (so a counter is never handed
    /// out twice); on reopening, the counter is taken past the queue anyway.
    fn advance(&mut self, change: impl FnOnce(&mut State)) -> Result<(), JournalError> {
        change(&mut self.state);
        let state = self.state.clone();
        self.save(state)
    }

    /// Queues a report durably under the next counter, which it returns.
    /// The state (with the counter advanced and `reported` updated) is
    /// saved after the report, so a crash between them loses nothing.
    pub fn enqueue(&mut self, records: Vec<ComplianceRecord>, events: Vec<InstallEvent>) -> Result<u64, JournalError> {
        let counter = self.state.next_counter.max(1);
        let mut records = records;
        for r in &mut records {
            r.counter = counter;
        }
        let batch = Batch {
            counter,
            records,
            events,
        };
        self.write_batch(&batch)?;
        let reported: Vec<(UpdateId, ComplianceState)> = batch
            .records
            .iter()
            .map(|r| (r.update.clone(), r.state.clone()))
            .collect();
        self.queue.insert(counter, batch);
        self.advance(|state| {
            state.reported.extend(reported);
            state.next_counter = counter + 1;
        })?;
        if self.queue.len() > QUEUE_MAX {
            let next = self.state.next_counter;
            self.merge(next, FOLDED_EVENTS)?;
            self.advance(|state| state.next_counter = next + 1)?;
        }
        Ok(counter)
    }

    /// Replaces the queued reports by one under `counter`: the latest record
    /// per update and the newest `keep_events` events. The merged report is
    /// written first, then the others removed one by one (file, then
    /// memory), so a failure at any step leaves every result on disk and
    /// in memory.
    fn merge(&mut self, counter: u64, keep_events: usize) -> Result<(), JournalError> {
        let mut latest: BTreeMap<UpdateId, ComplianceRecord> = BTreeMap::new();
        let mut events = Vec::new();
        for batch in self.queue.values() {
            for r in &batch.records {
                latest.insert(r.update.clone(), r.clone());
            }
            events.extend(batch.events.iter().cloned());
        }
        let skip = events.len().saturating_sub(keep_events);
        let events: Vec<InstallEvent> = events.into_iter().skip(skip).collect();
        let mut records: Vec<ComplianceRecord> = latest.into_values().collect();
        for r in &mut records {
            r.counter = counter;
        }
        let merged = Batch {
            counter,
            records,
            events,
        };
        self.write_batch(&merged)?;
        let old: Vec<u64> = self.queue.keys().copied().filter(|c| *c != counter).collect();
        self.queue.insert(counter, merged);
        for c in old {
            self.remove_batch(c)?;
            self.queue.remove(&c);
        }
        Ok(())
    }

    /// Merges the queued reports into one under the highest counter (the
    /// latest record per update, the newest events), so one report carries
    /// a whole run and a resend after a lost acknowledgement is the same
    /// report with the same counter.
    pub fn coalesce(&mut self) -> Result<(), JournalError> {
        if self.queue.len() <= 1 {
            return Ok(());
        }
        let counter = self.queue.keys().next_back().copied().unwrap_or(1);
        self.merge(counter, COALESCED_EVENTS)
    }

    /// Queued reports, oldest first.
    pub fn queued(&self) -> Vec<Batch> {
        self.queue.values().cloned().collect()
    }

    /// The node has everything up to `counter`.
    pub fn acked(&mut self, counter: u64) -> Result<(), JournalError> {
        let done: Vec<u64> = self.queue.range(..=counter).map(|(c, _)| *c).collect();
        for c in done {
            self.remove_batch(c)?;
            self.queue.remove(&c);
        }
        Ok(())
    }

    /// The node has seen counters up to `mark` that this journal never
    /// used (its state was lost or restored from an old copy): the queued
    /// reports are given counters after `mark` so they are not dropped as
    /// repeats.
    pub fn renumber_after(&mut self, mark: u64) -> Result<(), JournalError> {
        // The new counters are all above the old ones (the node is ahead of
        // every counter used): each report is written anew, then its old
        // file and entry go.
        let old: Vec<u64> = self.queue.keys().copied().collect();
        let mut next = mark + 1;
        for previous in old {
            let Some(mut batch) = self.queue.get(&previous).cloned() else {
                continue;
            };
            batch.counter = next;
            for r in &mut batch.records {
                r.counter = next;
            }
            self.write_batch(&batch)?;
            self.queue.insert(next, batch);
            self.remove_batch(previous)?;
            self.queue.remove(&previous);
            next += 1;
        }
        self.advance(|state| state.next_counter = next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::model::{ComputerId, NodeId};

    fn record(update: &str) -> ComplianceRecord {
        ComplianceRecord {
            computer: ComputerId::new("pc-1").unwrap(),
            update: UpdateId::new(update),
            site: NodeId::new("site-a").unwrap(),
            state: ComplianceState::Installed,
            severity: Severity::Critical,
            counter: 0,
            observed_at: 1,
            attestation: None,
        }
    }

    #[test]
    fn reports_survive_reopening_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.enqueue(vec![record("KB1")], vec![]).unwrap(), 1);
        assert_eq!(journal.enqueue(vec![record("KB2")], vec![]).unwrap(), 2);
        drop(journal);
        let mut journal = Journal::open(dir.path()).unwrap();
        let counters: Vec<u64> = journal.queued().iter().map(|b| b.counter).collect();
        assert_eq!(counters, vec![1, 2]);
        assert_eq!(journal.queued()[1].records[0].counter, 2);
        assert_eq!(
            journal.state().reported[&UpdateId::new("KB2")],
            ComplianceState::Installed
        );
        journal.acked(1).unwrap();
        drop(journal);
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.queued().len(), 1);
        assert_eq!(journal.enqueue(vec![], vec![]).unwrap(), 3);
        journal.renumber_after(40).unwrap();
        let counters: Vec<u64> = journal.queued().iter().map(|b| b.counter).collect();
        assert_eq!(counters, vec![41, 42]);
        journal.coalesce().unwrap();
        let queued = journal.queued();
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].counter, queued[0].records.len()), (42, 1));
        assert_eq!(queued[0].records[0].counter, 42);
        drop(journal);
        let mut journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.queued().len(), 1, "the merge is what is on disk");
        journal.enqueue(vec![record("KB3")], vec![]).unwrap();
        journal.renumber_after(40).unwrap();
        let counters: Vec<u64> = journal.queued().iter().map(|b| b.counter).collect();
        assert_eq!(counters, vec![41, 42]);
        assert_eq!(journal.enqueue(vec![], vec![]).unwrap(), 43);
    }

    #[test]
    fn a_crash_after_queueing_keeps_the_counter_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.enqueue(vec![record("KB1")], vec![]).unwrap();
        // The state file as it was before the report was queued.
        std::fs::write(dir.path().join("state.json"), b"{\"next_counter\":1}").unwrap();
        std::fs::write(dir.path().join("queue").join("00000000000000000002.tmp"), b"{").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.state().next_counter, 2);
        assert_eq!(journal.queued().len(), 1, "the unfinished write was not queued");
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("damaged"), "{e}");
    }

    #[test]
    fn a_long_outage_folds_the_queue_keeping_the_latest_state() {
        let mut journal = Journal::memory();
        for i in 0..=QUEUE_MAX {
            let mut r = record("KB1");
            r.observed_at = i as i64;
            journal.enqueue(vec![r], vec![]).unwrap();
        }
        let queued = journal.queued();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].records.len(), 1);
        assert_eq!(queued[0].records[0].observed_at, QUEUE_MAX as i64);
        assert!(queued[0].counter > QUEUE_MAX as u64);
    }
}
