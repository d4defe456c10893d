//! A Cascade node's durable state, behind an API that speaks domain types.
//!
//! sled is used here and nowhere else. Everything lives in one sled tree
//! under prefixed keys (see `keys`), so that every operation is one atomic
//! sled batch; writers are serialised by a lock, which also lets a backup
//! see one consistent state. Nothing is acknowledged before it is flushed.
//!
//! Values carry a format marker (see `codec`): a store written by a newer
//! build is refused, one written by an older build is migrated on open.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use cascade_core::model::{NodeId, ObjectKind};

mod backup;
mod codec;
mod compliance;
mod keys;
mod local;
mod open;
mod outbox;
mod replication;
mod reports;

pub use backup::{BackupStats, RESTORE_BATCH, RESTORING};
pub use codec::STATE_NAMES;
pub use compliance::{IngestOutcome, Page, SeverityCounts, StateCounts, States};
pub use local::{ApiTokenRecord, TokenRecord, TokenRefusal};
pub use open::Settings;
pub use outbox::{OutboxEntry, OutboxState, SnapshotProgress};
pub use replication::{Applied, COMPACT_COMMIT, NeedSnapshot, Snapshot, StoredObject};
pub use reports::{DayAggregates, FailureCount};

/// The on-disk format this build writes.
pub const FORMAT_VERSION: u32 = 5;

/// Why a store operation failed. Each names what it was about; a failed
/// write stored nothing of its operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot open the node store: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("{path}: the node store is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{path}: the node store was written by a newer Cascade (format {found}; this build reads formats up to {supported})"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: the disk is full; the write was not acknowledged ({detail})")]
    DiskFull { path: PathBuf, detail: String },
    #[error("{path}: the write failed and was not acknowledged: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error("change {origin}/{seq} skips ahead: the last applied change of {origin} is {applied}")]
    Gap { origin: NodeId, seq: u64, applied: u64 },
    #[error("{origin} may not change {key}: it belongs to {owner}")]
    NotOwner { origin: NodeId, key: String, owner: NodeId },
    #[error("{key} does not exist")]
    NoSuchObject { key: String },
    #[error("{origin} may not override {key}: its owner does not let child sites override {field}")]
    NotOverridable { origin: NodeId, key: String, field: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A change that failed its origin's seal: the attack is named.
    #[error("{0}")]
    Refused(#[from] cascade_core::seal::Refused),
    #[error("backup: {0}")]
    Backup(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The node's store.
#[derive(Debug)]
pub struct Store {
    /// The database and its tree; taken only in `Drop`, in the commits'
    /// turn (dropping a sled database flushes it).
    sled: Option<(sled::Db, sled::Tree)>,
    path: PathBuf,
    node: NodeId,
    /// Serialises writers (and backups against writers).
    writer: Mutex<()>,
    /// Commits made; also kept in the tree and in the sentinel file.
    commits: AtomicU64,
    /// `cascade-commits` beside sled's files: the last acknowledged commit,
    /// written after each flush. sled silently drops the tail of a damaged
    /// log on open; comparing the two catches that.
    sentinel: Option<File>,
    /// Seals this node's own changes when set.
    signer: SignerSlot,
    /// Per object kind (in [`ObjectKind::ALL`]'s order), how many commits
    /// have changed its objects or overrides since the store was opened:
    /// what a view built from some kinds checks to know it still holds.
    generations: [AtomicU64; ObjectKind::ALL.len()],
    /// Whether the data is compressed on disk (chosen when it was created).
    compressed: bool,
}

/// The key that seals this node's own changes.
#[derive(Default)]
struct SignerSlot(std::sync::RwLock<Option<std::sync::Arc<dyn cascade_core::seal::Signer>>>);

impl std::fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self.0.read().unwrap_or_else(|e| e.into_inner());
        write!(f, "{:?}", slot.as_ref().map(|s| s.key().to_owned()))
    }
}

/// The live data of one kind of key ([`Store::usage`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub keys: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// One commit at a time per process (see [`Store::commit`]).
static COMMIT_TURN: Mutex<()> = Mutex::new(());

/// The default of sled's cache (`Store::open_cached` sets another). sled
/// counts it in bytes on disk; in memory it takes several times as much
/// (a million computers' compliance with 256 MiB took over 10 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether an error's text says there is no room: ENOSPC (28) or EFBIG (27).
/// sled passes some I/O failures on only as text.
fn disk_full(detail: &str) -> bool {
    [
        "os error 28",
        "os error 27",
        "code: 28",
        "code: 27",
        "No space left",
        "File too large",
        "StorageFull",
        "FileTooLarge",
    ]
    .iter()
    .any(|m| detail.contains(m))
}

/// Writes for [`Store::commit`] to apply in one atomic batch: sled's,
/// with their count.
#[derive(Default)]
pub(crate) struct Batch {
    inner: sled::Batch,
    writes: usize,
}

impl Batch {
    pub(crate) fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.writes += 1;
        self.inner.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: impl Into<sled::IVec>) {
        self.writes += 1;
        self.inner.remove(key);
    }
}

/// Frees what a commit of `writes` writes left for later. sled frees the
/// pages and values a write replaces through crossbeam's epoch collector,
/// which frees at most 8 bags of 64 each time a thread asks, and is asked
/// on one pin in 128. A batch is applied under one pin and leaves about as
/// many items as it has writes, so large batches outpace it and the
/// process grows with everything ever written. Measured with sled alone:
/// a million entries in commits of 10,000 took 2.4 GB, and 0.26 GB when
/// each commit asked once per 100 writes. This asks once per 32.
fn release_garbage(writes: usize) {
    for _ in 0..writes / 32 + 1 {
        sled::pin().flush();
    }
}

/// The sentinel file's name inside the store directory.
pub const SENTINEL: &str = "cascade-commits";

impl Drop for Store {
    fn drop(&mut self) {
        // Dropping the last handle of a sled database flushes it; two such
        // flushes of different databases at once (nodes of one process
        // stopping together) were seen to wait on each other for ever. They
        // take the commits' turn like every other flush.
        let _turn = COMMIT_TURN.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.sled.take());
    }
}

impl Store {
    /// The node this store belongs to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> &sled::Db {
        match &self.sled {
            Some((db, _)) => db,
            None => unreachable!("the database is taken only when the store is dropped"),
        }
    }

    fn tree(&self) -> &sled::Tree {
        match &self.sled {
            Some((_, tree)) => tree,
            None => unreachable!("the database is taken only when the store is dropped"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic in another writer left no half-written batch behind
        // (batches are atomic), so the lock can be taken over.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_format(&self) -> Result<()> {
        self.check_version()?;
        self.drop_index_of_format_4()?;
        self.check_owner()
    }

    /// Removes format 4's index of every record by update: after the
    /// migration to format 5, or what one cut off left. Nothing writes such
    /// keys since, so on a store without them this is one read.
    fn drop_index_of_format_4(&self) -> Result<()> {
        let _guard = self.lock();
        self.remove_all(keys::BY_UPDATE_V4)
    }

    /// Removes every key under `prefix`, a commit per 100,000 keys (the
    /// caller holds the store's lock).
    fn remove_all(&self, prefix: &[u8]) -> Result<()> {
        loop {
            let mut batch = crate::Batch::default();
            let mut removed = 0usize;
            for key in self.tree().scan_prefix(prefix).keys().take(100_000) {
                batch.remove(key.map_err(|e| self.io_error(e))?);
                removed += 1;
            }
            if removed == 0 {
                return Ok(());
            }
            self.commit(batch)?;
        }
    }

    /// Indexes the records held that are not compliant (format 5), a
    /// commit per 10,000 computers. What a cut-off build wrote is removed
    /// first: an older binary may have changed records since, without
    /// keeping this index.
    fn index_needs(&self) -> Result<()> {
        self.remove_all(keys::NEEDS)?;
        let mut pending = Pending::default();
        for (n, item) in self.scan(keys::COMPLIANCE).enumerate() {
            let (key, value) = item?;
            let computer = self.computer_in(&key[keys::COMPLIANCE.len()..])?;
            let records = codec::decode_plain(&computer, &value, None)
                .map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            compliance::index_needs(&mut pending, &computer, &[], &records);
            if (n + 1) % 10_000 == 0 {
                self.commit_pending(std::mem::take(&mut pending))?;
            }
        }
        self.commit_pending(pending)
    }

    fn check_version(&self) -> Result<()> {
        let _guard = self.lock();
        let stored = self
            .get(keys::FORMAT)?
            .map(|v| codec::u32_from(&v))
            .transpose()
            .map_err(|d| self.corrupt(d))?;
        match stored {
            None if self.tree().is_empty() => {
                let mut batch = crate::Batch::default();
                batch.insert(keys::FORMAT, &FORMAT_VERSION.to_be_bytes());
                self.commit(batch)
            }
            // Data without a marker predates markers: format 1.
            None => self.migrate(1),
            Some(found) if found > FORMAT_VERSION => Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            }),
            Some(found) if found < FORMAT_VERSION => self.migrate(found),
            Some(_) => Ok(()),
        }
    }

    /// Records which node the store belongs to, and refuses another node's.
    fn check_owner(&self) -> Result<()> {
        match self.get(keys::NODE)? {
            Some(v) if v.as_ref() == self.node.as_str().as_bytes() => Ok(()),
            Some(v) => Err(StoreError::Open {
                path: self.path.clone(),
                detail: format!("it belongs to node {}, not {}", String::from_utf8_lossy(&v), self.node),
            }),
            None => {
                let _guard = self.lock();
                let mut batch = crate::Batch::default();
                batch.insert(keys::NODE, self.node.as_str().as_bytes());
                self.commit(batch)
            }
        }
    }

    /// Brings an older store to the current format, one batch per format.
    fn migrate(&self, from: u32) -> Result<()> {
        let mut pending = Pending::default();
        if from < 2 {
            // Format 1 kept one JSON value per record and no indexes or
            // aggregates: gather each computer's records into one value and
            // build both.
            let mut overlay = compliance::Overlay::default();
            let mut docs: std::collections::BTreeMap<
                cascade_core::model::ComputerId,
                Vec<cascade_core::model::ComplianceRecord>,
            > = Default::default();
            for item in self.tree().scan_prefix(keys::COMPLIANCE) {
                let (key, value) = item.map_err(|e| self.corrupt(e.to_string()))?;
                let record =
                    codec::decode_v1_record(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
                pending.remove(key.to_vec());
                compliance::count(&mut overlay, &record, 1);
                docs.entry(record.computer.clone()).or_default().push(record);
            }
            for (computer, mut records) in docs {
                records.sort_by(|a, b| a.update.cmp(&b.update));
                compliance::write_doc(&mut pending, &computer, &[], &records);
            }
            overlay.write(&mut pending, self)?;
            // Each step is committed with its format: the next reads it.
            pending.insert(keys::FORMAT.to_vec(), 2u32.to_be_bytes().to_vec());
            self.commit_pending(std::mem::take(&mut pending))?;
        }
        if (2..5).contains(&from) {
            // Format 5 indexes the records that are not compliant by update
            // and site, instead of every record by update (format 1's were
            // indexed as they were rewritten above).
            self.index_needs()?;
        }
        if from < 3 {
            // Format 3 counts failures by installer code and keeps a summary
            // of every computer: both made from what is held.
            // (A format 1 store's records were counted in full above.)
            if from == 2 {
                // Counted from nothing: a format 1 migration cut off after
                // its format 2 commit has counted them already.
                self.remove_all(keys::COUNT_FAILURE)?;
                let mut overlay = compliance::Overlay::default();
                for records in self.all_records() {
                    for record in records? {
                        compliance::count_failure(&mut overlay, &record, 1);
                    }
                }
                overlay.write(&mut pending, self)?;
            }
            let summaries: Vec<_> = self.agents()?.iter().map(|a| a.summary()).collect();
            self.stage_summaries(&mut pending, &summaries)?;
        }
        if from < 4 {
            // Format 4 keeps the number of computers with compliance as a
            // count instead of counting their records on every read. The
            // records are committed by now (format 1's were rewritten above).
            let mut computers = 0u64;
            for item in self.tree().scan_prefix(keys::COMPLIANCE).keys() {
                item.map_err(|e| self.io_error(e))?;
                computers += 1;
            }
            if computers > 0 {
                pending.insert(keys::COUNT_COMPUTERS.to_vec(), computers.to_be_bytes().to_vec());
            }
        }
        pending.insert(keys::FORMAT.to_vec(), FORMAT_VERSION.to_be_bytes().to_vec());
        self.commit_pending(pending)
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree().get(key).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: sled::Error) -> StoreError {
        let detail = match e {
            sled::Error::Corruption { at, .. } => return self.corrupt(format!("damaged data at {at:?}")),
            sled::Error::Io(io) if matches!(io.raw_os_error(), Some(28) | Some(27)) => {
                return StoreError::DiskFull {
                    path: self.path.clone(),
                    detail: io.to_string(),
                };
            }
            other => other.to_string(),
        };
        // sled passes some failures of its flusher on as text only: ENOSPC
        // (28) and EFBIG (27) mean there is no room for what it writes.
        if disk_full(&detail) {
            StoreError::DiskFull {
                path: self.path.clone(),
                detail,
            }
        } else {
            StoreError::Write {
                path: self.path.clone(),
                detail,
            }
        }
    }

    /// A version of the objects (and overrides) of `kinds`: it grows after
    /// each commit that changes one of them, and only then. Read before a
    /// view of them is built, it says whether the view still holds.
    pub fn generation(&self, kinds: &[ObjectKind]) -> u64 {
        kinds
            .iter()
            .map(|k| self.generations[kind_index(*k)].load(Ordering::Acquire))
            .sum()
    }

    /// Commits staged writes; then the objects of the kinds they touched
    /// are a generation on.
    fn commit_pending(&self, mut pending: Pending) -> Result<()> {
        let kinds = std::mem::take(&mut pending.kinds);
        self.commit(pending.into_batch())?;
        self.touched(kinds);
        Ok(())
    }

    /// The kinds in the `kinds` mask (bit `i` for `ObjectKind::ALL[i]`)
    /// were changed by a commit made.
    fn touched(&self, kinds: u32) {
        for (i, generation) in self.generations.iter().enumerate() {
            if kinds & (1 << i) != 0 {
                generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Applies a batch atomically and makes it durable before returning.
    /// Callers hold the writer lock.
    fn commit(&self, mut batch: Batch) -> Result<()> {
        let next = self.commits.load(Ordering::Acquire) + 1;
        batch.insert(keys::COMMITS, &next.to_be_bytes());
        {
            // sled 0.34 guards every database of a process with one global
            // reader-writer lock: a batch takes it to write, a flush holds it
            // to read while it waits for the log, and the log's flusher needs
            // it to read. With several stores in one process (the demo, the
            // benchmarks, in-process tests) one store's batch waiting behind
            // another's flush could stop both. Commits of all stores in a
            // process take turns here; a node process has one store anyway.
            let _turn = COMMIT_TURN.lock().unwrap_or_else(|e| e.into_inner());
            self.tree().apply_batch(batch.inner).map_err(|e| self.io_error(e))?;
            self.db().flush().map_err(|e| self.io_error(e))?;
        }
        release_garbage(batch.writes);
        self.commits.store(next, Ordering::Release);
        if let Some(sentinel) = &self.sentinel {
            // Not synced: after a power cut it may lag the data, which is
            // safe; it must never be ahead of it, and it is written last.
            sentinel
                .write_all_at(&next.to_be_bytes(), 0)
                .map_err(|e| StoreError::Write {
                    path: self.path.clone(),
                    detail: format!("{SENTINEL}: {e}"),
                })?;
        }
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        self.tree()
            .scan_prefix(prefix)
            .map(move |r| r.map_err(|e| self.io_error(e)))
    }

    fn get_u64(&self, key: &[u8]) -> Result<u64> {
        match self.get(key)? {
            Some(v) => codec::u64_from(&v).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(key)))),
            None => Ok(0),
        }
    }

    /// JSON values under `prefix` keyed by big-endian sequence numbers,
    /// after `after`, oldest first.
    fn sequenced<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, T)>> {
        let mut start = prefix.to_vec();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for item in self.tree().range(start..).take(limit) {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            if !key.starts_with(prefix) {
                break;
            }
            let seq = keys::seq_of(&key[prefix.len()..])
                .ok_or_else(|| self.corrupt(format!("bad key {}", keys::show(&key))))?;
            out.push((
                seq,
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?,
            ));
        }
        Ok(out)
    }

    /// Whether the store keeps its data compressed on disk.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Bytes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db().size_on_disk().unwrap_or(0)
    }

    /// The live data by kind of key (the key's prefix up to its first `/`):
    /// how many keys, and the bytes of their keys and values. Reads every
    /// key.
    pub fn usage(&self) -> Result<std::collections::BTreeMap<String, Usage>> {
        let mut out: std::collections::BTreeMap<String, Usage> = std::collections::BTreeMap::new();
        for item in self.tree().iter() {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            let end = key.iter().position(|b| *b == b'/').map_or(key.len(), |i| i + 1);
            let kind = String::from_utf8_lossy(&key[..end]).into_owned();
            let entry = out.entry(kind).or_default();
            entry.keys += 1;
            entry.key_bytes += key.len() as u64;
            entry.value_bytes += value.len() as u64;
        }
        Ok(out)
    }
}

/// The writes of one operation: read back through before they are
/// committed, then turned into one sled batch.
#[derive(Debug, Default)]
struct Pending {
    values: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Origins' state hashes as staged (2 KB each: kept decoded, written
    /// once at the end).
    states: std::collections::HashMap<NodeId, cascade_core::seal::StateHash>,
    /// The object kinds whose objects or overrides are written (a mask,
    /// bit `i` for `ObjectKind::ALL[i]`).
    kinds: u32,
}

/// A kind's place in [`ObjectKind::ALL`].
fn kind_index(kind: ObjectKind) -> usize {
    ObjectKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Pending {
    /// Notes that objects or overrides of `kind` are written.
    fn touch(&mut self, kind: ObjectKind) {
        // Nothing here reads kinds this release does not know.
        if !matches!(kind, ObjectKind::Unknown(_)) {
            self.kinds |= 1 << kind_index(kind);
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.values.insert(key, Some(value));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.values.insert(key, None);
    }

    fn get(&self, store: &Store, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.values.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(store.get(key)?.map(|v| v.to_vec())),
        }
    }

    fn into_batch(mut self) -> Batch {
        for (origin, state) in std::mem::take(&mut self.states) {
            self.values.insert(keys::state(&origin), Some(state.to_bytes()));
        }
        let mut batch = crate::Batch::default();
        for (key, value) in self.values {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        batch
    }
}
