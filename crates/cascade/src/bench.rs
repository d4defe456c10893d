//! `cascade bench replication`: a hierarchy of in-process nodes on
//! 127.0.0.1, talking mTLS gRPC as real nodes do, measured. Prints one JSON
//! object with the figures and the goals next to them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ChangeOp, ComplianceRecord, ComputerId, NodeId, Object, ObjectId, Setting};
use cascade_core::update::{Classification, Severity, Update};
use cascade_node::Node;
use cascade_store::Store;
use cascade_trust::{Ca, Identity};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Root-to-leaf latency over 3 hops, initial sync of a large catalog to a
    /// new child, bytes for one change, and upward throughput over 3 hops.
    Replication {
        /// Updates in the catalog a new child syncs.
        #[arg(long, default_value_t = 100_000)]
        updates: u64,
        /// Latency samples.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Compliance records sent up from the leaf.
        #[arg(long, default_value_t = 50_000)]
        records: u64,
    },
    /// One node process serving simulated agents: enrollment-free check-in
    /// (inventory, assignment), installs and reports, against the bundled
    /// CVRF sample with a policy for its critical updates.
    Agents {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// A folder of inventories the virtual agents take in turn; the
        /// demo's real systeminfo samples (built in) when absent.
        #[arg(long)]
        inventories: Option<std::path::PathBuf>,
        /// The catalog to import; the built-in December 2022 MSRC CVRF
        /// sample when absent.
        #[arg(long)]
        catalog: Option<std::path::PathBuf>,
    },
    /// One update's content pulled over 2 hops (root → region → site, node
    /// processes on loopback, mTLS gRPC), next to a plain file copy of it.
    Content {
        #[arg(long, default_value_t = 1024)]
        size_mb: u64,
    },
    /// Many computers' compliance (every report signed by its own agent)
    /// through a site into the root: ingest, bytes on disk, memory, the
    /// root's answers, and the recoveries from a lost outbox and a move.
    Rollup {
        #[arg(long, default_value_t = 1_000_000)]
        computers: u64,
        /// Approved updates each computer reports on.
        #[arg(long, default_value_t = 30)]
        updates: u64,
        /// Every store compressed (`store_compression`).
        #[arg(long)]
        compress: bool,
    },
    /// A root holding many computers' compliance, summaries and a year of
    /// history: the console dashboard's queries and drill-downs (p50, p99)
    /// and a 10,000-row CSV export.
    Reports {
        #[arg(long, default_value_t = 1_000_000)]
        computers: u64,
        /// Updates each computer has a state for.
        #[arg(long, default_value_t = 10)]
        updates: u64,
        #[arg(long, default_value_t = 100)]
        sites: u64,
    },
    /// Many large requests at once from callers without credentials (half
    /// HTTPS, half gRPC catalog imports) at one node process: its peak RSS
    /// beside its idle RSS.
    Unauthenticated {
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 60)]
        size_mb: usize,
    },
}

pub fn run(command: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = match command {
        BenchCommand::Replication {
            updates,
            samples,
            records,
        } => runtime.block_on(replication(updates, samples, records))?,
        BenchCommand::Agents {
            count,
            concurrency,
            inventories,
            catalog,
        } => runtime.block_on(agents(count, concurrency, inventories.as_deref(), catalog.as_deref()))?,
        BenchCommand::Content { size_mb } => runtime.block_on(content(size_mb))?,
        BenchCommand::Rollup {
            computers,
            updates,
            compress,
        } => runtime.block_on(crate::bench_rollup::run(computers, updates, compress))?,
        BenchCommand::Reports {
            computers,
            updates,
            sites,
        } => runtime.block_on(crate::bench_reports::run(computers, updates, sites))?,
        BenchCommand::Unauthenticated { requests, size_mb } => {
            runtime.block_on(crate::bench_unauthenticated::run(requests, size_mb))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(std::process::ExitCode::SUCCESS)
}

use cascade::inprocess::{Harness, add_child};

/// Waits until `node` has applied `seq` of `origin`.
async fn applied(node: &Arc<Node>, origin: &NodeId, seq: u64, limit: Duration) -> anyhow::Result<()> {
    let mut changes = node.subscribe_changes();
    let deadline = Instant::now() + limit;
    loop {
        if node.store.applied_seq(origin)? >= seq {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!left.is_zero(), "{} did not reach {origin}/{seq} in {limit:?}", node.id);
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changes.changed()).await;
    }
}

/// Waits until `parent` records that `child` has applied `seq` of `origin`
/// (a connected child says so once a heartbeat).
async fn told(parent: &Arc<Node>, child: &str, origin: &NodeId, seq: u64) -> anyhow::Result<()> {
    let child = NodeId::new(child).map_err(|e| anyhow::anyhow!("{e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at = parent
            .store
            .subscriber_cursors()?
            .get(&child)
            .and_then(|c| c.get(origin).copied())
            .unwrap_or(0);
        if at >= seq {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} records {child} at {origin}/{at}, not {seq}",
            parent.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn replication(updates: u64, samples: usize, records: u64) -> anyhow::Result<serde_json::Value> {
    let h = Harness {
        dir: tempfile::tempdir()?,
        ca: Ca::generate("Bench", cascade_node::now(), 1)?,
    };
    // root -> region -> site -> leaf: three hops.
    let (root, root_addr) = h.node("root", None).await?;
    add_child(&root, "region").await?;
    let (region, region_addr) = h.node("region", Some((root.id.clone(), root_addr.clone()))).await?;
    add_child(&region, "site").await?;
    let (site, site_addr) = h.node("site", Some((region.id.clone(), region_addr))).await?;
    add_child(&site, "leaf").await?;
    let (leaf, _) = h.node("leaf", Some((site.id.clone(), site_addr))).await?;
    let root_id = root.id.clone();
    applied(
        &leaf,
        &root_id,
        root.store.applied_seq(&root_id)?,
        Duration::from_secs(30),
    )
    .await
    .context("the tree did not come up")?;

    // 1. Root-to-leaf latency of one change over three hops.
    let mut latencies = Vec::with_capacity(samples);
    for n in 0..samples {
        let started = Instant::now();
        let setting = Setting {
            id: ObjectId::new(&format!("latency-{}", n % 20)).map_err(|e| anyhow::anyhow!("{e}"))?,
            value: serde_json::json!(n),
            overridable: false,
        };
        let change = root.append_local(ChangeOp::Upsert(Object::Setting(setting))).await?;
        applied(&leaf, &root_id, change.seq, Duration::from_secs(30)).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // The baseline: a leaf that polls every second instead of being
    // pushed to. The change is made at a random moment between polls; the
    // latency is until the next poll sees it (one hop, no network: the
    // poll's own cost is left out, which flatters the baseline).
    let poll = Duration::from_secs(1);
    let polling_samples = samples.min(20);
    let mut polled = Vec::with_capacity(polling_samples);
    let mut ticks = tokio::time::interval(poll);
    ticks.tick().await;
    for n in 0..polling_samples {
        let offset = Duration::from_millis(rand::random_range(0..poll.as_millis() as u64));
        tokio::time::sleep(offset).await;
        let started = Instant::now();
        let setting = Setting {
            id: ObjectId::new(&format!("polling-{n}")).map_err(|e| anyhow::anyhow!("{e}"))?,
            value: serde_json::json!(n),
            overridable: false,
        };
        let change = root.append_local(ChangeOp::Upsert(Object::Setting(setting))).await?;
        loop {
            ticks.tick().await;
            if root.store.applied_seq(&root_id)? >= change.seq {
                break;
            }
        }
        polled.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    polled.sort_by(f64::total_cmp);

    // 2. Initial sync of a large catalog to a new child of the root.
    let ops = cascade::inprocess::generated_updates(updates);
    for chunk in ops.chunks(5_000) {
        let store = root.store.clone();
        let chunk = chunk.to_vec();
        cascade_node::blocking(move || store.append_local_many(chunk)).await?;
    }
    add_child(&root, "fresh").await?;
    let target = root.store.applied_seq(&root_id)?;
    // The tree takes the catalog first: what is measured is a new site
    // joining a settled tree, not five nodes syncing at once.
    applied(&leaf, &root_id, target, Duration::from_secs(600))
        .await
        .context("the tree did not take the catalog")?;
    // Each node then cuts its log behind its child (once the child has said
    // how far it applied), as its minute's round would: done here, so that
    // it is not counted in what follows, and a new site joins as it would a
    // settled tree, by a snapshot and the last changes.
    let mut compacted = 0;
    for (parent, child) in [(&root, "region"), (&region, "site"), (&site, "leaf")] {
        told(parent, child, &root_id, target).await?;
        compacted += parent.compact_log().await?.changes;
    }
    compacted += leaf.compact_log().await?.changes;
    let relay = cascade::relay::start(root_addr.clone(), None).await?;
    let bytes = relay.down_bytes.clone();
    let started = Instant::now();
    let (fresh, _) = h.node("fresh", Some((root_id.clone(), relay.addr.clone()))).await?;
    applied(&fresh, &root_id, target, Duration::from_secs(600)).await?;
    let sync_seconds = started.elapsed().as_secs_f64();
    let sync_bytes = bytes.load(Ordering::Relaxed);

    // 3. Bytes for one changed approval on that catalog.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = bytes.load(Ordering::Relaxed);
    let approval = cascade_core::model::Approval {
        id: ObjectId::new("baseline/KB7000001").map_err(|e| anyhow::anyhow!("{e}"))?,
        policy: ObjectId::new("baseline").map_err(|e| anyhow::anyhow!("{e}"))?,
        update: UpdateId::kb(7_000_001),
        deadline: None,
    };
    let change = root.append_local(ChangeOp::Upsert(Object::Approval(approval))).await?;
    applied(&fresh, &root_id, change.seq, Duration::from_secs(30)).await?;
    let one_change_bytes = bytes.load(Ordering::Relaxed) - before;
    // The new site cuts its log too before the upward figures (it has no
    // child to wait for), as its round would.
    fresh.compact_log().await?;

    // 4. Upward throughput: records reported at the leaf reach the root.
    // First reports (new computers: every index entry is new at every
    // hop), then the same computers reporting again with new states.
    let pki = h.dir.path().join("paper-agents");
    h.ca.write(&pki)?;
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki)?, cascade_node::now() - 60);
    // Signed as the agents would sign them (the nodes above check every
    // one); the agents' signing is theirs, not the hierarchy's, so it is
    // done before the clock starts.
    // Twice: with the states of a Patch Tuesday on real data (most of a
    // computer's approved updates are not applicable to it: 97 % of the
    // demo's records, made from real catalogs and real systeminfo), and
    // with every update applicable and required (the most index entries,
    // then every one removed).
    let mut runs = Vec::new();
    for (name, applicable_in_50) in [("patch_tuesday", 5), ("all_required", 50)] {
        let first_batches = signed_batches(&mut agents, &leaf.id, name, records, 1, applicable_in_50)?;
        let again_batches = signed_batches(&mut agents, &leaf.id, name, records, 2, applicable_in_50)?;
        let local = single_store_ingest(h.dir.path(), name, first_batches.clone()).await?;
        // Done when the root counts every applicable record in its new
        // state: the last batch has those too.
        let applicable = (0..records).filter(|c| c % 50 < applicable_in_50).count() as u64;
        let first = upward(
            &leaf,
            &root,
            &format!("{name}-1"),
            first_batches,
            "required",
            applicable,
        )
        .await?;
        let again = upward(
            &leaf,
            &root,
            &format!("{name}-2"),
            again_batches,
            "installed",
            applicable,
        )
        .await?;
        runs.push((name, applicable_in_50, local, first, again));
    }
    let upward_figures: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(name, applicable_in_50, local, (first, first_cpu), (again, again_cpu))| {
            let figures = serde_json::json!({
                "records": records,
                "applicable_in_50": applicable_in_50,
                "first_reports": {"seconds": first, "records_per_second": records as f64 / first, "cpu_seconds": first_cpu},
                "repeat_reports": {"seconds": again, "records_per_second": records as f64 / again, "cpu_seconds": again_cpu},
                "single_store_baseline": {"seconds": local, "records_per_second": records as f64 / local, "what": "the same signed first reports into one store"},
                "first_reports_against_baseline": local / first,
                "goal_against_baseline": 0.8,
                "goal_records_per_second": 50_000
            });
            ((*name).to_owned(), figures)
        })
        .collect();

    Ok(serde_json::json!({
        "benchmark": "replication",
        "hops": 3,
        "latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "samples": samples, "goal_p99_ms": 1000},
        "polling_baseline_ms": {"interval_ms": poll.as_millis() as u64, "p50": percentile(&polled, 0.5), "p99": percentile(&polled, 0.99), "samples": polling_samples},
        "initial_sync": {"updates": updates, "seconds": sync_seconds, "bytes": sync_bytes, "goal_seconds": 10, "log_changes_compacted_before": compacted},
        "one_change_bytes": {"bytes": one_change_bytes, "goal_bytes": 10_240},
        "upward": upward_figures,
    }))
}

/// Signed report batches: `records` records of computers `pc-<run>-N` (50 each),
/// each batch with the certificates of the computers new in it. Of each
/// computer's 50 updates, `applicable_in_50` are required at first
/// (counter 1) and installed after (counter 2); the others are not
/// applicable.
type Batches = Vec<(u64, Vec<cascade_core::model::AgentCertificate>, Vec<ComplianceRecord>)>;

fn signed_batches(
    agents: &mut cascade_agent::attest::PaperAgents,
    site: &NodeId,
    run: &str,
    records: u64,
    counter: u64,
    applicable_in_50: u64,
) -> anyhow::Result<Batches> {
    let mut batches = Vec::new();
    for batch in 0..records.div_ceil(1000) {
        let mut records: Vec<ComplianceRecord> = (batch * 1000..((batch + 1) * 1000).min(records))
            .map(|c| ComplianceRecord {
                computer: ComputerId::new(&format!("pc-{run}-{}", c / 50)).unwrap_or_else(|_| unreachable!()),
                update: UpdateId::kb(7_000_000 + c % 50),
                site: site.clone(),
                state: match (c % 50 < applicable_in_50, counter) {
                    (false, _) => ComplianceState::NotApplicable,
                    (true, 1) => ComplianceState::Required,
                    (true, _) => ComplianceState::Installed,
                },
                severity: Severity::Important,
                counter,
                observed_at: 0,
                attestation: None,
            })
            .collect();
        let certificates = agents.sign(&mut records).map_err(|e| anyhow::anyhow!("{e}"))?;
        batches.push((batch, certificates, records));
    }
    Ok(batches)
}

/// The baseline of the upward figures: the same signed first reports
/// ingested into one store on the same disk, with no hops and no network.
async fn single_store_ingest(dir: &std::path::Path, name: &str, batches: Batches) -> anyhow::Result<f64> {
    let site = NodeId::new("baseline").map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Arc::new(Store::open(&dir.join(format!("baseline-{name}")), site)?);
    let started = Instant::now();
    for (batch, certificates, records) in batches {
        let store = store.clone();
        cascade_node::blocking(move || -> Result<(), cascade_store::StoreError> {
            store.put_agent_certificates(&certificates, false)?;
            store.ingest("agents", batch + 1, &records, false)?;
            Ok(())
        })
        .await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Reports `batches` at the leaf (as `source`) and returns the seconds
/// until the root counts `expected` more records in `state`, and the CPU
/// seconds the four nodes used meanwhile.
async fn upward(
    leaf: &Arc<Node>,
    root: &Arc<Node>,
    source: &str,
    batches: Batches,
    state: &'static str,
    expected: u64,
) -> anyhow::Result<(f64, f64)> {
    let in_state = async || -> anyhow::Result<u64> {
        let store = root.store.clone();
        Ok(cascade_node::blocking(move || store.summary_by_update())
            .await?
            .values()
            .map(|c| c.get(state))
            .sum())
    };
    let target = in_state().await? + expected;
    let (started, cpu) = (Instant::now(), cpu_seconds("self").unwrap_or(0.0));
    for (batch, certificates, records) in batches {
        let store = leaf.store.clone();
        let source = format!("agents-{source}");
        cascade_node::blocking(move || -> Result<(), cascade_store::StoreError> {
            store.put_agent_certificates(&certificates, true)?;
            store.ingest(&source, batch + 1, &records, true)?;
            Ok(())
        })
        .await?;
        leaf.upward_ready();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let have = in_state().await?;
        if have >= target {
            return Ok((
                started.elapsed().as_secs_f64(),
                cpu_seconds("self").unwrap_or(0.0) - cpu,
            ));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the root counts {have} records {state}, not {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The CPU time a process (`pid` "self" for this one) has used, user and
/// system.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// A memory figure of a process's `/proc/<pid>/status` ("VmRSS:",
/// "VmHWM:"), in bytes; `pid` "self" for this process.
pub(crate) fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of a process (VmHWM), in bytes.
pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    status_bytes(&pid.to_string(), "VmHWM:")
}

/// This process's resident memory now (VmRSS), in bytes; 0 when unknown.
pub(crate) fn rss_now() -> u64 {
    status_bytes("self", "VmRSS:").unwrap_or(0)
}

/// Kills the node process when the benchmark ends, however it ends.
pub(crate) struct NodeProcess(std::process::Child);

impl NodeProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// CPU seconds (user and system, all threads) the process used so far,
    /// where /proc tells (Linux; its clock ticks are 1/100 s).
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.0.id().to_string())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn agents(
    count: usize,
    concurrency: usize,
    inventories: Option<&std::path::Path>,
    catalog: Option<&std::path::Path>,
) -> anyhow::Result<serde_json::Value> {
    use cascade_core::model::{Policy, UpdateFilter};
    use cascade_proto::v1::admin_client::AdminClient;
    let dir = tempfile::tempdir()?;
    let now = cascade_node::now();
    let ca = Arc::new(Ca::generate("Bench", now, 2)?);
    let admin = bench_admin(&ca, now)?;
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem)?;
    let (node, address) = node_process(dir.path(), &ca, "site", None, "").await?;
    let channel = cascade_node::channel(&address, None, &ca.cert_pem, &admin.cert_pem, &admin.key_pem).await?;
    let mut client = AdminClient::new(channel);
    let (name, data) = match catalog {
        Some(path) => (
            path.display().to_string(),
            std::fs::read(path).with_context(|| path.display().to_string())?,
        ),
        None => ("cvrfDocument-2022-Dec".to_owned(), crate::demo::CVRF.to_vec()),
    };
    let imported = call(
        &mut client,
        "catalog.import",
        serde_json::json!({"name": name, "content": String::from_utf8(data)?}),
    )
    .await
    .context("import")?;
    let policy = Policy {
        updates: UpdateFilter {
            severities: vec![Severity::Critical],
            ..UpdateFilter::default()
        },
        ..Policy::new(
            ObjectId::new("critical").map_err(|e| anyhow::anyhow!("{e}"))?,
            "Critical updates",
        )
    };
    let op = ChangeOp::Upsert(Object::Policy(Box::new(policy)));
    call(&mut client, "changes.record", serde_json::json!({"op": op}))
        .await
        .context("policy")?;
    let inventories = match inventories {
        Some(dir) => crate::agent::load_inventories(dir)?,
        None => crate::demo::demo_inventories()?,
    };
    let distinct = inventories.len();
    // The baseline: the node with its catalog, before any agent.
    let idle_rss = peak_rss(node.0.id()).unwrap_or(0);
    let fleet = cascade_agent::simulate::Fleet {
        count,
        inventories,
        node: address,
        seed: 1,
        runs: 1,
        concurrency,
        prefix: "bench".into(),
        unique_inventories: false,
        behaviour: cascade_agent::simulate::Behaviour::default(),
    };
    let baseline_fleet = cascade_agent::simulate::Fleet {
        prefix: "unique".into(),
        unique_inventories: true,
        ..fleet.clone()
    };
    let report = cascade_agent::simulate::run(fleet, ca.clone()).await;
    let rss = peak_rss(node.0.id()).unwrap_or(0);
    // The baseline: as many more computers, each with an inventory of its own.
    let baseline = cascade_agent::simulate::run(baseline_fleet, ca).await;
    drop(node);
    Ok(serde_json::json!({
        "benchmark": "agents",
        "agents": count,
        "distinct_inventories": distinct,
        "catalog_updates": imported["updates"],
        "concurrency": concurrency,
        "runs_ok": report.runs_ok,
        "runs_failed": report.runs_failed,
        "errors": report.errors,
        "installed": report.installed,
        "pending_restart": report.pending_restart,
        "failed_installs": report.failed_installs,
        "reports_sent": report.reports_sent,
        "seconds": report.seconds,
        "check_ins_per_second": report.runs_ok as f64 / report.seconds.max(1e-9),
        "run_p50_ms": report.run_p50_ms,
        "run_p99_ms": report.run_p99_ms,
        "node_peak_rss_mb": rss as f64 / (1024.0 * 1024.0),
        "node_idle_rss_mb": idle_rss as f64 / (1024.0 * 1024.0),
        "baseline_unique_inventories": {"seconds": baseline.seconds, "runs_ok": baseline.runs_ok, "run_p50_ms": baseline.run_p50_ms},
        "goal": {"seconds_for_10000": 60, "node_rss_mb": 1024},
    }))
}

/// The benchmarks' administrator certificate.
pub(crate) fn bench_admin(ca: &Ca, now: i64) -> anyhow::Result<cascade_trust::Issued> {
    let admin = Identity::Admin {
        name: "bench".into(),
        role: cascade_trust::Role::Admin,
        site: None,
    };
    Ok(ca.issue(&admin, &[], now, 1)?)
}

/// Starts `cascade node run` for `id` (under `parent`) in `dir`; returns
/// the process and its address.
pub(crate) async fn node_process(
    dir: &std::path::Path,
    ca: &Ca,
    id: &str,
    parent: Option<(&str, &str)>,
    top: &str,
) -> anyhow::Result<(NodeProcess, String)> {
    let node_id = NodeId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
    ca.issue(&Identity::Node(node_id), &[], cascade_node::now(), 1)?
        .write(dir, id)?;
    let parent = parent
        .map(|(parent_id, address)| format!("[parent]\naddress = \"{address}\"\nid = \"{parent_id}\"\n"))
        .unwrap_or_default();
    let config = dir.join(format!("{id}.toml"));
    // Files the benchmark adds as content come from here.
    std::fs::create_dir_all(dir.join("import"))?;
    std::fs::write(
        &config,
        format!(
            "id = \"{id}\"\nlisten = \"127.0.0.1:0\"\ndata = \"{id}-data\"\ncontent_import = [\"import\"]\n{top}{parent}[tls]\nca = \"ca.crt\"\ncert = \"{id}.crt\"\nkey = \"{id}.key\"\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["node", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start a node")?;
    let node = NodeProcess(child);
    let addr_file = dir.join(format!("{id}-data/node.addr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr_file.exists() {
        anyhow::ensure!(Instant::now() < deadline, "node {id} did not start; see its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((node, std::fs::read_to_string(&addr_file)?))
}

async fn content(size_mb: u64) -> anyhow::Result<serde_json::Value> {
    use cascade_proto::v1::admin_client::AdminClient;
    use std::io::Write;
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let now = cascade_node::now();
    let ca = Ca::generate("Bench", now, 2)?;
    std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem)?;
    let admin = bench_admin(&ca, now)?;
    let admin_client = |address: String| {
        let (ca, cert, key) = (ca.cert_pem.clone(), admin.cert_pem.clone(), admin.key_pem.clone());
        async move {
            let channel = cascade_node::channel(&address, None, &ca, &cert, &key).await?;
            anyhow::Ok(AdminClient::new(channel))
        }
    };
    let (root_process, root) = node_process(dir.path(), &ca, "root", None, "").await?;
    let mut root_admin = admin_client(root.clone()).await?;
    call(&mut root_admin, "sites.add", serde_json::json!({"id": "region"})).await?;
    let (region_process, region) = node_process(dir.path(), &ca, "region", Some(("root", &root)), "").await?;
    let mut region_admin = admin_client(region.clone()).await?;
    call(&mut region_admin, "sites.add", serde_json::json!({"id": "site"})).await?;
    let (site_process, site) = node_process(dir.path(), &ca, "site", Some(("region", &region)), "").await?;
    let mut site_admin = admin_client(site.clone()).await?;

    // The update's file: bytes that do not compress.
    let file = dir.path().join("import/update.bin");
    let size = size_mb << 20;
    {
        use sha2::Digest;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut hasher = sha2::Sha256::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..size_mb {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            hasher.update(&block);
            out.write_all(&block)?;
        }
        out.flush()?;
        let sha: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let mut update = Update::new(UpdateId::new("BENCH-1"), "Benchmark content", Classification::Update);
        update.content = vec![cascade_core::update::Content {
            file_name: "update.bin".into(),
            sha256: sha,
            size,
            url: None,
        }];
        let op = ChangeOp::Upsert(Object::Update(Box::new(update)));
        call(&mut root_admin, "changes.record", serde_json::json!({"op": op})).await?;
    }
    // A plain copy of the file on this machine: the baseline.
    let copy = dir.path().join("copy.bin");
    let started = Instant::now();
    std::fs::copy(&file, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let copy_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&copy)?;

    call(&mut root_admin, "content.add", serde_json::json!({"path": file})).await?;
    // The catalog has reached the site once BENCH-1 is in its objects.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let objects = call(&mut site_admin, "objects.list", serde_json::json!({"kind": "update"})).await?;
        if objects.to_string().contains("BENCH-1") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the update did not reach the site");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Pre-staging at the site pulls it root → region → site.
    let processes = [
        ("root", &root_process),
        ("region", &region_process),
        ("site", &site_process),
    ];
    let cpu_before: Vec<Option<f64>> = processes.iter().map(|(_, p)| p.cpu_seconds()).collect();
    let started = Instant::now();
    let result = call(
        &mut site_admin,
        "content.ensure",
        serde_json::json!({"updates": ["BENCH-1"]}),
    )
    .await?;
    let transfer_seconds = started.elapsed().as_secs_f64();
    // What the three nodes spent: with every core busy, the transfer can
    // take no less than that over the cores.
    let mut cpu = serde_json::Map::new();
    let mut cpu_total = 0.0;
    for ((name, p), before) in processes.iter().zip(&cpu_before) {
        if let (Some(before), Some(after)) = (before, p.cpu_seconds()) {
            cpu.insert((*name).into(), serde_json::json!(after - before));
            cpu_total += after - before;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        result["updates"][0]["staged"] == true,
        "the content did not arrive: {result}"
    );
    let mb = size as f64 / (1024.0 * 1024.0);
    Ok(serde_json::json!({
        "benchmark": "content",
        "bytes": size,
        "hops": 2,
        "transfer_seconds": transfer_seconds,
        "transfer_mb_per_second": mb / transfer_seconds,
        "file_copy_seconds": copy_seconds,
        "file_copy_mb_per_second": mb / copy_seconds,
        "ratio_to_file_copy": copy_seconds / transfer_seconds,
        "node_cpu_seconds": cpu,
        "cores": cores,
        "ratio_if_cpu_bound": copy_seconds / (cpu_total / cores as f64),
        "goal": {"ratio_to_file_copy": 0.5},
    }))
}

/// One workflow operation over gRPC, as `cascade ctl` calls it.
pub(crate) async fn call(
    client: &mut cascade_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
    operation: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let reply = client
        .invoke(cascade_node::admin::invoke_request(operation, &params))
        .await
        .map_err(|s| anyhow::anyhow!("{operation}: {}", s.message()))?
        .into_inner();
    Ok(serde_json::from_slice(&reply.result)?)
}
