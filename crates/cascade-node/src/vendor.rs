//! Content from the vendor's URL (HTTP or HTTPS with the Mozilla roots),
//! for the root, which has no parent: resumed with a Range request from
//! what an earlier attempt left, size-capped, and verified before the file
//! gets its sha256 name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::update::Content;
use http_body_util::BodyExt;
use sha2::Digest;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `content` from `url` into `dir/<sha256>`.
pub async fn download(
    url: &str,
    content: &Content,
    dir: &Path,
    limit: u64,
    progress: &AtomicU64,
) -> Result<PathBuf, String> {
    let expected = content.sha256.to_ascii_lowercase();
    if content.size > limit {
        return Err(format!(
            "content {}: too large: {} bytes is more than the limit of {limit}",
            content.file_name, content.size
        ));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let done = dir.join(&expected);
    let partial = dir.join(format!("{expected}.part"));
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if have >= content.size {
        let _ = std::fs::remove_file(&partial);
        have = 0;
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| e.to_string())?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let mut request = hyper::Request::get(uri);
    if have > 0 {
        request = request.header(hyper::header::RANGE, format!("bytes={have}-"));
    }
    let request = request.body(http_body_util::Empty::new()).map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let mut hasher = sha2::Sha256::new();
    let mut out = match status.as_u16() {
        206 => {
            let mut existing = std::fs::File::open(&partial).map_err(|e| e.to_string())?;
            std::io::copy(&mut existing, &mut hasher).map_err(|e| e.to_string())?;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&partial)
                .map_err(|e| format!("{}: {e}", partial.display()))?
        }
        200 => {
            // The server sends the whole file: start over.
            have = 0;
            std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?
        }
        _ => return Err(format!("{url}: the vendor answered {status}")),
    };
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{url}: cut after {have} of {} bytes: {e}", content.size))?;
        let Ok(data) = frame.into_data() else { continue };
        if have + data.len() as u64 > content.size {
            drop(out);
            let _ = std::fs::remove_file(&partial);
            return Err(format!("{url}: more than the catalog's {} bytes", content.size));
        }
        out.write_all(&data)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        hasher.update(&data);
        have += data.len() as u64;
        progress.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    out.sync_all().map_err(|e| e.to_string())?;
    if have < content.size {
        return Err(format!("{url}: the transfer ended at {have} of {} bytes", content.size));
    }
    let actual = hex(&hasher.finalize());
    if actual != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "{url}: hash mismatch: sha256 {actual}, the catalog says {expected}; discarded"
        ));
    }
    std::fs::rename(&partial, &done).map_err(|e| e.to_string())?;
    Ok(done)
}
