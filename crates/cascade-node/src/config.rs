//! The node's TOML configuration, checked at start with errors that name
//! the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cascade_core::model::NodeId;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; its certificate must say the same.
    pub id: String,
    /// Address to serve gRPC on; port 0 lets the system pick one (written to
    /// `<data>/node.addr`).
    pub listen: String,
    /// Directory of the node's store.
    pub data: PathBuf,
    /// The parent node, absent on the root.
    #[serde(default)]
    pub parent: Option<ParentConfig>,
    pub tls: TlsConfig,
    /// Seconds between heartbeats on quiet links.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Largest number of upserts sent up in one batch.
    #[serde(default = "default_batch")]
    pub report_batch: usize,
    /// Seconds a parent link may go without progress (nothing applied, no
    /// acknowledgement, while there is work) before it is reported stalled
    /// and connected afresh.
    #[serde(default = "default_stall")]
    pub stall_seconds: u64,
    /// Days a child may stay away and still have this node's change log
    /// kept for it; after that compaction goes on without it, and it gets a
    /// snapshot when it comes back.
    #[serde(default = "default_log_hold_days")]
    pub log_hold_days: u64,
    /// sled's cache of the store, in MiB of data on disk (it takes several
    /// times that in memory).
    #[serde(default = "default_store_cache")]
    pub store_cache_mb: u64,
    /// Whether a store created by this node keeps its data compressed
    /// (zstd): about a quarter of the disk, slower writes. An existing
    /// store keeps what it was created with (restore a backup to change it).
    #[serde(default)]
    pub store_compression: bool,
    /// Address for Prometheus metrics over plain HTTP (`/metrics`); off when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Address of the workflow API, help page and console (HTTPS with this
    /// node's certificate); off when absent. Port 0 lets the system pick
    /// (written to `<data>/api.addr`).
    #[serde(default)]
    pub api_listen: Option<String>,
    /// Lets agents enroll here with one-time tokens; off when absent.
    #[serde(default)]
    pub enrollment: Option<EnrollmentConfig>,
    /// Directory of update content served to agents, one file per sha256
    /// (lower-case hex name); `<data>/content` when absent.
    #[serde(default)]
    pub content: Option<PathBuf>,
    /// Most bytes of content kept; no limit when absent.
    #[serde(default)]
    pub content_cache_bytes: Option<u64>,
    /// Signed timestamps and how old a view may get.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Directories whose files `content.add` may add (nothing else on the
    /// node's disk is reachable through the API).
    #[serde(default)]
    pub content_import: Vec<PathBuf>,
    /// Agents from other sites this node serves (failover).
    #[serde(default)]
    pub agents: AgentsConfig,
    /// Where the root may download vendor content from.
    #[serde(default)]
    pub vendor: VendorConfig,
    /// Connection limits of the gRPC and API listeners.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Agents this node serves besides those its own `[enrollment]` CA issued.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Certificates of other sites' enrollment CAs whose agents may fail
    /// over to this node.
    #[serde(default)]
    pub trusted_enrollment_cas: Vec<PathBuf>,
}

/// The root's vendor downloads: HTTPS to the listed hosts only, unless
/// told otherwise.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// Host names content may come from; `*.example.com` allows the
    /// subdomains of example.com.
    #[serde(default = "default_vendor_hosts")]
    pub allow_hosts: Vec<String>,
    /// Plain `http://` URLs too (the content is checked against the
    /// catalog's sha256 either way).
    #[serde(default)]
    pub allow_http: bool,
    /// Loopback, private, link-local and other non-public addresses too.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

impl Default for VendorConfig {
    fn default() -> Self {
        VendorConfig {
            allow_hosts: default_vendor_hosts(),
            allow_http: false,
            allow_private_addresses: false,
        }
    }
}

/// Microsoft's download hosts, as the Update Catalog and WSUS name them.
fn default_vendor_hosts() -> Vec<String> {
    [
        "download.windowsupdate.com",
        "*.download.windowsupdate.com",
        "download.microsoft.com",
        "*.download.microsoft.com",
        "catalog.update.microsoft.com",
        "*.delivery.mp.microsoft.com",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// How many connections each listener keeps and how long a silent one may
/// stay.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections at once per listener (gRPC, API); by default a third of
    /// the process's open-file limit each, so that both together stay below it.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Seconds a connection may stay silent before the node closes it
    /// (HTTP/2 pings count; a client without a certificate gets a tenth).
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: None,
            idle_seconds: default_idle_seconds(),
        }
    }
}

fn default_idle_seconds() -> u64 {
    300
}

/// The root's signed timestamps and the freshness every node asks of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Seconds between the root's signed timestamps (only the root makes them).
    #[serde(default = "default_timestamp_seconds")]
    pub timestamp_seconds: u64,
    /// A root timestamp older than this means a frozen view: the node warns
    /// ("freeze") and its agents are told the same limit.
    #[serde(default = "default_max_timestamp_age")]
    pub max_timestamp_age_seconds: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            timestamp_seconds: default_timestamp_seconds(),
            max_timestamp_age_seconds: default_max_timestamp_age(),
        }
    }
}

fn default_timestamp_seconds() -> u64 {
    600
}

fn default_max_timestamp_age() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// This site's enrollment CA (`cascade pki issue enrollment-ca`).
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Validity of the agents' certificates.
    #[serde(default = "default_certificate_days")]
    pub certificate_days: i64,
}

fn default_certificate_days() -> i64 {
    397
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentConfig {
    /// `host:port` of the parent.
    pub address: String,
    /// The parent's node id: the link refuses a server whose certificate
    /// is not `cascade://node/<id>`.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The organisation CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

fn default_heartbeat() -> u64 {
    5
}

fn default_stall() -> u64 {
    120
}

fn default_log_hold_days() -> u64 {
    30
}

fn default_store_cache() -> u64 {
    cascade_store::DEFAULT_CACHE_BYTES >> 20
}

/// Each batch a parent takes is one durable commit there, so larger
/// batches make fewer commits at every hop (`cascade bench replication`:
/// 1,000 gave 31,000 records/s over three hops, 5,000 gave 46,000). A
/// batch holds what is queued; nothing waits for one to fill.
fn default_batch() -> usize {
    5000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: `{key}`: {detail}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        detail: String,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Checked {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub parent: Option<String>,
    /// The parent's id, which its certificate must name.
    pub parent_id: Option<NodeId>,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub heartbeat_seconds: u64,
    pub report_batch: usize,
    pub stall_seconds: u64,
    /// Days a child away still holds the change log.
    pub log_hold_days: u64,
    /// sled's cache, in bytes.
    pub store_cache_bytes: u64,
    /// Whether a store created now is compressed.
    pub store_compression: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub api_listen: Option<SocketAddr>,
    /// The site's enrollment CA and the validity of what it signs.
    pub enrollment: Option<(std::sync::Arc<cascade_trust::Ca>, i64)>,
    pub content_dir: PathBuf,
    pub content_cache_bytes: Option<u64>,
    pub security: SecurityConfig,
    /// The enrollment CAs (DER) whose agents this node serves: its own and
    /// the trusted ones.
    pub agent_cas: Vec<Vec<u8>>,
    /// Directories `content.add` may read, canonical.
    pub content_import: Vec<PathBuf>,
    pub vendor: VendorConfig,
    pub limits: LimitsConfig,
    /// This node's certificate and key as they are now (renewed files are
    /// picked up while it runs), and the key that seals its changes.
    pub tls: std::sync::Arc<crate::tls::NodeTls>,
    /// What the node reads the time from: the wall clock, unless a test
    /// sets one that moves only when told.
    pub clock: std::sync::Arc<dyn crate::Clock>,
}

impl Checked {
    /// A node without a parent on 127.0.0.1 under `data`, with an
    /// organisation CA of its own made here (valid from a minute ago for a
    /// day): a node alone, for tests and benchmarks.
    pub fn standalone(id: NodeId, data: PathBuf) -> Result<Checked, cascade_trust::TrustError> {
        let from = crate::now() - 60;
        let ca = cascade_trust::Ca::generate("Cascade standalone", from, 1)?;
        let issued = ca.issue(&cascade_trust::Identity::Node(id.clone()), &[], from, 1)?;
        Self::local(id, data, None, ca.cert_pem, issued.cert_pem, issued.key_pem)
    }

    /// A node on 127.0.0.1 (port picked by the system) with defaults, for
    /// nodes run inside one process (the demo, benchmarks, tests).
    pub fn local(
        id: NodeId,
        data: PathBuf,
        parent: Option<(NodeId, String)>,
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    ) -> Result<Checked, cascade_trust::TrustError> {
        let signer = std::sync::Arc::new(cascade_trust::sign::KeySigner::from_pem(&cert_pem, &key_pem)?);
        let tls = crate::tls::NodeTls::new(&cert_pem, &key_pem, signer, None)
            .map_err(cascade_trust::TrustError::Certificate)?;
        Ok(Checked {
            id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            content_dir: data.join("content"),
            data,
            parent_id: parent.as_ref().map(|(id, _)| id.clone()),
            parent: parent.map(|(_, address)| address),
            ca_pem,
            cert_pem,
            key_pem,
            heartbeat_seconds: default_heartbeat(),
            report_batch: default_batch(),
            stall_seconds: default_stall(),
            log_hold_days: default_log_hold_days(),
            store_cache_bytes: cascade_store::DEFAULT_CACHE_BYTES,
            store_compression: false,
            metrics_listen: None,
            api_listen: None,
            enrollment: None,
            content_cache_bytes: None,
            security: SecurityConfig::default(),
            agent_cas: Vec::new(),
            content_import: Vec::new(),
            vendor: VendorConfig::default(),
            limits: LimitsConfig::default(),
            tls: std::sync::Arc::new(tls),
            clock: std::sync::Arc::new(crate::SystemClock),
        })
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        Self::parse(path, &text)?.check(path)
    }

    /// The configuration's text as types, before anything it names is read.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string().trim().to_owned(),
        })
    }

    pub fn check(self, path: &Path) -> Result<Checked, ConfigError> {
        let invalid = |key: &'static str, detail: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            detail,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let id = NodeId::new(&self.id).map_err(|e| invalid("id", e.to_string()))?;
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| invalid("listen", format!("{:?} is not host:port ({e})", self.listen)))?;
        if let Some(parent) = &self.parent
            && !parent.address.contains(':')
        {
            return Err(invalid(
                "parent.address",
                format!("{:?} is not host:port", parent.address),
            ));
        }
        let parent_id = match &self.parent {
            Some(parent) => {
                let parent_id = NodeId::new(&parent.id).map_err(|e| invalid("parent.id", e.to_string()))?;
                if parent_id == id {
                    return Err(invalid("parent.id", format!("{parent_id} is this node itself")));
                }
                Some(parent_id)
            }
            None => None,
        };
        let read = |key: &'static str, p: &Path| {
            std::fs::read_to_string(resolve(p)).map_err(|e| invalid(key, format!("{}: {e}", resolve(p).display())))
        };
        let ca_pem = read("tls.ca", &self.tls.ca)?;
        let cert_pem = read("tls.cert", &self.tls.cert)?;
        let key_pem = read("tls.key", &self.tls.key)?;
        let cert = cascade_trust::pem_certs(&cert_pem).map_err(|e| invalid("tls.cert", e.to_string()))?;
        let first = cert
            .first()
            .ok_or_else(|| invalid("tls.cert", "no certificate in the file".to_owned()))?;
        match cascade_trust::identity_of(first) {
            Ok(cascade_trust::Identity::Node(cert_id)) if cert_id == id => {}
            Ok(other) => {
                return Err(invalid(
                    "tls.cert",
                    format!("the certificate is for {other}, not node {id}"),
                ));
            }
            Err(e) => return Err(invalid("tls.cert", e.to_string())),
        }
        let signer = cascade_trust::sign::KeySigner::from_pem(&cert_pem, &key_pem)
            .map_err(|e| invalid("tls.key", format!("cannot sign with it: {e}")))?;
        let tls = crate::tls::NodeTls::new(
            &cert_pem,
            &key_pem,
            std::sync::Arc::new(signer),
            Some((resolve(&self.tls.cert), resolve(&self.tls.key))),
        )
        .map_err(|e| invalid("tls.key", e))?;
        if !(1..=86_400).contains(&self.security.timestamp_seconds) {
            return Err(invalid(
                "security.timestamp_seconds",
                format!("{} is not between 1 and 86400", self.security.timestamp_seconds),
            ));
        }
        if self.security.max_timestamp_age_seconds <= self.security.timestamp_seconds {
            return Err(invalid(
                "security.max_timestamp_age_seconds",
                format!(
                    "{} is not more than security.timestamp_seconds ({}): every view would be stale",
                    self.security.max_timestamp_age_seconds, self.security.timestamp_seconds
                ),
            ));
        }
        if self.heartbeat_seconds == 0 || self.heartbeat_seconds > 3600 {
            return Err(invalid(
                "heartbeat_seconds",
                format!("{} is not between 1 and 3600", self.heartbeat_seconds),
            ));
        }
        if self.log_hold_days == 0 || self.log_hold_days > 3650 {
            return Err(invalid(
                "log_hold_days",
                format!("{} is not between 1 and 3650", self.log_hold_days),
            ));
        }
        if self.stall_seconds < 5 || self.stall_seconds > 86_400 {
            return Err(invalid(
                "stall_seconds",
                format!("{} is not between 5 and 86400", self.stall_seconds),
            ));
        }
        if self.store_cache_mb < 8 || self.store_cache_mb > 65_536 {
            return Err(invalid(
                "store_cache_mb",
                format!("{} is not between 8 and 65536", self.store_cache_mb),
            ));
        }
        if self.report_batch == 0 || self.report_batch > 100_000 {
            return Err(invalid(
                "report_batch",
                format!("{} is not between 1 and 100000", self.report_batch),
            ));
        }
        let metrics_listen = match &self.metrics_listen {
            Some(m) => Some(
                m.parse()
                    .map_err(|e| invalid("metrics_listen", format!("{m:?} is not host:port ({e})")))?,
            ),
            None => None,
        };
        let enrollment = match &self.enrollment {
            Some(e) => {
                if !(1..=3650).contains(&e.certificate_days) {
                    return Err(invalid(
                        "enrollment.certificate_days",
                        format!("{} is not between 1 and 3650", e.certificate_days),
                    ));
                }
                let ca = cascade_trust::Ca::load_files(&resolve(&e.ca_cert), &resolve(&e.ca_key))
                    .map_err(|err| invalid("enrollment.ca_cert", err.to_string()))?;
                Some((std::sync::Arc::new(ca), e.certificate_days))
            }
            None => None,
        };
        let data = resolve(&self.data);
        let content_dir = self
            .content
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| data.join("content"));
        let api_listen = match &self.api_listen {
            Some(a) => Some(
                a.parse()
                    .map_err(|e| invalid("api_listen", format!("{a:?} is not host:port ({e})")))?,
            ),
            None => None,
        };
        let mut agent_cas = Vec::new();
        if let Some((ca, _)) = &enrollment {
            agent_cas.push(ca.cert_der());
        }
        for path in &self.agents.trusted_enrollment_cas {
            let pem = read("agents.trusted_enrollment_cas", path)?;
            let certs = cascade_trust::pem_certs(&pem).map_err(|e| {
                invalid(
                    "agents.trusted_enrollment_cas",
                    format!("{}: {e}", resolve(path).display()),
                )
            })?;
            if certs.is_empty() {
                return Err(invalid(
                    "agents.trusted_enrollment_cas",
                    format!("{}: no certificate in the file", resolve(path).display()),
                ));
            }
            agent_cas.extend(certs);
        }
        let mut content_import = Vec::new();
        for dir in &self.content_import {
            let canonical = std::fs::canonicalize(resolve(dir))
                .map_err(|e| invalid("content_import", format!("{}: {e}", resolve(dir).display())))?;
            if !canonical.is_dir() {
                return Err(invalid(
                    "content_import",
                    format!("{} is not a directory", canonical.display()),
                ));
            }
            content_import.push(canonical);
        }
        for host in &self.vendor.allow_hosts {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty() || bare.contains(['/', ':', '*', ' ']) {
                return Err(invalid(
                    "vendor.allow_hosts",
                    format!("{host:?} is not a host name or *.domain"),
                ));
            }
        }
        if self
            .limits
            .max_connections
            .is_some_and(|n| !(8..=1_000_000).contains(&n))
        {
            return Err(invalid(
                "limits.max_connections",
                format!("{:?} is not between 8 and 1000000", self.limits.max_connections),
            ));
        }
        if !(10..=86_400).contains(&self.limits.idle_seconds) {
            return Err(invalid(
                "limits.idle_seconds",
                format!("{} is not between 10 and 86400", self.limits.idle_seconds),
            ));
        }
        if self.content_cache_bytes == Some(0) {
            return Err(invalid(
                "content_cache_bytes",
                "0 leaves no room; leave it out for no limit".to_owned(),
            ));
        }
        Ok(Checked {
            security: self.security,
            tls: std::sync::Arc::new(tls),
            clock: std::sync::Arc::new(crate::SystemClock),
            content_cache_bytes: self.content_cache_bytes,
            api_listen,
            enrollment,
            content_dir,
            metrics_listen,
            id,
            listen,
            data,
            parent: self.parent.map(|p| p.address),
            parent_id,
            agent_cas,
            content_import,
            vendor: self.vendor,
            limits: self.limits,
            ca_pem,
            cert_pem,
            key_pem,
            heartbeat_seconds: self.heartbeat_seconds,
            report_batch: self.report_batch,
            stall_seconds: self.stall_seconds,
            log_hold_days: self.log_hold_days,
            store_cache_bytes: self.store_cache_mb << 20,
            store_compression: self.store_compression,
        })
    }
}
