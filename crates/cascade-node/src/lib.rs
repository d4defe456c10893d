//! The Cascade node: one per site. It serves the Hierarchy service to its
//! children and the Admin service to operators over mTLS gRPC (with health
//! and reflection), keeps a link to its parent (changes down, reports up),
//! and keeps its state in the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_core::model::{Change, ChangeOp, NodeId, Object, ObjectKind};
use cascade_store::Store;
use cascade_trust::Identity;
use tokio::sync::watch;

pub mod admin;
pub mod agents;
pub mod api;
pub mod config;
pub mod content;
pub mod control;
pub mod db;
pub mod gate;
pub mod hierarchy;
pub mod link;
pub mod listener;
pub mod rollout;
mod run;
pub mod security;
pub mod targeting;
pub mod tls;
pub mod topology;
mod vendor;
pub mod wire;

pub use run::{RunningNode, StartError, start};

pub use config::{Checked, NodeConfig};

/// One link's state, as operators see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LinkStatus {
    pub connected: bool,
    /// Unix seconds of the last message either way.
    pub last_contact: i64,
    /// How many entries the other side is behind (child-down: changes the
    /// child had not applied when it last said how far it was, summed over
    /// origins; up: outbox entries not yet acknowledged).
    pub seq_lag: u64,
    pub last_error: String,
    /// The link went `stall_seconds` without progress and has not moved
    /// since (it was connected afresh).
    #[serde(default)]
    pub stalled: bool,
    /// How many times the link was found without progress.
    #[serde(default)]
    pub stalls: u64,
    /// The protocol the other end named when the link connected: the
    /// parent's on this node's own links, the child's on a child's (0: none).
    #[serde(default)]
    pub protocol: u32,
}

/// The running node's shared state.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    /// For code on the blocking pool; async code goes through `db` or
    /// [`Node::run`].
    pub store: Arc<Store>,
    /// The store for async code.
    pub db: db::Db,
    pub config: Checked,
    /// How its tasks wake each other.
    pub(crate) signals: topology::Signals,
    /// Its parent, its links, and what its children declared below them.
    pub(crate) topology: topology::Topology,
    /// Targeting and planners, rebuilt when the objects change.
    targeting: Mutex<Option<targeting::TargetingCache>>,
    /// Agents' check-ins not yet written to the store.
    seen: agents::Seen,
    /// The API's tasks and its permit for heavy reports.
    pub(crate) work: api::Work,
    /// Staged-rollout counts of this node and its subtree.
    pub(crate) tallies: rollout::Tallies,
    /// Content transfers and counters.
    pub(crate) content: content::ContentState,
    /// What it trusts and has checked already, and what it refused.
    pub trust: security::Trust,
    /// The connections of the gRPC and API listeners, bounded.
    pub listeners: listener::Listeners,
}

const DIRECTIONS: [&str; 4] = ["down", "up", "child-down", "child-up"];

/// The wall clock: the one place this crate reads the time of day. A node
/// reads the time through its [`Clock`] (`Node::now`), which is this unless
/// a test set another.
#[allow(clippy::disallowed_methods)]
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The time of day as a node sees it, in Unix seconds: windows, deadlines,
/// freezes, expiry and the times it records all read it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        now()
    }
}

/// A clock that moves only when told: tests of windows, freezes and expiry
/// set the time instead of waiting for it.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(at: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(at))
    }

    pub fn set(&self, at: i64) {
        self.0.store(at, std::sync::atomic::Ordering::Release);
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Node {
    /// The time of day as this node sees it (its configured [`Clock`]).
    pub fn now(&self) -> i64 {
        self.config.clock.now()
    }

    /// Runs `f` with this node on the blocking pool: work that reads the
    /// store through the node's own views (agents, targeting, effective
    /// objects, what a report counts).
    pub async fn run<T: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&Arc<Node>) -> T + Send + 'static) -> T {
        let node = self.clone();
        blocking(move || f(&node)).await
    }
}

impl Node {
    pub fn new(config: Checked, store: Arc<Store>) -> Arc<Node> {
        let topology = topology::Topology::new(Self::initial_parent(&config, &store), Self::stored_links(&store));
        let node = Arc::new(Node {
            id: config.id.clone(),
            db: db::Db::new(store.clone()),
            store,
            signals: topology::Signals::default(),
            topology,
            targeting: Mutex::new(None),
            seen: agents::Seen::default(),
            work: api::Work::default(),
            tallies: rollout::Tallies::default(),
            content: content::ContentState::default(),
            trust: security::Trust::new(cascade_trust::pem_certs(&config.ca_pem).unwrap_or_default()),
            listeners: listener::Listeners::new(&config.limits),
            config,
        });
        // Before anything else is written: every own change is sealed with
        // the key published here.
        if let Err(e) = node.publish_signing_key() {
            tracing::error!(error = %e, "cannot publish this node's signing key");
        }
        node
    }

    /// Where the parent is: a move's address wins over the configuration.
    fn initial_parent(config: &Checked, store: &Store) -> Option<(String, Option<NodeId>)> {
        let configured = config.parent.clone()?;
        match store.moved_to() {
            Ok(Some((moved, id))) if moved != configured => {
                tracing::warn!(configured = %configured, moved = %moved, "this node was moved: using the parent it was moved to (set [parent] address and id to it)");
                Some((moved, id))
            }
            _ => Some((configured, config.parent_id.clone())),
        }
    }

    /// The id the parent's certificate must name (none known: the link
    /// refuses to connect).
    pub fn parent_id(&self) -> Option<NodeId> {
        self.topology.parent_id()
    }

    /// The parent's address now.
    pub fn parent_address(&self) -> Option<String> {
        self.topology.parent_address()
    }

    /// Moves this node under another parent (which must have registered it
    /// as a child): kept in the store, and the link reconnects there.
    pub async fn move_to(&self, address: String, id: NodeId) -> Result<Option<String>, cascade_store::StoreError> {
        let store = self.db.clone();
        let (keep, keep_id) = (address.clone(), id.clone());
        store.run(move |store| store.put_moved_to(&keep, &keep_id)).await?;
        Ok(self.topology.set_parent(address, id))
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.signals.subscribe_changes()
    }

    /// Something was queued for the parent outside this crate (agents'
    /// reports): send it soon.
    pub fn upward_ready(&self) {
        self.signals.upward_ready();
    }

    pub(crate) fn changed(&self) {
        self.signals.changed();
    }

    /// "Replicate now": the parent links reconnect at once if they are
    /// waiting to retry or have been quiet, and the outbox is sent.
    pub fn replicate_now(&self) {
        self.signals.replicate_now();
    }

    /// Records a change made here and wakes the children's streams.
    pub async fn append_local(
        self: &Arc<Self>,
        op: impl Into<cascade_core::exact::Exact<ChangeOp>>,
    ) -> Result<Change, cascade_store::StoreError> {
        let op = op.into();
        let store = self.db.clone();
        let change = store.run(move |store| store.append_local(op)).await?;
        self.changed();
        Ok(change)
    }

    /// Records many changes made here in one commit.
    pub async fn append_local_many(
        self: &Arc<Self>,
        ops: Vec<ChangeOp>,
    ) -> Result<Vec<Change>, cascade_store::StoreError> {
        let store = self.db.clone();
        let changes = store.run(move |store| store.append_local_many(ops)).await?;
        self.changed();
        Ok(changes)
    }

    /// Link status as stored by an earlier run: everything disconnected
    /// until the links come up again. What cannot be read is said and
    /// started afresh (it is rewritten as the links report).
    fn stored_links(store: &Store) -> BTreeMap<(String, &'static str), LinkStatus> {
        let value = match store.link_status() {
            Ok(Some(value)) => value,
            Ok(None) => return BTreeMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the link status of the last run");
                return BTreeMap::new();
            }
        };
        let rows: Vec<(String, String, LinkStatus)> = match serde_json::from_value(value) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "the stored link status of the last run is not readable");
                Vec::new()
            }
        };
        rows.into_iter()
            .filter_map(|(peer, direction, mut status)| {
                let direction = DIRECTIONS.into_iter().find(|d| *d == direction)?;
                status.connected = false;
                Some(((peer, direction), status))
            })
            .collect()
    }

    pub(crate) fn set_link(&self, peer: &str, direction: &'static str, update: impl FnOnce(&mut LinkStatus)) {
        self.topology.set_link(peer, direction, update);
    }

    /// Writes the link status to the store when it changed.
    pub async fn persist_links(self: &Arc<Self>) -> Result<(), cascade_store::StoreError> {
        if !self.topology.take_links_changed() {
            return Ok(());
        }
        // Strings, numbers and booleans: this serializes without fail.
        let rows = serde_json::to_value(self.links()).unwrap_or_default();
        let store = self.db.clone();
        store.run(move |store| store.put_link_status(&rows)).await
    }

    pub fn links(&self) -> Vec<(String, &'static str, LinkStatus)> {
        self.topology.links()
    }

    /// The verified identity of a gRPC caller of this node, unless its
    /// certificate is revoked.
    pub fn peer_identity<T>(&self, request: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
        let identity = peer_identity(request, &self.trust.ca_ders)?;
        if let Some(leaf) = request.peer_certs().and_then(|c| c.first().map(|c| c.to_vec()))
            && let Some(why) = self.revocation_of(&leaf)
        {
            tracing::warn!(%identity, "refused a revoked certificate: {why}");
            return Err(tonic::Status::permission_denied(why));
        }
        Ok(identity)
    }

    /// This node's children (sites it registered).
    pub fn children(&self) -> Result<Vec<NodeId>, cascade_store::StoreError> {
        Ok(self
            .store
            .objects(ObjectKind::Site)?
            .into_iter()
            .filter(|s| s.origin == self.id)
            .filter_map(|s| match s.object.into_value() {
                Object::Site(site) if site.parent.as_ref() == Some(&self.id) => NodeId::new(site.id.as_str()).ok(),
                _ => None,
            })
            .collect())
    }

    /// This node's subtree: itself, its children, and what each child
    /// declared below it.
    pub fn subtree(&self) -> Result<std::collections::BTreeSet<NodeId>, cascade_store::StoreError> {
        let mut out = self.topology.declared_below(&self.children()?);
        out.insert(self.id.clone());
        Ok(out)
    }

    /// Records a child's declared subtree, keeping only what lies below it.
    pub(crate) fn declare_subtree(&self, child: &NodeId, sites: std::collections::BTreeSet<NodeId>) {
        self.topology.declare_subtree(&self.id, child, sites);
    }

    /// A setting's value as in force here (overrides applied), if set.
    pub fn setting(&self, id: &str) -> Result<Option<serde_json::Value>, cascade_store::StoreError> {
        Ok(self
            .effective_objects(ObjectKind::Setting)?
            .into_iter()
            .find_map(|o| match o {
                Object::Setting(s) if s.id.as_str() == id => Some(s.value),
                _ => None,
            }))
    }

    /// Records the parents a child declared for the sites below it, keeping
    /// only sites of its declared subtree.
    pub(crate) fn declare_parents(&self, child: &NodeId, parents: BTreeMap<NodeId, NodeId>) {
        self.topology.declare_parents(child, parents);
    }

    /// The parent of every site of this node's subtree but itself.
    pub fn site_parents(&self) -> Result<BTreeMap<NodeId, NodeId>, cascade_store::StoreError> {
        Ok(self.topology.declared_parents(&self.id, &self.children()?))
    }

    /// The sites of `site`'s subtree (itself and every site below it), when
    /// it lies in this node's subtree.
    pub fn subtree_of(
        &self,
        site: &NodeId,
    ) -> Result<Option<std::collections::BTreeSet<NodeId>>, cascade_store::StoreError> {
        let all = self.subtree()?;
        if !all.contains(site) {
            return Ok(None);
        }
        let parents = self.site_parents()?;
        Ok(Some(
            all.into_iter()
                .filter(|s| {
                    // Walk up from `s`; the tree is at most as deep as it is wide.
                    let mut at = s;
                    for _ in 0..=parents.len() {
                        if at == site {
                            return true;
                        }
                        match parents.get(at) {
                            Some(p) => at = p,
                            None => return false,
                        }
                    }
                    false
                })
                .collect(),
        ))
    }

    /// Whether `site` lies in `child`'s subtree as the child declared it.
    pub(crate) fn in_subtree_of(&self, child: &NodeId, site: &NodeId) -> bool {
        self.topology.in_subtree_of(child, site)
    }

    /// Whether `child` is registered with this node as a child site.
    pub fn is_child(&self, child: &NodeId) -> Result<bool, cascade_store::StoreError> {
        Ok(self
            .store
            .objects(ObjectKind::Site)?
            .iter()
            .any(|s| match s.object.value() {
                Object::Site(site) => {
                    site.id.as_str() == child.as_str() && site.parent.as_ref() == Some(&self.id) && s.origin == self.id
                }
                _ => false,
            }))
    }
}

/// Runs blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The verified identity of a gRPC caller. Only agents' certificates may
/// come through an intermediate (their site's enrollment CA): a node or
/// admin identity must be signed by the organisation CA itself, so that a
/// site's enrollment key cannot mint one.
pub fn peer_identity<T>(request: &tonic::Request<T>, organisation_ca: &[Vec<u8>]) -> Result<Identity, tonic::Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    let first = certs
        .first()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    let _ = first;
    let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
    identity_of_chain(&ders, organisation_ca)
}

/// The identity of a verified client chain (leaf first). Agents may come
/// through their site's enrollment CA; a node or admin identity must be
/// signed by the organisation CA itself: every certificate after the leaf
/// must be the organisation CA (clients such as curl append it), so that a
/// site's enrollment key cannot mint one.
pub fn identity_of_chain(chain: &[&[u8]], organisation_ca: &[Vec<u8>]) -> Result<Identity, tonic::Status> {
    let first = chain
        .first()
        .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
    let identity = cascade_trust::identity_of(first).map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
    let intermediate = chain[1..]
        .iter()
        .any(|c| !organisation_ca.iter().any(|ca| ca.as_slice() == *c));
    if intermediate && !matches!(identity, Identity::Agent(_)) {
        return Err(tonic::Status::permission_denied(format!(
            "{identity} came with an intermediate certificate; node and admin certificates are issued by the organisation CA itself"
        )));
    }
    Ok(identity)
}

/// The TLS server configuration of this node's listeners: its current
/// certificate, client certificates asked for and checked against the
/// organisation CA but not required.
pub fn server_tls(
    node: &Node,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error + Send + Sync>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(node.config.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(node.config.tls.resolver());
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// Serves until `shutdown` resolves. Returns the address actually bound.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tonic::transport::Server;
    // Agents enroll before they have a certificate; every other call checks
    // the caller's verified certificate itself. The certificate presented is
    // always the current one (renewal needs no restart).
    let tls = tokio_rustls::TlsAcceptor::from(server_tls(&node, vec![b"h2".to_vec()])?);
    let (accepted, incoming) = tokio::sync::mpsc::channel(64);
    let connections = node.listeners.grpc.clone();
    tokio::spawn(async move {
        loop {
            // The listener goes when the server stopped taking connections.
            let (tcp, remote) = tokio::select! {
                result = listener.accept() => match result {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = accepted.closed() => return,
            };
            let (tls, sender) = (tls.clone(), accepted.clone());
            let slot = connections.admit();
            // Each handshake in its own task: a slow client holds up no other.
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let stream = listener::Bounded::new(cascade_content::transport::Buffered::new(tcp), slot);
                match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        if stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                            stream.get_ref().0.slot().certified();
                        }
                        let _ = sender.send(Ok::<_, std::io::Error>(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<cascade_proto::v1::hierarchy_server::HierarchyServer<hierarchy::HierarchyService>>()
        .await;
    health_reporter
        .set_serving::<cascade_proto::v1::admin_server::AdminServer<admin::AdminService>>()
        .await;
    health_reporter
        .set_serving::<cascade_proto::v1::agents_server::AgentsServer<agents::AgentsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cascade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let limit = gate::NODE_BODY;
    Server::builder()
        // Who may call what, and how large a body, before any body is read.
        .layer(gate::GateLayer { node: node.clone() })
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(256))
        // Content streams: HTTP/2's default 64 KB window would cap a
        // transfer at one window per round trip.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_service(health)
        .add_service(reflection)
        .add_service(
            cascade_proto::v1::hierarchy_server::HierarchyServer::new(hierarchy::HierarchyService {
                node: node.clone(),
            })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
            // Changes and snapshots go compressed to children that take it.
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .add_service(
            cascade_proto::v1::admin_server::AdminServer::new(admin::AdminService { node: node.clone() })
                .max_decoding_message_size(api::UPLOAD_LIMIT),
        )
        .add_service(
            cascade_proto::v1::agents_server::AgentsServer::new(agents::AgentsService { node: node.clone() })
                .max_decoding_message_size(gate::AGENT_BODY),
        )
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(incoming), shutdown)
        .await?;
    Ok(())
}

/// Binds the configured address; the chosen port is written to
/// `<data>/node.addr` for operators and tests.
pub async fn bind(config: &Checked) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    std::fs::create_dir_all(&config.data)?;
    let tmp = config.data.join("node.addr.tmp");
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(tmp, config.data.join("node.addr"))?;
    Ok((listener, addr))
}

/// A gRPC channel to the node at `address`, authenticated with a
/// certificate of the organisation. The server must present a node
/// certificate of the organisation CA, and the node `expect` names when
/// given: a genuine node certificate elsewhere in the tree cannot pose as
/// the parent (or as the node `cascade ctl` addressed).
pub async fn channel(
    address: &str,
    expect: Option<&NodeId>,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<tonic::transport::Channel, ChannelError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tonic::transport::Endpoint;
    let tls = |e: &dyn std::fmt::Display| ChannelError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let expect = expect.cloned();
    let target = address.to_owned();
    let connect = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let (connector, expect, target) = (connector.clone(), expect.clone(), target.clone());
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // Node certificates name "localhost" for TLS; who the server is
            // comes from its identity below.
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            let stream = connector
                .connect(name, cascade_content::transport::Buffered::new(tcp))
                .await?;
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| std::io::Error::other("the server presented no certificate"))?;
            let identity = cascade_trust::identity_of(leaf).map_err(std::io::Error::other)?;
            let refused = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
            match (&identity, &expect) {
                (Identity::Node(id), Some(want)) if id == want => {}
                (Identity::Node(_), None) => {}
                (_, Some(want)) => {
                    return Err(refused(format!("{target} presented {identity}, not node {want}")));
                }
                (_, None) => return Err(refused(format!("{target} presented {identity}, which is not a node"))),
            }
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(ChannelError::Transport)?
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_with_connector(connect)
        .await
        .map_err(ChannelError::Transport)
}

/// Why a channel to a node could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection, its handshake or the server's identity; the
    /// message carries the cause (tonic's own says only "transport error").
    #[error("{}", chain_text(.0))]
    Transport(tonic::transport::Error),
}

fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// HTTP/2 flow-control windows of node connections (per stream, per
/// connection), sized for content transfers.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// How many changes of each origin are kept beyond what every child has.
pub const LOG_RETAIN: u64 = 10_000;
/// How many outbox entries may wait for the parent before the oldest go
/// (and the parent gets a snapshot instead).
pub const OUTBOX_MAX: u64 = 100_000;

/// What one compaction dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub changes: usize,
    pub outbox_entries: u64,
    /// Children away longer than `log_hold_days`, not waited for.
    pub released: Vec<NodeId>,
}

impl Node {
    /// The children whose down link has been away longer than
    /// `log_hold_days` (by the link status, which outlives restarts).
    fn released_children(&self) -> std::collections::BTreeSet<NodeId> {
        let hold = (self.config.log_hold_days as i64).saturating_mul(86_400);
        let now = self.now();
        self.links()
            .into_iter()
            .filter(|(_, direction, status)| {
                *direction == "child-down"
                    && !status.connected
                    && status.last_contact > 0
                    && now.saturating_sub(status.last_contact) > hold
            })
            .filter_map(|(peer, _, _)| NodeId::new(&peer).ok())
            .collect()
    }

    /// Compacts the change log to what the children still need (keeping
    /// [`LOG_RETAIN`] of each origin, and not waiting for children away
    /// longer than `log_hold_days`) and keeps the outbox bounded: what the
    /// maintenance round and the `compact` task do.
    pub async fn compact_log(self: &Arc<Self>) -> Result<Compacted, cascade_store::StoreError> {
        let released = self.released_children();
        self.db
            .run(move |store| {
                Ok(Compacted {
                    changes: store.compact_without(LOG_RETAIN, &released)?,
                    outbox_entries: store.outbox_compact(OUTBOX_MAX)?,
                    released: released.into_iter().collect(),
                })
            })
            .await
    }
}

/// Periodic upkeep: compacts the change logs to what the children still
/// need and keeps the outbox bounded.
pub async fn maintenance(node: Arc<Node>, every: Duration) {
    let persist = {
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = node.persist_links().await {
                    tracing::warn!(error = %e, "cannot store the link status");
                }
                if let Err(e) = node.persist_agents().await {
                    tracing::warn!(error = %e, "cannot store the agents' check-ins");
                }
                if let Err(e) = node.rollout_cycle().await {
                    tracing::warn!(error = %e, "staged rollouts were not advanced");
                }
            }
        })
    };
    let _persist = AbortOnDrop(persist);
    let _timestamps = AbortOnDrop(tokio::spawn(security::timestamps(node.clone())));
    // The hour today's aggregates were last kept in the history.
    let mut history_hour = None;
    loop {
        tokio::time::sleep(every).await;
        let hour = node.now().div_euclid(3600);
        if history_hour != Some(hour) {
            let recorder = node.clone();
            match recorder
                .run(move |recorder| recorder.record_history(recorder.now()))
                .await
            {
                Ok(()) => history_hour = Some(hour),
                Err(e) => tracing::warn!(error = %e, "cannot keep today's compliance in the history"),
            }
        }
        let cleaner = node.clone();
        let partials = cleaner
            .run(move |cleaner| cleaner.clean_partials(Duration::from_secs(24 * 3600)))
            .await;
        if partials > 0 {
            tracing::info!(files = partials, "removed what abandoned content transfers left");
        }
        match node.compact_log().await {
            Ok(Compacted {
                changes: 0,
                outbox_entries: 0,
                ..
            }) => {}
            Ok(c) if c.released.is_empty() => {
                tracing::info!(changes = c.changes, entries = c.outbox_entries, "compacted")
            }
            Ok(c) => tracing::warn!(
                changes = c.changes,
                entries = c.outbox_entries,
                released = ?c.released,
                hold_days = node.config.log_hold_days,
                "compacted without waiting for children away longer than log_hold_days: each gets a snapshot when it comes back"
            ),
            Err(e) => tracing::warn!(error = %e, "compaction failed"),
        }
    }
}

/// A task that is aborted when this is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves Prometheus metrics at `/metrics` on `addr` (plain HTTP; keep it on
/// a local or management address). Installs the process's metrics recorder:
/// call once per process.
pub async fn serve_metrics(node: Arc<Node>, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    describe_metrics();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (node, handle) = (node.clone(), handle.clone());
            async move {
                refresh_metrics(&node).await;
                handle.render()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn describe_metrics() {
    metrics::describe_gauge!("cascade_link_connected", "1 when the link (peer, direction) is up");
    metrics::describe_gauge!("cascade_link_seq_lag", "entries the other side of the link is behind");
    metrics::describe_gauge!(
        "cascade_link_stalled",
        "1 when the link went stall_seconds without progress and has not moved since"
    );
    metrics::describe_gauge!(
        "cascade_link_stalls",
        "times the link was found without progress and connected afresh"
    );
    metrics::describe_gauge!(
        "cascade_link_last_contact_seconds",
        "Unix time of the last message on the link"
    );
    metrics::describe_gauge!(
        "cascade_outbox_pending",
        "outbox entries waiting for the parent's acknowledgement"
    );
    metrics::describe_gauge!("cascade_origin_applied_seq", "last applied change of each origin");
    metrics::describe_gauge!(
        "cascade_compliance_records",
        "compliance records of the subtree, by state"
    );
    metrics::describe_counter!(
        "cascade_compliance_ingested_total",
        "compliance records ingested from children"
    );
    metrics::describe_counter!("cascade_changes_applied_total", "changes applied from the parent");
    metrics::describe_gauge!(
        "cascade_computers",
        "computers with compliance records in this node's subtree"
    );
    metrics::describe_gauge!("cascade_agents", "agents this node serves");
    metrics::describe_gauge!("cascade_connections", "connections open on a listener (grpc, api)");
    metrics::describe_gauge!(
        "cascade_connections_max",
        "connections a listener keeps at once (limits.max_connections)"
    );
    metrics::describe_counter!(
        "cascade_connections_evicted_total",
        "connections closed to make room on a full listener"
    );
    metrics::describe_counter!("cascade_agent_reports_total", "reports received from agents");
    metrics::describe_gauge!("cascade_content_cache_bytes", "bytes of verified content held here");
    metrics::describe_gauge!(
        "cascade_content_cache_limit_bytes",
        "the content cache's limit (content_cache_bytes); absent without one"
    );
    metrics::describe_gauge!(
        "cascade_compliance_severity_records",
        "compliance records of the subtree, by severity and state"
    );
    metrics::describe_gauge!(
        "cascade_frozen",
        "1 when the root's newest signed timestamp here is missing or older than its limit (a frozen view)"
    );
    metrics::describe_gauge!(
        "cascade_root_timestamp_age_seconds",
        "seconds since the root's newest signed timestamp that reached this node"
    );
    metrics::describe_gauge!(
        "cascade_history_days",
        "days of daily compliance history this node keeps (reports.history_days)"
    );
    metrics::describe_gauge!("cascade_content_cache_files", "verified content files held here");
    metrics::describe_gauge!(
        "cascade_content_in_flight",
        "content transfers from the parent or vendor in progress"
    );
    metrics::describe_counter!(
        "cascade_content_fetched_bytes_total",
        "content bytes fetched from the parent or vendor"
    );
    metrics::describe_counter!(
        "cascade_content_served_bytes_total",
        "content bytes served to agents and children"
    );
    metrics::describe_counter!(
        "cascade_content_evicted_total",
        "content files evicted under the cache limit"
    );
}

async fn refresh_metrics(node: &Arc<Node>) {
    for (peer, direction, status) in node.links() {
        let labels = [("peer", peer.clone()), ("direction", direction.to_owned())];
        metrics::gauge!("cascade_link_connected", &labels).set(if status.connected { 1.0 } else { 0.0 });
        metrics::gauge!("cascade_link_seq_lag", &labels).set(status.seq_lag as f64);
        metrics::gauge!("cascade_link_stalled", &labels).set(if status.stalled { 1.0 } else { 0.0 });
        metrics::gauge!("cascade_link_stalls", &labels).set(status.stalls as f64);
        metrics::gauge!("cascade_link_last_contact_seconds", &labels).set(status.last_contact as f64);
    }
    // What is read from the store (and the content directory) is read on
    // the blocking pool; what cannot be read is logged and its gauges keep
    // their last value, the others are set.
    let (freshness, history_days, agents, computers, files, figures) = node
        .run(|node| {
            let figures = (|| -> Result<_, cascade_store::StoreError> {
                Ok((
                    node.store.outbox_state()?,
                    node.store.cursor()?,
                    node.store.summary_by_update()?,
                    node.store.summary_by_site()?,
                ))
            })();
            (
                node.freshness(),
                node.history_days(),
                node.agents().map(|a| a.len()),
                node.store.computer_count(),
                node.cached_files(),
                figures,
            )
        })
        .await;
    match freshness {
        Ok(freshness) => {
            metrics::gauge!("cascade_frozen").set(if freshness.stale { 1.0 } else { 0.0 });
            if let Some(age) = freshness.age_seconds {
                metrics::gauge!("cascade_root_timestamp_age_seconds").set(age as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the root's timestamp for the metrics"),
    }
    if let Some(limit) = node.config.content_cache_bytes {
        metrics::gauge!("cascade_content_cache_limit_bytes").set(limit as f64);
    }
    metrics::gauge!("cascade_history_days").set(history_days as f64);
    for connections in [&node.listeners.grpc, &node.listeners.api] {
        let label = [("listener", connections.name)];
        metrics::gauge!("cascade_connections", &label).set(connections.open() as f64);
        metrics::gauge!("cascade_connections_max", &label).set(connections.max as f64);
        metrics::counter!("cascade_connections_evicted_total", &label).absolute(connections.evicted());
    }
    match computers {
        Ok(computers) => metrics::gauge!("cascade_computers").set(computers as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the computer count for the metrics"),
    }
    match agents {
        Ok(agents) => metrics::gauge!("cascade_agents").set(agents as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the agents for the metrics"),
    }
    metrics::gauge!("cascade_content_cache_files").set(files.len() as f64);
    metrics::gauge!("cascade_content_cache_bytes").set(files.iter().map(|(_, s)| *s).sum::<u64>() as f64);
    metrics::gauge!("cascade_content_in_flight").set(node.in_flight().len() as f64);
    let (fetched, _, _, evicted) = node.content_counters();
    metrics::counter!("cascade_content_fetched_bytes_total").absolute(fetched);
    metrics::counter!("cascade_content_evicted_total").absolute(evicted);
    let (outbox, cursor, summary, by_site) = match figures {
        Ok(figures) => figures,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox and compliance counts for the metrics");
            return;
        }
    };
    let mut by_severity: BTreeMap<
        cascade_core::update::Severity,
        [u64; cascade_core::compliance::ComplianceState::COUNT],
    > = BTreeMap::new();
    for ((_, severity), counts) in by_site {
        for (slot, n) in by_severity.entry(severity).or_default().iter_mut().zip(counts.0) {
            *slot += n;
        }
    }
    for (severity, counts) in by_severity {
        for (name, n) in cascade_store::STATE_NAMES.iter().zip(counts) {
            metrics::gauge!("cascade_compliance_severity_records", "severity" => format!("{severity:?}"), "state" => *name)
                .set(n as f64);
        }
    }
    metrics::gauge!("cascade_outbox_pending").set(outbox.pending as f64);
    for (origin, seq) in cursor {
        metrics::gauge!("cascade_origin_applied_seq", "origin" => origin.to_string()).set(seq as f64);
    }
    let mut by_state = [0u64; cascade_core::compliance::ComplianceState::COUNT];
    for counts in summary.values() {
        for (slot, n) in by_state.iter_mut().zip(counts.0) {
            *slot += n;
        }
    }
    for (name, n) in cascade_store::STATE_NAMES.iter().zip(by_state) {
        metrics::gauge!("cascade_compliance_records", "state" => *name).set(n as f64);
    }
}
