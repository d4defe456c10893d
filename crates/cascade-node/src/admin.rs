//! The Admin service: what `cascade ctl` drives. Callers are admins by
//! their certificate; auditors may only read.

use std::sync::Arc;

use cascade_core::model::{ChangeOp, Object, ObjectId, ObjectKind, Site};
use cascade_proto::v1::{self, *};
use cascade_trust::{Identity, Role};
use tonic::{Request, Response, Status};

use crate::{Node, blocking};

#[derive(Debug)]
pub struct AdminService {
    pub node: Arc<Node>,
}

fn caller<T>(node: &Node, request: &Request<T>, write: bool) -> Result<(String, Role), Status> {
    match node.peer_identity(request)? {
        Identity::Admin { name, role, .. } => {
            if write && role == Role::Auditor {
                return Err(Status::permission_denied(format!("{name} is an auditor: read only")));
            }
            Ok((name, role))
        }
        other => Err(Status::permission_denied(format!("{other} is not an administrator"))),
    }
}

fn store_status(e: cascade_store::StoreError) -> Status {
    use cascade_store::StoreError as E;
    match e {
        E::NotOwner { .. } | E::NotOverridable { .. } => Status::permission_denied(e.to_string()),
        E::NoSuchObject { .. } => Status::not_found(e.to_string()),
        E::Invalid(_) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl AdminService {
    async fn audit(&self, actor: &str, action: &str, detail: String) {
        let entry = cascade_core::model::AuditEntry {
            at: crate::now(),
            actor: actor.to_owned(),
            node: self.node.id.clone(),
            action: action.to_owned(),
            detail,
        };
        let store = self.node.store.clone();
        let forward = self.node.config.parent.is_some();
        if let Err(e) = blocking(move || store.audit(&entry, forward)).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
        if forward {
            self.node.outbox_ready.notify_one();
        }
    }
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn site_remove(&self, request: Request<SiteRemoveRequest>) -> Result<Response<SiteRemoveReply>, Status> {
        let (actor, _) = caller(&self.node, &request, true)?;
        let id = ObjectId::new(&request.get_ref().id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let key = cascade_core::model::ObjectKey {
            kind: ObjectKind::Site,
            id: id.clone(),
        };
        let store = self.node.store.clone();
        let existing = blocking(move || store.object(&key)).await.map_err(store_status)?;
        match existing {
            Some(s) if s.origin == self.node.id => {}
            _ => {
                return Err(Status::not_found(format!(
                    "{id} is not a child site of {}",
                    self.node.id
                )));
            }
        }
        let key = cascade_core::model::ObjectKey {
            kind: ObjectKind::Site,
            id: id.clone(),
        };
        self.node
            .append_local(ChangeOp::Delete(key))
            .await
            .map_err(store_status)?;
        // Its cursors no longer hold back compaction of the logs.
        if let Ok(child) = cascade_core::model::NodeId::new(id.as_str()) {
            let store = self.node.store.clone();
            blocking(move || store.remove_subscriber(&child))
                .await
                .map_err(store_status)?;
        }
        self.audit(&actor, "site remove", id.to_string()).await;
        Ok(Response::new(SiteRemoveReply {}))
    }

    async fn change(&self, request: Request<ChangeRequest>) -> Result<Response<ChangeReply>, Status> {
        let (actor, _) = caller(&self.node, &request, true)?;
        let op: ChangeOp =
            serde_json::from_slice(&request.get_ref().op).map_err(|e| Status::invalid_argument(format!("op: {e}")))?;
        let detail = String::from_utf8_lossy(&request.get_ref().op).into_owned();
        let change = self.node.append_local(op).await.map_err(store_status)?;
        self.audit(&actor, "change", detail).await;
        Ok(Response::new(ChangeReply {
            origin: change.origin.to_string(),
            seq: change.seq,
        }))
    }

    async fn site_add(&self, request: Request<SiteAddRequest>) -> Result<Response<SiteAddReply>, Status> {
        let (actor, _) = caller(&self.node, &request, true)?;
        let req = request.into_inner();
        let id = ObjectId::new(&req.id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if id.as_str() == self.node.id.as_str() {
            return Err(Status::invalid_argument("a node cannot be its own child"));
        }
        if let Some(ancestor) = self
            .node
            .sites_up()
            .into_iter()
            .skip(1)
            .find(|a| a.as_str() == id.as_str())
        {
            return Err(Status::failed_precondition(format!(
                "{ancestor} is above {} in the tree: making it a child would make a cycle",
                self.node.id
            )));
        }
        let name = if req.name.is_empty() { req.id.clone() } else { req.name };
        let site = Site {
            id,
            name,
            parent: Some(self.node.id.clone()),
        };
        self.node
            .append_local(ChangeOp::Upsert(Object::Site(site)))
            .await
            .map_err(store_status)?;
        self.audit(&actor, "site add", req.id).await;
        Ok(Response::new(SiteAddReply {}))
    }

    async fn links(&self, request: Request<LinksRequest>) -> Result<Response<LinksReply>, Status> {
        caller(&self.node, &request, false)?;
        let links = self
            .node
            .links()
            .into_iter()
            .map(|(peer, direction, s)| Link {
                peer,
                direction: direction.to_owned(),
                connected: s.connected,
                last_contact: s.last_contact,
                seq_lag: s.seq_lag,
                last_error: s.last_error,
            })
            .collect();
        Ok(Response::new(LinksReply { links }))
    }

    async fn replicate_now(
        &self,
        request: Request<ReplicateNowRequest>,
    ) -> Result<Response<ReplicateNowReply>, Status> {
        caller(&self.node, &request, false)?;
        self.node.replicate_now();
        Ok(Response::new(ReplicateNowReply {}))
    }

    async fn objects(&self, request: Request<ObjectsRequest>) -> Result<Response<ObjectsReply>, Status> {
        caller(&self.node, &request, false)?;
        let kind = ObjectKind::parse(&request.get_ref().kind)
            .ok_or_else(|| Status::invalid_argument(format!("unknown kind {:?}", request.get_ref().kind)))?;
        let store = self.node.store.clone();
        let objects = blocking(move || store.objects(kind)).await.map_err(store_status)?;
        let bytes = serde_json::to_vec(&objects).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ObjectsReply { objects: bytes }))
    }

    async fn compliance(&self, request: Request<ComplianceRequest>) -> Result<Response<ComplianceReply>, Status> {
        caller(&self.node, &request, false)?;
        let store = self.node.store.clone();
        let (summary, records) = blocking(move || -> Result<_, cascade_store::StoreError> {
            let summary = store.summary_by_update()?;
            let records: u64 = summary.values().map(|c| c.total()).sum();
            Ok((summary, records))
        })
        .await
        .map_err(store_status)?;
        let by_update = serde_json::to_vec(&summary).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ComplianceReply { by_update, records }))
    }

    async fn agent_token_create(
        &self,
        request: Request<AgentTokenRequest>,
    ) -> Result<Response<AgentTokenReply>, Status> {
        let (actor, _) = caller(&self.node, &request, true)?;
        let AgentTokenRequest { site, ttl_seconds } = request.into_inner();
        if site != self.node.id.as_str() {
            return Err(Status::invalid_argument(format!(
                "--site {site}: agents of a site enroll at its own node; this is node {}",
                self.node.id
            )));
        }
        if self.node.config.enrollment.is_none() {
            return Err(Status::failed_precondition(format!(
                "node {} does not enroll agents: its configuration has no [enrollment]",
                self.node.id
            )));
        }
        if !(60..=30 * 86_400).contains(&ttl_seconds) {
            return Err(Status::invalid_argument(format!(
                "--ttl: {ttl_seconds} seconds is not between 1 minute and 30 days"
            )));
        }
        let token = cascade_trust::EnrollmentToken::generate(self.node.id.clone(), &self.node.config.ca_pem);
        let text = token.encode().map_err(|e| Status::internal(e.to_string()))?;
        let at = crate::now();
        let record = cascade_store::TokenRecord {
            site: self.node.id.clone(),
            created_by: actor.clone(),
            created_at: at,
            expires_at: at + ttl_seconds as i64,
        };
        let store = self.node.store.clone();
        let hash = token.secret_hash();
        let expires_at = record.expires_at;
        blocking(move || store.put_token(&hash, &record))
            .await
            .map_err(store_status)?;
        self.audit(
            &actor,
            "agent-token create",
            format!("site {site}, expires {expires_at}"),
        )
        .await;
        Ok(Response::new(AgentTokenReply {
            token: text,
            expires_at,
        }))
    }

    async fn agents(&self, request: Request<AgentsRequest>) -> Result<Response<AgentsReply>, Status> {
        caller(&self.node, &request, false)?;
        let node = self.node.clone();
        let rows = blocking(move || -> Result<Vec<serde_json::Value>, cascade_store::StoreError> {
            let mut rows = Vec::new();
            for agent in node.agents()? {
                let events = node.store.events(&agent.id)?;
                let latest: Vec<_> = events.iter().rev().take(10).rev().cloned().collect();
                rows.push(serde_json::json!({ "agent": agent, "events": latest }));
            }
            Ok(rows)
        })
        .await
        .map_err(store_status)?;
        let agents = serde_json::to_vec(&rows).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(AgentsReply { agents }))
    }

    async fn import(&self, request: Request<ImportRequest>) -> Result<Response<ImportReply>, Status> {
        let (actor, _) = caller(&self.node, &request, true)?;
        let ImportRequest { name, data } = request.into_inner();
        let name = if name.is_empty() { "upload".to_owned() } else { name };
        let source = name.clone();
        let imported =
            blocking(move || cascade_core::import::import_catalog(&source, &data, &cascade_core::import::NoFragments))
                .await
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let count = imported.updates.len() as u64;
        let ops = imported
            .updates
            .into_iter()
            .map(|u| ChangeOp::Upsert(Object::Update(Box::new(u))))
            .collect();
        self.node.append_local_many(ops).await.map_err(store_status)?;
        let format = imported.format.name().to_owned();
        self.audit(&actor, "import", format!("{name}: {count} updates ({format})"))
            .await;
        Ok(Response::new(ImportReply {
            format,
            updates: count,
            skipped: imported.skipped.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeReply>, Status> {
        let identity = self.node.peer_identity(&request)?;
        let caller = self.node.admin_caller(&identity, "certificate").map_err(|e| e.grpc())?;
        let InvokeRequest { operation, params } = request.into_inner();
        let params: serde_json::Value = if params.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&params)
                .map_err(|e| Status::invalid_argument(format!("params: invalid JSON: {e}")))?
        };
        let result = self
            .node
            .invoke(caller, &operation, params)
            .await
            .map_err(|e| e.grpc())?;
        Ok(Response::new(InvokeReply {
            result: serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?,
        }))
    }
}
