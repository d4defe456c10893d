//! The Agents service: enrollment, check-in (inventory in, assignment out),
//! reports and content. Each agent gets the plan of its inventory under the
//! policies that target it, made at the node (`targeting.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cascade_core::inventory::Inventory;
use cascade_core::model::{Agent, ComputerId, InstallEvent};
use cascade_proto::convert::{AgentReport, CheckIn, CheckInAnswer};
use cascade_proto::v1::{self, *};
use cascade_trust::{EnrollmentToken, Identity};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::Node;
use crate::content::{Flow, Source};

/// Install events kept per computer: those of its latest this many reports.
pub const EVENTS_KEPT: u64 = 50;
/// Bytes per content message.
const CHUNK: usize = 256 * 1024;
/// How often a content stream waiting for this node's own transfer says so.
const STILL_FETCHING: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub struct AgentsService {
    pub node: Arc<Node>,
}

/// Agents' check-ins not yet written to the store (written in batches).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) agents: Mutex<BTreeMap<ComputerId, Agent>>,
}

fn store_status(e: cascade_store::StoreError) -> Status {
    Status::internal(e.to_string())
}

/// Audits an agent's new certificate (the log goes up) and makes the reply
/// that hands it over.
async fn certified(node: &Arc<Node>, computer: &ComputerId, at: i64, action: &str, cert_pem: String) -> EnrollReply {
    let entry = cascade_core::model::AuditEntry {
        at,
        actor: format!("agent/{computer}"),
        node: node.id.clone(),
        action: action.into(),
        detail: computer.to_string(),
    };
    let store = node.db.clone();
    let forward = node.config.parent.is_some();
    if let Err(e) = store.run(move |store| store.audit(&entry, forward)).await {
        tracing::error!(error = %e, "cannot write the audit log");
    } else if forward {
        node.upward_ready();
    }
    EnrollReply {
        cert_pem,
        site: node.id.to_string(),
        // A store that cannot be read says nothing of the root, not something wrong.
        root: node
            .run(|n| n.root())
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the root's id for an enrolled agent");
                None
            })
            .map(|r| r.to_string())
            .unwrap_or_default(),
    }
}

fn agent_of<T>(node: &Node, request: &Request<T>) -> Result<ComputerId, Status> {
    match node.peer_identity(request)? {
        Identity::Agent(id) => Ok(id),
        other => Err(Status::permission_denied(format!("{other} is not an agent"))),
    }
}

impl Node {
    /// Notes an agent's check-in; written to the store by `persist_agents`.
    fn seen(
        &self,
        computer: &ComputerId,
        inventory: (&str, &Inventory),
        agent_version: &str,
        at: i64,
        revision: u64,
    ) -> Result<(), cascade_store::StoreError> {
        let (hash, inventory) = inventory;
        self.with_agent(computer, at, |agent| {
            agent.last_seen = at;
            agent.inventory = Some(hash.to_owned());
            agent.revision = Some(revision);
            let os = &inventory.os;
            agent.os = os.product.clone().unwrap_or_else(|| os.name.clone());
            agent.release = os.release.clone();
            agent.version = os.version.as_ref().map(ToString::to_string);
            agent.agent_version = agent_version.chars().take(64).collect();
        })
    }

    /// Notes an agent's compliance report: when, and whether an update waits
    /// for a restart.
    fn reported(
        &self,
        computer: &ComputerId,
        at: i64,
        pending_restart: bool,
        events: &[InstallEvent],
    ) -> Result<(), cascade_store::StoreError> {
        self.with_agent(computer, at, |agent| {
            agent.last_report = at;
            agent.pending_restart = pending_restart;
            agent.note_events(events);
        })
    }

    /// Changes an agent as last seen (read from the store when not yet in
    /// the unwritten check-ins).
    fn with_agent(
        &self,
        computer: &ComputerId,
        at: i64,
        change: impl FnOnce(&mut Agent),
    ) -> Result<(), cascade_store::StoreError> {
        let mut seen = self.seen.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = seen.get_mut(computer) {
            change(agent);
            return Ok(());
        }
        drop(seen);
        let mut agent = self
            .store
            .agent(computer)?
            .unwrap_or_else(|| Agent::new(computer.clone(), self.id.clone(), at));
        agent.site = self.id.clone();
        change(&mut agent);
        self.seen
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(computer.clone(), agent);
        Ok(())
    }

    /// Writes the agents seen since the last call, in one commit. They stay
    /// among the unwritten check-ins until the commit is done, so that
    /// `agents()` never misses one while it is being written; a check-in
    /// that changed an agent meanwhile stays for the next call.
    pub async fn persist_agents(self: &Arc<Self>) -> Result<usize, cascade_store::StoreError> {
        let agents: Vec<Agent> = self
            .seen
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let count = agents.len();
        if count == 0 {
            return Ok(0);
        }
        let forward = self.config.parent.is_some();
        let agents = self
            .db
            .run(move |store| store.put_agents(&agents, forward).map(|()| agents))
            .await?;
        let mut seen = self.seen.agents.lock().unwrap_or_else(|e| e.into_inner());
        for agent in agents {
            if seen.get(&agent.id) == Some(&agent) {
                seen.remove(&agent.id);
            }
        }
        Ok(count)
    }

    /// The agents this node serves, with check-ins not yet written.
    pub fn agents(&self) -> Result<Vec<Agent>, cascade_store::StoreError> {
        let mut agents: BTreeMap<ComputerId, Agent> =
            self.store.agents()?.into_iter().map(|a| (a.id.clone(), a)).collect();
        for (id, agent) in self.seen.agents.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            agents.insert(id.clone(), agent.clone());
        }
        Ok(agents.into_values().collect())
    }

    /// Where content with this hash is kept here.
    pub fn content_path(&self, sha256: &str) -> Option<PathBuf> {
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| self.config.content_dir.join(sha256))
    }
}

type ContentStream = Pin<Box<dyn Stream<Item = Result<ContentChunk, Status>> + Send>>;

/// One content stream: a verified file, or the part of a transfer in
/// progress that is verified, followed as it grows. A child node gets the
/// root's manifest first when this node has it.
struct Serving {
    node: Arc<Node>,
    sha256: String,
    offset: u64,
    for_child: bool,
    runtime: tokio::runtime::Handle,
    tx: tokio::sync::mpsc::Sender<Result<ContentChunk, Status>>,
}

impl Serving {
    fn run(&self, source: Source) -> Result<(), Status> {
        use std::io::{Read, Seek};
        let sha256 = &self.sha256;
        let internal = |e: &dyn std::fmt::Display| Status::internal(format!("content {sha256}: {e}"));
        let growing_size = match &source {
            Source::Growing { size, .. } => *size,
            Source::Ready(_) => 0,
        };
        let (mut flow, mut ready) = match source {
            Source::Ready(path) => (None, Some(path)),
            Source::Growing { flow, .. } => (Some(flow), None),
        };
        // Waits for the transfer to move; its end names the file.
        let wait = |flow: &mut Option<tokio::sync::watch::Receiver<Flow>>, ready: &mut Option<PathBuf>| {
            let Some(f) = flow.as_mut() else {
                return Ok(());
            };
            let now = f.borrow_and_update().clone();
            match now.end {
                Some(Ok(path)) => {
                    *ready = Some(path);
                    *flow = None;
                    Ok(())
                }
                Some(Err(e)) => Err(e.status()),
                None => Ok(()),
            }
        };
        wait(&mut flow, &mut ready)?;
        // The manifest first, for a child.
        let mut manifest = None;
        if self.for_child {
            loop {
                if let Some(f) = &flow {
                    if let Some(m) = f.borrow().manifest.clone() {
                        manifest = Some(m.to_proto());
                        break;
                    }
                } else {
                    manifest = self
                        .node
                        .manifest_for(sha256)
                        .map_err(|e| e.status())?
                        .map(|m| m.to_proto());
                    break;
                }
                self.changed(&mut flow, growing_size)?;
                wait(&mut flow, &mut ready)?;
            }
        }
        let size = match &ready {
            Some(path) => std::fs::metadata(path).map_err(|e| internal(&e))?.len(),
            None => growing_size,
        };
        if self.offset > size {
            return Err(Status::out_of_range(format!(
                "content {sha256} has {size} bytes; offset {} is past its end",
                self.offset
            )));
        }
        if manifest.is_some() || size == 0 {
            self.send(ContentChunk {
                data: Default::default(),
                size,
                manifest,
            })?;
        }
        let mut file: Option<std::fs::File> = None;
        let mut sent = self.offset;
        while sent < size {
            let available = match &flow {
                Some(f) => f.borrow().verified,
                None => size,
            };
            if sent >= available {
                self.changed(&mut flow, size)?;
                wait(&mut flow, &mut ready)?;
                continue;
            }
            if file.is_none() {
                // The partial file while it grows (renamed, it stays the
                // same file), the verified one once it has its name.
                let part = self.node.config.content_dir.join(format!("{sha256}.part"));
                let opened = match (&ready, std::fs::File::open(&part)) {
                    (None, Ok(f)) => f,
                    _ => {
                        let path = self.node.config.content_dir.join(sha256);
                        std::fs::File::open(&path).map_err(|e| match e.kind() {
                            std::io::ErrorKind::NotFound => {
                                Status::not_found(format!("content {sha256} is not on node {}", self.node.id))
                            }
                            _ => internal(&e),
                        })?
                    }
                };
                let mut opened = opened;
                opened.seek(std::io::SeekFrom::Start(sent)).map_err(|e| internal(&e))?;
                file = Some(opened);
            }
            let Some(f) = file.as_mut() else { continue };
            let mut buf = vec![0u8; CHUNK.min((available - sent) as usize)];
            f.read_exact(&mut buf).map_err(|e| internal(&e))?;
            sent += buf.len() as u64;
            metrics::counter!("cascade_content_served_bytes_total").increment(buf.len() as u64);
            self.node
                .content
                .served_bytes
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.send(ContentChunk {
                data: buf.into(),
                size,
                manifest: None,
            })?;
        }
        Ok(())
    }

    /// Waits for the transfer to move.
    /// Waits for the transfer to move, saying every few seconds that it
    /// is still under way (an empty message), so that the receiver's speed
    /// floor waits for this node's own source.
    fn changed(&self, flow: &mut Option<tokio::sync::watch::Receiver<Flow>>, size: u64) -> Result<(), Status> {
        let Some(f) = flow.as_mut() else {
            return Ok(());
        };
        loop {
            match self.runtime.block_on(tokio::time::timeout(STILL_FETCHING, f.changed())) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => return Err(Status::unavailable(format!("the transfer of {} stopped", self.sha256))),
                Err(_) => self.send(ContentChunk {
                    data: Default::default(),
                    size,
                    manifest: None,
                })?,
            }
        }
    }

    fn send(&self, chunk: ContentChunk) -> Result<(), Status> {
        // A receiver that went away ends the stream.
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| Status::cancelled("the receiver went away"))
    }
}

#[tonic::async_trait]
impl v1::agents_server::Agents for AgentsService {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        let node = &self.node;
        let Some((ca, days)) = node.config.enrollment.clone() else {
            return Err(Status::failed_precondition(format!(
                "node {} does not enroll agents: its configuration has no [enrollment]",
                node.id
            )));
        };
        let request = request.into_inner();
        let token = EnrollmentToken::decode(&request.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if token.site != node.id {
            return Err(Status::permission_denied(format!(
                "the enrollment token is for site {}; enroll at that site's node",
                token.site
            )));
        }
        let computer = ComputerId::new(&request.computer).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A computer name is one computer in this node's subtree: a name a
        // site below already reports for is not made a second time here.
        let store = node.db.clone();
        let name = computer.clone();
        let known = store
            .run(move |store| store.computer_records(&name))
            .await
            .map_err(store_status)?;
        if let Some(other) = known.iter().find(|r| r.site != node.id) {
            return Err(Status::already_exists(format!(
                "{computer} is a computer of site {} below {}: computer names are unique in a site's chain; enroll it under another name",
                other.site, node.id
            )));
        }
        let at = self.node.now();
        let cert_pem = ca
            .sign_request(&request.csr_pem, &Identity::Agent(computer.clone()), at, days)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let agent = Agent::new(computer.clone(), node.id.clone(), at);
        let store = node.db.clone();
        let hash = token.secret_hash();
        store
            .run(move |store| store.redeem_token(&hash, &agent, at))
            .await
            .map_err(store_status)?
            .map_err(|refusal| {
                tracing::warn!(%computer, reason = %refusal, "enrollment refused");
                Status::permission_denied(refusal.to_string())
            })?;
        tracing::info!(%computer, "agent enrolled");
        Ok(Response::new(
            certified(node, &computer, at, "agent enroll", cert_pem).await,
        ))
    }

    async fn check_in(&self, request: Request<CheckInRequest>) -> Result<Response<CheckInReply>, Status> {
        let computer = agent_of(&self.node, &request)?;
        let request = request.into_inner();
        let node = self.node.clone();
        let at = self.node.now();
        let answer = node
            .run(move |node| -> Result<CheckInAnswer, Status> {
                // An inventory is parsed here, off the async threads.
                let request = CheckIn::try_from(request)
                    .map_err(|e| Status::invalid_argument(format!("check-in of {computer}: {e}")))?;
                let hash = request.inventory_hash;
                let inventory = match request.inventory {
                    None => match node.store.inventory(&hash).map_err(store_status)? {
                        Some(inventory) => inventory,
                        None => return Ok(CheckInAnswer::NeedInventory { now: at }),
                    },
                    Some(mut inventory) => {
                        inventory.normalize();
                        let actual = inventory.content_hash().to_string();
                        if actual != hash {
                            return Err(Status::invalid_argument(format!(
                                "inventory of {computer}: its content hash is {actual}, not {hash} as sent"
                            )));
                        }
                        node.store.put_inventory(&inventory).map_err(store_status)?;
                        inventory
                    }
                };
                let revision = node.revision().map_err(store_status)?;
                let assignment = node
                    .assignment(&computer, &hash, &inventory, at)
                    .map_err(store_status)?;
                node.seen(&computer, (&hash, &inventory), &request.agent_version, at, revision)
                    .map_err(store_status)?;
                let evidence = node.evidence(&assignment).map_err(store_status)?;
                Ok(CheckInAnswer::Assigned {
                    now: at,
                    assignment: Box::new(assignment),
                    evidence: Ok(Box::new(evidence)),
                })
            })
            .await?;
        CheckInReply::try_from(&answer)
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn report(&self, request: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        let computer = agent_of(&self.node, &request)?;
        let chain: Vec<Vec<u8>> = request
            .peer_certs()
            .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default();
        let request = request.into_inner();
        let counter = request.counter;
        if counter == 0 {
            return Err(Status::invalid_argument("a report's counter starts at 1"));
        }
        let AgentReport {
            mut records,
            events,
            scheme,
            signature,
            ..
        } = AgentReport::try_from(request)
            .map_err(|e| Status::invalid_argument(format!("report {counter} of {computer}: {e}")))?;
        for record in &mut records {
            if record.computer != computer {
                return Err(Status::permission_denied(format!(
                    "agent {computer} may report only for itself, not for {}",
                    record.computer
                )));
            }
            // The serving node is the computer's site; the report's counter
            // orders its records against older ones anywhere up the tree.
            record.site = self.node.id.clone();
            record.counter = counter;
            record.attestation = None;
        }
        let leaf = chain.first().cloned().unwrap_or_default();
        if let Err(r) = self
            .node
            .attest_report(&computer, counter, &leaf, scheme, &signature, &mut records)
        {
            let text = self.node.note_refusal(&format!("agent {computer}"), &r);
            return Err(Status::permission_denied(text));
        }
        let certificate = cascade_core::model::AgentCertificate {
            computer: computer.clone(),
            chain: chain
                .iter()
                .map(|c| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.encode(c)
                })
                .collect(),
        };
        let node = self.node.clone();
        let forward = node.config.parent.is_some();
        let source = format!("agent/{computer}");
        let at = self.node.now();
        let (outcome, mark) = node
            .run(move |node| -> Result<_, cascade_store::StoreError> {
                let before = node.store.inbox_mark(&source)?;
                if node.store.agent_certificate(&computer)?.as_ref() != Some(&certificate) {
                    node.store.put_agent_certificate(&certificate, forward)?;
                }
                let fresh = counter > before;
                if fresh && !events.is_empty() {
                    node.store.put_events(&computer, counter, &events, EVENTS_KEPT)?;
                }
                let outcome = node.store.ingest(&source, counter, &records, forward)?;
                let pending_restart = node
                    .store
                    .computer_records(&computer)?
                    .iter()
                    .any(|r| r.state == cascade_core::compliance::ComplianceState::PendingRestart);
                // A repeated report's events are noted already.
                let events: &[InstallEvent] = if fresh { &events } else { &[] };
                node.reported(&computer, at, pending_restart, events)?;
                Ok((outcome, node.store.inbox_mark(&source)?))
            })
            .await
            .map_err(store_status)?;
        metrics::counter!("cascade_agent_reports_total").increment(1);
        if forward && !outcome.duplicate {
            self.node.upward_ready();
        }
        Ok(Response::new(ReportReply { acked: mark }))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<EnrollReply>, Status> {
        // The caller's current certificate (checked, not revoked) vouches.
        let computer = agent_of(&self.node, &request)?;
        let node = &self.node;
        let Some((ca, days)) = node.config.enrollment.clone() else {
            return Err(Status::failed_precondition(format!(
                "node {} does not issue agent certificates: its configuration has no [enrollment]",
                node.id
            )));
        };
        let at = self.node.now();
        let cert_pem = ca
            .sign_request(
                &request.into_inner().csr_pem,
                &Identity::Agent(computer.clone()),
                at,
                days,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(%computer, "agent certificate renewed");
        Ok(Response::new(
            certified(node, &computer, at, "agent renew", cert_pem).await,
        ))
    }

    type ContentStream = ContentStream;

    async fn content(&self, request: Request<ContentRequest>) -> Result<Response<ContentStream>, Status> {
        // A child node asks only for what its own agents need or its admin
        // pre-stages (it decided that); an agent only for approved updates.
        let for_child = match self.node.peer_identity(&request)? {
            Identity::Agent(_) => false,
            Identity::Node(_) => true,
            other => return Err(Status::permission_denied(format!("{other} may not fetch content"))),
        };
        let ContentRequest { sha256, offset } = request.into_inner();
        if self.node.content_path(&sha256).is_none() {
            return Err(Status::invalid_argument(format!(
                "{sha256:?} is not a lower-case hex sha256"
            )));
        }
        // Pulled through from the parent when this node lacks it (once,
        // however many ask at the same time), and served as it is verified.
        let source = self
            .node
            .open_content(&sha256, for_child)
            .await
            .map_err(|e| e.status())?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let node = self.node.clone();
        let runtime = tokio::runtime::Handle::current();
        // Read in one blocking task (not a thread-pool hop per chunk).
        tokio::task::spawn_blocking(move || {
            let serving = Serving {
                node,
                sha256,
                offset,
                for_child,
                runtime,
                tx,
            };
            if let Err(status) = serving.run(source) {
                let _ = serving.tx.blocking_send(Err(status));
            }
        });
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as ContentStream
        ))
    }
}
