//! The workflow API: one registry of operations, served as HTTP/JSON
//! (`POST /api/v1/<operation>`), over gRPC (`Admin.Invoke`), described by
//! an OpenAPI document and the `/help` page, and used by the console. Each
//! operation has its parameters and result as Rust types (their JSON
//! Schemas come from the types), an example, and the access it needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cascade_core::model::{AuditEntry, NodeId};
use cascade_trust::{Identity, Role};
use schemars::{Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Node;

/// One registry entry: its name, group, access, summary, handler,
/// parameter type and example (and the native operation an alias stands for).
macro_rules! op {
    ($name:literal, $group:literal, $access:expr, $summary:literal, $handler:path, $params:ty, $example:expr) => {
        op!($name, $group, $access, $summary, $handler, $params, $example, None)
    };
    ($name:literal, $group:literal, $access:expr, $summary:literal, $handler:path, $params:ty, $example:expr, $alias:expr) => {
        Operation {
            name: $name,
            group: $group,
            summary: $summary,
            access: $access,
            alias_of: $alias,
            example: || $example,
            params_schema: |g| g.subschema_for::<$params>(),
            result_schema: |g| $crate::api::result_schema(&$handler, g),
            check: |value| parse_params::<$params>(value).map(drop),
            call: |ctx, value| {
                Box::pin(async move {
                    let params: $params = parse_params(value)?;
                    let result = $handler(ctx, params).await?;
                    serde_json::to_value(&result).map_err(|e| ApiError::Internal(e.to_string()))
                })
            },
        }
    };
}

pub mod export;
pub mod http;
mod ops;
mod reports;
mod workflow;

/// Why an operation did not happen. Mapped to HTTP statuses and gRPC codes
/// in one place each (`status` here, `grpc` below).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Invalid(_) => 400,
            ApiError::Unauthenticated(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn grpc(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ApiError::Invalid(_) => tonic::Status::invalid_argument(message),
            ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ApiError::Forbidden(_) => tonic::Status::permission_denied(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::Conflict(_) => tonic::Status::failed_precondition(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl From<cascade_store::StoreError> for ApiError {
    fn from(e: cascade_store::StoreError) -> Self {
        use cascade_store::StoreError as E;
        match e {
            E::NotOwner { .. } | E::NotOverridable { .. } => ApiError::Forbidden(e.to_string()),
            E::NoSuchObject { .. } => ApiError::NotFound(e.to_string()),
            E::Invalid(_) | E::Gap { .. } => ApiError::Invalid(e.to_string()),
            E::DiskFull { .. } => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Who calls, as their certificate or token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Caller {
    pub name: String,
    /// admin, site-operator or auditor.
    pub role: String,
    /// A site operator's site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// "certificate" or "token".
    pub via: String,
}

impl Caller {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Auditor)
    }
}

/// What an operation needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any role.
    Read,
    /// Admins and site operators (auditors read only).
    Write,
    /// Admins only.
    Admin,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Read => true,
            Access::Write => role != Role::Auditor,
            Access::Admin => role == Role::Admin,
        }
    }
}

/// What an operation's handler gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub node: Arc<Node>,
    pub caller: Caller,
}

type Call = fn(Ctx, Value) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>;

/// One operation of the API.
#[derive(Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub group: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// For the Altiris-compatible names: the native operation it stands for.
    pub alias_of: Option<&'static str>,
    pub example: fn() -> Value,
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    pub result_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes the parameters only: what `call` refuses as invalid, this
    /// refuses too, without touching the node (fuzzing, property tests).
    pub check: fn(Value) -> Result<(), ApiError>,
    pub call: Call,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation").field("name", &self.name).finish()
    }
}

/// The JSON Schema of what a handler returns, read from its type: each
/// operation's result is a type of its own, so the schema is the shape the
/// caller receives.
pub fn result_schema<P, T, F, Fut>(_: &F, generator: &mut SchemaGenerator) -> Schema
where
    F: Fn(Ctx, P) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
    T: schemars::JsonSchema,
{
    generator.subschema_for::<T>()
}

/// Parameters from JSON, with errors naming the field.
pub fn parse_params<P: DeserializeOwned>(value: Value) -> Result<P, ApiError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::Invalid(e.inner().to_string())
        } else {
            ApiError::Invalid(format!("{path}: {}", e.inner()))
        }
    })
}

/// The operations, native ones first, then the Altiris-compatible names.
pub fn operations() -> &'static [Operation] {
    static ALL: std::sync::LazyLock<Vec<Operation>> = std::sync::LazyLock::new(|| {
        let (aliases, native): (Vec<&Operation>, Vec<&Operation>) =
            ops::OPERATIONS.iter().partition(|o| o.alias_of.is_some());
        native
            .into_iter()
            .chain(reports::OPERATIONS)
            .chain(aliases)
            .copied()
            .collect()
    });
    &ALL
}

pub fn find(name: &str) -> Option<&'static Operation> {
    operations().iter().find(|o| o.name == name)
}

impl Node {
    /// The caller an admin identity makes at this node. A site operator is
    /// accepted at the nodes of its site's subtree only.
    pub fn admin_caller(&self, identity: &Identity, via: &str) -> Result<Caller, ApiError> {
        match identity {
            Identity::Admin { name, role, site } => {
                if *role == Role::SiteOperator {
                    let Some(site) = site else {
                        return Err(ApiError::Forbidden(format!("site operator {name} names no site")));
                    };
                    if !self.sites_up()?.contains(site) {
                        return Err(ApiError::Forbidden(format!(
                            "site operator {name} of {site} may not operate node {}: it is outside {site}'s subtree",
                            self.id
                        )));
                    }
                }
                Ok(Caller {
                    name: name.clone(),
                    role: role.as_str().to_owned(),
                    site: site.as_ref().map(NodeId::to_string),
                    via: via.to_owned(),
                })
            }
            other => Err(ApiError::Forbidden(format!("{other} is not an administrator"))),
        }
    }

    /// The caller a bearer token makes here (tokens are this node's own).
    pub async fn token_caller(self: &Arc<Self>, token: &str) -> Result<Caller, ApiError> {
        let hash = token_hash(token);
        let store = self.db.clone();
        let record = store
            .run(move |store| store.api_token(&hash))
            .await?
            .ok_or_else(|| ApiError::Unauthenticated("the bearer token is unknown or was revoked".into()))?;
        if record.expires_at <= self.now() {
            return Err(ApiError::Unauthenticated(format!(
                "the bearer token of {} expired at {}",
                record.name, record.expires_at
            )));
        }
        Ok(Caller {
            site: (record.role == Role::SiteOperator.as_str()).then(|| self.id.to_string()),
            name: record.name,
            role: record.role,
            via: "token".into(),
        })
    }

    /// The one access decision of the admin surface (HTTPS, gRPC, `ctl`):
    /// whether this caller (already bound to this node by `admin_caller` or
    /// `token_caller`) may call the operation. Made before the request's
    /// body is read; `invoke` takes nothing else.
    pub fn authorize(&self, caller: Caller, name: &str) -> Result<Authorized, ApiError> {
        let op = find(name).ok_or_else(|| ApiError::NotFound(format!("there is no operation {name:?}; see /help")))?;
        if !op.access.allows(caller.role()) {
            return Err(ApiError::Forbidden(format!(
                "{} ({}) may not call {name}: it needs {}",
                caller.name,
                caller.role,
                match op.access {
                    Access::Admin => "the admin role",
                    _ => "a role that may change things (admin or site operator)",
                }
            )));
        }
        Ok(Authorized { caller, op })
    }

    /// Runs an authorized operation: the handler, and for changes an audit
    /// entry (which replicates up).
    pub async fn invoke(self: &Arc<Self>, authorized: Authorized, params: Value) -> Result<Value, ApiError> {
        let Authorized { caller, op } = authorized;
        let detail = if op.access == Access::Read {
            None
        } else {
            let mut text = params.to_string();
            if text.len() > 2000 {
                text.truncate(2000);
                text.push('…');
            }
            Some(text)
        };
        let result = (op.call)(
            Ctx {
                node: self.clone(),
                caller: caller.clone(),
            },
            params,
        )
        .await?;
        if let Some(detail) = detail {
            let entry = AuditEntry {
                at: self.now(),
                actor: format!("{} ({}, {})", caller.name, caller.role, caller.via),
                node: self.id.clone(),
                action: op.alias_of.unwrap_or(op.name).to_owned(),
                detail,
            };
            let store = self.db.clone();
            let forward = self.config.parent.is_some();
            if let Err(e) = store.run(move |store| store.audit(&entry, forward)).await {
                tracing::error!(error = %e, "cannot write the audit log");
            } else if forward {
                self.upward_ready();
            }
        }
        Ok(result)
    }
}

/// A caller allowed one operation at this node. Only `Node::authorize`
/// makes one, so no path reaches an operation around the access decision.
#[derive(Clone, Debug)]
pub struct Authorized {
    caller: Caller,
    op: &'static Operation,
}

impl Authorized {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn operation(&self) -> &'static Operation {
        self.op
    }

    /// The largest request body this caller may send for the operation.
    pub fn body_limit(&self) -> usize {
        self.op.body_limit()
    }
}

/// Request bodies of most operations (parameters only).
pub const PARAMS_LIMIT: usize = 1024 * 1024;
/// Request bodies of the operations that carry a file (catalog imports),
/// for authenticated callers who may call them.
pub const UPLOAD_LIMIT: usize = 128 * 1024 * 1024;

impl Operation {
    /// Catalog imports carry a file; everything else carries parameters
    /// only.
    pub fn body_limit(&self) -> usize {
        match self.alias_of.unwrap_or(self.name) {
            "catalog.import" => UPLOAD_LIMIT,
            _ => PARAMS_LIMIT,
        }
    }
}

/// A task started through the API (`tasks.run`, Altiris `RunTask`).
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TaskStatus {
    pub id: u64,
    pub task: String,
    /// running, succeeded or failed.
    pub state: String,
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// What it did (null while it runs).
    pub result: Option<TaskResult>,
    pub started_by: String,
}

/// What a task did, by task; a failed task's message.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TaskResult {
    /// replicate_now.
    Woken { woken: bool },
    /// compact: the changes and outbox entries dropped, and the children
    /// away longer than `log_hold_days` that the log was not kept for.
    Compacted {
        changes_dropped: usize,
        outbox_entries_dropped: u64,
        children_released: Vec<String>,
    },
    /// persist_agents.
    AgentsWritten { agents_written: usize },
    /// Why it failed.
    Failed(String),
}

/// The API's own work at a node: the tasks started through it (the latest
/// thousand kept) and the one permit for a report that reads every record.
#[derive(Debug)]
pub struct Work {
    tasks: std::sync::Mutex<std::collections::BTreeMap<u64, TaskStatus>>,
    /// One report at a time that reads every record of the subtree.
    pub(crate) heavy_reports: tokio::sync::Semaphore,
}

impl Default for Work {
    fn default() -> Work {
        Work {
            tasks: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            heavy_reports: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Work {
    /// The most tasks whose status is kept.
    pub const KEPT: usize = 1000;

    fn tasks(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, TaskStatus>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a task as running; returns its id.
    pub fn start(&self, task: &str, started_by: &str, now: i64) -> u64 {
        let mut tasks = self.tasks();
        let id = tasks.keys().next_back().map_or(1, |k| k + 1);
        tasks.insert(
            id,
            TaskStatus {
                id,
                task: task.to_owned(),
                state: "running".into(),
                started_at: now,
                finished_at: None,
                result: None,
                started_by: started_by.to_owned(),
            },
        );
        while tasks.len() > Self::KEPT {
            let Some(first) = tasks.keys().next().copied() else {
                break;
            };
            tasks.remove(&first);
        }
        id
    }

    /// Records how a task ended.
    pub fn finish(&self, id: u64, now: i64, result: Result<TaskResult, String>) {
        if let Some(t) = self.tasks().get_mut(&id) {
            t.finished_at = Some(now);
            let (state, result) = match result {
                Ok(v) => ("succeeded", v),
                Err(e) => ("failed", TaskResult::Failed(e)),
            };
            t.state = state.into();
            t.result = Some(result);
        }
    }

    pub fn status(&self, id: u64) -> Option<TaskStatus> {
        self.tasks().get(&id).cloned()
    }
}

/// The stored form of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The OpenAPI 3.1 document of the operations.
pub fn openapi(node: &NodeId) -> Value {
    // OpenAPI 3.1's schemas are JSON Schema 2020-12 (nullable is a type
    // array, not OpenAPI 3.0's `nullable`), kept under components.
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut paths = serde_json::Map::new();
    for op in operations() {
        let params = (op.params_schema)(&mut generator);
        let result = (op.result_schema)(&mut generator);
        let description = match op.alias_of {
            Some(native) => format!("{} (the Altiris name of `{native}`)", op.summary),
            None => op.summary.to_owned(),
        };
        paths.insert(
            format!("/api/v1/{}", op.name),
            serde_json::json!({
                "post": {
                    "operationId": op.name,
                    "tags": [op.group],
                    "summary": op.summary,
                    "description": format!("{description}\n\nAccess: {:?}.", op.access),
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": params, "example": (op.example)()}}
                    },
                    "responses": {
                        "200": {"description": "Done", "content": {"application/json": {"schema": result}}},
                        "400": {"description": "Invalid parameters; the message names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "401": {"description": "No or unknown credentials"},
                        "403": {"description": "The caller's role or site does not allow it"},
                        "404": {"description": "No such object"}
                    }
                }
            }),
        );
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        serde_json::json!({"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}, "required": ["error", "message"]}),
    );
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cascade workflow API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The workflow API of node {node}. Every operation is POST /api/v1/<name> with a JSON object of parameters. Authenticate with an admin client certificate or `Authorization: Bearer <token>`."),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "mtls": {"type": "mutualTLS"}}
        },
        "security": [{"bearer": []}, {"mtls": []}],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Every `$ref` under `value`.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_operation_names_the_shape_of_its_result_and_every_reference_resolves() {
        let doc = openapi(&NodeId::new("root").unwrap());
        for op in operations() {
            let schema = &doc["paths"][format!("/api/v1/{}", op.name)]["post"]["responses"]["200"]["content"]["application/json"]
                ["schema"];
            // A result of any shape would be `true` or `{}`.
            let says = ["$ref", "type", "anyOf", "oneOf"]
                .iter()
                .any(|k| schema.get(k).is_some());
            assert!(says, "{}: the result's schema says nothing: {schema}", op.name);
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "{}", all.len());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").expect(r);
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is not in components"
            );
        }
        // OpenAPI 3.1 is JSON Schema 2020-12: null is a type, not `nullable`.
        assert!(!doc.to_string().contains("\"nullable\""));
    }
}
