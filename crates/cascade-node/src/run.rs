//! The one way to start a node: [`start`] opens its store, binds its
//! listeners and runs everything a node runs — the gRPC server, the parent
//! link, maintenance, the workflow API, the metrics endpoint and the control
//! socket — until the [`RunningNode`] is shut down or dropped. `cascade node
//! run`, the demo, the benchmarks and the tests all start nodes this way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cascade_store::Store;

use crate::config::Checked;
use crate::control::ControlServer;
use crate::{Node, bind};

/// How often maintenance runs (compaction, history, link status).
const MAINTENANCE: Duration = Duration::from_secs(60);

/// How long open streams get to finish when a node shuts down.
const DRAIN: Duration = Duration::from_secs(5);

/// What stopped a node from starting, naming what it could not do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] cascade_store::StoreError),
    #[error("{what}: cannot bind {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the control socket in {dir}: {source}")]
    Control { dir: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

type ServerTask = tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// A node started by [`start`]. Dropping it stops the node's tasks at once;
/// [`RunningNode::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct RunningNode {
    pub node: Arc<Node>,
    /// Where it serves gRPC (nodes and agents).
    pub addr: SocketAddr,
    /// Where it serves the workflow API, help page and console, when
    /// `api_listen` is set.
    pub api: Option<SocketAddr>,
    server: Option<ServerTask>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::AbortHandle>,
    _control: Option<ControlServer>,
}

/// Starts a node from its checked configuration: its store in
/// `<data>/store`, gRPC on `listen`, the link to its parent when it has
/// one, maintenance every minute, the workflow API on `api_listen` and
/// metrics on `metrics_listen` when set, and the control socket.
pub async fn start(config: Checked) -> Result<RunningNode, StartError> {
    let dir = config.data.join("store");
    let settings = cascade_store::Settings {
        cache_bytes: config.store_cache_bytes,
        compress: config.store_compression,
    };
    let store = Arc::new(Store::open_configured(&dir, config.id.clone(), settings)?);
    if store.compressed() != config.store_compression {
        tracing::warn!(
            compressed = store.compressed(),
            "the store was created {} compression; store_compression applies to new stores (back it up and restore it with `cascade node restore{}` to change it)",
            if store.compressed() { "with" } else { "without" },
            if store.compressed() { "" } else { " --compress" },
        );
    }
    let control = ControlServer::start(store.clone(), &dir).map_err(|source| StartError::Control {
        dir: dir.display().to_string(),
        source,
    })?;
    let (listener, addr) = bind(&config).await.map_err(|source| StartError::Bind {
        what: "listen",
        addr: config.listen,
        source,
    })?;
    let api = match config.api_listen {
        Some(want) => Some(crate::api::http::bind(want).await.map_err(|source| StartError::Bind {
            what: "api_listen",
            addr: want,
            source,
        })?),
        None => None,
    };
    let has_parent = config.parent.is_some();
    let metrics = config.metrics_listen;
    let data = config.data.clone();
    let node = Node::new(config, store);
    tracing::info!(node = %node.id, %addr, "serving");
    let mut tasks = Vec::new();
    if has_parent {
        tasks.push(tokio::spawn(crate::link::run(node.clone())).abort_handle());
    }
    tasks.push(tokio::spawn(crate::maintenance(node.clone(), MAINTENANCE)).abort_handle());
    let api = match api {
        Some((listener, bound)) => {
            // Where the API is, for scripts and the demo: written whole.
            let path = data.join("api.addr");
            let tmp = data.join("api.addr.tmp");
            std::fs::write(&tmp, bound.to_string())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| StartError::Write {
                    path: path.display().to_string(),
                    source,
                })?;
            tracing::info!(addr = %bound, "workflow API, help page and console");
            let node = node.clone();
            tasks.push(
                tokio::spawn(async move {
                    if let Err(e) = crate::api::http::serve(node, listener).await {
                        tracing::error!(error = %e, "the workflow API stopped");
                    }
                })
                .abort_handle(),
            );
            Some(bound)
        }
        None => None,
    };
    if let Some(metrics) = metrics {
        let node = node.clone();
        tasks.push(
            tokio::spawn(async move {
                if let Err(e) = crate::serve_metrics(node, metrics).await {
                    tracing::error!(error = %e, %metrics, "metrics endpoint failed");
                }
            })
            .abort_handle(),
        );
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(node.clone(), listener, async move {
        let _ = stopped.await;
    }));
    Ok(RunningNode {
        node,
        addr,
        api,
        server: Some(server),
        stop: Some(stop),
        tasks,
        _control: Some(control),
    })
}

impl RunningNode {
    /// Resolves when the gRPC server stops by itself (an error; it does not
    /// stop otherwise until shut down).
    pub async fn stopped(&mut self) -> Result<(), String> {
        match self.server.as_mut() {
            Some(server) => {
                let result = server.await;
                self.server = None;
                match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Stops serving, gives open streams a few seconds to finish, stops the
    /// node's tasks and stores what it keeps in memory (the agents' last
    /// check-ins).
    pub async fn shutdown(mut self) {
        tracing::info!(node = %self.node.id, "shutting down");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(DRAIN, server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error while stopping"),
                Err(_) => tracing::info!("connections still open after {} s; stopping anyway", DRAIN.as_secs()),
                _ => {}
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Err(e) = self.node.persist_agents().await {
            tracing::warn!(error = %e, "cannot store the agents' last check-ins");
        }
    }

    /// Leaves the node running for the rest of the process.
    pub fn detach(mut self) -> (Arc<Node>, String) {
        self.tasks.clear();
        self.server = None;
        // Kept open (and the server running) for the rest of the process.
        std::mem::forget(self.stop.take());
        std::mem::forget(self._control.take());
        (self.node.clone(), self.addr.to_string())
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
