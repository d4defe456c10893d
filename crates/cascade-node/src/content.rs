//! Update content at a node: files in the content directory named by
//! their sha256, always verified before they get that name. A node pulls a
//! file from its parent only when asked for it (by one of its agents, or a
//! child that was asked in turn) for an approved update, or when an admin
//! pre-stages it; concurrent requests for one file share one transfer. The
//! root takes files from its own disk or the vendor's URL. A cache limit
//! evicts unapproved, then superseded content, never what a computer here
//! still has to install.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ChangeOp, Object, ObjectKind};
use cascade_core::update::Content;
use serde::Serialize;

use crate::Node;

/// The largest file a node fetches.
pub const CONTENT_LIMIT: u64 = 64 << 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl ContentError {
    pub fn status(&self) -> tonic::Status {
        match self {
            ContentError::NotFound(m) => tonic::Status::not_found(m.clone()),
            ContentError::Refused(m) => tonic::Status::permission_denied(m.clone()),
            ContentError::Unavailable(m) => tonic::Status::unavailable(m.clone()),
            ContentError::Failed(m) => tonic::Status::internal(m.clone()),
        }
    }
}

/// A transfer in progress.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct InFlight {
    pub sha256: String,
    pub size: u64,
    pub received: u64,
}

/// Counters and transfers of a node's content.
#[derive(Debug, Default)]
pub(crate) struct ContentState {
    /// Transfers in progress, one per file however many ask for it.
    transfers: std::sync::Mutex<HashMap<String, Arc<Transfer>>>,
    /// Decisions on room in the cache, one at a time.
    room: std::sync::Mutex<()>,
    /// Bytes fetched from the parent or the vendor.
    pub(crate) fetched_bytes: AtomicU64,
    pub(crate) fetches: AtomicU64,
    /// Bytes served to agents and children.
    pub(crate) served_bytes: AtomicU64,
    pub(crate) evicted: AtomicU64,
    /// The content index and the change count it was built at.
    index: std::sync::Mutex<Option<(u64, ContentIndex)>>,
    /// At the root: files whose size the catalog does not give, being
    /// downloaded from the vendor to learn it.
    learning: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// One file on its way here. It goes on when those who asked for it
/// leave; whoever asks meanwhile is served from it as it is verified.
#[derive(Debug)]
pub(crate) struct Transfer {
    size: u64,
    received: AtomicU64,
    /// Room in the cache was found for it.
    admitted: std::sync::atomic::AtomicBool,
    flow: tokio::sync::watch::Sender<Flow>,
}

/// How far a transfer is.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// The root's manifest, once the parent sent it (chunks are then
    /// verified, and served on, as they arrive).
    pub manifest: Option<Arc<cascade_content::SignedManifest>>,
    /// The leading bytes of `<sha256>.part` that are verified.
    pub verified: u64,
    /// The verified file, or why the transfer failed.
    pub end: Option<Result<PathBuf, ContentError>>,
}

/// What a request for content is served from.
#[derive(Debug)]
pub enum Source {
    /// The verified file.
    Ready(PathBuf),
    /// A transfer in progress, of a file of `size` bytes.
    Growing {
        flow: tokio::sync::watch::Receiver<Flow>,
        size: u64,
    },
}

/// A transfer's link to the download: manifests checked here, verified
/// bytes announced to whoever waits.
struct Watch<'a> {
    node: &'a Node,
    transfer: &'a Transfer,
}

impl cascade_content::Chunks for Watch<'_> {
    fn manifest(&self, manifest: &cascade_content::SignedManifest) -> Result<(), String> {
        self.node.check_manifest(manifest)?;
        let manifest = Arc::new(manifest.clone());
        self.transfer.flow.send_modify(|f| f.manifest = Some(manifest));
        Ok(())
    }

    fn verified(&self, bytes: u64) {
        self.transfer.flow.send_modify(|f| f.verified = bytes);
    }
}

/// Every content file the catalog names, by sha256.
pub type ContentIndex = Arc<HashMap<String, Known>>;

/// One file `add_content` looked at, and its sha256 or why it was left.
pub type Added = (String, Result<String, String>);

/// What the catalog says of one file.
#[derive(Debug, Clone)]
pub struct Known {
    pub content: Content,
    pub updates: Vec<UpdateId>,
    pub approved: bool,
    pub superseded: bool,
}

impl Node {
    /// Every content file the catalog names, by sha256.
    pub fn content_index(&self) -> Result<HashMap<String, Known>, cascade_store::StoreError> {
        let mut updates = Vec::new();
        for o in self.effective_objects(ObjectKind::Update)? {
            if let Object::Update(u) = o {
                updates.push(*u);
            }
        }
        let approved: BTreeSet<UpdateId> = self
            .store
            .objects(ObjectKind::Approval)?
            .into_iter()
            .filter_map(|s| match s.object.into_value() {
                Object::Approval(a) => Some(a.update),
                _ => None,
            })
            .collect();
        let catalog = cascade_core::Catalog::new(updates.iter().cloned());
        let mut out: HashMap<String, Known> = HashMap::new();
        for u in &updates {
            for c in &u.content {
                let entry = out.entry(c.sha256.to_ascii_lowercase()).or_insert_with(|| Known {
                    content: c.clone(),
                    updates: Vec::new(),
                    approved: false,
                    superseded: true,
                });
                entry.updates.push(u.id.clone());
                entry.approved |= approved.contains(&u.id);
                entry.superseded &= catalog.is_superseded(&u.id);
            }
        }
        Ok(out)
    }

    /// The content index, rebuilt when the node's objects changed.
    async fn cached_index(self: &Arc<Self>) -> Result<ContentIndex, ContentError> {
        let version = *self.subscribe_changes().borrow();
        if let Some((v, index)) = self.content.index.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && *v == version
        {
            return Ok(index.clone());
        }
        let node = self.clone();
        let index = Arc::new(
            node.run(move |node| node.content_index())
                .await
                .map_err(|e| ContentError::Failed(e.to_string()))?,
        );
        *self.content.index.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, index.clone()));
        Ok(index)
    }

    /// The file of `sha256` here, pulled from the parent first when this
    /// node lacks it. `staging` (an admin's pre-staging) allows content of
    /// updates that are not approved.
    pub async fn ensure_content(self: &Arc<Self>, sha256: &str, staging: bool) -> Result<PathBuf, ContentError> {
        match self.open_content(sha256, staging).await? {
            Source::Ready(path) => Ok(path),
            Source::Growing { mut flow, .. } => loop {
                if let Some(end) = flow.borrow_and_update().end.clone() {
                    return end;
                }
                if flow.changed().await.is_err() {
                    return Err(ContentError::Failed(format!("the transfer of {sha256} stopped")));
                }
            },
        }
    }

    /// The file of `sha256` here, or the transfer that brings it (started
    /// now unless one is under way). `staging` (an admin's pre-staging, or
    /// a child, which decided it needs the file) allows content of
    /// updates that are not approved.
    pub async fn open_content(self: &Arc<Self>, sha256: &str, staging: bool) -> Result<Source, ContentError> {
        let path = self
            .content_path(sha256)
            .ok_or_else(|| ContentError::Refused(format!("{sha256:?} is not a lower-case hex sha256")))?;
        // Children and admins decided they need it; an agent gets only
        // content of approved updates, cached or not.
        if path.exists() && staging {
            return Ok(Source::Ready(path));
        }
        let index = self.cached_index().await?;
        let known = index
            .get(sha256)
            .cloned()
            .ok_or_else(|| ContentError::NotFound(format!("content {sha256} is not in node {}'s catalog", self.id)))?;
        if !known.approved && !staging {
            return Err(ContentError::Refused(format!(
                "content {sha256} belongs to updates no policy approves ({})",
                known
                    .updates
                    .iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // The catalog does not give the size (0, and the file is not a
        // known empty one): the root learns it first. Other nodes ask their
        // parent as usual, which starts that at the root and says so.
        if known.content.size == 0
            && self.parent_address().is_none()
            && !std::fs::metadata(&path).is_ok_and(|m| m.len() == 0)
        {
            return Err(self.learn_size(sha256, &known.content));
        }
        let mut transfers = self.content.transfers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = transfers.get(sha256) {
            return Ok(Source::Growing {
                flow: t.flow.subscribe(),
                size: t.size,
            });
        }
        // A transfer leaves the map only after its file has its name.
        if path.exists() {
            return Ok(Source::Ready(path));
        }
        let size = known.content.size;
        let (flow, watching) = tokio::sync::watch::channel(Flow::default());
        let transfer = Arc::new(Transfer {
            size: known.content.size,
            received: AtomicU64::new(0),
            admitted: Default::default(),
            flow,
        });
        transfers.insert(sha256.to_owned(), transfer.clone());
        drop(transfers);
        let node = self.clone();
        let sha = sha256.to_owned();
        tokio::spawn(async move {
            let result = match node.make_room(&transfer, &index).await {
                Ok(()) => node.transfer(&known.content, &transfer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(sha256 = %sha, error = %e, "content transfer failed");
            }
            node.content
                .fetched_bytes
                .fetch_add(transfer.received.load(Ordering::Relaxed), Ordering::Relaxed);
            node.content
                .transfers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&sha);
            transfer.flow.send_modify(|f| f.end = Some(result));
        });
        Ok(Source::Growing { flow: watching, size })
    }

    /// Content whose size the catalog does not give (winget manifests give
    /// none) cannot go through the tree, which checks every transfer
    /// against its size. The root downloads it from the vendor (held to
    /// the content limit, verified by sha256) and publishes the update
    /// again with the size; meanwhile requests are told to come back.
    fn learn_size(self: &Arc<Self>, sha256: &str, content: &Content) -> ContentError {
        let later = |why: &str| {
            ContentError::Unavailable(format!(
                "content {sha256} ({}): the catalog does not give its size yet; {why}; try again shortly",
                content.file_name
            ))
        };
        if !self
            .content
            .learning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_owned())
        {
            return later("the root is downloading it to learn it");
        }
        let node = self.clone();
        let sha = sha256.to_owned();
        let content = content.clone();
        tokio::spawn(async move {
            let path = node.config.content_dir.join(&sha);
            let fetched = if path.exists() {
                Ok(path)
            } else {
                let progress = AtomicU64::new(0);
                match content.url.clone() {
                    Some(url) => {
                        node.content.fetches.fetch_add(1, Ordering::Relaxed);
                        crate::vendor::download(
                            &url,
                            &content,
                            &node.config.content_dir,
                            CONTENT_LIMIT,
                            &progress,
                            &node.config.vendor,
                        )
                        .await
                    }
                    None => Err(format!("content {sha}: the catalog gives neither its size nor a URL")),
                }
            };
            let result = match fetched {
                Ok(path) => node.publish_size(&sha, &path).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(sha256 = %sha, error = %e, "could not learn the size of content");
            }
            node.content
                .learning
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&sha);
        });
        later("the root is downloading it to learn it")
    }

    /// The root's updates that name `sha256` without a size, published
    /// again with the size of the verified file at `path`.
    async fn publish_size(self: &Arc<Self>, sha256: &str, path: &std::path::Path) -> Result<(), String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if size == 0 {
            // An empty file: size 0 was right, nothing to publish.
            return Ok(());
        }
        let node = self.clone();
        let sha = sha256.to_owned();
        let ops = node
            .run(move |node| -> Result<Vec<ChangeOp>, cascade_store::StoreError> {
                let mut ops = Vec::new();
                for stored in node.store.objects(ObjectKind::Update)? {
                    if stored.origin != node.id {
                        continue;
                    }
                    let Object::Update(mut update) = stored.object.into_value() else {
                        continue;
                    };
                    let mut changed = false;
                    for c in &mut update.content {
                        if c.size == 0 && c.sha256.eq_ignore_ascii_case(&sha) {
                            c.size = size;
                            changed = true;
                        }
                    }
                    if changed {
                        ops.push(ChangeOp::Upsert(Object::Update(update)));
                    }
                }
                Ok(ops)
            })
            .await
            .map_err(|e| e.to_string())?;
        if !ops.is_empty() {
            tracing::info!(
                sha256,
                size,
                updates = ops.len(),
                "learned the size of content from the vendor"
            );
            self.append_local_many(ops).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The manifest to send a child with `<sha256>`: the one kept beside
    /// it; at the root, made (and signed) when there is none, from the
    /// file read once more, which must still have its sha256. `None` where
    /// the file came without one.
    pub fn manifest_for(&self, sha256: &str) -> Result<Option<cascade_content::SignedManifest>, ContentError> {
        let dir = &self.config.content_dir;
        let kept = cascade_content::manifest_path(dir, sha256);
        let is_root = self.parent_address().is_none();
        let signer = self.config.tls.signer();
        if let Ok(m) = cascade_content::SignedManifest::read(&kept)
            && m.manifest.sha256 == sha256
        {
            // The root signs again with its current key (an older one
            // may since have been revoked); its file was verified when
            // the manifest was made.
            if !is_root || m.key == cascade_core::seal::Signer::key(&*signer) {
                return Ok(Some(m));
            }
            let signed = m.manifest.sign(&*signer).map_err(ContentError::Failed)?;
            signed.write(&kept).map_err(|e| ContentError::Failed(e.to_string()))?;
            return Ok(Some(signed));
        }
        if !is_root {
            return Ok(None);
        }
        let path = dir.join(sha256);
        let (actual, manifest) =
            cascade_content::describe(&path).map_err(|e| ContentError::Failed(format!("content {sha256}: {e}")))?;
        if actual != sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(ContentError::Failed(format!(
                "content {sha256} here is damaged: hash mismatch, its sha256 is now {actual}; removed"
            )));
        }
        let signed = manifest.sign(&*signer).map_err(ContentError::Failed)?;
        signed.write(&kept).map_err(|e| ContentError::Failed(e.to_string()))?;
        Ok(Some(signed))
    }

    /// One file from the parent (chunk by chunk against the root's
    /// manifest when the parent sends one), or at the root from the
    /// vendor's URL; what fails verification is discarded and fetched
    /// once more.
    async fn transfer(self: &Arc<Self>, content: &Content, transfer: &Arc<Transfer>) -> Result<PathBuf, ContentError> {
        let dir = self.config.content_dir.clone();
        let Some(parent) = self.parent_address() else {
            return self.download_from_vendor(content, transfer).await;
        };
        let (cert_pem, key_pem) = self.config.tls.identity();
        let expect = self.parent_id().ok_or_else(|| {
            ContentError::Unavailable(format!("will not connect to {parent}: the parent's id is not known"))
        })?;
        let channel = crate::channel(&parent, Some(&expect), &self.config.ca_pem, &cert_pem, &key_pem)
            .await
            .map_err(|e| ContentError::Unavailable(format!("cannot reach the parent {parent}: {e}")))?;
        let mut client =
            cascade_proto::v1::agents_client::AgentsClient::new(channel).max_decoding_message_size(8 << 20);
        let watch = Watch { node: self, transfer };
        let options = cascade_content::Options {
            limit: CONTENT_LIMIT,
            floor: cascade_content::Floor::DEFAULT,
            progress: Some(&transfer.received),
            chunks: Some(&watch),
        };
        let mut last = String::new();
        for _ in 0..2 {
            self.content.fetches.fetch_add(1, Ordering::Relaxed);
            match cascade_content::download_with(&mut client, content, &dir, &options).await {
                Ok(done) => return Ok(done.path),
                Err(
                    e @ (cascade_content::ContentError::Mismatch { .. }
                    | cascade_content::ContentError::ChunkMismatch { .. }),
                ) => {
                    tracing::warn!(error = %e, "content from the parent failed verification; fetching again");
                    last = e.to_string();
                }
                Err(e) => return Err(ContentError::Unavailable(e.to_string())),
            }
        }
        Err(ContentError::Failed(last))
    }

    /// The root's only source besides its disk: the vendor's URL.
    async fn download_from_vendor(&self, content: &Content, transfer: &Transfer) -> Result<PathBuf, ContentError> {
        let Some(url) = content.url.clone() else {
            return Err(ContentError::NotFound(format!(
                "content {} ({}) is not on node {}, which has no parent, and the catalog gives no URL: add it with content.add",
                content.sha256, content.file_name, self.id
            )));
        };
        self.content.fetches.fetch_add(1, Ordering::Relaxed);
        crate::vendor::download(
            &url,
            content,
            &self.config.content_dir,
            CONTENT_LIMIT,
            &transfer.received,
            &self.config.vendor,
        )
        .await
        .map_err(|e| ContentError::Unavailable(e.to_string()))
    }

    /// Frees room for `need` bytes under the cache limit: unapproved
    /// content first, then superseded; never what a computer here still
    /// has to install. Refuses when that is not enough.
    /// Transfers admitted before count as held: two downloads at once
    /// cannot both take the same room.
    async fn make_room(
        self: &Arc<Self>,
        transfer: &Arc<Transfer>,
        index: &HashMap<String, Known>,
    ) -> Result<(), ContentError> {
        let Some(limit) = self.config.content_cache_bytes else {
            return Ok(());
        };
        let node = self.clone();
        let index = index.clone();
        let transfer = transfer.clone();
        let need = transfer.size;
        node.run(move |node| -> Result<(), ContentError> {
            let _one_at_a_time = node.content.room.lock().unwrap_or_else(|e| e.into_inner());
            let files = node.cached_files();
            let admitted: u64 = node
                .content
                .transfers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|t| !Arc::ptr_eq(t, &transfer) && t.admitted.load(Ordering::Relaxed))
                .map(|t| t.size)
                .sum();
            let mut total: u64 = files.iter().map(|(_, size)| size).sum::<u64>() + admitted;
            if total + need <= limit {
                transfer.admitted.store(true, Ordering::Relaxed);
                return Ok(());
            }
            let pinned = node.pinned().map_err(|e| ContentError::Failed(e.to_string()))?;
            let mut candidates: Vec<(u8, String, u64)> = files
                .into_iter()
                .filter(|(sha, _)| !pinned.contains(sha))
                .filter_map(|(sha, size)| {
                    let rank = match index.get(&sha) {
                        None => 0,
                        Some(k) if !k.approved => 0,
                        Some(k) if k.superseded => 1,
                        Some(_) => return None,
                    };
                    Some((rank, sha, size))
                })
                .collect();
            candidates.sort();
            for (_, sha, size) in candidates {
                if total + need <= limit {
                    break;
                }
                if let Some(path) = node.content_path(&sha)
                    && std::fs::remove_file(&path).is_ok()
                {
                    let _ = std::fs::remove_file(cascade_content::manifest_path(&node.config.content_dir, &sha));
                    total = total.saturating_sub(size);
                    node.content.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%sha, size, "evicted from the content cache");
                }
            }
            if total + need > limit {
                return Err(ContentError::Unavailable(format!(
                    "the content cache is full: {total} of {limit} bytes are held by content that is approved and current or still to be installed here, or on its way; {need} more do not fit"
                )));
            }
            transfer.admitted.store(true, Ordering::Relaxed);
            Ok(())
        })
        .await
    }

    /// The verified files here: (sha256, size).
    pub fn cached_files(&self) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.config.content_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                (meta.is_file() && self.content_path(&name).is_some()).then_some((name, meta.len()))
            })
            .collect()
    }

    /// Content a computer served here still has to install.
    fn pinned(&self) -> Result<BTreeSet<String>, cascade_store::StoreError> {
        let mut needed: BTreeSet<UpdateId> = BTreeSet::new();
        for agent in self.agents()? {
            for r in self.store.computer_records(&agent.id)? {
                if matches!(
                    r.state,
                    ComplianceState::Required | ComplianceState::Downloaded | ComplianceState::Failed { .. }
                ) {
                    needed.insert(r.update);
                }
            }
        }
        Ok(self
            .content_index()?
            .into_iter()
            .filter(|(_, k)| k.updates.iter().any(|u| needed.contains(u)))
            .map(|(sha, _)| sha)
            .collect())
    }

    /// Removes what abandoned transfers left (`.part` files not in flight
    /// and untouched for `max_age`); a transfer resumed within that time
    /// keeps its bytes. Returns how many went.
    pub fn clean_partials(&self, max_age: std::time::Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.config.content_dir) else {
            return 0;
        };
        let in_flight: BTreeSet<String> = self
            .content
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut removed = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A partial file, or a manifest whose file never arrived.
            let sha = if let Some(sha) = name
                .strip_suffix(".part")
                .or_else(|| name.strip_suffix(".manifest-tmp"))
            {
                sha
            } else if let Some(sha) = name.strip_suffix(".manifest") {
                let dir = &self.config.content_dir;
                if dir.join(sha).exists() || dir.join(format!("{sha}.part")).exists() {
                    continue;
                }
                sha
            } else {
                continue;
            };
            if in_flight.contains(sha) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= max_age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Transfers in progress.
    pub fn in_flight(&self) -> Vec<InFlight> {
        self.content
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(sha, t)| InFlight {
                sha256: sha.clone(),
                size: t.size,
                received: t.received.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Counters: fetched bytes, transfers, served bytes, evictions.
    pub fn content_counters(&self) -> (u64, u64, u64, u64) {
        let c = &self.content;
        (
            c.fetched_bytes.load(Ordering::Relaxed),
            c.fetches.load(Ordering::Relaxed),
            c.served_bytes.load(Ordering::Relaxed),
            c.evicted.load(Ordering::Relaxed),
        )
    }

    /// Where a path a caller named lies, if it is inside one of the
    /// configured import directories (relative paths are taken within
    /// them). Anything else is refused with the same words whether or not
    /// it exists, so the API reveals nothing of the rest of the disk.
    fn import_path(&self, path: &std::path::Path) -> Result<PathBuf, String> {
        let dirs = &self.config.content_import;
        if dirs.is_empty() {
            return Err(format!(
                "node {} has no content import directories (content_import in its configuration)",
                self.id
            ));
        }
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            dirs.iter().map(|d| d.join(path)).collect()
        };
        candidates
            .iter()
            .filter_map(|c| std::fs::canonicalize(c).ok())
            .find(|c| dirs.iter().any(|d| c.starts_with(d)))
            .ok_or_else(|| {
                let listed: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                format!(
                    "{} is not a file or directory inside this node's content import directories ({})",
                    path.display(),
                    listed.join(", ")
                )
            })
    }

    /// Adds files from the node's content import directories (a file or a
    /// directory in one): each one the catalog names (by its sha256 and
    /// size) is copied into the content directory; others are reported
    /// and left.
    pub fn add_content(&self, path: &std::path::Path) -> Result<Vec<Added>, String> {
        let path = self.import_path(path)?;
        let index = self.content_index().map_err(|e| e.to_string())?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut files: Vec<PathBuf> = if meta.is_dir() {
            std::fs::read_dir(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                // A link inside that leads out is passed over like the rest
                // of the disk.
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .filter(|p| p.is_file() && self.config.content_import.iter().any(|d| p.starts_with(d)))
                .collect()
        } else {
            vec![path.clone()]
        };
        files.sort();
        std::fs::create_dir_all(&self.config.content_dir).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for file in files {
            // Named as within its import directory.
            let name = self
                .config
                .content_import
                .iter()
                .find_map(|d| file.strip_prefix(d).ok())
                .unwrap_or(&file)
                .display()
                .to_string();
            let result = (|| -> Result<String, String> {
                let sha = cascade_content::sha256_of(&file).map_err(|e| e.to_string())?;
                let known = index
                    .get(&sha)
                    .ok_or_else(|| format!("sha256 {sha} is not the content of any update in the catalog"))?;
                let size = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
                if size != known.content.size {
                    return Err(format!("{size} bytes, the catalog says {}", known.content.size));
                }
                let target = self.config.content_dir.join(&sha);
                if !target.exists() {
                    let tmp = self.config.content_dir.join(format!("{sha}.adding"));
                    std::fs::copy(&file, &tmp).map_err(|e| e.to_string())?;
                    // Copied bytes are checked again before they get the
                    // name; at the root the same pass makes the manifest
                    // children verify each chunk with.
                    let (copied, manifest) = cascade_content::describe(&tmp).map_err(|e| e.to_string())?;
                    if copied != sha {
                        let _ = std::fs::remove_file(&tmp);
                        return Err("the copy does not match its source".into());
                    }
                    if self.parent_address().is_none() {
                        let signed = manifest.sign(&*self.config.tls.signer())?;
                        signed
                            .write(&cascade_content::manifest_path(&self.config.content_dir, &sha))
                            .map_err(|e| e.to_string())?;
                    }
                    std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
                }
                Ok(sha)
            })();
            out.push((name, result));
        }
        Ok(out)
    }
}
