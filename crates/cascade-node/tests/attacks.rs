//! A malicious intermediate node between an honest root and an honest leaf
//! (all in this process, on 127.0.0.1): it holds a genuine node certificate
//! (the middle node's), so every hop's mTLS is satisfied, and it lies. It
//! alters an update's hash, re-signs with its own key, replays an older
//! change, mixes in a change of another revision of the root's log,
//! freezes the root's timestamps, sends snapshots with an object left out,
//! swapped for an older revision, older than the leaf's or empty, and
//! forges and replays an agent's report on the way up, and serves content
//! altered under the root's manifest or with a manifest of its own. The
//! leaf or the root refuses every one, names the attack, and keeps the
//! honest state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_agent::cycle::{Agent, Credentials, Env};
use cascade_agent::install::Outcome;
use cascade_agent::journal::Journal;
use cascade_core::UpdateId;
use cascade_core::assignment::Step;
use cascade_core::compliance::ComplianceState;
use cascade_core::inventory::Inventory;
use cascade_core::model::{
    Approval, Change, ChangeOp, ComplianceRecord, ComputerId, NodeHealth, NodeId, Object, ObjectId, Policy, Site,
    Upward,
};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{Classification, Content, ExitMeaning, InstallCommand, Severity, Update};
use cascade_node::Node;
use cascade_node::config::SecurityConfig;
use cascade_proto::v1::{self, DownMessage, SubscribeRequest, UpAck, UpBatch, down_message};
use cascade_trust::sign::KeySigner;
use cascade_trust::{Ca, Identity};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use common::{now, wait_for};

/// The shared harness, with this file's way of starting a node.
struct Harness(common::Harness);

impl std::ops::Deref for Harness {
    type Target = common::Harness;

    fn deref(&self) -> &common::Harness {
        &self.0
    }
}

impl Harness {
    fn new() -> Harness {
        Harness(common::Harness::new(2))
    }

    /// A node with these security settings and a content import directory.
    async fn node(&self, id: &str, parent: Option<(NodeId, String)>, security: SecurityConfig) -> (Arc<Node>, String) {
        let import = self.dir.path().join(format!("{id}-import"));
        std::fs::create_dir_all(&import).unwrap();
        let import = import.canonicalize().unwrap();
        self.0
            .node(id, parent, |config| {
                config.security = security;
                config.content_import = vec![import];
            })
            .await
    }

    /// The root, with the site of the middle node under it.
    async fn root_with_mid(&self, security: SecurityConfig) -> (Arc<Node>, String) {
        let (root, addr) = self.node("root", None, security).await;
        root.append_local(ChangeOp::Upsert(Object::Site(Site {
            id: ObjectId::new("mid").unwrap(),
            name: "Middle".into(),
            parent: Some(root_id()),
        })))
        .await
        .unwrap();
        (root, addr)
    }
}

/// The lying middle node's downward side: whatever the test feeds it goes
/// to the leaf that subscribes.
type ToLeaf = mpsc::Sender<Result<DownMessage, Status>>;

#[derive(Clone, Default)]
struct Evil {
    leaf: Arc<Mutex<Option<ToLeaf>>>,
    subscriptions: Arc<AtomicUsize>,
    content: Arc<Mutex<Option<Bytes>>>,
    /// The offsets the leaf asked for content from.
    offsets: Arc<Mutex<Vec<u64>>>,
    /// Holds back the last 1 MB of content until notified.
    gate: Arc<Mutex<Option<Arc<tokio::sync::Notify>>>>,
}

/// What the middle node serves as content: these bytes with this manifest.
struct Bytes {
    data: Vec<u8>,
    manifest: Option<v1::ContentManifest>,
}

type Chunks = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ContentChunk, Status>> + Send>>;

#[tonic::async_trait]
impl v1::agents_server::Agents for Evil {
    async fn enroll(&self, _: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn check_in(&self, _: Request<v1::CheckInRequest>) -> Result<Response<v1::CheckInReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn report(&self, _: Request<v1::ReportRequest>) -> Result<Response<v1::ReportReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    async fn renew(&self, _: Request<v1::RenewRequest>) -> Result<Response<v1::EnrollReply>, Status> {
        Err(Status::unimplemented("not here"))
    }
    type ContentStream = Chunks;
    async fn content(&self, request: Request<v1::ContentRequest>) -> Result<Response<Chunks>, Status> {
        let offset = request.get_ref().offset as usize;
        self.offsets.lock().unwrap().push(offset as u64);
        let (data, manifest) = {
            let content = self.content.lock().unwrap();
            let content = content.as_ref().ok_or_else(|| Status::not_found("no content"))?;
            (content.data.clone(), content.manifest.clone())
        };
        let mut gate = self.gate.lock().unwrap().clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let size = data.len() as u64;
            let mut first = manifest;
            let held = data.len().saturating_sub(1 << 20);
            for (n, piece) in data[offset..].chunks(256 * 1024).enumerate() {
                if offset + n * 256 * 1024 >= held
                    && let Some(gate) = gate.take()
                {
                    gate.notified().await;
                }
                let chunk = v1::ContentChunk {
                    data: piece.to_vec().into(),
                    size,
                    manifest: first.take(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl v1::hierarchy_server::Hierarchy for Evil {
    type SubscribeStream = ReceiverStream<Result<DownMessage, Status>>;
    type ReportStream = ReceiverStream<Result<UpAck, Status>>;

    async fn subscribe(&self, _request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        *self.leaf.lock().unwrap() = Some(tx.clone());
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        // Heartbeats keep the link from going quiet (it is the timestamps
        // that stop in a freeze, not the link).
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let beat = DownMessage {
                    body: Some(down_message::Body::Heartbeat(v1::Heartbeat { at: now() })),
                };
                if tx.send(Ok(beat)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report(&self, request: Request<Streaming<UpBatch>>) -> Result<Response<Self::ReportStream>, Status> {
        // Swallows what the leaf sends up, acknowledging it.
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                if tx.send(Ok(UpAck { seq: batch.seq })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Evil {
    async fn start(h: &Harness, issued: &cascade_trust::Issued) -> (Evil, String) {
        use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};
        let evil = Evil::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tls = ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem))
            .client_ca_root(Certificate::from_pem(&h.ca.cert_pem));
        let service = v1::hierarchy_server::HierarchyServer::new(evil.clone());
        let agents = v1::agents_server::AgentsServer::new(evil.clone());
        tokio::spawn(async move {
            Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(service)
                .add_service(agents)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (evil, addr)
    }

    async fn send_snapshot(&self, snapshot: &cascade_store::Snapshot) {
        let tx = self.leaf.lock().unwrap().clone().expect("the leaf subscribed");
        for part in cascade_node::wire::snapshot_parts(snapshot, 2_000) {
            let message = DownMessage {
                body: Some(down_message::Body::SnapshotPart(part)),
            };
            tx.send(Ok(message)).await.unwrap();
        }
    }

    async fn send(&self, change: &Change) {
        let message = DownMessage {
            body: Some(down_message::Body::Change(cascade_proto::v1::Change::from(change))),
        };
        let tx = self.leaf.lock().unwrap().clone().expect("the leaf subscribed");
        tx.send(Ok(message)).await.unwrap();
    }
}

/// What the middle node declares lies below it: itself.
fn mid_subtree() -> v1::Subtree {
    v1::Subtree {
        sites: vec![v1::SubtreeSite {
            site: "mid".into(),
            parent: "root".into(),
        }],
    }
}

fn root_id() -> NodeId {
    NodeId::new("root").unwrap()
}

/// Sends the leaf the root's genuine changes after what it has, up to and
/// including `upto`, and waits until it applied them.
async fn catch_up(root: &Node, leaf: &Node, evil: &Evil, upto: u64) {
    let have = leaf.store.applied_seq(&root_id()).unwrap();
    for change in root.store.changes_since(&root_id(), have, 100_000).unwrap().unwrap() {
        if change.seq > upto {
            break;
        }
        evil.send(&change).await;
    }
    wait_for("the leaf to apply the genuine changes", Duration::from_secs(20), || {
        leaf.store.applied_seq(&root_id()).unwrap() >= upto
    })
    .await;
}

/// Sends one lying change and waits for the leaf to refuse it; returns the
/// refusal and waits for the leaf to subscribe again.
async fn refused(leaf: &Node, evil: &Evil, change: &Change) -> cascade_node::security::Refusal {
    refused_after(leaf, evil, evil.send(change)).await
}

async fn refused_snapshot(
    leaf: &Node,
    evil: &Evil,
    snapshot: &cascade_store::Snapshot,
) -> cascade_node::security::Refusal {
    refused_after(leaf, evil, evil.send_snapshot(snapshot)).await
}

trait Approvals {
    fn approvals_here(&self) -> usize;
}

impl Approvals for Node {
    fn approvals_here(&self) -> usize {
        self.store
            .objects(cascade_core::model::ObjectKind::Approval)
            .unwrap()
            .len()
    }
}

async fn refused_after(
    leaf: &Node,
    evil: &Evil,
    send: impl std::future::Future<Output = ()>,
) -> cascade_node::security::Refusal {
    // Freeze warnings come on their own schedule; the lie's refusal is
    // another one.
    let lies = || -> Vec<cascade_node::security::Refusal> {
        leaf.trust
            .refusals
            .list()
            .into_iter()
            .filter(|r| r.attack != "freeze")
            .collect()
    };
    let before = lies().len();
    let subscriptions = evil.subscriptions.load(Ordering::SeqCst);
    send.await;
    wait_for("the leaf to refuse", Duration::from_secs(20), || lies().len() > before).await;
    // Without waiting out the link's backoff.
    wait_for("the leaf to subscribe again", Duration::from_secs(20), || {
        leaf.replicate_now();
        evil.subscriptions.load(Ordering::SeqCst) > subscriptions
    })
    .await;
    lies().pop().unwrap()
}

fn update(id: &str, sha256: &str) -> Update {
    let mut u = Update::new(
        UpdateId::new(id),
        format!("Test update {id}"),
        Classification::SecurityUpdate,
    );
    u.vendor = "Example".into();
    u.severity = Severity::Critical;
    u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "linux"));
    u.install = Some(InstallCommand {
        program: "/bin/true".into(),
        arguments: vec![],
        exit_codes: vec![],
    });
    u.content = vec![Content {
        file_name: format!("{id}.sh"),
        sha256: sha256.to_owned(),
        size: 10,
        url: None,
    }];
    u
}

fn with_other_hash(change: &Change) -> Change {
    let mut altered = change.clone();
    if let ChangeOp::Upsert(Object::Update(u)) = altered.op.value() {
        let mut u = u.clone();
        u.content[0].sha256 = "e".repeat(64);
        altered.op = ChangeOp::Upsert(Object::Update(u)).into();
    }
    altered
}

/// A computer that installs whatever it is told, at the real time.
struct Computer;

impl Env for Computer {
    fn now(&self) -> i64 {
        now()
    }
    fn inventory(&self) -> Result<Inventory, String> {
        serde_json::from_value(serde_json::json!({"os": {"family": "linux", "name": "Debian GNU/Linux 12"}}))
            .map_err(|e| e.to_string())
    }
    fn boot_id(&self) -> Option<String> {
        Some("boot-1".into())
    }
    fn fetches_content(&self) -> bool {
        false
    }
    async fn install(&self, _step: &Step, _files: &[PathBuf]) -> Outcome {
        Outcome {
            code: 0,
            meaning: ExitMeaning::Success,
            detail: String::new(),
        }
    }
    async fn restart(&self) -> Result<(), String> {
        Ok(())
    }
    async fn os_updater(&self) -> Option<Result<Vec<cascade_agent::os_updater::PackageResult>, String>> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_intermediate_node_is_refused_and_the_attack_named() {
    let h = Harness::new();
    let fast = SecurityConfig {
        timestamp_seconds: 1,
        max_timestamp_age_seconds: 3,
    };
    let (root, root_addr) = h.root_with_mid(fast.clone()).await;
    let mid_id = NodeId::new("mid").unwrap();
    let policy = Policy::new(ObjectId::new("all").unwrap(), "All");
    root.append_local(ChangeOp::Upsert(Object::Policy(Box::new(policy))))
        .await
        .unwrap();
    root.append_local(ChangeOp::Upsert(Object::Update(Box::new(update(
        "EX-1",
        &"a".repeat(64),
    )))))
    .await
    .unwrap();
    root.append_local(ChangeOp::Upsert(Object::Approval(Approval {
        id: ObjectId::new("all/EX-1").unwrap(),
        policy: ObjectId::new("all").unwrap(),
        update: UpdateId::new("EX-1"),
        deadline: Some(now() - 60),
    })))
    .await
    .unwrap();

    // The middle node's genuine certificate, in the wrong hands.
    let mid = h.issue("mid");
    let mid_signer = KeySigner::from_pem(&mid.cert_pem, &mid.key_pem).unwrap();
    let (evil, evil_addr) = Evil::start(&h, &mid).await;
    let (leaf, leaf_addr) = h
        .node("leaf", Some((NodeId::new("mid").unwrap(), evil_addr)), fast.clone())
        .await;
    wait_for("the leaf to subscribe", Duration::from_secs(20), || {
        evil.subscriptions.load(Ordering::SeqCst) > 0
    })
    .await;

    // Honest at first: the leaf takes the root's signed log as it is.
    let first = root.store.applied_seq(&root_id()).unwrap();
    catch_up(&root, &leaf, &evil, first).await;
    assert!(
        leaf.freshness().unwrap().timestamp.is_some(),
        "the root's timestamp arrived"
    );

    // The next change: a new update.
    let genuine = root
        .append_local(ChangeOp::Upsert(Object::Update(Box::new(update(
            "EX-2",
            &"b".repeat(64),
        )))))
        .await
        .unwrap();
    catch_up(&root, &leaf, &evil, genuine.seq - 1).await;
    let honest = genuine.seq - 1;

    // 1. The update's hash altered, the root's seal kept.
    let r = refused(&leaf, &evil, &with_other_hash(&genuine)).await;
    assert_eq!(r.attack, "bad signature", "{r:?}");

    // 2. Altered and re-signed with the middle node's own key.
    let mut resigned = with_other_hash(&genuine);
    let seal = genuine.seal.clone().unwrap();
    resigned
        .seal_with(seal.prev.clone(), seal.state.clone(), &mid_signer)
        .unwrap();
    let r = refused(&leaf, &evil, &resigned).await;
    assert_eq!(r.attack, "bad signature", "{r:?}");
    assert!(r.detail.contains("not root's current key"), "{r:?}");

    // 3. An older change again (revision N-1 replayed).
    let older = root
        .store
        .changes_since(&root_id(), honest - 1, 1)
        .unwrap()
        .unwrap()
        .remove(0);
    let r = refused(&leaf, &evil, &older).await;
    assert_eq!(r.attack, "rollback", "{r:?}");

    // 4. A change the root really signed, but of another revision of its
    // log (it follows a different change N-1 than the one the leaf has).
    let mut forked = genuine.clone();
    forked
        .seal_with("f".repeat(64), seal.state.clone(), root.config.tls.signer().as_ref())
        .unwrap();
    let r = refused(&leaf, &evil, &forked).await;
    assert_eq!(r.attack, "mix-and-match", "{r:?}");

    // Nothing of it was applied; the honest change still is.
    assert_eq!(leaf.store.applied_seq(&root_id()).unwrap(), honest);
    evil.send(&genuine).await;
    wait_for("the genuine change at the leaf", Duration::from_secs(20), || {
        leaf.store.applied_seq(&root_id()).unwrap() == genuine.seq
    })
    .await;
    let ex2 = leaf
        .store
        .object(&cascade_core::model::ObjectKey {
            kind: cascade_core::model::ObjectKind::Update,
            id: ObjectId::new("EX-2").unwrap(),
        })
        .unwrap()
        .unwrap();
    match ex2.object.into_value() {
        Object::Update(u) => assert_eq!(u.content[0].sha256, "b".repeat(64)),
        other => panic!("{other:?}"),
    }

    // Snapshots (what a parent sends a child far behind, or a new one):
    // each origin's part must be exactly what it signed at the cursor.
    // EX-1 is revised first, so that an older signed version of it exists.
    let old_ex1 = root
        .store
        .object(&cascade_core::model::ObjectKey {
            kind: cascade_core::model::ObjectKind::Update,
            id: ObjectId::new("EX-1").unwrap(),
        })
        .unwrap()
        .unwrap();
    root.append_local(ChangeOp::Upsert(Object::Update(Box::new(update(
        "EX-1",
        &"c".repeat(64),
    )))))
    .await
    .unwrap();
    let have = root.store.applied_seq(&root_id()).unwrap();
    catch_up(&root, &leaf, &evil, have).await;
    let stale_snapshot = root.store.snapshot(&[root_id()]).unwrap();
    wait_for("another root timestamp", Duration::from_secs(10), || {
        root.store.applied_seq(&root_id()).unwrap() > have
    })
    .await;
    let snapshot = root.store.snapshot(&[root_id()]).unwrap();
    let is_approval = |o: &cascade_store::StoredObject| matches!(o.object.value(), Object::Approval(_));
    // 7. An object left out (the approval).
    let mut omitted = snapshot.clone();
    omitted.objects.retain(|o| !is_approval(o));
    let r = refused_snapshot(&leaf, &evil, &omitted).await;
    assert_eq!(r.attack, "mix-and-match", "{r:?}");
    // 8. An object swapped for an older revision the root really signed.
    let mut swapped = snapshot.clone();
    for o in &mut swapped.objects {
        if o.object.key().unwrap() == old_ex1.object.key().unwrap() {
            *o = old_ex1.clone();
        }
    }
    let r = refused_snapshot(&leaf, &evil, &swapped).await;
    assert_eq!(r.attack, "mix-and-match", "{r:?}");
    // 9. A genuine snapshot, but older than what the leaf has.
    let r = refused_snapshot(&leaf, &evil, &stale_snapshot).await;
    assert_eq!(r.attack, "rollback", "{r:?}");
    // 10. A genuine snapshot that says the root has nothing.
    let mut erased = snapshot.clone();
    erased.objects.clear();
    erased.tips.clear();
    erased.cursor.insert(root_id(), 0);
    let r = refused_snapshot(&leaf, &evil, &erased).await;
    assert_eq!(r.attack, "rollback", "{r:?}");
    // The genuine one is taken.
    evil.send_snapshot(&snapshot).await;
    wait_for("the genuine snapshot at the leaf", Duration::from_secs(20), || {
        leaf.store.applied_seq(&root_id()).unwrap() == snapshot.cursor[&root_id()]
    })
    .await;
    assert_eq!(leaf.approvals_here(), 1);

    // 5. Freeze: the middle node stops passing anything on (the root goes
    // on signing timestamps every second). The leaf notices...
    wait_for("the leaf to name the freeze", Duration::from_secs(20), || {
        leaf.trust.refusals.list().iter().any(|r| r.attack == "freeze")
    })
    .await;
    assert!(leaf.freshness().unwrap().stale);
    // ...and so does an agent it serves: installed, but not compliant.
    let agent_cert =
        h.ca.issue(&Identity::Agent(ComputerId::new("pc-1").unwrap()), &[], now() - 60, 1)
            .unwrap();
    let mut agent = Agent {
        computer: ComputerId::new("pc-1").unwrap(),
        env: Computer,
        journal: Journal::memory(),
        nodes: vec![cascade_agent::config::NodeEntry {
            address: leaf_addr.clone(),
            priority: 0,
        }],
        credentials: Credentials {
            ca_pem: h.ca.cert_pem.clone(),
            cert_pem: agent_cert.cert_pem.clone(),
            key_pem: agent_cert.key_pem.clone(),
            root: Some(root_id()),
            max_timestamp_age: 3,
        },
        content_dir: h.dir.path().join("agent-content"),
        content_limit: 1 << 20,
        probe: false,
    };
    let summary = agent.run_once().await.unwrap();
    assert_eq!(summary.installed, 1, "{summary:?}");
    let states: Vec<ComplianceState> = leaf
        .store
        .computer_records(&ComputerId::new("pc-1").unwrap())
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    assert!(
        states
            .iter()
            .all(|s| matches!(s, ComplianceState::Stale { reason } if reason.starts_with("freeze:"))),
        "{states:?}"
    );

    // 6. Up the tree: the middle node forges and replays an agent's records.
    let channel = cascade_node::channel(
        &root_addr,
        Some(&root_id()),
        &h.ca.cert_pem,
        &mid.cert_pem,
        &mid.key_pem,
    )
    .await
    .unwrap();
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel);
    let (tx, rx) = mpsc::channel::<UpBatch>(8);
    let mut acks = client
        .report(cascade_proto::with_protocol(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut seq = 0;
    let mut send = async |items: Vec<Upward>, records: Vec<ComplianceRecord>| {
        tx.send(UpBatch {
            seq,
            items: serde_json::to_vec(&items).unwrap(),
            snapshot: false,
            records: records.iter().map(cascade_proto::v1::ComplianceRecord::from).collect(),
            reports: Vec::new(),
            subtree: (seq == 0).then(mid_subtree),
            applied: Default::default(),
        })
        .await
        .unwrap();
        seq += 1;
        acks.message().await.unwrap().unwrap().seq
    };
    // The declaration of its subtree, first on every connection.
    send(vec![], vec![]).await;
    let pki = h.dir.path().join("pki");
    h.ca.write(&pki).unwrap();
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki).unwrap(), now() - 60);
    let record = |counter: u64, state: ComplianceState| ComplianceRecord {
        computer: ComputerId::new("pc-9").unwrap(),
        update: UpdateId::new("EX-1"),
        site: mid_id.clone(),
        state,
        severity: Severity::Critical,
        counter,
        observed_at: now(),
        attestation: None,
    };
    let mut old = vec![record(1, ComplianceState::Required)];
    let mut certificates = agents.sign(&mut old).unwrap();
    let mut current = vec![record(2, ComplianceState::Installed)];
    certificates.extend(agents.sign(&mut current).unwrap());
    let items = certificates.into_iter().map(Upward::Certificate).collect();
    send(items, current.clone()).await;
    let at_root = || {
        root.store
            .computer_records(&ComputerId::new("pc-9").unwrap())
            .unwrap()
            .pop()
            .map(|r| (r.counter, r.state))
    };
    assert_eq!(at_root(), Some((2, ComplianceState::Installed)), "the genuine record");

    let count = |attack: &str| root.trust.refusals.list().iter().filter(|r| r.attack == attack).count();
    // Forged: the state changed, the agent's attestation kept (and a later
    // counter, so that it would win).
    let mut forged = current[0].clone();
    forged.state = ComplianceState::Failed { code: 1603 };
    forged.counter = 3;
    send(vec![], vec![forged]).await;
    assert_eq!(count("bad signature"), 1, "{:?}", root.trust.refusals.list());
    // Unsigned.
    let mut unsigned = record(4, ComplianceState::Failed { code: 1 });
    unsigned.attestation = None;
    send(vec![], vec![unsigned]).await;
    assert_eq!(count("bad signature"), 2, "{:?}", root.trust.refusals.list());
    // Replayed: the agent's older report, genuine in itself.
    send(vec![], old).await;
    assert_eq!(count("rollback"), 1, "{:?}", root.trust.refusals.list());
    assert_eq!(
        at_root(),
        Some((2, ComplianceState::Installed)),
        "the honest state is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_from_a_lying_parent_is_refused_chunk_by_chunk_and_honest_content_served_on_at_once() {
    let h = Harness::new();
    let (root, _) = h.root_with_mid(SecurityConfig::default()).await;
    // Three chunks and a bit: 4 MB, 4 MB, 4 MB, 1 MB.
    let mut x: u32 = 7;
    let data: Vec<u8> = (0..(13usize << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let sha = cascade_content::sha256_of_bytes(&data);
    let mut u = update("EX-C", &sha);
    u.content[0].size = data.len() as u64;
    root.append_local(ChangeOp::Upsert(Object::Update(Box::new(u))))
        .await
        .unwrap();
    let file = root.config.content_import[0].join("EX-C.bin");
    std::fs::write(&file, &data).unwrap();
    let added = root.add_content(&file).unwrap();
    assert!(added[0].1.is_ok(), "{added:?}");
    // The root signed its manifest when the file came in.
    let genuine =
        cascade_content::SignedManifest::read(&cascade_content::manifest_path(&root.config.content_dir, &sha)).unwrap();
    assert_eq!(genuine.manifest.chunks.len(), 4);

    let mid = h.issue("mid");
    let mid_signer = KeySigner::from_pem(&mid.cert_pem, &mid.key_pem).unwrap();
    let (evil, evil_addr) = Evil::start(&h, &mid).await;
    let (leaf, leaf_addr) = h
        .node(
            "leaf",
            Some((NodeId::new("mid").unwrap(), evil_addr)),
            SecurityConfig::default(),
        )
        .await;
    wait_for("the leaf to subscribe", Duration::from_secs(20), || {
        evil.subscriptions.load(Ordering::SeqCst) > 0
    })
    .await;
    let upto = root.store.applied_seq(&root_id()).unwrap();
    catch_up(&root, &leaf, &evil, upto).await;
    let serve = |data: Vec<u8>, manifest: Option<cascade_content::SignedManifest>| {
        *evil.content.lock().unwrap() = Some(Bytes {
            data,
            manifest: manifest.map(|m| m.to_proto()),
        });
    };
    let part = leaf.config.content_dir.join(format!("{sha}.part"));
    let done = leaf.config.content_dir.join(&sha);

    // 1. A byte of chunk 1 altered under the root's genuine manifest: the
    // chunk is refused; chunk 0, verified, stays.
    let mut altered = data.clone();
    altered[(4 << 20) + 12345] ^= 0x40;
    serve(altered.clone(), Some(genuine.clone()));
    let e = leaf.ensure_content(&sha, true).await.unwrap_err();
    assert!(e.to_string().contains("hash mismatch in chunk 1"), "{e}");
    assert!(!done.exists());
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        4 << 20,
        "only the verified chunk 0 is kept"
    );

    // 2. The same bytes with a manifest of the altered file, signed by the
    // middle node's own (genuine) key: not the root's.
    let (_, forged) = {
        let path = h.dir.path().join("altered.bin");
        std::fs::write(&path, &altered).unwrap();
        cascade_content::describe(&path).unwrap()
    };
    let mut forged = forged;
    forged.sha256 = sha.clone();
    serve(altered.clone(), Some(forged.clone().sign(&mid_signer).unwrap()));
    let e = leaf.ensure_content(&sha, true).await.unwrap_err();
    assert!(e.to_string().contains("manifest is refused: bad signature"), "{e}");

    // 3. The root's signature over the genuine manifest, moved onto the
    // forged chunk list.
    let mut moved = genuine.clone();
    moved.manifest.chunks = forged.chunks.clone();
    serve(altered, Some(moved));
    let e = leaf.ensure_content(&sha, true).await.unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    assert!(!done.exists(), "nothing of it got the content's name");

    // 4. Honest, slowly: the transfer resumes after the verified chunk 0,
    // and a child of the leaf gets the verified chunks while the leaf's
    // own transfer is still under way.
    let gate = Arc::new(tokio::sync::Notify::new());
    *evil.gate.lock().unwrap() = Some(gate.clone());
    serve(data.clone(), Some(genuine.clone()));
    evil.offsets.lock().unwrap().clear();
    let staging = {
        let leaf = leaf.clone();
        let sha = sha.clone();
        tokio::spawn(async move { leaf.ensure_content(&sha, true).await })
    };
    let child = h.issue("child");
    // A child registered at the leaf (a node gets content only from its parent).
    leaf.append_local(ChangeOp::Upsert(Object::Site(Site {
        id: ObjectId::new("child").unwrap(),
        name: "Child".into(),
        parent: Some(leaf.id.clone()),
    })))
    .await
    .unwrap();
    let channel = cascade_node::channel(&leaf_addr, None, &h.ca.cert_pem, &child.cert_pem, &child.key_pem)
        .await
        .unwrap();
    let mut client = v1::agents_client::AgentsClient::new(channel);
    let mut stream = client
        .content(v1::ContentRequest {
            sha256: sha.clone(),
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(
        first.manifest.as_ref().map(|m| m.signature.clone()),
        Some(genuine.signature.clone()),
        "the root's manifest, passed on"
    );
    let mut received = first.data.to_vec();
    while received.len() < 12 << 20 {
        received.extend_from_slice(&stream.message().await.unwrap().unwrap().data);
    }
    assert!(!done.exists(), "the leaf's own transfer is not done");
    assert_eq!(leaf.in_flight().len(), 1);
    gate.notify_one();
    while let Some(chunk) = stream.message().await.unwrap() {
        received.extend_from_slice(&chunk.data);
    }
    assert_eq!(cascade_content::sha256_of_bytes(&received), sha);
    assert_eq!(staging.await.unwrap().unwrap(), done);
    assert_eq!(
        evil.offsets.lock().unwrap().first(),
        Some(&(4 << 20)),
        "resumed after the verified chunk"
    );
    assert_eq!(std::fs::read(&done).unwrap(), data);
    assert!(cascade_content::manifest_path(&leaf.config.content_dir, &sha).exists());
}

/// Reports up the tree with one signature for all their records: a middle
/// node that alters a record, its place, or a tree node, or sends part of a
/// report as if it were whole, is refused; an honest part of a report (the
/// rest stood for by tree nodes) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_report_is_refused_whatever_part_is_altered() {
    let h = Harness::new();
    let (root, root_addr) = h.root_with_mid(SecurityConfig::default()).await;
    let mid_id = NodeId::new("mid").unwrap();
    let mid = h.issue("mid");
    let channel = cascade_node::channel(
        &root_addr,
        Some(&root_id()),
        &h.ca.cert_pem,
        &mid.cert_pem,
        &mid.key_pem,
    )
    .await
    .unwrap();
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel);
    let (tx, rx) = mpsc::channel::<UpBatch>(8);
    let mut acks = client
        .report(cascade_proto::with_protocol(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut seq = 0;
    let mut send = async |items: Vec<Upward>, reports: Vec<v1::Report>| {
        tx.send(UpBatch {
            seq,
            items: serde_json::to_vec(&items).unwrap(),
            snapshot: false,
            records: Vec::new(),
            reports,
            subtree: (seq == 0).then(mid_subtree),
            applied: Default::default(),
        })
        .await
        .unwrap();
        seq += 1;
        acks.message().await.unwrap().unwrap().seq
    };
    // The declaration of its subtree, first on every connection.
    send(vec![], vec![]).await;
    let pki = h.dir.path().join("pki");
    h.ca.write(&pki).unwrap();
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki).unwrap(), now() - 60);
    let mut records: Vec<ComplianceRecord> = (0..7)
        .map(|n| ComplianceRecord {
            computer: ComputerId::new("pc-7").unwrap(),
            update: UpdateId::new(&format!("EX-{n}")),
            site: mid_id.clone(),
            state: ComplianceState::Required,
            severity: Severity::Critical,
            counter: 1,
            observed_at: now(),
            attestation: None,
        })
        .collect();
    let certificates = agents.sign(&mut records).unwrap();
    let (reports, loose) = cascade_core::report::group(records.clone());
    assert!(loose.is_empty() && reports.len() == 1);
    let whole = cascade_proto::v1::Report::from(&reports[0]);
    assert!(whole.nodes.is_empty(), "a whole report needs no tree node");
    let count = |attack: &str| root.trust.refusals.list().iter().filter(|r| r.attack == attack).count();
    let held = || {
        root.store
            .computer_records(&ComputerId::new("pc-7").unwrap())
            .unwrap()
            .len()
    };

    // Altered: a record's state; a record's place; part of the report sent
    // as if it were all of it; a tree node.
    let mut altered = whole.clone();
    altered.records[3].state = v1::ComplianceState::Installed as i32;
    let items: Vec<Upward> = certificates.iter().cloned().map(Upward::Certificate).collect();
    send(items, vec![altered]).await;
    assert_eq!(count("bad signature"), 1, "{:?}", root.trust.refusals.list());
    let mut moved = whole.clone();
    moved.places.swap(0, 1);
    send(vec![], vec![moved]).await;
    assert_eq!(count("bad signature"), 2, "{:?}", root.trust.refusals.list());
    let mut part = whole.clone();
    part.records.truncate(4);
    part.places.truncate(4);
    send(vec![], vec![part]).await;
    assert_eq!(count("bad signature"), 3, "{:?}", root.trust.refusals.list());
    assert_eq!(held(), 0, "nothing of a refused report is kept");

    // Honest part of the report: the records not sent are stood for by
    // the tree nodes their own paths give.
    let mut some = records.clone();
    some.retain(|r| ["EX-1", "EX-4", "EX-5"].contains(&r.update.as_str()));
    let (partial, _) = cascade_core::report::group(some);
    let partial = cascade_proto::v1::Report::from(&partial[0]);
    assert!(!partial.nodes.is_empty());
    let mut bad_node = partial.clone();
    bad_node.nodes[0].hash[0] ^= 1;
    send(vec![], vec![bad_node]).await;
    assert_eq!(count("bad signature"), 4, "{:?}", root.trust.refusals.list());
    send(vec![], vec![partial]).await;
    assert_eq!(held(), 3, "{:?}", root.trust.refusals.list());
    // And the whole report.
    send(vec![], vec![whole]).await;
    assert_eq!(held(), 7);
    assert_eq!(count("bad signature"), 4, "{:?}", root.trust.refusals.list());
}

/// A child's report stream lives as long as its connection: more than the
/// per-message limit in all (here 80 batches of 1 MB) goes through on one
/// stream, while one batch over the limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_stream_longer_than_the_body_limit_is_not_cut() {
    let h = Harness::new();
    let (_root, root_addr) = h.root_with_mid(SecurityConfig::default()).await;
    let mid = h.issue("mid");
    let channel = cascade_node::channel(
        &root_addr,
        Some(&root_id()),
        &h.ca.cert_pem,
        &mid.cert_pem,
        &mid.key_pem,
    )
    .await
    .unwrap();
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel).max_encoding_message_size(128 << 20);
    let (tx, rx) = mpsc::channel::<UpBatch>(4);
    let mut acks = client
        .report(cascade_proto::with_protocol(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let health = |n: usize, size: usize| NodeHealth {
        node: NodeId::new("mid").unwrap(),
        at: now(),
        agents: 0,
        detail: [
            ("subtree".to_owned(), "mid".to_owned()),
            ("padding".to_owned(), "x".repeat(size + n % 2)),
        ]
        .into(),
    };
    let batch = |seq: u64, size: usize| UpBatch {
        seq,
        items: serde_json::to_vec(&vec![Upward::Health(health(seq as usize, size))]).unwrap(),
        snapshot: false,
        records: Vec::new(),
        reports: Vec::new(),
        subtree: None,
        applied: Default::default(),
    };
    for seq in 1..=80u64 {
        tx.send(batch(seq, 1 << 20)).await.unwrap();
        assert_eq!(acks.message().await.unwrap().unwrap().seq, seq);
    }
    tx.send(batch(81, 65 << 20)).await.unwrap();
    let refused = acks.message().await.expect_err("a batch over the limit");
    assert!(
        refused.message().contains("message length too large") || refused.code() == tonic::Code::OutOfRange,
        "{refused:?}"
    );
}
