//! Content from the vendor's URL, for the root, which has no parent:
//! HTTPS with the Mozilla roots (plain HTTP only where `[vendor]
//! allow_http` says so), to the hosts `[vendor] allow_hosts` lists and
//! public addresses only (the addresses checked are the ones connected
//! to); resumed with a Range request from what an earlier attempt left,
//! size-capped, and verified before the file gets its sha256 name. Errors
//! say what was refused or went wrong, never what the far side sent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::update::Content;
use http_body_util::BodyExt;
use sha2::Digest;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `host` is one of the allowed names (`*.example.com` allows
/// every name below example.com).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => host == pattern,
        }
    })
}

/// Addresses on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, multicast, broadcast or unspecified.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064)
        }
    }
}

/// The addresses `url` may be fetched from under the policy, or what was
/// refused.
pub async fn permitted(
    url: &hyper::Uri,
    policy: &crate::config::VendorConfig,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let scheme = url.scheme_str().unwrap_or("");
    match scheme {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            return Err(format!(
                "{url}: refused: plain http:// is not fetched ([vendor] allow_http is off)"
            ));
        }
        other => return Err(format!("{url}: refused: {other:?} is not https")),
    }
    let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || !host_allowed(host, &policy.allow_hosts) {
        return Err(format!("{url}: refused: host {host:?} is not in [vendor] allow_hosts"));
    }
    let port = url.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{url}: host {host} cannot be resolved: {e}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("{url}: host {host} has no address"));
    }
    if !policy.allow_private_addresses
        && let Some(private) = addresses.iter().find(|a| !is_public(a.ip()))
    {
        return Err(format!(
            "{url}: refused: host {host} resolves to {}, which is not a public address ([vendor] allow_private_addresses is off)",
            private.ip()
        ));
    }
    Ok(addresses)
}

/// Downloads `content` from `url` into `dir/<sha256>`, if the policy lets
/// it come from there.
pub async fn download(
    url: &str,
    content: &Content,
    dir: &Path,
    limit: u64,
    progress: &AtomicU64,
    policy: &crate::config::VendorConfig,
) -> Result<PathBuf, String> {
    let expected = content.sha256.to_ascii_lowercase();
    // A size of 0: the catalog does not know it (winget manifests give
    // none). The download is then held to the limit instead, and not
    // resumed; the sha256 decides as always.
    let known_size = content.size > 0;
    let cap = if known_size { content.size } else { limit };
    if content.size > limit {
        return Err(format!(
            "content {}: too large: {} bytes is more than the limit of {limit}",
            content.file_name, content.size
        ));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: not a URL ({e})"))?;
    let addresses = permitted(&uri, policy).await?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let done = dir.join(&expected);
    let partial = dir.join(format!("{expected}.part"));
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if !known_size || have >= content.size {
        let _ = std::fs::remove_file(&partial);
        have = 0;
    }
    // Connect to the addresses just checked, not to a second lookup's.
    let resolver = tower::service_fn(move |_: hyper_util::client::legacy::connect::dns::Name| {
        let addresses = addresses.clone();
        async move { Ok::<_, std::io::Error>(addresses.into_iter()) }
    });
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(30)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| e.to_string())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
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
        _ => return Err(format!("{url}: the download failed: the server did not send the file")),
    };
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{url}: the transfer was cut ({e})"))?;
        let Ok(data) = frame.into_data() else { continue };
        if have + data.len() as u64 > cap {
            drop(out);
            let _ = std::fs::remove_file(&partial);
            return Err(if known_size {
                format!(
                    "{url}: refused: larger than the catalog's {} bytes; discarded",
                    content.size
                )
            } else {
                format!("{url}: refused: larger than the limit of {limit} bytes; discarded")
            });
        }
        out.write_all(&data)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        hasher.update(&data);
        have += data.len() as u64;
        progress.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    out.sync_all().map_err(|e| e.to_string())?;
    if known_size && have < content.size {
        return Err(format!(
            "{url}: the transfer ended before the catalog's {} bytes",
            content.size
        ));
    }
    let actual = hex(&hasher.finalize());
    if actual != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "{url}: hash mismatch: the file is not the catalog's sha256 {expected}; discarded"
        ));
    }
    std::fs::rename(&partial, &done).map_err(|e| e.to_string())?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VendorConfig;

    #[test]
    fn public_addresses_are_told_from_the_rest() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["13.107.4.50", "2620:1ec:bdf::40", "::ffff:13.107.4.50"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn allowed_hosts_match_exactly_or_below_a_domain() {
        let allowed = vec!["download.microsoft.com".to_owned(), "*.windowsupdate.com".to_owned()];
        assert!(host_allowed("download.microsoft.com", &allowed));
        assert!(host_allowed("Download.Microsoft.com.", &allowed));
        assert!(host_allowed("au.download.windowsupdate.com", &allowed));
        assert!(!host_allowed("windowsupdate.com", &allowed));
        assert!(!host_allowed("evilwindowsupdate.com", &allowed));
        assert!(!host_allowed("download.microsoft.com.evil.example", &allowed));
        assert!(!host_allowed("127.0.0.1", &allowed));
    }

    #[tokio::test]
    async fn a_listed_host_on_a_private_address_is_refused_unless_allowed() {
        let mut policy = VendorConfig {
            allow_hosts: vec!["localhost".into()],
            allow_http: true,
            allow_private_addresses: false,
        };
        let url: hyper::Uri = "http://localhost:9/x.cab".parse().unwrap();
        let refused = permitted(&url, &policy).await.unwrap_err();
        assert!(refused.contains("not a public address"), "{refused}");
        policy.allow_private_addresses = true;
        assert!(!permitted(&url, &policy).await.unwrap().is_empty());
        policy.allow_http = false;
        let refused = permitted(&url, &policy).await.unwrap_err();
        assert!(refused.contains("plain http://"), "{refused}");
    }

    /// A winget installer comes without its size: downloaded, held to the
    /// limit, and verified by its sha256.
    #[tokio::test]
    async fn content_without_a_size_is_held_to_the_limit() {
        use sha2::Digest as _;
        use std::io::{Read as _, Write as _};
        let body = vec![7u8; 5000];
        let sha = hex(&sha2::Sha256::digest(&body));
        let serve = |body: Vec<u8>| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/setup.exe", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                if let Ok((mut stream, _)) = listener.accept() {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
            });
            url
        };
        let policy = VendorConfig {
            allow_hosts: vec!["127.0.0.1".into()],
            allow_http: true,
            allow_private_addresses: true,
        };
        let content = Content {
            file_name: "setup.exe".into(),
            sha256: sha.clone(),
            size: 0,
            url: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let progress = AtomicU64::new(0);
        let url = serve(body.clone());
        let path = download(&url, &content, dir.path(), 1 << 20, &progress, &policy)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        // Past the limit: cut and discarded.
        let url = serve(body.clone());
        let other = tempfile::tempdir().unwrap();
        let e = download(&url, &content, other.path(), 1000, &progress, &policy)
            .await
            .unwrap_err();
        assert!(e.contains("larger than the limit of 1000 bytes"), "{e}");
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    }
}
