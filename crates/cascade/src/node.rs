//! `cascade node`: running a node (to come) and its store's backup and restore.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cascade_store::{Store, StoreError};

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Write a consistent copy of a node's store to a file.
    Backup {
        /// The node's data directory (its store).
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
        /// The data directory to create; it must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

pub fn run(command: NodeCommand) -> anyhow::Result<ExitCode> {
    match command {
        NodeCommand::Backup { data, out } => {
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
            let file = std::fs::File::open(&backup).with_context(|| format!("cannot read {}", backup.display()))?;
            let (store, stats) = Store::restore(std::io::BufReader::new(file), &data)
                .with_context(|| format!("cannot restore {}", backup.display()))?;
            println!(
                "restored node {} ({} entries) into {}",
                store.node(),
                stats.entries,
                data.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
