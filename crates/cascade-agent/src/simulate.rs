//! The fleet simulator: many virtual agents in one process, each with its
//! own certificate and inventory, running the real agent code against a
//! real node with simulated installers (exit codes, durations and
//! restarts drawn from a seeded distribution). For demos and load tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cascade_core::assignment::Step;
use cascade_core::inventory::Inventory;
use cascade_core::model::ComputerId;
use cascade_core::update::{ExitMeaning, RestartBehavior};
use cascade_trust::{Ca, Identity};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::NodeEntry;
use crate::cycle::{Agent, Credentials, Env};
use crate::install::Outcome;
use crate::journal::Journal;
use crate::os_updater::PackageResult;

/// How simulated installers behave.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Behaviour {
    /// Share of installs that fail (exit code 1603).
    pub failure_rate: f64,
    /// Share of installs of updates that may restart that ask for one (3010).
    pub restart_rate: f64,
    /// Longest simulated install.
    pub max_install: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            failure_rate: 0.05,
            restart_rate: 0.5,
            max_install: Duration::from_millis(20),
        }
    }
}

/// A simulated computer.
#[derive(Debug)]
pub struct SimEnv {
    inventory: Inventory,
    rng: Mutex<StdRng>,
    behaviour: Behaviour,
    boot: AtomicU64,
}

impl Env for SimEnv {
    fn now(&self) -> i64 {
        crate::system::unix_now()
    }

    fn inventory(&self) -> Result<Inventory, String> {
        Ok(self.inventory.clone())
    }

    fn boot_id(&self) -> Option<String> {
        Some(format!("boot-{}", self.boot.load(Ordering::Acquire)))
    }

    fn fetches_content(&self) -> bool {
        false
    }

    async fn install(&self, step: &Step, _files: &[PathBuf]) -> Outcome {
        let (wait, roll, restart_roll) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let most = self.behaviour.max_install.as_micros().max(1) as u64;
            (
                Duration::from_micros(rng.random_range(0..most)),
                rng.random::<f64>(),
                rng.random::<f64>(),
            )
        };
        tokio::time::sleep(wait).await;
        let (code, meaning) = if roll < self.behaviour.failure_rate {
            (1603, ExitMeaning::Failure)
        } else if step.restart != RestartBehavior::Never && restart_roll < self.behaviour.restart_rate {
            (3010, ExitMeaning::SuccessRestartRequired)
        } else {
            (0, ExitMeaning::Success)
        };
        Outcome {
            code,
            meaning,
            detail: format!("simulated installer, {} ms", wait.as_millis()),
        }
    }

    async fn restart(&self) -> Result<(), String> {
        // The simulated computer is back at once, with a new boot id.
        self.boot.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    async fn os_updater(&self) -> Option<Result<Vec<PackageResult>, String>> {
        None
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub count: usize,
    /// Each virtual agent takes one, in turn.
    pub inventories: Vec<Inventory>,
    pub node: String,
    pub seed: u64,
    /// Runs per agent (a second run sees restarts completed).
    pub runs: usize,
    /// Agents working at once.
    pub concurrency: usize,
    /// Computer names are `<prefix>-<n>`.
    pub prefix: String,
    /// Give every virtual computer an inventory of its own (a fact with its
    /// name), so that the node evaluates each one: the baseline for the
    /// node's evaluation of each distinct inventory once.
    pub unique_inventories: bool,
    pub behaviour: Behaviour,
}

/// What the simulation came to.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FleetReport {
    pub agents: usize,
    pub runs_ok: usize,
    pub runs_failed: usize,
    pub installed: usize,
    pub pending_restart: usize,
    pub failed_installs: usize,
    pub deferred: usize,
    pub restarts: usize,
    pub reports_sent: usize,
    pub seconds: f64,
    /// Per run, wall time.
    pub run_p50_ms: f64,
    pub run_p99_ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Runs the fleet against its node; certificates come from `ca` (the
/// organisation CA or a site's enrollment CA).
pub async fn run(fleet: Fleet, ca: Arc<Ca>) -> FleetReport {
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(fleet.concurrency.max(1)));
    let report = Arc::new(Mutex::new(FleetReport {
        agents: fleet.count,
        ..FleetReport::default()
    }));
    let timings = Arc::new(Mutex::new(Vec::with_capacity(fleet.count * fleet.runs)));
    let mut tasks = tokio::task::JoinSet::new();
    let ca_pem = ca.cert_pem.clone();
    for n in 0..fleet.count {
        let permit = permits.clone();
        let ca = ca.clone();
        let ca_pem = ca_pem.clone();
        let report = report.clone();
        let timings = timings.clone();
        let mut inventory = fleet.inventories[n % fleet.inventories.len().max(1)].clone();
        if fleet.unique_inventories {
            inventory
                .facts
                .insert("sim.computer".into(), format!("{}-{n}", fleet.prefix));
        }
        let fleet = fleet.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permit.acquire_owned().await else {
                return;
            };
            let name = format!("{}-{n}", fleet.prefix);
            let fail = |e: String| {
                let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                r.runs_failed += 1;
                if r.errors.len() < 10 {
                    r.errors.push(e);
                }
            };
            let Ok(computer) = ComputerId::new(&name) else {
                return fail(format!("{name:?} is not a computer id"));
            };
            let identity = Identity::Agent(computer.clone());
            let issued = match tokio::task::spawn_blocking(move || {
                ca.issue(&identity, &[], crate::system::unix_now(), 30)
            })
            .await
            {
                Ok(Ok(i)) => i,
                Ok(Err(e)) => return fail(format!("{name}: certificate: {e}")),
                Err(e) => return fail(format!("{name}: {e}")),
            };
            let mut agent = Agent {
                computer,
                env: SimEnv {
                    inventory,
                    rng: Mutex::new(StdRng::seed_from_u64(fleet.seed.wrapping_add(n as u64))),
                    behaviour: fleet.behaviour.clone(),
                    boot: AtomicU64::new(0),
                },
                journal: Journal::memory(),
                nodes: vec![NodeEntry {
                    address: fleet.node.clone(),
                    priority: 0,
                }],
                credentials: Credentials {
                    ca_pem,
                    cert_pem: issued.cert_pem,
                    key_pem: issued.key_pem,
                    root: None,
                    max_timestamp_age: 24 * 3600,
                },
                content_dir: std::env::temp_dir(),
                content_limit: 0,
                probe: false,
            };
            for _ in 0..fleet.runs.max(1) {
                let t = Instant::now();
                match agent.run_once().await {
                    Ok(s) => {
                        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                        r.runs_ok += 1;
                        r.installed += s.installed;
                        r.pending_restart += s.pending_restart;
                        r.failed_installs += s.failed;
                        r.deferred += s.deferred;
                        r.restarts += usize::from(s.restart_requested);
                        r.reports_sent += s.reports_sent;
                    }
                    Err(e) => fail(format!("{name}: {e}")),
                }
                timings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut report = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut t = timings.lock().unwrap_or_else(|e| e.into_inner()).clone();
    t.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        t.get(((t.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    report.run_p50_ms = pick(0.5);
    report.run_p99_ms = pick(0.99);
    report.seconds = started.elapsed().as_secs_f64();
    report
}
