//! Update content from a node, for an agent or a child node: addressed by
//! sha256, resumed after an interruption from what arrived, bounded in
//! size, and verified before it is used.

pub mod transport;

use std::io::Write;
use std::path::{Path, PathBuf};

use cascade_core::update::Content;
use cascade_proto::v1::agents_client::AgentsClient;
use cascade_proto::v1::{ContentManifest, ContentRequest};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content {file}: too large: {size} bytes is more than the limit of {limit}")]
    TooLarge { file: String, size: u64, limit: u64 },
    #[error("content {file}: the node sent more than the catalog's {size} bytes")]
    Overlong { file: String, size: u64 },
    #[error("content {file}: hash mismatch: sha256 {actual}, the catalog says {expected}; discarded")]
    Mismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "content {file}: hash mismatch in chunk {chunk} (from byte {offset}): it is not what the root's manifest says; discarded, what was verified before it is kept"
    )]
    ChunkMismatch { file: String, chunk: usize, offset: u64 },
    #[error("content {file}: the node's manifest is refused: {detail}")]
    Manifest { file: String, detail: String },
    #[error("content {file}: {detail}")]
    Transfer { file: String, detail: String },
    #[error(
        "content {file}: slow retrieval: {received} bytes in {seconds} s, below the floor of {floor}; stopped (what arrived is kept)"
    )]
    Slow {
        file: String,
        received: u64,
        seconds: f64,
        floor: u64,
    },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> ContentError {
    ContentError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The sha256 of a file, hex.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of bytes in memory, hex.
pub fn sha256_of_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The size of the chunks a manifest names: small enough that a node
/// serves what it verified on within milliseconds, large enough that the
/// manifest of a 64 GB file stays at 512 KB.
pub const CHUNK_SIZE: u64 = 4 << 20;

/// The BLAKE3 hash of every `chunk_size` bytes of a file whose sha256 the
/// root verified: what lets a node check each chunk as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: Vec<[u8; 32]>,
}

impl Manifest {
    /// The bytes the root signs.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128 + 32 * self.chunks.len());
        m.extend_from_slice(b"cascade content manifest v1\n");
        m.extend_from_slice(self.sha256.as_bytes());
        m.push(b'\n');
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.chunk_size.to_be_bytes());
        for c in &self.chunks {
            m.extend_from_slice(c);
        }
        m
    }

    /// Whether this is a manifest of `content`, shaped as manifests are.
    pub fn fits(&self, content: &Content) -> Result<(), String> {
        if self.sha256 != content.sha256.to_ascii_lowercase() {
            return Err(format!("it is for sha256 {}, not {}", self.sha256, content.sha256));
        }
        if self.size != content.size {
            return Err(format!("it says {} bytes, the catalog {}", self.size, content.size));
        }
        if !(64 * 1024..=64 << 20).contains(&self.chunk_size) {
            return Err(format!("chunk size {} is out of range", self.chunk_size));
        }
        if self.chunks.len() as u64 != self.size.div_ceil(self.chunk_size) {
            return Err(format!(
                "{} chunks for {} bytes of {}-byte chunks",
                self.chunks.len(),
                self.size,
                self.chunk_size
            ));
        }
        Ok(())
    }

    /// Where chunk `index` ends.
    pub fn chunk_end(&self, index: usize) -> u64 {
        ((index as u64 + 1) * self.chunk_size).min(self.size)
    }

    /// Signs it.
    pub fn sign(self, signer: &dyn cascade_core::seal::Signer) -> Result<SignedManifest, String> {
        let (scheme, signature) = signer.sign(&self.message())?;
        Ok(SignedManifest {
            manifest: self,
            key: signer.key().to_owned(),
            scheme,
            signature,
        })
    }
}

/// A manifest with the signature of the key named by `key` (hex SHA-256
/// of its certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub key: String,
    pub scheme: u16,
    pub signature: Vec<u8>,
}

impl SignedManifest {
    pub fn to_proto(&self) -> ContentManifest {
        ContentManifest {
            sha256: self.manifest.sha256.clone(),
            size: self.manifest.size,
            chunk_size: self.manifest.chunk_size,
            chunks: self.manifest.chunks.concat(),
            key: self.key.clone(),
            scheme: u32::from(self.scheme),
            signature: self.signature.clone(),
        }
    }

    pub fn from_proto(p: &ContentManifest) -> Result<SignedManifest, String> {
        if !p.chunks.len().is_multiple_of(32) {
            return Err(format!(
                "{} bytes of chunk hashes is not a whole number of hashes",
                p.chunks.len()
            ));
        }
        let scheme = u16::try_from(p.scheme).map_err(|_| format!("signature scheme {} is out of range", p.scheme))?;
        Ok(SignedManifest {
            manifest: Manifest {
                sha256: p.sha256.clone(),
                size: p.size,
                chunk_size: p.chunk_size,
                chunks: p
                    .chunks
                    .chunks_exact(32)
                    .map(|c| <[u8; 32]>::try_from(c).unwrap_or_default())
                    .collect(),
            },
            key: p.key.clone(),
            scheme,
            signature: p.signature.clone(),
        })
    }

    /// Writes it (atomically) to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ContentError> {
        use prost::Message;
        let tmp = path.with_extension("manifest-tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&self.to_proto().encode_to_vec()).map_err(|e| io(&tmp, e))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }

    /// Reads one written by `write`.
    pub fn read(path: &Path) -> Result<SignedManifest, ContentError> {
        use prost::Message;
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let p = ContentManifest::decode(bytes.as_slice()).map_err(|e| io(path, e))?;
        SignedManifest::from_proto(&p).map_err(|e| io(path, e))
    }
}

/// Where the manifest of `<dir>/<sha256>` is kept.
pub fn manifest_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.manifest"))
}

/// Reads a file once for its sha256 (hex) and the manifest of its bytes.
pub fn describe(path: &Path) -> std::io::Result<(String, Manifest)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    let mut chunks = Vec::new();
    let mut chunk = blake3::Hasher::new();
    let mut in_chunk = 0u64;
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = ((CHUNK_SIZE - in_chunk) as usize).min(rest.len());
            chunk.update(&rest[..take]);
            in_chunk += take as u64;
            rest = &rest[take..];
            if in_chunk == CHUNK_SIZE {
                chunks.push(*chunk.finalize().as_bytes());
                chunk.reset();
                in_chunk = 0;
            }
        }
        size += n as u64;
    }
    if in_chunk > 0 {
        chunks.push(*chunk.finalize().as_bytes());
    }
    let sha256 = hex(&sha.finalize());
    Ok((
        sha256.clone(),
        Manifest {
            sha256,
            size,
            chunk_size: CHUNK_SIZE,
            chunks,
        },
    ))
}

/// A verified file in a content directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `<dir>/<sha256>`.
    pub path: PathBuf,
    /// Bytes that came over the network for it in this call.
    pub received: u64,
}

/// Makes sure `<dir>/<sha256>` holds `content`, fetching (or resuming) it
/// from the node. The file appears under its hash only once it is
/// complete and its hash verified, so whatever serves `<dir>/<sha256>`
/// never hands out unverified bytes; a file that fails verification is
/// removed. `progress` counts the bytes as they arrive.
pub async fn download(
    client: &mut AgentsClient<Channel>,
    content: &Content,
    dir: &Path,
    limit: u64,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<Fetched, ContentError> {
    download_with_floor(client, content, dir, limit, progress, Floor::DEFAULT).await
}

/// The least a transfer must deliver: `bytes` in every `window`, or it is
/// stopped as a slow retrieval (what arrived stays, to resume elsewhere or
/// later). A source that trickles cannot hold an installation forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Floor {
    pub bytes: u64,
    pub window: std::time::Duration,
    /// How long a node may keep saying it is still fetching the file
    /// itself (empty messages) before the first byte.
    pub first_byte: std::time::Duration,
}

impl Floor {
    /// 64 KB in every minute: far below any working link (a satellite
    /// link moves that in seconds), far above a source that only pretends;
    /// an hour for a node's own source (the vendor) to deliver a file the
    /// node cannot verify before it has all of it.
    pub const DEFAULT: Floor = Floor {
        bytes: 64 * 1024,
        window: std::time::Duration::from_secs(60),
        first_byte: std::time::Duration::from_secs(3600),
    };
}

/// `download` with a given floor.
pub async fn download_with_floor(
    client: &mut AgentsClient<Channel>,
    content: &Content,
    dir: &Path,
    limit: u64,
    progress: Option<&std::sync::atomic::AtomicU64>,
    floor: Floor,
) -> Result<Fetched, ContentError> {
    let options = Options {
        limit,
        floor,
        progress,
        chunks: None,
    };
    download_with(client, content, dir, &options).await
}

/// How a download goes.
pub struct Options<'a> {
    /// The largest file accepted.
    pub limit: u64,
    pub floor: Floor,
    /// Counts the bytes as they arrive.
    pub progress: Option<&'a std::sync::atomic::AtomicU64>,
    /// Verifies chunk by chunk when the node sends a manifest this accepts
    /// (a node's download from its parent). Without it manifests are
    /// ignored and the whole file's sha256 is checked at the end.
    pub chunks: Option<&'a dyn Chunks>,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("limit", &self.limit)
            .field("floor", &self.floor)
            .field("chunks", &self.chunks.is_some())
            .finish()
    }
}

/// What a downloader that verifies chunk by chunk is told.
pub trait Chunks: Sync {
    /// Accepts the manifest the node sent for the file asked for, or
    /// refuses it (the transfer stops): its signature is the caller's to
    /// check.
    fn manifest(&self, manifest: &SignedManifest) -> Result<(), String>;
    /// The first `bytes` of `<dir>/<sha256>.part` are verified.
    fn verified(&self, bytes: u64);
}

/// How what arrives is checked.
enum Check {
    /// The whole file's sha256, at the end.
    Whole(Sha256),
    /// Each chunk against the manifest as it completes.
    Chunks {
        manifest: SignedManifest,
        hasher: Box<blake3::Hasher>,
        /// The chunk being hashed; every one before it checked out.
        index: usize,
    },
}

/// The messages of a transfer under the speed floor.
struct Incoming {
    stream: tonic::Streaming<cascade_proto::v1::ContentChunk>,
    floor: Floor,
    window_start: std::time::Instant,
    in_window: u64,
    started: std::time::Instant,
    /// Whether anything but "still fetching" came.
    begun: bool,
}

enum Next {
    Chunk(cascade_proto::v1::ContentChunk),
    End,
    Cut(String),
    Slow(u64),
}

impl Incoming {
    async fn next(&mut self) -> Next {
        loop {
            let left = self.floor.window.saturating_sub(self.window_start.elapsed());
            // No message within the window leaves the check below to decide.
            let message = tokio::time::timeout(left, self.stream.message()).await;
            if self.window_start.elapsed() >= self.floor.window {
                if self.in_window < self.floor.bytes {
                    return Next::Slow(self.in_window);
                }
                self.window_start = std::time::Instant::now();
                self.in_window = 0;
            }
            match message {
                Ok(Ok(Some(chunk))) => {
                    if chunk.data.is_empty() && chunk.manifest.is_none() && chunk.size > 0 {
                        // The node is still fetching it; before the first
                        // byte that holds the floor off, for a while.
                        if !self.begun && self.started.elapsed() < self.floor.first_byte {
                            self.window_start = std::time::Instant::now();
                        }
                        continue;
                    }
                    self.begun = true;
                    self.in_window += chunk.data.len() as u64;
                    return Next::Chunk(chunk);
                }
                Ok(Ok(None)) => return Next::End,
                Ok(Err(s)) => return Next::Cut(s.message().to_owned()),
                // A window passed without a message: decided above.
                Err(_) => {}
            }
        }
    }
}

/// The sha256 of what a partial file holds.
fn whole_hash(partial: &Path, have: u64) -> Result<Sha256, ContentError> {
    let mut hasher = Sha256::new();
    if have > 0 {
        let mut existing = std::fs::File::open(partial).map_err(|e| io(partial, e))?;
        std::io::copy(&mut existing, &mut hasher).map_err(|e| io(partial, e))?;
    }
    Ok(hasher)
}

/// `download` with every option.
pub async fn download_with(
    client: &mut AgentsClient<Channel>,
    content: &Content,
    dir: &Path,
    options: &Options<'_>,
) -> Result<Fetched, ContentError> {
    let expected = content.sha256.to_ascii_lowercase();
    let file = content.file_name.clone();
    // The hash names files: anything but 64 hex digits could name a path.
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContentError::Transfer {
            file,
            detail: format!("{:?} is not a sha256", content.sha256),
        });
    }
    if content.size > options.limit {
        return Err(ContentError::TooLarge {
            file,
            size: content.size,
            limit: options.limit,
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let done = dir.join(&expected);
    if done.exists() {
        return Ok(Fetched {
            path: done,
            received: 0,
        });
    }
    let partial = dir.join(format!("{expected}.part"));
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if have > content.size {
        std::fs::remove_file(&partial).map_err(|e| io(&partial, e))?;
        have = 0;
    }
    // A node passes on what its own source said: named once.
    let prefix = format!("content {file}: ");
    let transfer = |detail: String| ContentError::Transfer {
        file: file.clone(),
        detail: detail.strip_prefix(&prefix).map(str::to_owned).unwrap_or(detail),
    };
    let mut received = 0u64;
    let check = if have < content.size || content.size == 0 {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| io(&partial, e))?;
        let stream = client
            .content(ContentRequest {
                sha256: expected.clone(),
                offset: have,
            })
            .await
            .map_err(|s| transfer(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let mut incoming = Incoming {
            stream,
            floor: options.floor,
            window_start: std::time::Instant::now(),
            in_window: 0,
            started: std::time::Instant::now(),
            begun: false,
        };
        let mut check: Option<Check> = None;
        loop {
            let mut chunk = match incoming.next().await {
                Next::Chunk(chunk) => chunk,
                Next::End => break,
                Next::Cut(detail) => {
                    // What arrived stays for the next attempt to resume from.
                    out.sync_all().map_err(|e| io(&partial, e))?;
                    if received == 0 && check.is_none() {
                        // Refused before any of it came.
                        return Err(transfer(detail));
                    }
                    return Err(transfer(format!(
                        "cut after {have} of {} bytes: {detail}",
                        content.size
                    )));
                }
                Next::Slow(received) => {
                    out.sync_all().map_err(|e| io(&partial, e))?;
                    return Err(ContentError::Slow {
                        file,
                        received,
                        seconds: options.floor.window.as_secs_f64(),
                        floor: options.floor.bytes,
                    });
                }
            };
            let check = match &mut check {
                Some(check) => check,
                None => check.insert(match (chunk.manifest.take(), options.chunks) {
                    (Some(m), Some(chunks)) => {
                        let manifest = SignedManifest::from_proto(&m)
                            .and_then(|m| m.manifest.fits(content).map(|()| m))
                            .and_then(|m| chunks.manifest(&m).map(|()| m))
                            .map_err(|detail| ContentError::Manifest {
                                file: file.clone(),
                                detail,
                            })?;
                        let (index, hasher) = verify_prefix(&partial, &mut out, &manifest.manifest, have, &file)?;
                        chunks.verified(index as u64 * manifest.manifest.chunk_size);
                        Check::Chunks {
                            manifest,
                            hasher: Box::new(hasher),
                            index,
                        }
                    }
                    // The whole file's hash covers what an earlier attempt
                    // left, then each chunk as it arrives.
                    _ => Check::Whole(whole_hash(&partial, have)?),
                }),
            };
            let data = &chunk.data;
            if have + data.len() as u64 > content.size {
                drop(out);
                let _ = std::fs::remove_file(&partial);
                return Err(ContentError::Overlong {
                    file,
                    size: content.size,
                });
            }
            out.write_all(data).map_err(|e| io(&partial, e))?;
            match check {
                Check::Whole(hasher) => hasher.update(data),
                Check::Chunks {
                    manifest,
                    hasher,
                    index,
                } => {
                    let m = &manifest.manifest;
                    let mut at = have;
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        let end = m.chunk_end(*index);
                        let take = ((end - at) as usize).min(rest.len());
                        hasher.update(&rest[..take]);
                        at += take as u64;
                        rest = &rest[take..];
                        if at == end {
                            let start = *index as u64 * m.chunk_size;
                            if hasher.finalize().as_bytes() != &m.chunks[*index] {
                                // Only the bad chunk goes: the next attempt
                                // resumes at its start.
                                out.set_len(start).map_err(|e| io(&partial, e))?;
                                out.sync_all().map_err(|e| io(&partial, e))?;
                                return Err(ContentError::ChunkMismatch {
                                    file,
                                    chunk: *index,
                                    offset: start,
                                });
                            }
                            hasher.reset();
                            *index += 1;
                            if let Some(chunks) = options.chunks {
                                chunks.verified(end);
                            }
                        }
                    }
                }
            }
            let n = data.len() as u64;
            have += n;
            received += n;
            if let Some(p) = options.progress {
                p.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        out.sync_all().map_err(|e| io(&partial, e))?;
        if have < content.size {
            return Err(transfer(format!(
                "the node ended the transfer at {have} of {} bytes",
                content.size
            )));
        }
        match check {
            Some(check) => check,
            // Nothing came (an empty file): the whole-file check decides.
            None => Check::Whole(whole_hash(&partial, have)?),
        }
    } else {
        // Complete but never verified (stopped just before): check it whole.
        Check::Whole(whole_hash(&partial, have)?)
    };
    match check {
        Check::Whole(hasher) => {
            let actual = hex(&hasher.finalize());
            if actual != expected {
                let _ = std::fs::remove_file(&partial);
                return Err(ContentError::Mismatch { file, expected, actual });
            }
        }
        Check::Chunks { manifest, index, .. } => {
            if index != manifest.manifest.chunks.len() {
                return Err(transfer(format!(
                    "{index} of {} chunks verified at the end of the transfer",
                    manifest.manifest.chunks.len()
                )));
            }
            // The manifest stays beside the file, to serve it on with.
            manifest.write(&manifest_path(dir, &expected))?;
        }
    }
    std::fs::rename(&partial, &done).map_err(|e| io(&done, e))?;
    Ok(Fetched { path: done, received })
}

/// Checks the chunks a partial file already holds against `manifest`:
/// cuts the file at the first one that fails, and returns the index of
/// the chunk the next byte belongs to, with the hasher fed with what of
/// it is there.
fn verify_prefix(
    partial: &Path,
    out: &mut std::fs::File,
    manifest: &Manifest,
    have: u64,
    file: &str,
) -> Result<(usize, blake3::Hasher), ContentError> {
    use std::io::Read;
    let mut hasher = blake3::Hasher::new();
    if have == 0 {
        return Ok((0, hasher));
    }
    let mut existing = std::fs::File::open(partial).map_err(|e| io(partial, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    let mut index = 0usize;
    while at < have {
        let end = manifest.chunk_end(index).min(have);
        let mut left = end - at;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            existing.read_exact(&mut buf[..n]).map_err(|e| io(partial, e))?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        at = end;
        if at == manifest.chunk_end(index) {
            if hasher.finalize().as_bytes() != &manifest.chunks[index] {
                let start = index as u64 * manifest.chunk_size;
                out.set_len(start).map_err(|e| io(partial, e))?;
                out.sync_all().map_err(|e| io(partial, e))?;
                return Err(ContentError::ChunkMismatch {
                    file: file.to_owned(),
                    chunk: index,
                    offset: start,
                });
            }
            hasher.reset();
            index += 1;
        }
    }
    Ok((index, hasher))
}

/// For an agent: the file for `content`, fetched when it is not there
/// (see `download`), its hash checked again before use (the agent's
/// directory is not trusted between runs), under the vendor's file name.
pub async fn fetch(
    client: &mut AgentsClient<Channel>,
    content: &Content,
    dir: &Path,
    limit: u64,
) -> Result<PathBuf, ContentError> {
    let expected = content.sha256.to_ascii_lowercase();
    let file = content.file_name.clone();
    let Fetched { path: done, received } = download(client, content, dir, limit, None).await?;
    if received == 0 {
        let actual = sha256_of(&done).map_err(|e| io(&done, e))?;
        if actual != expected {
            let _ = std::fs::remove_file(&done);
            return Err(ContentError::Mismatch { file, expected, actual });
        }
    }
    // The installer gets the vendor's file name (wusa wants `.msu`).
    let named_dir = dir.join(format!("{expected}.d"));
    std::fs::create_dir_all(&named_dir).map_err(|e| io(&named_dir, e))?;
    let safe_name: String = Path::new(&content.file_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| expected.clone());
    // Made afresh from the verified file each time: an older name may be
    // a copy left half-written, or point at a file since replaced.
    let named = named_dir.join(safe_name);
    match std::fs::remove_file(&named) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&named, e)),
    }
    if std::fs::hard_link(&done, &named).is_err() {
        let tmp = named_dir.join(format!(".{expected}.copy"));
        std::fs::copy(&done, &tmp).map_err(|e| io(&tmp, e))?;
        let copied = sha256_of(&tmp).map_err(|e| io(&tmp, e))?;
        if copied != expected {
            let _ = std::fs::remove_file(&tmp);
            return Err(ContentError::Mismatch {
                file,
                expected,
                actual: copied,
            });
        }
        std::fs::rename(&tmp, &named).map_err(|e| io(&named, e))?;
    }
    Ok(named)
}
