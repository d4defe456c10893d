//! `cascade bench reports`: a root whose store holds the compliance of many
//! computers (a million by default, 10 updates each) across 100 sites, every
//! computer's summary, failures with installer codes and a year of daily
//! history. Then the console dashboard's queries and its drill-downs, each
//! timed many times through the API's one entry (`Node::invoke`, as HTTPS
//! and gRPC call it), and a 10,000-row CSV export; beside a baseline from
//! the same run: the same rows read straight from the store.

use std::time::{Duration, Instant};

use anyhow::Context;
use cascade::inprocess::{add_child, harness};
use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, ComputerSummary, NodeId};
use cascade_core::update::Severity;
use cascade_node::api::Caller;
use cascade_node::api::export::Format;
use cascade_store::{DayAggregates, StateCounts};
use serde_json::{Value, json};

use crate::bench::{percentile, rss_now};

/// Computers written in one commit while seeding.
const PER_COMMIT: u64 = 2_000;

/// Installer codes the failures carry (Windows Installer and Windows Update).
const CODES: [i64; 4] = [1603, 1618, -2145124329, -2147023293];

fn computer(c: u64) -> ComputerId {
    ComputerId::new(&format!("pc-{c:07}")).unwrap_or_else(|_| unreachable!())
}

fn site_of(c: u64, sites: u64) -> NodeId {
    NodeId::new(&format!("site-{:03}", c % sites)).unwrap_or_else(|_| unreachable!())
}

fn records(first: u64, count: u64, updates: u64, sites: u64) -> Vec<ComplianceRecord> {
    (first..first + count)
        .flat_map(|c| (0..updates).map(move |u| (c, u)))
        .map(|(c, u)| ComplianceRecord {
            computer: computer(c),
            update: UpdateId::kb(5_000_000 + u),
            site: site_of(c, sites),
            // Spread over computers, sites and updates alike.
            state: match (c * 31 + u * 17 + c / 7) % 20 {
                0 => ComplianceState::Failed {
                    code: CODES[((c + u) % 4) as usize],
                },
                1..=4 => ComplianceState::Required,
                5 => ComplianceState::NotApplicable,
                6 => ComplianceState::PendingRestart,
                _ => ComplianceState::Installed,
            },
            severity: [
                Severity::Critical,
                Severity::Important,
                Severity::Moderate,
                Severity::Low,
            ][(u % 4) as usize],
            counter: 1,
            observed_at: 1_764_547_200,
            attestation: None,
        })
        .collect()
}

fn summaries(first: u64, count: u64, sites: u64, now: i64) -> Vec<ComputerSummary> {
    (first..first + count)
        .map(|c| ComputerSummary {
            computer: computer(c),
            site: site_of(c, sites),
            os: ["Windows 11", "Windows 10", "Windows Server 2022"][(c % 3) as usize].into(),
            release: Some(["23H2", "22H2", "21H2"][(c % 3) as usize].into()),
            version: Some("10.0.22631.4460".into()),
            last_scan: now - (c % 200) as i64 * 3600,
            last_report: now - (c % 200) as i64 * 3600,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            pending_restart: c % 20 == 6,
            recent_events: Vec::new(),
        })
        .collect()
}

/// Milliseconds of each of `runs` calls, sorted.
async fn timed(runs: usize, mut call: impl AsyncFnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        call().await?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn latency(samples: &[f64]) -> Value {
    json!({
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": samples.last().copied().unwrap_or(0.0),
        "samples": samples.len(),
    })
}

pub async fn run(computers: u64, updates: u64, sites: u64) -> anyhow::Result<Value> {
    anyhow::ensure!(
        computers >= 10_000 && updates >= 3 && sites >= 8,
        "the reports bench needs at least 10,000 computers (its export reads 10,000 rows of one update), 3 updates \
         (it drills into KB5000002) and 8 sites (it asks for site-007)"
    );
    let h = harness("Bench reports")?;
    // A root of a million computers is given a store cache to match
    // (`store_cache_mb`), as its operator would.
    let cache_bytes: u64 = 1024 << 20;
    let root = h.start("root", None, |c| c.store_cache_bytes = cache_bytes).await?;
    let node = root.node.clone();
    for s in 0..sites {
        add_child(&node, &format!("site-{s:03}")).await?;
    }
    let now = cascade_node::now();

    // Seeding, as the children's reports would leave the root's store.
    let started = Instant::now();
    let mut first = 0;
    while first < computers {
        let count = PER_COMMIT.min(computers - first);
        let (store, batch, people) = (
            node.store.clone(),
            records(first, count, updates, sites),
            summaries(first, count, sites, now),
        );
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            store.ingest(&format!("seed/{first}"), 1, &batch, false)?;
            store.put_summaries(&people, false)?;
            Ok(())
        })
        .await??;
        first += count;
    }
    let seeded_seconds = started.elapsed().as_secs_f64();
    // A year of daily history, falling from today's figures.
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let by_site = store.summary_by_site()?;
        let by_update = store.summary_by_update()?;
        let today = now.div_euclid(86_400);
        for back in (1..365).rev() {
            let scale = |counts: &StateCounts| {
                let mut c = *counts;
                let moved = c.0[1] * back as u64 / 400;
                c.0[0] = c.0[0].saturating_sub(moved);
                c.0[1] += moved;
                c
            };
            store.put_history(
                &DayAggregates::new(
                    today - back,
                    by_site.iter().map(|(k, v)| (k.clone(), scale(v))).collect(),
                    by_update.iter().map(|(k, v)| (k.clone(), scale(v))).collect(),
                ),
                400,
            )?;
        }
        Ok(())
    })
    .await??;
    let rss_seeded = rss_now();

    let admin = Caller {
        name: "bench".into(),
        role: "admin".into(),
        site: None,
        via: "token".into(),
    };
    let call = |op: &'static str, params: Value| {
        let (node, admin) = (node.clone(), admin.clone());
        async move {
            let authorized = node.authorize(admin, op)?;
            node.invoke(authorized, params).await.map_err(anyhow::Error::from)
        }
    };
    let runs = 200;
    let dashboard = [
        (
            "compliance_by_site",
            "reports.compliance",
            json!({"by": "site", "sort": "percent", "limit": 50}),
        ),
        (
            "compliance_by_severity",
            "reports.compliance",
            json!({"by": "severity", "sort": "percent"}),
        ),
        ("trend_30_days", "reports.trend", json!({"days": 30})),
        ("trend_365_days", "reports.trend", json!({"days": 365})),
        ("top_failing_updates", "reports.failures", json!({"limit": 5})),
        ("first_computer", "reports.computers", json!({"limit": 1})),
        ("link_health", "sites.tree", json!({})),
    ];
    let drill = [
        (
            "failed_computers_of_an_update",
            "reports.computers",
            json!({"update": "KB5000001", "state": "failed", "limit": 50}),
        ),
        (
            "required_at_one_site",
            "reports.computers",
            json!({"site": "site-007", "only_site": true, "state": "required", "limit": 50}),
        ),
        ("one_computer", "reports.computer", json!({"computer": "pc-0000042"})),
        (
            "trend_90_days_by_site",
            "reports.trend",
            json!({"days": 90, "by": "site"}),
        ),
        ("compliance_by_update", "reports.compliance", json!({"by": "update"})),
        (
            "page_of_5000_computers",
            "reports.computers",
            json!({"update": "KB5000002", "limit": 5000}),
        ),
    ];
    let mut queries = serde_json::Map::new();
    let mut worst_dashboard_p99: f64 = 0.0;
    for (name, op, params) in dashboard.iter().chain(drill.iter()) {
        // Once to check the answer is a real one.
        let answer = call(op, params.clone())
            .await
            .with_context(|| format!("{name}: {op}"))?;
        anyhow::ensure!(
            !answer.to_string().contains("\"items\":[]"),
            "{name}: {op} answered nothing: {answer}"
        );
        let samples = timed(runs, async || call(op, params.clone()).await.map(drop)).await?;
        if dashboard.iter().any(|(n, _, _)| n == name) {
            worst_dashboard_p99 = worst_dashboard_p99.max(percentile(&samples, 0.99));
        }
        queries.insert((*name).to_owned(), latency(&samples));
    }

    // A 10,000-row export, as the console's download link and
    // `ctl call --csv` make it: CSV from the node, page after page.
    const ROWS: usize = 10_000;
    let export_params = json!({"update": "KB5000002"});
    let mut exports = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let authorized = node.authorize(admin.clone(), "reports.computers")?;
        let mut rx = node.export(authorized, export_params.clone(), Format::Csv).await?;
        let mut rows = 0;
        bytes = 0;
        while rows < ROWS {
            let Some(chunk) = rx.recv().await else { break };
            let chunk = chunk?;
            rows += chunk.matches("\r\n").count();
            bytes += chunk.len();
        }
        drop(rx);
        anyhow::ensure!(rows >= ROWS, "the export ended after {rows} rows");
        exports.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    exports.sort_by(f64::total_cmp);
    let export_rows_per_second = ROWS as f64 / (percentile(&exports, 0.5) / 1000.0);
    // Baseline: the same rows read from the store, no JSON and no CSV.
    let store = node.store.clone();
    let baseline_ms = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let update = UpdateId::new("KB5000002");
        let mut samples = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let (mut rows, mut after) = (0, None::<String>);
            while rows < ROWS {
                let page = store.records_page(
                    Some(&update),
                    None,
                    cascade_store::States::Any,
                    after.as_deref(),
                    5_000,
                    |_| true,
                )?;
                rows += page.items.len();
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        Ok(percentile(&samples, 0.5))
    })
    .await??;
    drop(root);
    tokio::time::sleep(Duration::from_millis(100)).await;

    Ok(json!({
        "computers": computers,
        "updates": updates,
        "sites": sites,
        "records": computers * updates,
        "store_cache_bytes": cache_bytes,
        "seeded_seconds": seeded_seconds,
        "rss_after_seeding_bytes": rss_seeded,
        "queries": queries,
        "dashboard_worst_p99_ms": worst_dashboard_p99,
        "dashboard_goal_ms": 100,
        "export": {
            "rows": ROWS,
            "csv_bytes": bytes,
            "latency": latency(&exports),
            "rows_per_second": export_rows_per_second,
            "goal_rows_per_second": 50_000,
            "baseline_store_read_p50_ms": baseline_ms,
        },
    }))
}
