//! The Admin service: the workflow API's registry over gRPC (`Invoke`),
//! what `cascade ctl` drives. The gate (gate.rs) has already decided, from
//! the caller's certificate and the `cascade-operation` metadata, that the
//! caller may call the operation here, and bounded the body to its limit.

use std::sync::Arc;

use cascade_proto::v1::{self, InvokeReply, InvokeRequest};
use tonic::{Request, Response, Status};

use crate::Node;
use crate::api::Authorized;
use crate::gate::OPERATION_HEADER;

#[derive(Debug)]
pub struct AdminService {
    pub node: Arc<Node>,
}

/// An `Invoke` request for `operation` with its JSON parameters, the
/// operation named in the metadata too (the gate decides by it).
pub fn invoke_request(operation: &str, params: &serde_json::Value) -> Request<InvokeRequest> {
    let mut request = Request::new(InvokeRequest {
        operation: operation.to_owned(),
        params: serde_json::to_vec(params).unwrap_or_default(),
    });
    if let Ok(value) = operation.parse() {
        request.metadata_mut().insert(OPERATION_HEADER, value);
    }
    request
}

#[tonic::async_trait]
impl v1::admin_server::Admin for AdminService {
    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeReply>, Status> {
        // Without the gate's decision nothing runs (fail closed).
        let authorized = request
            .extensions()
            .get::<Authorized>()
            .cloned()
            .ok_or_else(|| Status::permission_denied("the call was not authorized"))?;
        let InvokeRequest { operation, params } = request.into_inner();
        let allowed = authorized.operation().name;
        if !operation.is_empty() && operation != allowed {
            return Err(Status::invalid_argument(format!(
                "the body names operation {operation:?} but the {OPERATION_HEADER} metadata names {allowed:?}"
            )));
        }
        let params: serde_json::Value = if params.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&params)
                .map_err(|e| Status::invalid_argument(format!("params: invalid JSON: {e}")))?
        };
        let result = self.node.invoke(authorized, params).await.map_err(|e| e.grpc())?;
        Ok(Response::new(InvokeReply {
            result: serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?,
        }))
    }
}
