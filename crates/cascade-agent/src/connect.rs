//! Reaching a node: choosing the nearest reachable one, mTLS channels, and
//! enrollment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cascade_core::model::ComputerId;
use cascade_proto::v1::EnrollRequest;
use cascade_proto::v1::agents_client::AgentsClient;
use cascade_trust::{EnrollmentToken, Identity};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use crate::config::{AgentConfig, NodeEntry, node_address};

/// How long a probe or a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An mTLS channel to a node (`identity` absent only for enrollment).
pub async fn channel(
    address: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(TlsIdentity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        // Content streams need more than HTTP/2's default 64 KB window.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(cascade_content::transport::connector())
        .await
}

/// How long a TCP connection to `address` takes; `None` when it cannot
/// be made within the timeout.
pub async fn probe(address: &str) -> Option<Duration> {
    let started = Instant::now();
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Some(started.elapsed()),
        _ => None,
    }
}

/// Latencies this close count as equally near: a busy computer's or
/// network's jitter does not reorder nodes on one network.
pub const EQUALLY_NEAR: Duration = Duration::from_millis(5);

/// The order in which to try the nodes: reachable ones by measured latency
/// (in steps of [`EQUALLY_NEAR`], so that noise does not reorder equal
/// nodes), then configured priority; unreachable ones last, by priority
/// (they may be back by the time they are tried).
pub fn rank(nodes: &[NodeEntry], latencies: &[Option<Duration>]) -> Vec<NodeEntry> {
    let mut ranked: Vec<(bool, u128, u32, usize)> = nodes
        .iter()
        .zip(latencies)
        .enumerate()
        .map(|(i, (n, l))| match l {
            Some(d) => (false, d.as_micros() / EQUALLY_NEAR.as_micros(), n.priority, i),
            None => (true, 0, n.priority, i),
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, _, _, i)| nodes[i].clone()).collect()
}

/// Probes every node at once and ranks them.
pub async fn ranked(nodes: &[NodeEntry]) -> Vec<NodeEntry> {
    let probes = nodes.iter().map(|n| {
        let address = n.address.clone();
        tokio::spawn(async move { probe(&address).await })
    });
    let mut latencies = Vec::with_capacity(nodes.len());
    for p in probes {
        latencies.push(p.await.ok().flatten());
    }
    rank(nodes, &latencies)
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("--token: {0}")]
    Token(String),
    #[error("--node: {0:?} is not host:port")]
    Address(String),
    #[error("cannot reach {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("the node refused the enrollment: {0}")]
    Refused(String),
    #[error("the node's certificate names {got}, not {wanted}")]
    WrongIdentity { got: String, wanted: String },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
}

/// What enrollment wrote.
#[derive(Debug)]
pub struct Enrolled {
    pub computer: ComputerId,
    pub site: String,
    pub config: PathBuf,
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), EnrollError> {
    use std::io::Write;
    let file_error = |e: std::io::Error| EnrollError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The key is readable by its owner only (on Windows the data
    // directory's ACL decides).
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = options.open(path).map_err(file_error)?;
    f.write_all(bytes).map_err(file_error)?;
    f.sync_all().map_err(file_error)
}

/// Enrolls this computer as `computer` at the node with the token, writing
/// `ca.crt`, `agent.crt`, `agent.key` and (when absent) `agent.toml` into
/// `data`. The key is made here and never leaves the computer.
pub async fn enroll(token: &str, node: &str, computer: &ComputerId, data: &Path) -> Result<Enrolled, EnrollError> {
    let token = EnrollmentToken::decode(token).map_err(|e| EnrollError::Token(e.to_string()))?;
    let address = node_address(node).ok_or_else(|| EnrollError::Address(node.to_owned()))?;
    let identity = Identity::Agent(computer.clone());
    let (csr_pem, key_pem) =
        cascade_trust::certificate_request(&identity).map_err(|e| EnrollError::Token(e.to_string()))?;
    let channel = channel(&address, &token.ca_pem, None)
        .await
        .map_err(|e| EnrollError::Unreachable {
            address: address.clone(),
            detail: format!(
                "{e}: {}",
                std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default()
            ),
        })?;
    let reply = AgentsClient::new(channel)
        .enroll(EnrollRequest {
            token: token.encode().map_err(|e| EnrollError::Token(e.to_string()))?,
            computer: computer.to_string(),
            csr_pem,
        })
        .await
        .map_err(|s| EnrollError::Refused(s.message().to_owned()))?
        .into_inner();
    let first = cascade_trust::pem_certs(&reply.cert_pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| EnrollError::Refused("the node sent no certificate".into()))?;
    match cascade_trust::identity_of(&first) {
        Ok(got) if got == identity => {}
        Ok(got) => {
            return Err(EnrollError::WrongIdentity {
                got: got.to_string(),
                wanted: identity.to_string(),
            });
        }
        Err(e) => return Err(EnrollError::Refused(e.to_string())),
    }
    std::fs::create_dir_all(data).map_err(|e| EnrollError::File {
        path: data.to_path_buf(),
        detail: e.to_string(),
    })?;
    write_file(&data.join("ca.crt"), token.ca_pem.as_bytes(), false)?;
    write_file(&data.join("agent.key"), key_pem.as_bytes(), true)?;
    write_file(&data.join("agent.crt"), reply.cert_pem.as_bytes(), false)?;
    let config = data.join("agent.toml");
    if !config.exists() {
        let text = toml::to_string_pretty(&AgentConfig::enrolled(
            Path::new("."),
            &address,
            (!reply.root.is_empty()).then(|| reply.root.clone()),
        ))
        .map_err(|e| EnrollError::File {
            path: config.clone(),
            detail: e.to_string(),
        })?;
        write_file(&config, text.as_bytes(), false)?;
    }
    Ok(Enrolled {
        computer: computer.clone(),
        site: reply.site,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str, priority: u32) -> NodeEntry {
        NodeEntry {
            address: address.into(),
            priority,
        }
    }

    #[test]
    fn nearest_reachable_first_then_priority() {
        let nodes = [node("a:1", 2), node("b:1", 1), node("c:1", 0), node("d:1", 5)];
        let ms = |n: u64| Some(Duration::from_micros(n * 1000 + 300));
        let order =
            |l: &[Option<Duration>]| -> Vec<String> { rank(&nodes, l).into_iter().map(|n| n.address).collect() };
        assert_eq!(order(&[ms(1), ms(1), None, ms(9)]), vec!["b:1", "a:1", "d:1", "c:1"]);
        assert_eq!(order(&[ms(1), ms(30), ms(12), None]), vec!["a:1", "c:1", "b:1", "d:1"]);
        // A millisecond or two apart is equally near: the priority decides.
        assert_eq!(order(&[ms(1), ms(30), ms(3), None]), vec!["c:1", "a:1", "b:1", "d:1"]);
        assert_eq!(order(&[None, None, None, None]), vec!["c:1", "b:1", "a:1", "d:1"]);
    }
}
