//! The HTTP side of the workflow API: HTTPS with the node's certificate,
//! callers by admin client certificate or bearer token; `POST
//! /api/v1/<operation>`, `GET /openapi.json`, `GET /help` (every operation
//! with its parameters, an example and a form that invokes it) and the
//! console at `/`. Every asset is served from the binary.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
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
    body: Bytes,
) -> Response {
    let caller = match caller(&node, &peer, &headers).await {
        Ok(c) => c,
        Err(e) => return error_response(&e),
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
    match node.invoke(caller, &operation, params).await {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => error_response(&e),
    }
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
<html lang="en"><head><meta charset="utf-8"><title>Cascade API — {node}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; display: flex; }}
nav {{ width: 15rem; padding: 1rem; background: #f3f4f6; height: 100vh; position: sticky; top: 0; overflow: auto; }}
main {{ flex: 1; padding: 1rem 2rem; max-width: 60rem; }}
pre {{ background: #f8f8f8; padding: .5rem; overflow: auto; }}
textarea {{ width: 100%; font-family: monospace; }}
.access, .alias, .note {{ color: #555; font-size: .9em; }}
.op {{ border-top: 1px solid #ddd; padding-top: .5rem; }}
.error {{ color: #a00; }}
</style></head>
<body><nav><h1>Cascade API</h1><p>Node <b>{node}</b></p>
<p><label>Bearer token<br><input id="token" type="password" autocomplete="off" style="width:100%"></label></p>
<p><a href="/openapi.json">OpenAPI document</a> · <a href="/">Console</a></p><ul>{toc}</ul></nav>
<main><p>Every operation is <code>POST /api/v1/&lt;name&gt;</code> with a JSON object of parameters, authenticated by an admin client certificate or <code>Authorization: Bearer &lt;token&gt;</code> (<code>tokens.create</code>, or <code>cascade ctl api-token create</code>). Unknown fields and wrong types are refused with 400 naming the field; missing or wrong credentials get 401, a role that does not allow the operation 403. The same operations are on the gRPC Admin service (<code>Invoke</code>).</p>
{body}</main>
<script>
const tokenInput = document.getElementById('token');
tokenInput.value = sessionStorage.getItem('cascade-token') || '';
tokenInput.addEventListener('change', () => sessionStorage.setItem('cascade-token', tokenInput.value));
for (const form of document.querySelectorAll('form.invoke')) {{
  form.addEventListener('submit', async (event) => {{
    event.preventDefault();
    const op = form.dataset.op;
    const out = document.getElementById('result-' + op);
    out.className = 'result';
    out.textContent = '…';
    const headers = {{'Content-Type': 'application/json'}};
    if (tokenInput.value) headers['Authorization'] = 'Bearer ' + tokenInput.value.trim();
    try {{
      const response = await fetch('/api/v1/' + op, {{method: 'POST', headers, body: form.params.value}});
      const text = await response.text();
      let shown = text;
      try {{ shown = JSON.stringify(JSON.parse(text), null, 2); }} catch (_) {{}}
      out.textContent = response.status + ' ' + response.statusText + '\n' + shown;
      if (!response.ok) out.className = 'result error';
    }} catch (e) {{
      out.textContent = String(e);
      out.className = 'result error';
    }}
  }});
}}
</script></body></html>"#,
        node = escape(node.id.as_str()),
        toc = toc,
        body = body,
    )
}

async fn help(State(node): State<Arc<Node>>) -> Html<String> {
    Html(help_page(&node))
}

async fn console() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("console.html"),
    )
        .into_response()
}

/// The router (without TLS), for serving and for tests.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/help", get(help))
        .route("/openapi.json", get(openapi))
        .route("/api/v1", get(list))
        .route("/api/v1/{operation}", post(invoke))
        // Catalogs are uploaded in one request.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
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
        // Each handshake in its own task: a slow client cannot hold up others.
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
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
            let service = app.layer(Extension(PeerIdentity(peer)));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
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
