//! `cascade bench rollup`: the compliance of many computers (a million by
//! default, 30 approved updates each) reported at a site, every report
//! signed by its own agent's certificate, rolled up over mTLS gRPC into the
//! root, which checks every signature. The root is a node process of its
//! own. Then the root's answers through its API, its bytes on disk and
//! its memory; then the two recoveries: the site's
//! outbox lost (it sends its whole state again) and the site moved under
//! another parent. Each figure beside a baseline from the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade::inprocess::{Harness, add_child};
use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{
    AgentCertificate, ChangeOp, ComplianceRecord, ComputerId, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Site,
};
use cascade_core::update::Severity;
use cascade_node::Node;
use cascade_proto::v1::admin_client::AdminClient;
use cascade_store::Store;
use cascade_trust::Ca;

use crate::bench::NodeProcess;

/// Computers in one batch the site takes from its agents.
const PER_BATCH: u64 = 20;

type Batch = (Vec<AgentCertificate>, Vec<ComplianceRecord>);

fn records_of(site: &NodeId, first: u64, computers: u64, updates: u64, counter: u64) -> Vec<ComplianceRecord> {
    (first..first + computers)
        .flat_map(|c| (0..updates).map(move |u| (c, u)))
        .map(|(c, u)| ComplianceRecord {
            computer: ComputerId::new(&format!("pc-{c:07}")).unwrap_or_else(|_| unreachable!()),
            update: UpdateId::kb(5_000_000 + u),
            site: site.clone(),
            state: match (counter, (c + u) % 10) {
                (1, 0) => ComplianceState::Installed,
                (1, 1) => ComplianceState::NotApplicable,
                (1, _) => ComplianceState::Required,
                _ => ComplianceState::Installed,
            },
            severity: [
                Severity::Critical,
                Severity::Important,
                Severity::Moderate,
                Severity::Low,
            ][(u % 4) as usize],
            counter,
            observed_at: 1_764_547_200 + counter as i64,
            attestation: None,
        })
        .collect()
}

/// Makes the agents' signed first reports, `PER_BATCH` computers at a
/// time, into `tx`; the first `again` computers also sign a second report
/// (everything installed), returned for later. Returns the seconds spent.
fn agents(
    ca: Ca,
    site: NodeId,
    computers: u64,
    updates: u64,
    again: u64,
    tx: std::sync::mpsc::SyncSender<Batch>,
) -> anyhow::Result<(Vec<Batch>, f64)> {
    let started = Instant::now();
    let mut agents = cascade_agent::attest::PaperAgents::new(ca, cascade_node::now() - 60);
    let mut later = Vec::new();
    let mut first = 0;
    while first < computers {
        let n = PER_BATCH.min(computers - first);
        let mut records = records_of(&site, first, n, updates, 1);
        let certificates = agents.sign(&mut records).map_err(|e| anyhow::anyhow!("{e}"))?;
        if first < again {
            let mut second = records_of(&site, first, n.min(again - first), updates, 2);
            agents.sign(&mut second).map_err(|e| anyhow::anyhow!("{e}"))?;
            later.push((Vec::new(), second));
        }
        // A million agents' keys are not kept: each signs once here.
        agents.forget();
        if tx.send((certificates, records)).is_err() {
            break;
        }
        first += n;
    }
    Ok((later, started.elapsed().as_secs_f64()))
}

/// Computers per state, summed over updates, from an answer of
/// `compliance.by_update` (update -> state name -> count).
fn state_totals(by_update: &serde_json::Value) -> anyhow::Result<BTreeMap<String, u64>> {
    let updates = by_update
        .as_object()
        .context("compliance.by_update: not an object of updates")?;
    let mut out = BTreeMap::new();
    for counts in updates.values() {
        for (state, n) in counts
            .as_object()
            .context("compliance.by_update: counts not an object")?
        {
            *out.entry(state.clone()).or_default() +=
                n.as_u64().context("compliance.by_update: a count not a number")?;
        }
    }
    Ok(out)
}

/// A node's own counts per state, as [`state_totals`] reads the root's.
fn totals(store: &Store) -> anyhow::Result<BTreeMap<String, u64>> {
    state_totals(&serde_json::to_value(store.summary_by_update()?)?)
}

/// The root: a node process of its own, so that its memory is its own,
/// asked through its API as an administrator.
struct Root {
    process: NodeProcess,
    address: String,
    client: AdminClient<tonic::transport::Channel>,
}

impl Root {
    async fn call(&self, operation: &str, params: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        crate::bench::call(&mut self.client.clone(), operation, params).await
    }

    async fn totals(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        state_totals(&self.call("compliance.by_update", serde_json::json!({})).await?)
    }

    /// Records a change at the root; its sequence number.
    async fn record(&self, op: ChangeOp) -> anyhow::Result<u64> {
        let recorded = self.call("changes.record", serde_json::json!({ "op": op })).await?;
        recorded["seq"].as_u64().context("changes.record: no seq")
    }

    /// Registers `child` as the root's child site.
    async fn add_child(&self, child: &str) -> anyhow::Result<u64> {
        self.record(ChangeOp::Upsert(Object::Site(Site {
            id: ObjectId::new(child).map_err(|e| anyhow::anyhow!("{e}"))?,
            name: child.to_owned(),
            parent: Some(NodeId::new("root").map_err(|e| anyhow::anyhow!("{e}"))?),
        })))
        .await
    }

    fn peak_rss(&self) -> u64 {
        crate::bench::peak_rss(self.process.pid()).unwrap_or(0)
    }
}

/// Waits until `done` holds, checking every half second; gives up after
/// `limit`.
async fn until(
    what: &str,
    limit: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    loop {
        if done().await? {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(started.elapsed() < limit, "{what}: not done in {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// p50 and p99 of `samples` runs of `query`, in milliseconds.
async fn latency(
    samples: usize,
    mut query: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        query().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "p50_ms": crate::bench::percentile(&times, 0.5),
        "p99_ms": crate::bench::percentile(&times, 0.99),
        "samples": samples,
    }))
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub async fn run(computers: u64, updates: u64, compress: bool) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        computers > 0 && updates > 0,
        "--computers and --updates must be above 0"
    );
    let total = computers * updates;
    // However long a phase may take: an hour for a million computers.
    let limit = Duration::from_secs(600 + computers / 250);
    let h = Harness {
        dir: tempfile::tempdir()?,
        ca: Ca::generate("Bench", cascade_node::now() - 3600, 1)?,
    };
    std::fs::write(h.dir.path().join("ca.crt"), &h.ca.cert_pem)?;
    let compressed = |c: &mut cascade_node::Checked| c.store_compression = compress;
    let root = {
        let top = if compress { "store_compression = true\n" } else { "" };
        let (process, address) = crate::bench::node_process(h.dir.path(), &h.ca, "root", None, top).await?;
        let admin = crate::bench::bench_admin(&h.ca, cascade_node::now())?;
        let channel = cascade_node::channel(&address, None, &h.ca.cert_pem, &admin.cert_pem, &admin.key_pem).await?;
        Root {
            process,
            address,
            client: AdminClient::new(channel),
        }
    };
    let root_id = NodeId::new("root").map_err(|e| anyhow::anyhow!("{e}"))?;
    let seq = root.add_child("site").await?;
    // The site reaches the root through a relay that can take the link down.
    let relay = cascade::relay::start(root.address.clone(), None).await?;
    let site = h
        .start("site", Some((root_id.clone(), relay.addr.clone())), compressed)
        .await?;
    let site_id = site.node.id.clone();
    wait_applied(&site.node, &root_id, seq).await?;
    let root_idle_rss = root.peak_rss();
    let idle_rss = crate::bench::rss_now();
    let pki = h.dir.path().join("paper-agents");
    h.ca.write(&pki)?;

    // The baseline: the same kind of signed reports of 1,000 computers into
    // one store, no hop and no network.
    let baseline_computers = computers.min(1_000);
    let baseline = {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (ca, id) = (
            Ca::load(&pki)?,
            NodeId::new("baseline").map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let maker = std::thread::spawn(move || agents(ca, id, baseline_computers, updates, 0, tx));
        let batches: Vec<Batch> = rx.into_iter().collect();
        maker.join().map_err(|_| anyhow::anyhow!("the agents panicked"))??;
        let store = Arc::new(Store::open_configured(
            &h.dir.path().join("baseline"),
            NodeId::new("baseline").map_err(|e| anyhow::anyhow!("{e}"))?,
            cascade_store::Settings {
                compress,
                ..Default::default()
            },
        )?);
        let started = Instant::now();
        cascade_node::blocking(move || -> Result<(), cascade_store::StoreError> {
            for (n, (certificates, records)) in batches.into_iter().enumerate() {
                store.put_agent_certificates(&certificates, false)?;
                store.ingest("agents", n as u64 + 1, &records, false)?;
            }
            Ok(())
        })
        .await?;
        (baseline_computers * updates) as f64 / started.elapsed().as_secs_f64()
    };

    // 1. Every computer's first report, through the site into the root.
    let again = (computers / 100).max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
    let ca = Ca::load(&pki)?;
    let maker_site = site_id.clone();
    let maker = std::thread::spawn(move || agents(ca, maker_site, computers, updates, again, tx));
    let started = Instant::now();
    let feeder = {
        let node = site.node.clone();
        tokio::task::spawn_blocking(move || -> Result<(), cascade_store::StoreError> {
            for (n, (certificates, records)) in rx.into_iter().enumerate() {
                node.store.put_agent_certificates(&certificates, true)?;
                node.store.ingest("agents", n as u64 + 1, &records, true)?;
                node.upward_ready();
            }
            Ok(())
        })
    };
    until("the root holding every record", limit, async || {
        Ok(root.totals().await?.values().sum::<u64>() >= total)
    })
    .await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    feeder.await??;
    let (later, agents_seconds) = maker.join().map_err(|_| anyhow::anyhow!("the agents panicked"))??;

    // 2. What it takes at the root.
    let store_dir = h.dir.path().join("root-data").join("store");
    let disk = dir_bytes(&store_dir);
    let sample = ComputerId::new("pc-0000000").map_err(|e| anyhow::anyhow!("{e}"))?;
    let per_record_wire = {
        use prost::Message;
        let records = site.node.store.computer_records(&sample)?;
        records
            .iter()
            .map(|r| cascade_proto::v1::ComplianceRecord::from(r).encoded_len())
            .sum::<usize>() as f64
            / records.len().max(1) as f64
    };
    let root_peak_rss = root.peak_rss();
    let peak_rss = crate::bench::peak_rss(std::process::id()).unwrap_or(0);

    // 3. The root's answers, through its API.
    let x = UpdateId::kb(5_000_002);
    let by_update = latency(200, async || {
        root.call("compliance.by_update", serde_json::json!({})).await.map(drop)
    })
    .await?;
    let by_site = latency(200, async || {
        root.call("compliance.by_site", serde_json::json!({})).await.map(drop)
    })
    .await?;
    let need = latency(200, async || {
        let page = root
            .call(
                "reports.computers",
                serde_json::json!({"update": x, "site": site_id, "only_site": true, "state": "required", "limit": 100}),
            )
            .await?;
        let items = page["items"].as_array().context("reports.computers: no items")?;
        anyhow::ensure!(!items.is_empty(), "no computer needs {x}");
        anyhow::ensure!(
            items
                .iter()
                .all(|r| r["site"] == serde_json::json!(site_id) && r["update"] == serde_json::json!(x)),
            "a record of another update or site"
        );
        Ok(())
    })
    .await?;
    let one_key = latency(200, async || {
        root.call("computers.compliance", serde_json::json!({ "computer": sample }))
            .await
            .map(drop)
    })
    .await?;

    // 4. The site's outbox lost: second reports of some computers arrive
    // while the link is down, the outbox goes, and the site sends its
    // whole state again when the link is back.
    relay.set_down(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let changed: u64 = later.iter().map(|(_, r)| r.len() as u64).sum();
    {
        let node = site.node.clone();
        cascade_node::blocking(move || -> Result<(), cascade_store::StoreError> {
            for (n, (_, records)) in later.into_iter().enumerate() {
                node.store.ingest("agents-again", n as u64 + 1, &records, true)?;
            }
            // Everything queued is dropped: the parent must get a snapshot.
            node.store.outbox_compact(0)?;
            Ok(())
        })
        .await?;
    }
    anyhow::ensure!(
        site.node.store.outbox_state()?.snapshot_required,
        "the outbox was not lost"
    );
    let expected = totals(&site.node.store)?;
    let started = Instant::now();
    relay.set_down(false);
    site.node.replicate_now();
    let site_store = site.node.store.clone();
    until("the root exact after the lost outbox", limit, async || {
        let outbox = site_store.outbox_state()?;
        Ok(!outbox.snapshot_required && outbox.acked == outbox.last && root.totals().await? == expected)
    })
    .await?;
    let lost_outbox_seconds = started.elapsed().as_secs_f64();

    // 5. The site moved under another parent: the root hands it to a new
    // region, the site follows, and the region passes its state on.
    let seq = root.add_child("region").await?;
    let region = h
        .start("region", Some((root_id.clone(), root.address.clone())), compressed)
        .await?;
    wait_applied(&region.node, &root_id, seq).await?;
    let started = Instant::now();
    let removed = root
        .record(ChangeOp::Delete(ObjectKey {
            kind: ObjectKind::Site,
            id: ObjectId::new("site").map_err(|e| anyhow::anyhow!("{e}"))?,
        }))
        .await?;
    wait_applied(&region.node, &root_id, removed).await?;
    add_child(&region.node, "site").await?;
    site.node
        .move_to(region.addr.to_string(), region.node.id.clone())
        .await?;
    let region_store = region.node.store.clone();
    let moved = until("the region holding the site's state", limit, async || {
        let outbox = region_store.outbox_state()?;
        Ok(totals(&region_store)? == expected && outbox.acked == outbox.last && !outbox.snapshot_required)
    })
    .await;
    if let Err(e) = moved {
        anyhow::bail!(
            "{e}: the region has {:?} of {expected:?}, outbox {:?}; links: site {:?}, region {:?}, root {}",
            totals(&region_store)?,
            region_store.outbox_state()?,
            site.node.links(),
            region.node.links(),
            root.call("links.list", serde_json::json!({})).await?
        );
    }
    let moved_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(root.totals().await? == expected, "the root lost records in the move");
    let root_peak_rss_run = root.peak_rss();

    // 6. The root's live keys and values, read from its store once its
    // process has stopped.
    drop(root);
    let usage = Store::open_existing(&store_dir)?.usage()?;
    let live: u64 = usage.values().map(|u| u.key_bytes + u.value_bytes).sum();

    Ok(serde_json::json!({
        "benchmark": "rollup",
        "computers": computers,
        "updates": updates,
        "records": total,
        "compressed": compress,
        "ingest": {
            "seconds": ingest_seconds,
            "records_per_second": total as f64 / ingest_seconds,
            "baseline_records_per_second": baseline,
            "baseline": format!("the same kind of signed reports of {baseline_computers} computers into one store"),
            "agents_seconds": agents_seconds,
            "agents": "making and signing the reports (one certificate per computer), on its own thread during the ingest",
        },
        "root_disk": {
            "bytes": disk,
            "bytes_per_record": disk as f64 / total as f64,
            "goal_bytes_per_record": 64,
            "live_bytes_per_record": live as f64 / total as f64,
            "live": "keys and values, read at the end of the run (after both recoveries)",
            "live_by_key": usage.iter().map(|(kind, u)| (kind.clone(), serde_json::json!({
                "keys": u.keys,
                "bytes_per_record": (u.key_bytes + u.value_bytes) as f64 / total as f64,
            }))).collect::<serde_json::Map<_, _>>(),
            "baseline_bytes_per_record": per_record_wire,
            "baseline": "one record as it went up before reports (protobuf, its own attestation)",
        },
        "memory": {
            "root_peak_rss_bytes": root_peak_rss,
            "root_idle_rss_bytes": root_idle_rss,
            "root_peak_rss_whole_run_bytes": root_peak_rss_run,
            "goal_bytes": 2u64 << 30,
            "root": "the root's own process (cascade node run): peak at the end of the ingest, idle before it, and peak over the whole run",
            "others_peak_rss_bytes": peak_rss,
            "others_idle_rss_bytes": idle_rss,
            "others": "the benchmark's process: the site, the agents' generator and later the region",
        },
        "root_queries": {
            "compliance_by_update": by_update,
            "by_site_and_severity": by_site,
            "computers_needing_update_at_site": need,
            "baseline_one_computer_read": one_key,
            "through": "the root's API over mTLS gRPC (compliance.by_update, compliance.by_site, reports.computers, computers.compliance)",
            "goal_p99_ms": 100,
        },
        "recovery": {
            "lost_outbox": {"seconds": lost_outbox_seconds, "records_changed": changed, "what": "the site sends its whole state again; until it is all acknowledged and the root's counts equal the site's"},
            "moved_site": {"seconds": moved_seconds, "what": "the site under a new region; until the region holds and has passed on the site's whole state"},
        },
    }))
}

async fn wait_applied(node: &Arc<Node>, origin: &NodeId, seq: u64) -> anyhow::Result<()> {
    let store = node.store.clone();
    until("the tree coming up", Duration::from_secs(60), async || {
        Ok(store.applied_seq(origin)? >= seq)
    })
    .await
    .map(|_| ())
    .context("the tree did not come up")
}
