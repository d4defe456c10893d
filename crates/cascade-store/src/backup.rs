//! Consistent backups while the node runs, and restore.
//!
//! A backup is `CASCADE-STORE-BACKUP 1\n`, the node id line, then records of
//! `[key length u32][key][value length u32][value]`, a zero key length, and
//! the SHA-256 of everything before it. Backups are written, copied and
//! restored as streams: none is held in memory whole.

use std::io::{Read, Write};
use std::path::Path;

use cascade_core::model::NodeId;
use sha2::{Digest, Sha256};

use crate::{Result, Store, StoreError};

const MAGIC: &[u8] = b"CASCADE-STORE-BACKUP 1\n";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    pub entries: u64,
    pub bytes: u64,
}

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.inner
            .write_all(data)
            .map_err(|e| StoreError::Backup(format!("cannot write the backup: {e}")))
    }
}

impl Store {
    /// Writes a consistent copy of the store: writers wait while it is made.
    pub fn backup(&self, out: impl Write) -> Result<BackupStats> {
        let _guard = self.lock();
        let mut w = Hashing {
            inner: out,
            hasher: Sha256::new(),
            bytes: 0,
        };
        w.put(MAGIC)?;
        w.put(format!("{}\n", self.node).as_bytes())?;
        let mut entries = 0;
        for item in self.tree().iter() {
            let (key, value) = item.map_err(|e| self.io_error(e))?;
            w.put(&(key.len() as u32).to_be_bytes())?;
            w.put(&key)?;
            w.put(&(value.len() as u32).to_be_bytes())?;
            w.put(&value)?;
            entries += 1;
        }
        w.put(&0u32.to_be_bytes())?;
        let digest = w.hasher.clone().finalize();
        w.inner
            .write_all(&digest)
            .map_err(|e| StoreError::Backup(format!("cannot write the backup: {e}")))?;
        w.inner
            .flush()
            .map_err(|e| StoreError::Backup(format!("cannot write the backup: {e}")))?;
        Ok(BackupStats {
            entries,
            bytes: w.bytes + 32,
        })
    }

    /// Copies a backup from `input` to `out` as it reads it, and checks it
    /// is whole and undamaged: its header at the start, its checksum at the
    /// end. Memory stays small whatever the backup's size; `out` must not
    /// be taken for a backup unless this returns `Ok` (its byte count).
    pub fn copy_backup(input: impl Read, mut out: impl Write) -> Result<u64> {
        let write = |out: &mut dyn Write, data: &[u8]| {
            out.write_all(data)
                .map_err(|e| StoreError::Backup(format!("cannot write the backup: {e}")))
        };
        let mut r = Reader::new(input);
        let (_, line) = r.header()?;
        write(&mut out, MAGIC)?;
        write(&mut out, &line)?;
        write(&mut out, b"\n")?;
        loop {
            let data = r.take(READ_CHUNK)?;
            if data.is_empty() {
                break;
            }
            write(&mut out, data)?;
        }
        // What went out before is not a backup until its checksum is here.
        let digest = r.check_digest()?;
        write(&mut out, &digest)?;
        Ok(r.bytes + 32)
    }

    /// Restores a backup into an empty (or new) directory and opens it. The
    /// backup is read as a stream and written in commits of at most
    /// [`RESTORE_BATCH`] entries, so memory stays small whatever its size.
    /// Until its checksum at the end has been checked, the directory holds
    /// [`RESTORING`], which makes the store refuse to open: a restore that
    /// fails (a damaged or truncated backup, a full disk) empties the
    /// directory again, and one that is killed leaves a store no node will
    /// take for the backup's. The new store is made with `settings`
    /// (whether it compresses among them): restoring is how an existing
    /// store changes that.
    pub fn restore(input: impl Read, dir: &Path, settings: crate::Settings) -> Result<(Store, BackupStats)> {
        let existed = dir.exists();
        if existed && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(StoreError::Backup(format!(
                "{} is not an empty directory; restore into a new one",
                dir.display()
            )));
        }
        let mut r = Reader::new(input);
        // Nothing is written for an input that is not a backup at all.
        let (node, _) = r.header()?;
        let marker = dir.join(RESTORING);
        let created = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::write(
                    &marker,
                    b"a restore is writing this store; it is not whole until this file is gone\n",
                )
            })
            .map_err(|e| StoreError::Backup(format!("cannot write {}: {e}", marker.display())));
        let restored = created.and_then(|()| restore_entries(&mut r, dir, node, settings));
        match restored {
            Ok(done) => {
                std::fs::remove_file(&marker)
                    .and_then(|()| std::fs::File::open(dir)?.sync_all())
                    .map_err(|e| StoreError::Backup(format!("cannot remove {}: {e}", marker.display())))?;
                Ok(done)
            }
            Err(e) => {
                // Everything in the directory is this restore's: it was
                // empty. The marker goes last, so what cannot be removed
                // is still refused.
                if let Ok(entries) = dir.read_dir() {
                    for entry in entries.flatten() {
                        let path = entry.path();
                        if path != marker {
                            let _ = if path.is_dir() {
                                std::fs::remove_dir_all(&path)
                            } else {
                                std::fs::remove_file(&path)
                            };
                        }
                    }
                }
                let _ = std::fs::remove_file(&marker);
                if !existed {
                    let _ = std::fs::remove_dir(dir);
                }
                Err(e)
            }
        }
    }
}

/// A file in a store's directory while a restore writes it; a store that
/// holds it does not open.
pub const RESTORING: &str = "restore-incomplete";

/// Entries in one commit of a restore, at most.
pub const RESTORE_BATCH: usize = 10_000;

/// Bytes of keys and values in one commit of a restore, at most (entries
/// of any size keep memory bounded).
const RESTORE_BATCH_BYTES: usize = 64 << 20;

/// The longest node id line a backup may have.
const MAX_ID_LINE: usize = 1024;

/// Writes the entries `r` reads into a new store at `dir`, checks the
/// backup's checksum, and opens the store as it now is.
fn restore_entries(
    r: &mut Reader<impl Read>,
    dir: &Path,
    node: NodeId,
    settings: crate::Settings,
) -> Result<(Store, BackupStats)> {
    let store = Store::open_restoring(dir, node, settings)?;
    let mut stats = BackupStats::default();
    let mut batch = crate::Batch::default();
    let (mut in_batch, mut batch_bytes) = (0, 0);
    loop {
        let key_len = r.length("an entry's key length")?;
        if key_len == 0 {
            break;
        }
        let key = r.bytes(key_len, "an entry's key")?;
        let value_len = r.length("an entry's value length")?;
        let value = r.bytes(value_len, "an entry's value")?;
        batch_bytes += key.len() + value.len();
        batch.insert(key, value);
        stats.entries += 1;
        in_batch += 1;
        if in_batch == RESTORE_BATCH || batch_bytes >= RESTORE_BATCH_BYTES {
            let _guard = store.lock();
            store.commit(std::mem::take(&mut batch))?;
            (in_batch, batch_bytes) = (0, 0);
        }
    }
    r.check_digest()?;
    if in_batch > 0 {
        let _guard = store.lock();
        store.commit(batch)?;
    }
    stats.bytes = r.bytes + 32;
    // Run the format check (and any migration) on what was restored.
    store.check_format()?;
    Ok((store, stats))
}

/// What a backup reader asks of its input at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Reads a backup from its start, hashing what it hands out. The last 32
/// bytes of the input are never handed out: they are the checksum, not
/// part of what it covers.
struct Reader<R> {
    inner: R,
    hasher: Sha256,
    /// Bytes handed out (and hashed) so far.
    bytes: u64,
    /// Bytes read and not yet handed out: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Whether the input has ended.
    ended: bool,
}

impl<R: Read> Reader<R> {
    fn new(inner: R) -> Reader<R> {
        Reader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            buf: vec![0; READ_CHUNK + 32],
            start: 0,
            end: 0,
            ended: false,
        }
    }

    /// Reads until `want` bytes besides the last 32 are at hand, or the
    /// input has ended.
    fn refill(&mut self, want: usize) -> Result<()> {
        let need = want + 32;
        while !self.ended && self.end - self.start < need {
            // Room to read into after what is at hand.
            if self.buf.len() - self.start < need.max(READ_CHUNK) {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < need.max(READ_CHUNK) {
                    self.buf.resize(need.max(READ_CHUNK), 0);
                }
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.ended = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::Backup(format!("cannot read the backup: {e}"))),
            }
        }
        Ok(())
    }

    /// Up to `n` bytes of what the checksum covers; empty once only the
    /// input's last 32 bytes are left.
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        self.refill(n)?;
        let at_hand = (self.end - self.start).saturating_sub(32).min(n);
        let from = self.start;
        self.start += at_hand;
        let out = &self.buf[from..from + at_hand];
        self.hasher.update(out);
        self.bytes += at_hand as u64;
        Ok(out)
    }

    /// Exactly `n` bytes of what the checksum covers; `what` names them
    /// when the backup ends first.
    fn bytes(&mut self, n: usize, what: &str) -> Result<Vec<u8>> {
        // Grows with what arrives, not with what a damaged length says.
        let mut out = Vec::with_capacity(n.min(READ_CHUNK));
        while out.len() < n {
            let got = self.take((n - out.len()).min(READ_CHUNK))?;
            if got.is_empty() {
                return Err(self.ends_inside(what));
            }
            out.extend_from_slice(got);
        }
        Ok(out)
    }

    /// The error for input that ends inside `what`: cut short, damaged
    /// (a length changed), or, with a right checksum, not written by Cascade.
    fn ends_inside(&self, what: &str) -> StoreError {
        let rest = &self.buf[self.start..self.end];
        StoreError::Backup(if rest.len() < 32 {
            format!("the backup is truncated: it ends inside {what}")
        } else if self.hasher.clone().finalize().as_slice() == rest {
            format!("the backup's checksum is right but it ends inside {what}: it was not written by Cascade")
        } else {
            format!("checksum mismatch: the backup is damaged or truncated (it ends inside {what})")
        })
    }

    fn length(&mut self, what: &str) -> Result<usize> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The header: the magic line, then the node id line; the node and
    /// the line's text.
    fn header(&mut self) -> Result<(NodeId, Vec<u8>)> {
        let magic = self.take(MAGIC.len())?;
        if magic != MAGIC {
            return Err(StoreError::Backup("not a Cascade store backup".to_owned()));
        }
        self.refill(MAX_ID_LINE + 1)?;
        let at_hand = (self.end - self.start).saturating_sub(32).min(MAX_ID_LINE + 1);
        let line = self.buf[self.start..self.start + at_hand]
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| StoreError::Backup("no node id line".to_owned()))?;
        let line = self.take(line + 1)?[..line].to_vec();
        let node = std::str::from_utf8(&line)
            .ok()
            .and_then(|n| NodeId::new(n).ok())
            .ok_or_else(|| StoreError::Backup("bad node id line".to_owned()))?;
        Ok((node, line))
    }

    /// Reads to the end and checks the checksum against what was read;
    /// the checksum's bytes.
    fn check_digest(&mut self) -> Result<[u8; 32]> {
        let mut trailing = 0;
        loop {
            let n = self.take(READ_CHUNK)?.len();
            if n == 0 {
                break;
            }
            trailing += n;
        }
        let digest: [u8; 32] = self.buf[self.start..self.end]
            .try_into()
            .map_err(|_| StoreError::Backup("the backup is truncated: its checksum is missing".to_owned()))?;
        if trailing > 0 || self.hasher.clone().finalize().as_slice() != digest {
            return Err(StoreError::Backup(
                "checksum mismatch: the backup is damaged or truncated".to_owned(),
            ));
        }
        Ok(digest)
    }
}
