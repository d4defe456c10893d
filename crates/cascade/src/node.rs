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
        /// Keep the restored store's data compressed on disk (zstd: about a
        /// quarter of the disk, slower writes); without it, uncompressed.
        #[arg(long)]
        compress: bool,
    },
}

pub fn run(command: NodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        NodeCommand::Run { config, log_json } => return run_node(&config, log_json),
        NodeCommand::Backup { data, out } => {
            // A node's data directory holds its store in `store/`.
            let nested = data.join("store");
            let data = if nested.join("db").exists() || nested.join(cascade_node::control::SOCKET).exists() {
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
            let socket = cascade_node::control::socket_path(&data);
            let result = match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(_) => cascade_node::control::request_backup(&data, &mut writer)
                    .map(|bytes| format!("the running node ({bytes} bytes)"))
                    .map_err(|e| anyhow::anyhow!(e)),
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
        NodeCommand::Restore { backup, data, compress } => {
            // The store goes where `node run` looks for it: `<data>/store`.
            if data.exists() && data.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
                anyhow::bail!("{} is not an empty directory; restore into a new one", data.display());
            }
            let file = std::fs::File::open(&backup).with_context(|| format!("cannot read {}", backup.display()))?;
            let settings = cascade_store::Settings {
                compress,
                ..Default::default()
            };
            let existed = data.exists();
            let (store, stats) = match Store::restore(std::io::BufReader::new(file), &data.join("store"), settings) {
                Ok(restored) => restored,
                Err(e) => {
                    // The restore took back what it wrote; so does this.
                    if !existed {
                        let _ = std::fs::remove_dir(&data);
                    }
                    return Err(anyhow::Error::from(e).context(format!("cannot restore {}", backup.display())));
                }
            };
            println!(
                "restored node {} ({} entries{}) into {}; run it with data = {:?}",
                store.node(),
                stats.entries,
                if store.compressed() { ", compressed" } else { "" },
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut running = cascade_node::start(config).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        tokio::select! {
            result = running.stopped() => return result.map_err(|e| anyhow::anyhow!(e)),
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        running.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
