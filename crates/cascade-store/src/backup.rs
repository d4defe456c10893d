//! Consistent backups while the node runs, and restore.
//!
//! A backup is `CASCADE-STORE-BACKUP 1\n`, the node id line, then records of
//! `[key length u32][key][value length u32][value]`, a zero key length, and
//! the SHA-256 of everything before it.

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

    /// Checks that `data` is a whole, undamaged backup.
    pub fn verify_backup(data: &[u8]) -> Result<()> {
        if data.len() < MAGIC.len() + 32 || !data.starts_with(MAGIC) {
            return Err(StoreError::Backup("not a Cascade store backup".to_owned()));
        }
        let (body, digest) = data.split_at(data.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(StoreError::Backup(
                "checksum mismatch: the backup is damaged or truncated".to_owned(),
            ));
        }
        Ok(())
    }

    /// Restores a backup into an empty directory and opens it. The backup's
    /// checksum is verified before anything is written. The new store is
    /// made with `settings` (whether it compresses among them): restoring
    /// is how an existing store changes that.
    pub fn restore(mut input: impl Read, dir: &Path, settings: crate::Settings) -> Result<(Store, BackupStats)> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| StoreError::Backup(format!("cannot read the backup: {e}")))?;
        Store::verify_backup(&data)?;
        let body = &data[..data.len() - 32];
        if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(StoreError::Backup(format!(
                "{} is not an empty directory; restore into a new one",
                dir.display()
            )));
        }
        let mut rest = &body[MAGIC.len()..];
        let newline = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| StoreError::Backup("no node id line".to_owned()))?;
        let node = std::str::from_utf8(&rest[..newline])
            .ok()
            .and_then(|n| NodeId::new(n).ok())
            .ok_or_else(|| StoreError::Backup("bad node id line".to_owned()))?;
        rest = &rest[newline + 1..];
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            if rest.len() < n {
                return Err(StoreError::Backup("truncated entry".to_owned()));
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head.to_vec())
        };
        let len = |rest: &mut &[u8]| -> Result<usize> {
            let b = take(rest, 4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let store = Store::open_configured(dir, node, settings)?;
        let mut batch = sled::Batch::default();
        let mut stats = BackupStats {
            entries: 0,
            bytes: data.len() as u64,
        };
        loop {
            let key_len = len(&mut rest)?;
            if key_len == 0 {
                break;
            }
            let key = take(&mut rest, key_len)?;
            let value_len = len(&mut rest)?;
            let value = take(&mut rest, value_len)?;
            batch.insert(key, value);
            stats.entries += 1;
        }
        {
            let _guard = store.lock();
            store.commit(batch)?;
        }
        // Run the format check (and any migration) on what was restored.
        store.check_format()?;
        Ok((store, stats))
    }
}
