//! Update content from a node, for an agent or a child node: addressed by
//! sha256, resumed after an interruption from what arrived, bounded in
//! size, and verified before it is used.

use std::io::Write;
use std::path::{Path, PathBuf};

use cascade_core::update::Content;
use cascade_proto::v1::ContentRequest;
use cascade_proto::v1::agents_client::AgentsClient;
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}

impl Floor {
    /// 64 KB in every minute: far below any working link (a satellite
    /// link moves that in seconds), far above a source that only pretends.
    pub const DEFAULT: Floor = Floor {
        bytes: 64 * 1024,
        window: std::time::Duration::from_secs(60),
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
    let expected = content.sha256.to_ascii_lowercase();
    let file = content.file_name.clone();
    // The hash names files: anything but 64 hex digits could name a path.
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContentError::Transfer {
            file,
            detail: format!("{:?} is not a sha256", content.sha256),
        });
    }
    if content.size > limit {
        return Err(ContentError::TooLarge {
            file,
            size: content.size,
            limit,
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
    // The hash covers what an earlier attempt left, then each chunk as it
    // arrives: one pass over the bytes.
    let mut hasher = Sha256::new();
    if have > 0 {
        let mut existing = std::fs::File::open(&partial).map_err(|e| io(&partial, e))?;
        std::io::copy(&mut existing, &mut hasher).map_err(|e| io(&partial, e))?;
    }
    let mut received = 0u64;
    if have < content.size || content.size == 0 {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| io(&partial, e))?;
        let transfer = |detail: String| ContentError::Transfer {
            file: file.clone(),
            detail,
        };
        let mut stream = client
            .content(ContentRequest {
                sha256: expected.clone(),
                offset: have,
            })
            .await
            .map_err(|s| transfer(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let mut window_start = std::time::Instant::now();
        let mut in_window = 0u64;
        loop {
            let left = floor.window.saturating_sub(window_start.elapsed());
            // No message within the window leaves the check below to decide.
            if let Ok(message) = tokio::time::timeout(left, stream.message()).await {
                let chunk = match message {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(s) => {
                        // What arrived stays for the next attempt to resume from.
                        out.sync_all().map_err(|e| io(&partial, e))?;
                        return Err(transfer(format!(
                            "cut after {have} of {} bytes: {}",
                            content.size,
                            s.message()
                        )));
                    }
                };
                if have + chunk.data.len() as u64 > content.size {
                    drop(out);
                    let _ = std::fs::remove_file(&partial);
                    return Err(ContentError::Overlong {
                        file,
                        size: content.size,
                    });
                }
                out.write_all(&chunk.data).map_err(|e| io(&partial, e))?;
                hasher.update(&chunk.data);
                let n = chunk.data.len() as u64;
                in_window += n;
                have += n;
                received += n;
                if let Some(p) = progress {
                    p.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
            if window_start.elapsed() >= floor.window {
                if in_window < floor.bytes {
                    out.sync_all().map_err(|e| io(&partial, e))?;
                    return Err(ContentError::Slow {
                        file,
                        received: in_window,
                        seconds: floor.window.as_secs_f64(),
                        floor: floor.bytes,
                    });
                }
                window_start = std::time::Instant::now();
                in_window = 0;
            }
        }
        out.sync_all().map_err(|e| io(&partial, e))?;
        if have < content.size {
            return Err(transfer(format!(
                "the node ended the transfer at {have} of {} bytes",
                content.size
            )));
        }
    }
    let actual = hex(&hasher.finalize());
    if actual != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(ContentError::Mismatch { file, expected, actual });
    }
    std::fs::rename(&partial, &done).map_err(|e| io(&done, e))?;
    Ok(Fetched { path: done, received })
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
