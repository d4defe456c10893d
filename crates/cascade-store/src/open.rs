//! Opening a store: the settings, sled's configuration for them, and the
//! checks made before anything is read (the commit sentinel, the owner,
//! sled's own refusals named).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use cascade_core::model::NodeId;

use crate::{DEFAULT_CACHE_BYTES, Result, SENTINEL, SignerSlot, Store, StoreError, codec, disk_full, keys};

/// How a store on disk is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// sled's cache, in bytes of data on disk.
    pub cache_bytes: u64,
    /// Whether a store created now keeps its data compressed (zstd, in
    /// sled's log). A store keeps what it was created with: an existing
    /// one opens as it is ([`Store::compressed`] tells which).
    pub compress: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cache_bytes: DEFAULT_CACHE_BYTES,
            compress: false,
        }
    }
}

/// What kind of store an open is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In memory, gone when dropped.
    Temporary,
    /// On disk.
    Durable,
    /// On disk, being written by a restore.
    Restoring,
}

/// sled's settings for a store on disk.
fn durable_config(path: &Path, cache_bytes: u64, compress: bool) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(500))
        .use_compression(compress)
}

/// Whether sled refused to open a store because it was created with the
/// other compression setting.
fn other_compression(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Unsupported(m) if m.contains("use_compression"))
}

/// sled's "could not acquire lock" (another handle has the store open).
fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn open_error(path: &Path, detail: String) -> StoreError {
    if disk_full(&detail) {
        StoreError::DiskFull {
            path: path.to_path_buf(),
            detail,
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            detail,
        }
    }
}

impl Store {
    /// Opens (or creates) the store of node `node` at `path`.
    pub fn open(path: &Path, node: NodeId) -> Result<Store> {
        Self::open_configured(path, node, Settings::default())
    }

    /// [`Self::open`] with `settings`.
    pub fn open_configured(path: &Path, node: NodeId, settings: Settings) -> Result<Store> {
        Self::open_with(
            &|compress| durable_config(path, settings.cache_bytes, compress),
            settings.compress,
            path,
            Some(node),
            Mode::Durable,
        )
    }

    /// [`Self::open_configured`] for a restore writing into `path`: the
    /// one open that takes a store holding [`crate::backup::RESTORING`].
    pub(crate) fn open_restoring(path: &Path, node: NodeId, settings: Settings) -> Result<Store> {
        Self::open_with(
            &|compress| durable_config(path, settings.cache_bytes, compress),
            settings.compress,
            path,
            Some(node),
            Mode::Restoring,
        )
    }

    /// A store in memory that disappears when dropped (for tests and benchmarks).
    pub fn temporary(node: NodeId) -> Result<Store> {
        Self::open_with(
            &|_| sled::Config::new().temporary(true),
            false,
            Path::new("(temporary)"),
            Some(node),
            Mode::Temporary,
        )
    }

    /// Opens with the configuration `config` makes for a compression
    /// setting, `compress` for a new store and for one made with it (one
    /// made with the other setting opens with that); `node` is the owner to
    /// check, or `None` to take the one the store records.
    fn open_with(
        config: &dyn Fn(bool) -> sled::Config,
        mut compress: bool,
        path: &Path,
        node: Option<NodeId>,
        mode: Mode,
    ) -> Result<Store> {
        let durable = mode != Mode::Temporary;
        if mode == Mode::Durable && path.join(crate::backup::RESTORING).exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                detail: format!(
                    "a restore into it did not finish ({} is there): empty the directory and restore the backup again",
                    crate::backup::RESTORING
                ),
            });
        }
        let sentinel_path = path.join(SENTINEL);
        let acknowledged = if durable && sentinel_path.exists() {
            let bytes = std::fs::read(&sentinel_path).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                detail: format!("{SENTINEL}: {e}"),
            })?;
            Some(codec::u64_from(&bytes).map_err(|d| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("{SENTINEL}: {d}"),
            })?)
        } else {
            None
        };
        let path_buf = path.to_path_buf();
        // sled panics on some kinds of damage instead of returning an error.
        // It also lets go of its file lock a moment after the last handle
        // in this process is dropped: wait a little for that, not for
        // another process.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut flipped = false;
        let opened = loop {
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config(compress).open()));
            match &attempt {
                Ok(Err(sled::Error::Io(e))) if is_lock_error(e) && std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Ok(Err(e)) if other_compression(e) && !flipped => {
                    flipped = true;
                    compress = !compress;
                }
                _ => break attempt,
            }
        };
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Corruption { at, bt: _ })) => {
                return Err(StoreError::Corrupt {
                    path: path_buf,
                    detail: format!("damaged data at {at:?}"),
                });
            }
            Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) => {
                return Err(StoreError::Open {
                    path: path_buf,
                    detail: format!("it is in use by another process (a running node?): {e}"),
                });
            }
            Ok(Err(e)) => return Err(open_error(&path_buf, e.to_string())),
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the storage engine failed while reading it".to_owned());
                return Err(StoreError::Corrupt { path: path_buf, detail });
            }
        };
        let tree = db.open_tree("cascade").map_err(|e| StoreError::Corrupt {
            path: path_buf.clone(),
            detail: e.to_string(),
        })?;
        let commits = match tree.get(keys::COMMITS) {
            Ok(Some(v)) => codec::u64_from(&v).map_err(|d| StoreError::Corrupt {
                path: path_buf.clone(),
                detail: d,
            })?,
            Ok(None) => 0,
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: path_buf,
                    detail: e.to_string(),
                });
            }
        };
        if let Some(acknowledged) = acknowledged
            && commits < acknowledged
        {
            return Err(StoreError::Corrupt {
                path: path_buf,
                detail: format!(
                    "acknowledged writes are missing: the data holds commit {commits} but commit {acknowledged} was acknowledged; the data files were damaged, truncated or replaced. Restore a backup"
                ),
            });
        }
        let sentinel = if durable {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&sentinel_path)
                .map_err(|e| open_error(&path_buf, format!("{SENTINEL}: {e}")))?;
            file.write_all_at(&commits.to_be_bytes(), 0)
                .map_err(|e| open_error(&path_buf, format!("{SENTINEL}: {e}")))?;
            file.sync_all()
                .map_err(|e| open_error(&path_buf, format!("{SENTINEL}: {e}")))?;
            Some(file)
        } else {
            None
        };
        let node = match node {
            Some(node) => node,
            None => match tree.get(keys::NODE) {
                Ok(Some(v)) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|n| NodeId::new(n).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        path: path_buf.clone(),
                        detail: "the stored node id is not valid".to_owned(),
                    })?,
                Ok(None) => {
                    return Err(StoreError::Open {
                        path: path_buf,
                        detail: "the store does not say which node it belongs to".to_owned(),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        path: path_buf,
                        detail: e.to_string(),
                    });
                }
            },
        };
        let store = Store {
            sled: Some((db, tree)),
            path: path_buf,
            node,
            writer: Mutex::new(()),
            commits: AtomicU64::new(commits),
            sentinel,
            signer: SignerSlot::default(),
            generations: Default::default(),
            compressed: compress,
        };
        store.check_format()?;
        Ok(store)
    }

    /// Opens an existing store as the node it belongs to.
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.join("db").exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                detail: "there is no node store here".to_owned(),
            });
        }
        Self::open_with(
            &|compress| durable_config(path, DEFAULT_CACHE_BYTES, compress),
            false,
            path,
            None,
            Mode::Durable,
        )
    }
}
