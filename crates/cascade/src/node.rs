//! `cascade node`: running a node (to come) and its store's backup and restore.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cascade_store::{Store, StoreError};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Run a node until SIGTERM or Ctrl-C.
    Run {
        /// The node's TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Write a consistent copy of a node's store to a file, also while the node runs.
    Backup {
        /// The node's data directory (or its store directory).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The backup file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Bring a backup back into a new, empty data directory.
    Restore {
        /// The backup file.
        #[arg(long = "from", value_name = "FILE")]
        backup: PathBuf,
        /// The node's data directory to create (the store goes into its `store/`);
        /// it must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

pub fn run(command: NodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        NodeCommand::Run { config, log_json } => return run_node(&config, log_json),
        NodeCommand::Backup { data, out } => {
            // A node's data directory holds its store in `store/`.
            let nested = data.join("store");
            let data = if nested.join("db").exists() || nested.join(cascade::control::SOCKET).exists() {
                nested
            } else {
                data
            };
            // Write beside the target and rename, so that a failed backup
            // never leaves a file that looks complete.
            let partial = out.with_extension("partial");
            let file =
                std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            // A running node holds its store: ask it over its control
            // socket; otherwise open the store directly.
            let socket = cascade::control::socket_path(&data);
            let result = match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(_) => cascade::control::request_backup(&data, &mut writer)
                    .map(|bytes| format!("the running node ({bytes} bytes)")),
                Err(_) => match Store::open_existing(&data) {
                    Ok(store) => store
                        .backup(&mut writer)
                        .map(|s| format!("node {} ({} entries, {} bytes)", store.node(), s.entries, s.bytes))
                        .map_err(anyhow::Error::from),
                    Err(StoreError::Open { detail, .. }) if detail.contains("in use") => Err(anyhow::anyhow!(
                        "the store in {} is in use, and its node does not answer on {}",
                        data.display(),
                        socket.display()
                    )),
                    Err(e) => Err(e.into()),
                },
            };
            let what = match result {
                Ok(what) => what,
                Err(e) => {
                    drop(writer);
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
            };
            let file = writer
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write {}: {}", partial.display(), e.error()))?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", partial.display()))?;
            std::fs::rename(&partial, &out).with_context(|| format!("cannot move the backup to {}", out.display()))?;
            println!("backed up {what} to {}", out.display());
        }
        NodeCommand::Restore { backup, data } => {
            // The store goes where `node run` looks for it: `<data>/store`.
            if data.exists() && data.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
                anyhow::bail!("{} is not an empty directory; restore into a new one", data.display());
            }
            let file = std::fs::File::open(&backup).with_context(|| format!("cannot read {}", backup.display()))?;
            let (store, stats) = Store::restore(std::io::BufReader::new(file), &data.join("store"))
                .with_context(|| format!("cannot restore {}", backup.display()))?;
            println!(
                "restored node {} ({} entries) into {}; run it with data = {:?}",
                store.node(),
                stats.entries,
                data.display(),
                data.display().to_string()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, as text or JSON lines; RUST_LOG filters (default info).
/// Also installs the process's one crypto provider: ring.
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn run_node(config_path: &std::path::Path, log_json: bool) -> anyhow::Result<ExitCode> {
    init_logs(log_json);
    let config = cascade_node::NodeConfig::load(config_path)?;
    let store = std::sync::Arc::new(Store::open_cached(
        &config.data.join("store"),
        config.id.clone(),
        config.store_cache_bytes,
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (listener, addr) = cascade_node::bind(&config)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let _control = cascade::control::ControlServer::start(store.clone(), &config.data.join("store"))
            .with_context(|| format!("cannot open the control socket in {}", config.data.display()))?;
        let node = cascade_node::Node::new(config.clone(), store);
        tracing::info!(node = %node.id, %addr, "serving");
        if config.parent.is_some() {
            tokio::spawn(cascade_node::link::run(node.clone()));
        }
        tokio::spawn(cascade_node::maintenance(
            node.clone(),
            std::time::Duration::from_secs(60),
        ));
        if let Some(api) = config.api_listen {
            let (listener, bound) = cascade_node::api::http::bind(api)
                .await
                .with_context(|| format!("api_listen: cannot bind {api}"))?;
            let tmp = config.data.join("api.addr.tmp");
            std::fs::write(&tmp, bound.to_string()).with_context(|| tmp.display().to_string())?;
            std::fs::rename(&tmp, config.data.join("api.addr")).context("api.addr")?;
            tracing::info!(addr = %bound, "workflow API, help page and console");
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = cascade_node::api::http::serve(node, listener).await {
                    tracing::error!(error = %e, "the workflow API stopped");
                }
            });
        }
        if let Some(metrics) = config.metrics_listen {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = cascade_node::serve_metrics(node, metrics).await {
                    tracing::error!(error = %e, %metrics, "metrics endpoint failed");
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(cascade_node::serve(node.clone(), listener, async move {
            let _ = stopped.await;
        }));
        tokio::select! {
            result = &mut server => {
                return result.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(|e| anyhow::anyhow!("{e}"));
            }
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(());
        // Open streams get a few seconds to finish; then the node exits anyway.
        match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error while stopping"),
            Err(_) => tracing::info!("connections still open after 5 s; stopping anyway"),
            _ => {}
        }
        if let Err(e) = node.persist_agents().await {
            tracing::warn!(error = %e, "cannot store the agents' last check-ins");
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
