//! `cascade bench unauthenticated`: a node process receives many large
//! requests at once from callers without credentials, half over the HTTPS
//! API, half as gRPC `Admin.Invoke` calls (a catalog import), each body
//! streamed from one shared buffer so the sender's memory stays small. The
//! node must refuse them before reading them: its peak RSS is reported
//! beside its idle RSS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;

type Chunks = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;

/// A body of `size` bytes in 1 MB frames of one shared buffer, after `prefix`.
fn body(prefix: Bytes, size: usize, chunk: &Bytes) -> Chunks {
    let mut frames = vec![Ok(Frame::data(prefix))];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        frames.push(Ok(Frame::data(chunk.slice(..n))));
        left -= n;
    }
    StreamBody::new(tokio_stream::iter(frames))
}

/// The gRPC framing of an `InvokeRequest` for `catalog.import` whose
/// parameters are `size` bytes: the 5-byte message header and the protobuf
/// fields up to the parameters' bytes, which follow.
fn grpc_prefix(size: usize) -> Bytes {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let operation = b"catalog.import";
    let mut fields = vec![0x0a];
    varint(operation.len() as u64, &mut fields);
    fields.extend_from_slice(operation);
    fields.push(0x12);
    varint(size as u64, &mut fields);
    let total = fields.len() + size;
    let mut out = vec![0u8];
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&fields);
    Bytes::from(out)
}

fn rss(pid: u32, field: &str) -> Option<u64> {
    crate::bench::status_bytes(&pid.to_string(), field)
}

/// One TLS connection without a client certificate, speaking `alpn`.
async fn connect(
    address: &str,
    config: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await?;
    Ok(hyper_util::rt::TokioIo::new(tls))
}

/// One request; its status, or what ended it (a refused upload may end
/// with the connection closed under it).
async fn send(address: String, config: Arc<rustls::ClientConfig>, grpc: bool, size: usize, chunk: Bytes) -> String {
    let result = async {
        let io = connect(&address, &config).await?;
        let request = hyper::Request::post(if grpc {
            format!("https://{address}/cascade.v1.Admin/Invoke")
        } else {
            format!("https://{address}/api/v1/catalog.import")
        });
        if grpc {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            let request = request
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("cascade-operation", "catalog.import")
                .body(body(grpc_prefix(size), size, &chunk))?;
            let response = sender.send_request(request).await?;
            let status = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("in trailers")
                .to_owned();
            anyhow::Ok(format!("grpc-status {status}"))
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            let prefix = Bytes::from_static(b"{\"name\": \"big.xml\", \"content\": \"");
            let request = request
                .header("content-type", "application/json")
                .header("host", address.as_str())
                .body(body(prefix, size, &chunk))?;
            let response = sender.send_request(request).await?;
            anyhow::Ok(format!("HTTP {}", response.status().as_u16()))
        }
    };
    match tokio::time::timeout(Duration::from_secs(120), result).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => format!("cut: {}", e.root_cause()),
        Err(_) => "timed out".to_owned(),
    }
}

pub async fn run(requests: usize, size_mb: usize) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let now = cascade_node::now();
    let ca = cascade_trust::Ca::generate("Bench", now, 2)?;
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem)?;
    let (node, grpc) =
        crate::bench::node_process(dir.path(), &ca, "root", None, "api_listen = \"127.0.0.1:0\"\n").await?;
    let api_file = dir.path().join("root-data/api.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api_file.exists() {
        anyhow::ensure!(Instant::now() < deadline, "the node's API did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = std::fs::read_to_string(&api_file)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = node.pid();
    let idle = rss(pid, "VmRSS:").context("the node's RSS")?;

    let mut roots = rustls::RootCertStore::empty();
    for der in cascade_trust::pem_certs(&ca.cert_pem)? {
        roots.add(rustls::pki_types::CertificateDer::from(der))?;
    }
    let client = |alpn: &[u8]| {
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots.clone()).with_no_client_auth());
        if let Ok(c) = &mut config {
            c.alpn_protocols = vec![alpn.to_vec()];
        }
        config.map(Arc::new)
    };
    let (http1, h2) = (client(b"http/1.1")?, client(b"h2")?);
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let size = size_mb << 20;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..requests {
        let grpc_call = n % 2 == 1;
        let (address, config) = if grpc_call {
            (grpc.clone(), h2.clone())
        } else {
            (api.clone(), http1.clone())
        };
        tasks.push(tokio::spawn(send(address, config, grpc_call, size, chunk.clone())));
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        *outcomes
            .entry(task.await.unwrap_or_else(|e| e.to_string()))
            .or_default() += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak = rss(pid, "VmHWM:").context("the node's peak RSS")?;
    let after = rss(pid, "VmRSS:").unwrap_or(0);
    drop(node);
    Ok(serde_json::json!({
        "benchmark": "unauthenticated",
        "requests": requests,
        "bytes_each": size,
        "seconds": seconds,
        "outcomes": outcomes,
        "idle_rss_bytes": idle,
        "peak_rss_bytes": peak,
        "rss_after_bytes": after,
        "peak_over_idle_bytes": peak.saturating_sub(idle),
        "goal_peak_over_idle_bytes": 100u64 << 20,
    }))
}
