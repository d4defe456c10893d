//! Who may call what over gRPC, decided once, before any body is read: a
//! tower layer around the node's whole gRPC server. It takes the caller's
//! identity from the verified client certificate (refusing a revoked one),
//! decides by the method's path who may call it (nodes the Hierarchy
//! service; agents of this site, or of a site this node is told to trust,
//! the Agents service; admins the Admin service, by the same registry rule
//! as the HTTP API), and bounds the request body to what that caller may
//! send. The Admin handler finds the authorization in the request's
//! extensions.
//! The HTTP API makes the same decision through `Node::authorize` before
//! it reads a body (api/http.rs).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cascade_trust::Identity;
use tonic::codegen::{Bytes, http};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::Node;
use crate::api::{ApiError, Authorized};

/// The request metadata that names the Admin operation, so that access and
/// the body's limit are decided before the body is read.
pub const OPERATION_HEADER: &str = "cascade-operation";

/// Bodies before anything is known of the caller (enrollment, health).
pub const SMALL_BODY: usize = 64 * 1024;
/// Agents' check-ins and reports.
pub const AGENT_BODY: usize = 16 * 1024 * 1024;
/// What nodes send each other (report batches, snapshots).
pub const NODE_BODY: usize = 64 * 1024 * 1024;

/// The gate as a tower layer.
#[derive(Clone, Debug)]
pub struct GateLayer {
    pub node: Arc<Node>,
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            node: self.node.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Gate<S> {
    inner: S,
    node: Arc<Node>,
}

/// What the gate lets through: an admin call's authorization, and the
/// largest body it reads.
struct Admission {
    authorized: Option<Authorized>,
    body_limit: usize,
}

impl Node {
    /// The caller's identity from its verified chain, unless revoked (a
    /// revocation that cannot be read refuses too).
    fn chain_identity(
        &self,
        certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Result<Option<Identity>, tonic::Status> {
        let Some(certs) = certs.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        let identity = crate::identity_of_chain(&ders, &self.trust.ca_ders)?;
        if let Some(why) = self.revocation_of(ders[0]) {
            tracing::warn!(%identity, "refused a revoked certificate: {why}");
            return Err(tonic::Status::permission_denied(why));
        }
        Ok(Some(identity))
    }

    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Result<Admission, tonic::Status> {
        let identity = self.chain_identity(certs)?;
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        let unauthenticated = || tonic::Status::unauthenticated(format!("{path} needs a client certificate"));
        let admission = |body_limit| Admission {
            authorized: None,
            body_limit,
        };
        let named = identity.clone();
        let admitted = match service {
            "cascade.v1.Admin" => {
                let identity = identity.ok_or_else(unauthenticated)?;
                let caller = self.admin_caller(&identity, "certificate").map_err(|e| e.grpc())?;
                let operation = headers
                    .get(OPERATION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        tonic::Status::invalid_argument(format!(
                            "the request metadata has no {OPERATION_HEADER}: name the operation there as well as in the body"
                        ))
                    })?;
                let authorized = self.authorize(caller, operation).map_err(|e| e.grpc())?;
                let body_limit = authorized.body_limit();
                Ok(Admission {
                    authorized: Some(authorized),
                    body_limit,
                })
            }
            "cascade.v1.Hierarchy" => match identity {
                // A child's reports are one stream for as long as it stays
                // connected: each batch is held to NODE_BODY by the
                // service's decoding limit and acknowledged before the
                // child sends more than a few, so the stream as a whole is
                // not limited (a whole subtree's snapshot is gigabytes).
                Some(Identity::Node(_)) if method == "Report" => Ok(admission(usize::MAX)),
                Some(Identity::Node(_)) => Ok(admission(NODE_BODY)),
                Some(other) => Err(tonic::Status::permission_denied(format!("{other} is not a node"))),
                None => Err(unauthenticated()),
            },
            "cascade.v1.Agents" => match (method, identity) {
                ("Enroll", _) => Ok(admission(SMALL_BODY)),
                // Content for a child node: only children registered here.
                ("Content", Some(Identity::Node(child)))
                    if self
                        .is_child(&child)
                        .map_err(|e| tonic::Status::unavailable(format!("cannot read this node's sites: {e}")))? =>
                {
                    Ok(admission(SMALL_BODY))
                }
                ("Content", Some(Identity::Node(other))) => Err(tonic::Status::permission_denied(format!(
                    "node {other} is not a child of {}: content goes to children registered here",
                    self.id
                ))),
                (_, Some(identity @ Identity::Agent(_))) => {
                    let leaf = certs.and_then(|c| c.first()).map(|c| c.as_ref()).unwrap_or_default();
                    self.agent_of_this_site(leaf, &identity)?;
                    let limit = if method == "Content" { SMALL_BODY } else { AGENT_BODY };
                    Ok(admission(limit))
                }
                (_, Some(other)) => Err(tonic::Status::permission_denied(format!("{other} is not an agent"))),
                (_, None) => Err(unauthenticated()),
            },
            "grpc.health.v1.Health" => Ok(admission(SMALL_BODY)),
            _ => match identity {
                Some(_) => Ok(admission(SMALL_BODY)),
                None => Err(unauthenticated()),
            },
        }?;
        // Nodes and agents name their protocol when they connect (once
        // they are let in): a release older than this node serves cannot
        // verify what it would be sent.
        if matches!(
            (service, method),
            ("cascade.v1.Hierarchy", _) | ("cascade.v1.Agents", "CheckIn")
        ) {
            self.check_protocol(headers, named.as_ref())?;
        }
        Ok(admitted)
    }

    /// Refuses a caller of a protocol older than this node serves, naming
    /// both and what to do.
    fn check_protocol(&self, headers: &http::HeaderMap, caller: Option<&Identity>) -> Result<(), tonic::Status> {
        use cascade_proto::{MIN_PROTOCOL, PROTOCOL, PROTOCOL_HEADER};
        let theirs = cascade_proto::protocol_in(headers.get(PROTOCOL_HEADER).map(|v| v.as_bytes()));
        let caller = caller.map(|c| c.to_string()).unwrap_or_else(|| "the caller".to_owned());
        if theirs < MIN_PROTOCOL {
            let release = if theirs == 0 {
                "a release from before protocol versions".to_owned()
            } else {
                format!("protocol {theirs}")
            };
            tracing::warn!(%caller, protocol = theirs, "refused a caller of an older protocol");
            return Err(tonic::Status::failed_precondition(format!(
                "{caller} runs {release}; {} speaks protocol {PROTOCOL} and serves protocol {MIN_PROTOCOL} and later (signed format {}), which that release cannot verify: upgrade {caller} (README, Upgrading)",
                self.id,
                cascade_core::exact::FORMAT
            )));
        }
        if theirs > PROTOCOL {
            tracing::info!(%caller, protocol = theirs, "a caller of a later protocol: what it sends that this release does not know is refused or kept unread");
        }
        Ok(())
    }

    /// An agent is served by the node of the site whose enrollment CA
    /// issued its certificate, or by a node configured to trust that CA
    /// (failover); any other site's enrollment credentials do not make a
    /// computer here.
    pub(crate) fn agent_of_this_site(&self, leaf: &[u8], identity: &Identity) -> Result<(), tonic::Status> {
        let fingerprint = cascade_trust::sign::fingerprint(leaf);
        if self
            .trust
            .agent_sites
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&fingerprint)
        {
            return Ok(());
        }
        // A certificate the organisation CA issued itself (`cascade pki
        // issue agent`, an enterprise admin's act) is good everywhere; one
        // from an enrollment CA only at its site and where it is trusted.
        let issued_here = cascade_trust::sign::verify_issued(leaf, &[], &self.trust.ca_ders).is_ok()
            || self.config.agent_cas.iter().any(|ca| {
                cascade_trust::sign::verify_issued(leaf, std::slice::from_ref(ca), &self.trust.ca_ders).is_ok()
            });
        if !issued_here {
            return Err(tonic::Status::permission_denied(format!(
                "{identity} was not enrolled at {}: its certificate is from another site's enrollment CA (a node serves the agents of its own site, and of the sites its [agents] trusted_enrollment_cas name)",
                self.id
            )));
        }
        let mut seen = self.trust.agent_sites.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 100_000 {
            seen.clear();
        }
        seen.insert(fingerprint);
        Ok(())
    }
}

/// Agent certificates already found issued by a CA this node serves.
#[derive(Debug, Default)]
pub(crate) struct AgentSites(pub(crate) std::sync::Mutex<std::collections::HashSet<String>>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let admitted = self.node.admit(
            request.uri().path(),
            request.headers(),
            certs.as_deref().map(|c| c.as_slice()),
        );
        let admission = match admitted {
            Ok(a) => a,
            Err(status) => {
                tracing::debug!(path = request.uri().path(), error = %status.message(), "call refused at the gate");
                return Box::pin(async move { Ok(with_protocol(status.into_http())) });
            }
        };
        let (mut parts, body) = request.into_parts();
        if let Some(authorized) = admission.authorized {
            parts.extensions.insert(authorized);
        }
        let body = tonic::body::Body::new(http_body_util::Limited::new(body, admission.body_limit));
        // The inner service was made ready by poll_ready; the clone takes
        // its place for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            inner
                .call(http::Request::from_parts(parts, body))
                .await
                .map(with_protocol)
        })
    }
}

/// A reply with this node's protocol in its headers.
fn with_protocol<B>(mut response: http::Response<B>) -> http::Response<B> {
    response.headers_mut().insert(
        cascade_proto::PROTOCOL_HEADER,
        http::HeaderValue::from(cascade_proto::PROTOCOL),
    );
    response
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.grpc()
    }
}
