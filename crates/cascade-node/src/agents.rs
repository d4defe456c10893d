//! The Agents service: enrollment, check-in (inventory in, assignment out),
//! reports and content. Targeting happens here, at the node: each agent
//! gets the plan of its inventory under the policies that target it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cascade_core::UpdateId;
use cascade_core::assignment::{Assignment, Placement, Targeting};
use cascade_core::inventory::Inventory;
use cascade_core::model::{Agent, ComputerId, InstallEvent, NodeId, Object, ObjectKind};
use cascade_core::planner::Planner;
use cascade_proto::v1::{self, *};
use cascade_trust::{EnrollmentToken, Identity};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{Node, blocking, now};

/// Install events kept per computer: those of its latest this many reports.
pub const EVENTS_KEPT: u64 = 50;
/// Bytes per content message.
const CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub struct AgentsService {
    pub node: Arc<Node>,
}

/// What targeting needs, rebuilt when the objects change.
#[derive(Debug)]
pub(crate) struct TargetingCache {
    version: u64,
    targeting: Arc<Targeting>,
    /// One planner per approved set, so equal inventories under equal
    /// approvals are evaluated once.
    planners: HashMap<Vec<UpdateId>, Arc<Planner>>,
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
    let store = node.store.clone();
    let forward = node.config.parent.is_some();
    if let Err(e) = blocking(move || store.audit(&entry, forward)).await {
        tracing::error!(error = %e, "cannot write the audit log");
    } else if forward {
        node.upward_ready();
    }
    EnrollReply {
        cert_pem,
        site: node.id.to_string(),
        root: node.root().map(|r| r.to_string()).unwrap_or_default(),
    }
}

fn agent_of<T>(node: &Node, request: &Request<T>) -> Result<ComputerId, Status> {
    match node.peer_identity(request)? {
        Identity::Agent(id) => Ok(id),
        other => Err(Status::permission_denied(format!("{other} is not an agent"))),
    }
}

impl Node {
    /// The effective objects of a kind: each with the overrides in force
    /// here applied (those of the farthest origin first, this node's last).
    pub fn effective_objects(&self, kind: ObjectKind) -> Result<Vec<Object>, cascade_store::StoreError> {
        let mut rank: HashMap<NodeId, usize> = HashMap::new();
        for (i, site) in self.sites_up().iter().enumerate() {
            rank.insert(site.clone(), i);
        }
        let mut out = Vec::new();
        for stored in self.store.objects(kind)? {
            let mut object = stored.object;
            if !object.overridable().is_empty()
                && let Ok(key) = object.key()
            {
                let mut overrides: Vec<_> = self.store.overrides(&key)?.into_iter().collect();
                overrides.sort_by_key(|(origin, _)| std::cmp::Reverse(rank.get(origin).copied().unwrap_or(usize::MAX)));
                for (origin, o) in overrides {
                    match object.with_fields(&o.fields) {
                        Ok(changed) => object = changed,
                        Err(e) => tracing::warn!(%key, %origin, error = %e, "override not applied"),
                    }
                }
            }
            out.push(object);
        }
        Ok(out)
    }

    /// This node and the sites above it, nearest first, from the site
    /// records that replicated down.
    pub fn sites_up(&self) -> Vec<NodeId> {
        let sites: HashMap<String, Option<NodeId>> = self
            .store
            .objects(ObjectKind::Site)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| match s.object {
                Object::Site(site) => Some((site.id.to_string(), site.parent)),
                _ => None,
            })
            .collect();
        let mut out = vec![self.id.clone()];
        let mut current = self.id.to_string();
        while let Some(Some(parent)) = sites.get(&current) {
            if out.contains(parent) || out.len() > sites.len() {
                break;
            }
            out.push(parent.clone());
            current = parent.to_string();
        }
        out
    }

    pub(crate) fn targeting(&self) -> Result<(Arc<Targeting>, u64), cascade_store::StoreError> {
        let version = *self.subscribe_changes().borrow();
        {
            let cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.as_ref().filter(|c| c.version == version) {
                return Ok((c.targeting.clone(), version));
            }
        }
        let mut updates = Vec::new();
        let mut policies = Vec::new();
        let mut approvals = Vec::new();
        let mut windows = Vec::new();
        let mut rollouts = Vec::new();
        for kind in [
            ObjectKind::Update,
            ObjectKind::Policy,
            ObjectKind::Approval,
            ObjectKind::MaintenanceWindow,
            ObjectKind::Rollout,
        ] {
            for object in self.effective_objects(kind)? {
                match object {
                    Object::Update(u) => updates.push(*u),
                    Object::Policy(p) => policies.push(*p),
                    Object::Approval(a) => approvals.push(a),
                    Object::MaintenanceWindow(w) => windows.push(*w),
                    Object::Rollout(r) => rollouts.push(r),
                    _ => {}
                }
            }
        }
        let targeting = Arc::new(Targeting::new(updates, policies, approvals, windows).with_rollouts(rollouts));
        let mut cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
        *cache = Some(TargetingCache {
            version,
            targeting: targeting.clone(),
            planners: HashMap::new(),
        });
        Ok((targeting, version))
    }

    /// The assignment of a computer with this inventory, now.
    pub fn assignment(
        &self,
        computer: &ComputerId,
        inventory_hash: &str,
        inventory: &Inventory,
        at: i64,
    ) -> Result<Assignment, cascade_store::StoreError> {
        let (targeting, version) = self.targeting()?;
        let sites = self.sites_up();
        let selection = targeting.select(&Placement {
            sites: &sites,
            inventory,
            now: at,
        });
        let key = selection.catalog_key();
        let planner = {
            let mut cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
            match cache.as_mut().filter(|c| c.version == version) {
                Some(c) => c
                    .planners
                    .entry(key)
                    .or_insert_with(|| Arc::new(Planner::new(Arc::new(targeting.catalog(&selection)))))
                    .clone(),
                // The objects changed meanwhile: plan without caching.
                None => Arc::new(Planner::new(Arc::new(targeting.catalog(&selection)))),
            }
        };
        let plan = planner.plan(inventory);
        Ok(targeting.assignment(computer, &self.id, inventory_hash, &selection, &plan, at))
    }

    /// The revision of what this node plans with: every change applied
    /// here, of every origin, moves it on.
    pub fn revision(&self) -> Result<u64, cascade_store::StoreError> {
        Ok(self.store.cursor()?.values().sum())
    }

    /// Notes an agent's check-in; written to the store by `persist_agents`.
    fn seen(
        &self,
        computer: &ComputerId,
        inventory: &str,
        at: i64,
        revision: u64,
    ) -> Result<(), cascade_store::StoreError> {
        let mut seen = self.seen.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = seen.get_mut(computer) {
            agent.last_seen = at;
            agent.inventory = Some(inventory.to_owned());
            agent.revision = Some(revision);
            return Ok(());
        }
        drop(seen);
        let mut agent = self.store.agent(computer)?.unwrap_or(Agent {
            id: computer.clone(),
            site: self.id.clone(),
            enrolled_at: at,
            last_seen: at,
            inventory: None,
            revision: None,
        });
        agent.site = self.id.clone();
        agent.last_seen = at;
        agent.inventory = Some(inventory.to_owned());
        agent.revision = Some(revision);
        self.seen
            .agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(computer.clone(), agent);
        Ok(())
    }

    /// Writes the agents seen since the last call, in one commit.
    pub async fn persist_agents(self: &Arc<Self>) -> Result<usize, cascade_store::StoreError> {
        let agents: Vec<Agent> = std::mem::take(&mut *self.seen.agents.lock().unwrap_or_else(|e| e.into_inner()))
            .into_values()
            .collect();
        let count = agents.len();
        let store = self.store.clone();
        let kept = agents.clone();
        if let Err(e) = blocking(move || store.put_agents(&agents)).await {
            // Kept for the next attempt (newer check-ins win).
            let mut seen = self.seen.agents.lock().unwrap_or_else(|e| e.into_inner());
            for agent in kept {
                seen.entry(agent.id.clone()).or_insert(agent);
            }
            return Err(e);
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
        let at = now();
        let cert_pem = ca
            .sign_request(&request.csr_pem, &Identity::Agent(computer.clone()), at, days)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let agent = Agent {
            id: computer.clone(),
            site: node.id.clone(),
            enrolled_at: at,
            last_seen: at,
            inventory: None,
            revision: None,
        };
        let store = node.store.clone();
        let hash = token.secret_hash();
        blocking(move || store.redeem_token(&hash, &agent, at))
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
        let at = now();
        blocking(move || -> Result<CheckInReply, Status> {
            let hash = request.inventory_hash;
            let inventory = if request.inventory.is_empty() {
                match node.store.inventory(&hash).map_err(store_status)? {
                    Some(inventory) => inventory,
                    None => {
                        return Ok(CheckInReply {
                            need_inventory: true,
                            assignment: Vec::new(),
                            now: at,
                            evidence: Vec::new(),
                        });
                    }
                }
            } else {
                let mut inventory: Inventory = serde_json::from_slice(&request.inventory)
                    .map_err(|e| Status::invalid_argument(format!("inventory of {computer}: {e}")))?;
                inventory.normalize();
                let actual = inventory.content_hash().to_string();
                if actual != hash {
                    return Err(Status::invalid_argument(format!(
                        "inventory of {computer}: its content hash is {actual}, not {hash} as sent"
                    )));
                }
                node.store.put_inventory(&inventory).map_err(store_status)?;
                inventory
            };
            let revision = node.revision().map_err(store_status)?;
            let assignment = node
                .assignment(&computer, &hash, &inventory, at)
                .map_err(store_status)?;
            node.seen(&computer, &hash, at, revision).map_err(store_status)?;
            let evidence = node.evidence(&assignment).map_err(store_status)?;
            let evidence = serde_json::to_vec(&evidence).map_err(|e| Status::internal(e.to_string()))?;
            let assignment = serde_json::to_vec(&assignment).map_err(|e| Status::internal(e.to_string()))?;
            Ok(CheckInReply {
                need_inventory: false,
                assignment,
                now: at,
                evidence,
            })
        })
        .await
        .map(Response::new)
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
        let events: Vec<InstallEvent> = if request.events.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&request.events)
                .map_err(|e| Status::invalid_argument(format!("report {counter} of {computer}: events: {e}")))?
        };
        let mut records: Vec<cascade_core::model::ComplianceRecord> = if request.records.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&request.records)
                .map_err(|e| Status::invalid_argument(format!("report {counter} of {computer}: records: {e}")))?
        };
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
        let scheme = u16::try_from(request.scheme).map_err(|_| {
            Status::invalid_argument(format!(
                "report {counter} of {computer}: scheme is not a TLS scheme code"
            ))
        })?;
        let leaf = chain.first().cloned().unwrap_or_default();
        if let Err(r) = self
            .node
            .attest_report(&computer, counter, &leaf, scheme, &request.signature, &mut records)
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
        let (outcome, mark) = blocking(move || -> Result<_, cascade_store::StoreError> {
            let before = node.store.inbox_mark(&source)?;
            if node.store.agent_certificate(&computer)?.as_ref() != Some(&certificate) {
                node.store.put_agent_certificate(&certificate, forward)?;
            }
            if counter > before && !events.is_empty() {
                node.store.put_events(&computer, counter, &events, EVENTS_KEPT)?;
            }
            let outcome = node.store.ingest(&source, counter, &records, forward)?;
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
        let at = now();
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
        // however many ask at the same time).
        let path = self
            .node
            .ensure_content(&sha256, for_child)
            .await
            .map_err(|e| e.status())?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Status::not_found(format!(
                    "content {sha256} is not on node {}",
                    self.node.id
                )));
            }
            Err(e) => return Err(Status::internal(format!("content {sha256}: {e}"))),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| Status::internal(format!("content {sha256}: {e}")))?
            .len();
        if offset > size {
            return Err(Status::out_of_range(format!(
                "content {sha256} has {size} bytes; offset {offset} is past its end"
            )));
        }
        // Read in one blocking task (not a thread-pool hop per chunk).
        let mut file = file.into_std().await;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            if let Err(e) = file.seek(std::io::SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(Status::internal(format!("content {sha256}: {e}"))));
                return;
            }
            let mut sent = offset;
            while sent < size {
                let mut buf = vec![0u8; CHUNK.min((size - sent) as usize)];
                match file.read_exact(&mut buf) {
                    Ok(()) => {
                        sent += buf.len() as u64;
                        metrics::counter!("cascade_content_served_bytes_total").increment(buf.len() as u64);
                        node.content
                            .served_bytes
                            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if tx.blocking_send(Ok(ContentChunk { data: buf, size })).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("content {sha256}: {e}"))));
                        return;
                    }
                }
            }
            if size == 0 {
                let _ = tx.blocking_send(Ok(ContentChunk { data: Vec::new(), size }));
            }
        });
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as ContentStream
        ))
    }
}
