//! `cascade agent`: enroll this computer, run its agent, or simulate a fleet.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_agent::simulate::{Behaviour, Fleet};
use cascade_agent::{AgentConfig, AgentError};
use cascade_core::import::{InventoryFormat, import_inventory};
use cascade_core::inventory::Inventory;
use cascade_core::model::ComputerId;

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Enroll this computer at a node with a one-time token
    /// (`cascade ctl agent-token create`); writes the certificate and agent.toml.
    Enroll {
        #[arg(long)]
        token: String,
        /// The node: host:port or https://host:port.
        #[arg(long)]
        node: String,
        /// The agent's directory.
        #[arg(long, default_value = "/var/lib/cascade-agent")]
        data: PathBuf,
        /// The computer's name (its identity); the host name by default.
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the agent: check in, install inside the windows, report; again every check_in_seconds.
    Run {
        #[arg(long, default_value = "/var/lib/cascade-agent/agent.toml")]
        config: PathBuf,
        /// One run, then exit (0 when the node was reached).
        #[arg(long)]
        once: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Run many virtual agents against a node, with simulated installers.
    Simulate {
        #[arg(long)]
        count: usize,
        /// Inventory files (systeminfo output, Cascade JSON, os-release); a
        /// `*_qfe.txt` hotfix list joins the systeminfo of the same name.
        #[arg(long)]
        inventories: PathBuf,
        #[arg(long)]
        node: String,
        /// Directory with the CA (ca.crt, ca.key) that issues the virtual agents' certificates.
        #[arg(long)]
        pki: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        runs: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        #[arg(long, default_value_t = 0.05)]
        failure_rate: f64,
        #[arg(long, default_value_t = 0.5)]
        restart_rate: f64,
    },
}

/// Exit code when no node could be reached.
const EXIT_UNREACHABLE: u8 = 3;

pub fn run(command: AgentCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(command))
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

async fn run_async(command: AgentCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgentCommand::Enroll {
            token,
            node,
            data,
            name,
        } => {
            let name = name
                .or_else(host_name)
                .ok_or_else(|| anyhow::anyhow!("--name: the host name cannot be read; give one"))?;
            let computer = ComputerId::new(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            match cascade_agent::connect::enroll(&token, &node, &computer, &data).await {
                Ok(done) => {
                    println!(
                        "enrolled {} at site {}; configuration: {}",
                        done.computer,
                        done.site,
                        done.config.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ cascade_agent::connect::EnrollError::Unreachable { .. }) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_UNREACHABLE))
                }
                Err(e @ cascade_agent::connect::EnrollError::Refused(_)) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        AgentCommand::Run { config, once, log_json } => {
            crate::node::init_logs(log_json);
            let checked = AgentConfig::load(&config)?;
            let interval = checked.check_in;
            let mut agent = cascade_agent::system::agent(checked)?;
            tracing::info!(computer = %agent.computer, "agent started");
            loop {
                let outcome = tokio::select! {
                    r = agent.run_once() => Some(r),
                    _ = shutdown() => None,
                };
                match outcome {
                    None => return Ok(ExitCode::SUCCESS),
                    Some(Ok(summary)) => {
                        tracing::info!(node = %summary.node, steps = summary.steps, installed = summary.installed, failed = summary.failed, deferred = summary.deferred, "run finished");
                        if once {
                            println!("{}", serde_json::to_string(&summary)?);
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "run failed");
                        if once {
                            eprintln!("error: {e}");
                            return Ok(ExitCode::from(match e {
                                AgentError::NoNode(_) => EXIT_UNREACHABLE,
                                _ => 1,
                            }));
                        }
                    }
                }
                // Spread the fleet's check-ins: up to a tenth of the interval either way.
                let spread = interval.as_millis() as u64 / 10;
                let jitter = if spread == 0 { 0 } else { rand_jitter(spread * 2) };
                let wait = interval - Duration::from_millis(spread) + Duration::from_millis(jitter);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown() => return Ok(ExitCode::SUCCESS),
                }
            }
        }
        AgentCommand::Simulate {
            count,
            inventories,
            node,
            pki,
            seed,
            runs,
            concurrency,
            prefix,
            failure_rate,
            restart_rate,
        } => {
            if count == 0 {
                anyhow::bail!("--count: at least one agent");
            }
            for (flag, rate) in [("--failure-rate", failure_rate), ("--restart-rate", restart_rate)] {
                if !(0.0..=1.0).contains(&rate) {
                    anyhow::bail!("{flag}: {rate} is not between 0 and 1");
                }
            }
            let node = cascade_agent::config::node_address(&node)
                .ok_or_else(|| anyhow::anyhow!("--node: {node:?} is not host:port"))?;
            let inventories = load_inventories(&inventories)?;
            let ca = Arc::new(cascade_trust::Ca::load(&pki)?);
            let report = cascade_agent::simulate::run(
                Fleet {
                    count,
                    inventories,
                    node,
                    seed,
                    runs,
                    concurrency,
                    prefix,
                    unique_inventories: false,
                    behaviour: Behaviour {
                        failure_rate,
                        restart_rate,
                        ..Behaviour::default()
                    },
                },
                ca,
            )
            .await;
            println!("{}", serde_json::to_string(&report)?);
            Ok(if report.runs_failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn rand_jitter(most: u64) -> u64 {
    rand::random_range(0..most.max(1))
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// One inventory per computer in a directory. Licence and source notes are
/// passed over; a hotfix list (`<name>_qfe.txt`) joins `<name>_systeminfo.txt`.
pub fn load_inventories(dir: &Path) -> anyhow::Result<Vec<Inventory>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--inventories: {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut computers: std::collections::BTreeMap<String, Inventory> = std::collections::BTreeMap::new();
    let mut hotfixes = Vec::new();
    for path in names {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let upper = file.to_ascii_uppercase();
        if upper.starts_with("LICENSE") || upper.starts_with("SOURCE") || upper.starts_with("README") {
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let (format, inventory) = import_inventory(&path.display().to_string(), &bytes)?;
        let stem = file
            .trim_end_matches(".txt")
            .trim_end_matches(".json")
            .trim_end_matches("_systeminfo_cmd")
            .trim_end_matches("_systeminfo")
            .trim_end_matches("_qfe")
            .to_owned();
        if format == InventoryFormat::HotfixList {
            hotfixes.push((stem, inventory));
        } else {
            computers.insert(stem, inventory);
        }
    }
    for (stem, list) in hotfixes {
        if let Some(inventory) = computers.get_mut(&stem) {
            inventory.merge(list);
        }
    }
    if computers.is_empty() {
        anyhow::bail!("--inventories: {} holds no inventory", dir.display());
    }
    Ok(computers.into_values().collect())
}
