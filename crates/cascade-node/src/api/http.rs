//! The HTTP side of the workflow API: HTTPS with the node's certificate,
//! callers by admin client certificate or bearer token; `POST
//! /api/v1/<operation>`, `GET /openapi.json`, `GET /help` (every operation
//! with its parameters, an example and a form that invokes it) and the
//! console at `/`. Every asset is served from the binary.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use cascade_trust::Identity;
use serde_json::{Value, json};

use super::{ApiError, Caller, operations};
use crate::Node;

/// The verified client certificate's identity, when one was presented.
#[derive(Clone, Debug)]
struct PeerIdentity(Option<Identity>);

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": e.kind(), "message": e.to_string()}).to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    response
}

async fn caller(node: &Arc<Node>, peer: &PeerIdentity, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("the Authorization header is not text".into()))?;
        let token = text
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthenticated("Authorization: expected \"Bearer <token>\"".into()))?;
        return node.token_caller(token).await;
    }
    match &peer.0 {
        Some(identity) => node.admin_caller(identity, "certificate"),
        None => Err(ApiError::Unauthenticated(
            "no credentials: present an admin client certificate or Authorization: Bearer <token>".into(),
        )),
    }
}

async fn invoke(
    State(node): State<Arc<Node>>,
    Extension(peer): Extension<PeerIdentity>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Who calls and whether they may call this, before the body is read.
    let decided = match caller(&node, &peer, &headers).await {
        Ok(caller) => node.authorize(caller, &operation),
        Err(e) => Err(e),
    };
    let authorized = match decided {
        Ok(a) => a,
        Err(e) => {
            drain(body).await;
            return error_response(&e);
        }
    };
    let limit = authorized.body_limit();
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)).await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let mut response = error_response(&ApiError::Invalid(format!(
                "the body is larger than the {limit} bytes {operation} takes"
            )));
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return response;
        }
        Err(e) => return error_response(&ApiError::Invalid(format!("the body could not be read: {e}"))),
    };
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ (Value::Object(_) | Value::Null)) => v,
            Ok(_) => {
                return error_response(&ApiError::Invalid(
                    "the body must be a JSON object of parameters".into(),
                ));
            }
            Err(e) => return error_response(&ApiError::Invalid(format!("invalid JSON: {e}"))),
        }
    };
    // An export (every page of a report as CSV or JSON lines) streams.
    let export = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(super::export::Format::from_accept);
    if let Some(format) = export {
        return match node.export(authorized, params, format).await {
            Ok(rx) => {
                let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
                let name = format!(
                    "attachment; filename=\"{operation}.{}\"",
                    if format == super::export::Format::Csv {
                        "csv"
                    } else {
                        "jsonl"
                    }
                );
                (
                    [
                        (header::CONTENT_TYPE, format.content_type().to_owned()),
                        (header::CONTENT_DISPOSITION, name),
                    ],
                    body,
                )
                    .into_response()
            }
            Err(e) => error_response(&e),
        };
    }
    match node.invoke(authorized, params).await {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The most of a refused request's body that is read (and dropped).
const UNAUTHENTICATED_BODY: usize = 64 * 1024;

/// The content security policy of every reply: scripts, styles and
/// requests from this node only, no inline script, never in a frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Browser safety for every request and reply: a write comes as JSON and
/// from this node's own pages (a form or a foreign page cannot make one
/// with an admin's client certificate), and every reply carries the
/// security headers; API replies, which may carry tokens, are not cached.
/// Why a POST is refused as unsafe from a browser, if it is.
fn unsafe_from_a_browser(request: &axum::extract::Request) -> Option<Response> {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(request.uri().authority().map(|a| a.as_str()));
        let expected = host.map(|h| format!("https://{h}"));
        if origin.to_str().ok() != expected.as_deref() {
            return Some(error_response(&ApiError::Forbidden(format!(
                "cross-origin request refused: Origin {:?} is not this node ({})",
                origin.to_str().unwrap_or("?"),
                expected.as_deref().unwrap_or("no Host")
            ))));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return Some(error_response(&ApiError::Forbidden(
            "cross-site request refused (Sec-Fetch-Site)".into(),
        )));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        let mut response = error_response(&ApiError::Invalid(
            "Content-Type: the API takes application/json".into(),
        ));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return Some(response);
    }
    None
}

/// Reads and drops up to `UNAUTHENTICATED_BODY` of a refused request's
/// body, so that the refusal reaches the client (closing on unread bytes
/// resets the connection); a larger body is not read at all.
async fn drain(body: Body) {
    let _ = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, UNAUTHENTICATED_BODY)).await;
}

async fn browser_safety(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let refusal = if request.method() == axum::http::Method::POST {
        unsafe_from_a_browser(&request)
    } else {
        None
    };
    let mut response = match refusal {
        Some(refusal) => {
            drain(request.into_body()).await;
            refusal
        }
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=31536000"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

async fn list(State(_node): State<Arc<Node>>) -> Response {
    let ops: Vec<Value> = operations()
        .iter()
        .map(|o| json!({"name": o.name, "group": o.group, "summary": o.summary, "access": o.access, "alias_of": o.alias_of}))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        Value::Array(ops).to_string(),
    )
        .into_response()
}

async fn openapi(State(node): State<Arc<Node>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi(&node.id).to_string(),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The help page: generated from the registry and the OpenAPI schemas.
fn help_page(node: &Node) -> String {
    let doc = super::openapi(&node.id);
    // Real responses, recorded by the API test (tests/api.rs).
    let examples: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("../../../../docs/api-examples.json")).unwrap_or_default();
    let mut groups: Vec<&str> = Vec::new();
    for op in operations() {
        if !groups.contains(&op.group) {
            groups.push(op.group);
        }
    }
    let mut toc = String::new();
    let mut body = String::new();
    for group in &groups {
        toc.push_str(&format!("<li><a href=\"#g-{0}\">{0}</a></li>", escape(group)));
        body.push_str(&format!("<h2 id=\"g-{0}\">{0}</h2>", escape(group)));
        if *group == "Altiris names" {
            body.push_str("<p class=\"note\">The methods of the Altiris Patch Workflow Web Service, under the same names, as aliases of the native operations, so that existing admin scripts port easily.</p>");
        }
        for op in operations().iter().filter(|o| o.group == *group) {
            let path = format!("/api/v1/{}", op.name);
            let post = &doc["paths"][&path]["post"];
            let schema = serde_json::to_string_pretty(&post["requestBody"]["content"]["application/json"]["schema"])
                .unwrap_or_default();
            let example = serde_json::to_string_pretty(&(op.example)()).unwrap_or_default();
            let response = examples
                .get(op.name)
                .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
                .unwrap_or_else(|| "(none recorded)".to_owned());
            let alias = op
                .alias_of
                .map(|a| {
                    format!(
                        " <span class=\"alias\">alias of <a href=\"#op-{0}\">{0}</a></span>",
                        escape(a)
                    )
                })
                .unwrap_or_default();
            body.push_str(&format!(
                r#"<section class="op" id="op-{name}">
<h3><code>{name}</code>{alias}</h3>
<p>{summary} <span class="access">access: {access:?}</span></p>
<p class="http">POST <code>{path}</code></p>
<details><summary>Parameters (JSON Schema)</summary><pre>{schema}</pre></details>
<p>Example request:</p><pre>curl -s -H 'Authorization: Bearer $TOKEN' -d '{example_line}' https://{{node}}{path}</pre>
<details><summary>Example response</summary><pre>{response}</pre></details>
<form class="invoke" data-op="{name}"><textarea name="params" rows="{rows}">{example}</textarea><br><button type="submit">Invoke {name}</button></form>
<pre class="result" id="result-{name}"></pre>
</section>"#,
                name = escape(op.name),
                alias = alias,
                summary = escape(op.summary),
                access = op.access,
                path = escape(&path),
                schema = escape(&schema),
                example_line = escape(&(op.example)().to_string()),
                rows = example.lines().count().clamp(2, 12),
                example = escape(&example),
                response = escape(&response),
            ));
        }
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cascade API — {node}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/help.css"></head>
<body><nav><h1>Cascade API</h1><p>Node <b>{node}</b></p>
<p><label>Bearer token<br><input id="token" type="password" autocomplete="off" class="wide"></label></p>
<p><a href="/openapi.json">OpenAPI document</a> · <a href="/">Console</a></p><ul>{toc}</ul></nav>
<main><p>Every operation is <code>POST /api/v1/&lt;name&gt;</code> with a JSON object of parameters, authenticated by an admin client certificate or <code>Authorization: Bearer &lt;token&gt;</code> (<code>tokens.create</code>, or <code>cascade ctl api-token create</code>). Unknown fields and wrong types are refused with 400 naming the field; missing or wrong credentials get 401, a role that does not allow the operation 403. The same operations are on the gRPC Admin service (<code>Invoke</code>).</p>
{body}</main>
<script src="/help.js"></script></body></html>"#,
        node = escape(node.id.as_str()),
        toc = toc,
        body = body,
    )
}

async fn help(State(node): State<Arc<Node>>) -> Html<String> {
    Html(help_page(&node))
}

/// A page or asset built into the binary.
fn asset(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn console() -> Response {
    asset("text/html; charset=utf-8", include_str!("console.html"))
}

/// The router (without TLS), for serving and for tests.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(console))
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("console.js")) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("console.css")) }),
        )
        .route("/help", get(help))
        .route(
            "/help.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("help.js")) }),
        )
        .route(
            "/help.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("help.css")) }),
        )
        .route("/openapi.json", get(openapi))
        .route("/api/v1", get(list))
        .route("/api/v1/{operation}", post(invoke))
        .layer(axum::middleware::from_fn(browser_safety))
        .with_state(node)
}

/// Serves the API over HTTPS on `addr` until the process ends. Client
/// certificates are asked for (admins may use theirs) but not required
/// (browsers use bearer tokens).
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = crate::server_tls(&node, vec![b"h2".to_vec(), b"http/1.1".to_vec()])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let ca_ders = Arc::new(cascade_trust::pem_certs(&node.config.ca_pem)?);
    let app = router(node.clone());
    let connections = node.listeners.api.clone();
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let ca_ders = ca_ders.clone();
        let node = node.clone();
        let slot = connections.admit();
        // Each handshake in its own task: a slow client cannot hold up others.
        tokio::spawn(async move {
            let stream = crate::listener::Bounded::new(tcp, slot);
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer = tls.get_ref().1.peer_certificates().and_then(|certs| {
                let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
                let identity = crate::identity_of_chain(&ders, &ca_ders).ok()?;
                if let Some(why) = ders.first().and_then(|leaf| node.revocation_of(leaf)) {
                    tracing::warn!(%remote, %identity, "API caller refused: {why}");
                    return None;
                }
                Some(identity)
            });
            if peer.is_some() {
                tls.get_ref().0.slot().certified();
            }
            let service = app.layer(Extension(PeerIdentity(peer)));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // A request's head must arrive within seconds; HTTP/2 streams are bounded.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            builder.http2().max_concurrent_streams(64);
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%remote, error = %e, "API connection ended");
            }
        });
    }
}

/// Binds the API address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
