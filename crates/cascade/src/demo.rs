//! `cascade demo`: a local hierarchy to look at. A root, two regions and
//! four sites (7 nodes, 3 levels) on 127.0.0.1 with a PKI made in a
//! temporary directory; the bundled real MSRC CVRF sample imported at the
//! root; a policy approving its critical updates inside a maintenance
//! window; simulated agents at every site from the bundled real
//! `systeminfo` inventories; live progress as compliance rolls up, and the
//! console's address. `--smoke` runs it to convergence without waiting for
//! a user and prints one JSON line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_core::model::{Approval, ChangeOp, MaintenanceWindow, Object, ObjectId, ObjectKind, Policy};
use cascade_core::update::Severity;
use cascade_node::Node;
use cascade_trust::Ca;

use cascade::inprocess::{Harness, add_child};

/// The real sample catalog: December 2022's MSRC security update document.
pub(crate) const CVRF: &[u8] = include_bytes!("../../../tests/fixtures/cvrf/cvrfDocument-2022-Dec.trimmed.xml");

/// Real `systeminfo` outputs the simulated computers take in turn.
const INVENTORIES: &[(&str, &[u8])] = &[
    (
        "10_1809_x64_education_en-us_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/10_1809_x64_education_en-us_systeminfo.txt"),
    ),
    (
        "10_21H1_x64_enterprise_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/10_21H1_x64_enterprise_systeminfo.txt"),
    ),
    (
        "11_21H2_x64_enterprise_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/11_21H2_x64_enterprise_systeminfo.txt"),
    ),
    (
        "11_24H2_x64_enterprise_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/11_24H2_x64_enterprise_systeminfo.txt"),
    ),
    (
        "srv_2016_1607_datacenter_en-us_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/srv_2016_1607_datacenter_en-us_systeminfo.txt"),
    ),
    (
        "srv_2012r2_u1_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/srv_2012r2_u1_systeminfo.txt"),
    ),
    (
        "7_sp1_x64_enterprise_en-us_A_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/7_sp1_x64_enterprise_en-us_A_systeminfo.txt"),
    ),
    (
        "8.1_u1_x64_enterprise_en-us_systeminfo.txt",
        include_bytes!("../../../tests/fixtures/windows-inventory/8.1_u1_x64_enterprise_en-us_systeminfo.txt"),
    ),
];

/// Real winget manifests (tests/fixtures/winget/SOURCE.txt): third-party
/// updates the simulated computers' older Firefox, Chrome and 7-Zip get.
const WINGET: &[(&str, &str)] = &[
    (
        "Mozilla.Firefox.yaml",
        include_str!("../../../tests/fixtures/winget/manifests/m/Mozilla/Firefox/156.0.1/Mozilla.Firefox.yaml"),
    ),
    (
        "Mozilla.Firefox.installer.yaml",
        include_str!(
            "../../../tests/fixtures/winget/manifests/m/Mozilla/Firefox/156.0.1/Mozilla.Firefox.installer.yaml"
        ),
    ),
    (
        "Mozilla.Firefox.locale.en-US.yaml",
        include_str!(
            "../../../tests/fixtures/winget/manifests/m/Mozilla/Firefox/156.0.1/Mozilla.Firefox.locale.en-US.yaml"
        ),
    ),
    (
        "Google.Chrome.yaml",
        include_str!("../../../tests/fixtures/winget/manifests/g/Google/Chrome/153.0.8010.53/Google.Chrome.yaml"),
    ),
    (
        "Google.Chrome.installer.yaml",
        include_str!(
            "../../../tests/fixtures/winget/manifests/g/Google/Chrome/153.0.8010.53/Google.Chrome.installer.yaml"
        ),
    ),
    (
        "Google.Chrome.locale.en-US.yaml",
        include_str!(
            "../../../tests/fixtures/winget/manifests/g/Google/Chrome/153.0.8010.53/Google.Chrome.locale.en-US.yaml"
        ),
    ),
    (
        "7zip.7zip.yaml",
        include_str!("../../../tests/fixtures/winget/manifests/7/7zip/7zip/26.03/7zip.7zip.yaml"),
    ),
    (
        "7zip.7zip.installer.yaml",
        include_str!("../../../tests/fixtures/winget/manifests/7/7zip/7zip/26.03/7zip.7zip.installer.yaml"),
    ),
    (
        "7zip.7zip.locale.en-US.yaml",
        include_str!("../../../tests/fixtures/winget/manifests/7/7zip/7zip/26.03/7zip.7zip.locale.en-US.yaml"),
    ),
];

/// Software lists made from real ones (tests/fixtures/software/SOURCE.txt).
const SOFTWARE: &[(&str, &[u8])] = &[
    ("plain", include_bytes!("../../../tests/fixtures/software/plain.json")),
    ("office", include_bytes!("../../../tests/fixtures/software/office.json")),
    (
        "developer",
        include_bytes!("../../../tests/fixtures/software/developer.json"),
    ),
    ("visio", include_bytes!("../../../tests/fixtures/software/visio.json")),
    (
        "sql-server",
        include_bytes!("../../../tests/fixtures/software/sql-server.json"),
    ),
    (
        "sharepoint",
        include_bytes!("../../../tests/fixtures/software/sharepoint.json"),
    ),
    ("server", include_bytes!("../../../tests/fixtures/software/server.json")),
    ("legacy", include_bytes!("../../../tests/fixtures/software/legacy.json")),
    (
        "legacy-office",
        include_bytes!("../../../tests/fixtures/software/legacy-office.json"),
    ),
];

/// Which software lists the computers of each inventory take in turn:
/// most without Office, SQL Server or SharePoint, some with.
const SOFTWARE_OF: &[(&str, &[&str])] = &[
    (
        "10_1809_x64_education_en-us_systeminfo.txt",
        &["plain", "office", "plain", "developer"],
    ),
    ("10_21H1_x64_enterprise_systeminfo.txt", &["plain", "visio", "plain"]),
    ("11_21H2_x64_enterprise_systeminfo.txt", &["office", "plain", "plain"]),
    (
        "11_24H2_x64_enterprise_systeminfo.txt",
        &["plain", "developer", "plain"],
    ),
    (
        "srv_2016_1607_datacenter_en-us_systeminfo.txt",
        &["server", "sql-server", "sharepoint"],
    ),
    ("srv_2012r2_u1_systeminfo.txt", &["server"]),
    (
        "7_sp1_x64_enterprise_en-us_A_systeminfo.txt",
        &["legacy", "legacy-office"],
    ),
    ("8.1_u1_x64_enterprise_en-us_systeminfo.txt", &["legacy"]),
];

/// The simulated computers' inventories: each real systeminfo with each of
/// its software lists, in rounds (every systeminfo's first list, then the
/// second ...), so that a few computers per site already cover every OS.
pub(crate) fn demo_inventories() -> anyhow::Result<Vec<cascade_core::Inventory>> {
    let mut rounds: Vec<Vec<cascade_core::Inventory>> = Vec::new();
    for (name, bytes) in INVENTORIES {
        let (_, base) = cascade_core::import::import_inventory(name, bytes)?;
        let lists = SOFTWARE_OF
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| *l)
            .unwrap_or(&[]);
        let mut variants = Vec::new();
        for list in lists {
            let (_, json) = SOFTWARE
                .iter()
                .find(|(n, _)| n == list)
                .with_context(|| format!("software list {list}"))?;
            let software: cascade_core::software::SoftwareList =
                serde_json::from_slice(json).with_context(|| format!("software list {list}"))?;
            let mut inv = base.clone();
            inv.software = Some(software);
            inv.normalize();
            variants.push(inv);
        }
        if variants.is_empty() {
            variants.push(base);
        }
        for (round, inv) in variants.into_iter().enumerate() {
            if rounds.len() <= round {
                rounds.push(Vec::new());
            }
            rounds[round].push(inv);
        }
    }
    Ok(rounds.into_iter().flatten().collect())
}

const TREE: &[(&str, Option<&str>)] = &[
    ("root", None),
    ("east", Some("root")),
    ("west", Some("root")),
    ("east-1", Some("east")),
    ("east-2", Some("east")),
    ("west-1", Some("west")),
    ("west-2", Some("west")),
];

const SITES: [&str; 4] = ["east-1", "east-2", "west-1", "west-2"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run to convergence without waiting, print one JSON line, exit (1 if it did not converge).
    #[arg(long)]
    smoke: bool,
    /// Simulated computers per site.
    #[arg(long, default_value_t = 25)]
    computers_per_site: usize,
    /// How long to wait for convergence.
    #[arg(long, default_value_t = 120)]
    limit_seconds: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.smoke {
        crate::node::init_logs(false);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = runtime.block_on(demo(args))?;
    // The demo's nodes live in a temporary directory that goes with them:
    // leave without waiting for their stores' last flush, which can wait
    // on I/O at shutdown and keep the process (and whoever reads its
    // output) waiting long after the result was printed.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    runtime.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.computers_per_site > 0, "--computers-per-site: at least one");
    let started = Instant::now();
    let say = |text: String| {
        if !args.smoke {
            println!("{text}");
        }
    };
    let now = cascade_node::now();
    let harness = Harness {
        dir: tempfile::tempdir().context("a temporary directory for the demo")?,
        ca: Ca::generate("Cascade demo", now, 2)?,
    };
    say(format!("PKI and data in {}", harness.dir.path().display()));

    // The tree, parents first.
    let mut nodes: Vec<(String, Arc<Node>, String)> = Vec::new();
    // The root serves the console too.
    let mut api = None;
    for (id, parent) in TREE {
        let parent_node = parent.and_then(|p| nodes.iter().find(|(n, _, _)| n == p).cloned());
        if let Some((_, parent_node, _)) = &parent_node {
            add_child(parent_node, id).await?;
        }
        let running = harness
            .start(id, parent_node.map(|(_, p, a)| (p.id.clone(), a)), |c| {
                if parent.is_none() {
                    c.api_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
                }
            })
            .await?;
        api = api.or(running.api);
        let (node, addr) = running.detach();
        nodes.push((id.to_string(), node, addr));
    }
    let node = |id: &str| nodes.iter().find(|(n, _, _)| n == id).map(|(_, n, _)| n.clone());
    let root = node("root").context("the root")?;
    say("7 nodes: root → east, west → east-1, east-2, west-1, west-2".into());

    // The bundled real catalog, a window open now, a policy approving its critical updates.
    let imported =
        cascade_core::import::import_catalog("cvrfDocument-2022-Dec", CVRF, &cascade_core::import::NoFragments)?;
    let mut critical: Vec<_> = imported
        .updates
        .iter()
        .filter(|u| u.severity == Severity::Critical)
        .map(|u| u.id.clone())
        .collect();
    let mut count = imported.updates.len();
    let files: Vec<(String, String)> = WINGET.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    let third_party = cascade_core::import::import_winget(&files, &[])?;
    count += third_party.updates.len();
    critical.extend(third_party.updates.iter().map(|u| u.id.clone()));
    let mut imported = imported;
    imported.updates.extend(third_party.updates);
    root.append_local_many(
        imported
            .updates
            .into_iter()
            .map(|u| ChangeOp::Upsert(Object::Update(Box::new(u))))
            .collect(),
    )
    .await?;
    let hour = (now / 3600) % 24;
    let window = MaintenanceWindow {
        id: ObjectId::new("demo-hours")?,
        name: "Demo hours".into(),
        time_zone: "UTC".into(),
        start: format!("{:02}:00", (hour + 23) % 24),
        duration_minutes: 6 * 60,
        days: vec![],
        overridable: Default::default(),
    };
    let policy = Policy {
        maintenance_windows: vec![window.id.clone()],
        ..Policy::new(ObjectId::new("critical-updates")?, "Critical updates")
    };
    let mut ops = vec![
        ChangeOp::Upsert(Object::MaintenanceWindow(Box::new(window))),
        ChangeOp::Upsert(Object::Policy(Box::new(policy))),
    ];
    for update in &critical {
        ops.push(ChangeOp::Upsert(Object::Approval(Approval {
            id: ObjectId::new(&format!("critical-updates/{update}"))?,
            policy: ObjectId::new("critical-updates")?,
            update: update.clone(),
            deadline: None,
        })));
    }
    root.append_local_many(ops).await?;
    let approvals = critical.len();
    say(format!(
        "imported {count} updates from the December 2022 MSRC CVRF document and winget manifests of Firefox, Chrome and 7-Zip; approved {approvals} (the critical ones and the third-party ones)"
    ));

    // The console, with a token for it.
    let api = api.context("the root's workflow API")?;
    let token = demo_token(&root).await?;
    say(format!(
        "console: https://{api}/  (sign in with {token}; the certificate is the demo CA's)"
    ));
    say(format!("API help: https://{api}/help"));

    // The approvals replicate down first (computers that checked in before
    // would wait for their next check-in).
    let deadline = started + Duration::from_secs(args.limit_seconds);
    loop {
        let arrived = SITES
            .iter()
            .filter(|site| {
                node(site)
                    .and_then(|n| n.store.objects(ObjectKind::Approval).ok())
                    .is_some_and(|o| o.len() == approvals)
            })
            .count();
        if arrived == SITES.len() {
            say(format!(
                "[{:>3}s] the approvals reached all four sites",
                started.elapsed().as_secs()
            ));
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the approvals did not reach the sites");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Simulated computers at every site, from the real inventories.
    let inventories = demo_inventories()?;
    let (ca_cert, ca_key) = write_ca(&harness)?;
    let ca = Arc::new(Ca::load_files(&ca_cert, &ca_key)?);
    let computers = args.computers_per_site * SITES.len();
    let mut fleets = tokio::task::JoinSet::new();
    for (n, site) in SITES.iter().enumerate() {
        let address = nodes
            .iter()
            .find(|(id, _, _)| id == site)
            .map(|(_, _, a)| a.clone())
            .context("a site")?;
        let fleet = cascade_agent::simulate::Fleet {
            count: args.computers_per_site,
            inventories: inventories.clone(),
            node: address,
            seed: n as u64 + 1,
            runs: 2,
            concurrency: 8,
            prefix: format!("{site}-pc"),
            unique_inventories: false,
            behaviour: Default::default(),
        };
        let ca = ca.clone();
        fleets.spawn(async move { cascade_agent::simulate::run(fleet, ca).await });
    }
    say(format!(
        "{computers} simulated computers at the four sites check in, install and report…"
    ));

    // Progress until every computer reached the root and every site has the approvals.
    let mut last = String::new();
    let (reported, approvals_everywhere, converged) = loop {
        let reported = root.store.computer_count()? as usize;
        let mut at_sites = 0;
        for site in SITES {
            let approvals_here = node(site)
                .map(|n| n.store.objects(ObjectKind::Approval).map(|o| o.len()).unwrap_or(0))
                .unwrap_or(0);
            at_sites += usize::from(approvals_here == approvals);
        }
        let summary = root.store.summary_by_update().unwrap_or_default();
        let (mut installed, mut pending, mut failed, mut required) = (0, 0, 0, 0);
        for counts in summary.values() {
            installed += counts.get("installed");
            pending += counts.get("pending_restart");
            failed += counts.get("failed");
            required += counts.get("required");
        }
        let line = format!(
            "[{:>3}s] approvals at {at_sites}/4 sites; computers reported at the root {reported}/{computers}; installed {installed}, pending restart {pending}, required {required}, failed {failed}",
            started.elapsed().as_secs()
        );
        if line[7..] != last[7.min(last.len())..] {
            say(line.clone());
            last = line;
        }
        let converged = reported == computers && at_sites == SITES.len() && fleets.is_empty();
        if converged || Instant::now() > deadline {
            break (reported, at_sites == SITES.len(), converged);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            Some(done) = fleets.join_next(), if !fleets.is_empty() => {
                if let Ok(report) = done && report.runs_failed > 0 {
                    eprintln!("a fleet had {} failed runs: {:?}", report.runs_failed, report.errors);
                }
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    // The root's records by state: how many plans could not decide.
    let mut records = serde_json::Map::new();
    let (mut total, mut unknown, mut third_party_patched) = (0u64, 0u64, 0u64);
    for (update, counts) in &root.store.summary_by_update()? {
        if update.as_str().starts_with("winget:") {
            third_party_patched += counts.get("installed") + counts.get("pending_restart");
        }
        for state in cascade_core::ComplianceState::NAMES {
            let n = counts.get(state);
            let slot = records.entry(state).or_insert(serde_json::json!(0));
            *slot = serde_json::json!(slot.as_u64().unwrap_or(0) + n);
        }
        total += counts.total();
        unknown += counts.get("unknown");
    }
    let unknown_percent = if total == 0 {
        0.0
    } else {
        (unknown as f64 * 1000.0 / total as f64).round() / 10.0
    };
    if args.smoke {
        println!(
            "{}",
            serde_json::json!({
                "nodes": TREE.len(),
                "computers": computers,
                "computers_reported_at_root": reported,
                "approvals_converged": approvals_everywhere,
                "records_at_root": records,
                "unknown_percent": unknown_percent,
                "third_party_patched": third_party_patched,
                "seconds": (seconds * 10.0).round() / 10.0,
            })
        );
        return Ok(if converged {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!("records at the root: {total}, of which unknown {unknown} ({unknown_percent} %)");
    if converged {
        println!("converged in {seconds:.1} s: every computer's compliance is at the root.");
    } else {
        println!("not converged after {seconds:.0} s; the hierarchy keeps running.");
    }
    println!("console: https://{api}/  token: {token}");
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    Ok(ExitCode::SUCCESS)
}

/// The demo CA's files, for the simulator's certificates.
fn write_ca(harness: &Harness) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = harness.dir.path().join("pki");
    let cert = dir.join("ca.crt");
    let key = dir.join("ca.key");
    if !cert.exists() {
        harness.ca.write(&dir)?;
    }
    Ok((cert, key))
}

/// An admin bearer token for the console, valid for a day.
async fn demo_token(root: &Arc<Node>) -> anyhow::Result<String> {
    use base64::Engine;
    let secret: [u8; 32] = rand::random();
    let token = format!(
        "cascade-api1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let record = cascade_store::ApiTokenRecord {
        name: "demo".into(),
        role: "admin".into(),
        created_by: "cascade demo".into(),
        created_at: cascade_node::now(),
        expires_at: cascade_node::now() + 86_400,
    };
    let hash = cascade_node::api::token_hash(&token);
    let store = root.store.clone();
    cascade_node::blocking(move || store.put_api_token(&hash, &record)).await?;
    Ok(token)
}
