//! Initial syncs of a large catalog to new children through a relay that
//! delays and cuts the parent's stream (faults drawn from a seed, so a
//! failing run can be repeated with `CASCADE_STRESS_SEED`). Every sync must
//! reach the root's head; one that makes no progress for a while is a stall
//! and fails the test with the links' status.
//!
//! Every other sync comes after the root compacted its log past the new
//! child's start, so it arrives as a snapshot in parts and then the tail.
//! A child that stays connected tells its parent how far it has applied,
//! so that compaction does not wait for it to connect again.
//!
//! Sizes: `CASCADE_STRESS_SYNCS` (default 8) syncs of
//! `CASCADE_STRESS_UPDATES` (default 5,000) updates; the figures the
//! issue names (20 of 20,000) are a matter of setting them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade::inprocess::{Harness, add_child, generated_updates, harness};
use cascade::relay::{self, Faults};
use cascade_core::UpdateId;
use cascade_core::model::NodeId;
use cascade_core::update::Severity;
use cascade_node::{Node, RunningNode};
use cascade_trust::Ca;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Waits until `node` has applied `seq` of `origin`; fails when it makes no
/// progress for `quiet` (a stall) or takes longer than `limit` in all.
async fn synced(node: &Arc<Node>, origin: &NodeId, seq: u64, quiet: Duration, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    let (mut last, mut moved) = (0, Instant::now());
    loop {
        let have = node.store.applied_seq(origin).map_err(|e| e.to_string())?;
        if have >= seq {
            return Ok(());
        }
        if have != last {
            (last, moved) = (have, Instant::now());
        }
        let links = || format!("{:?}", node.links());
        if moved.elapsed() > quiet {
            return Err(format!(
                "stalled: {} stayed at {origin}/{have} of {seq} for {quiet:?}; links: {}",
                node.id,
                links()
            ));
        }
        if started.elapsed() > limit {
            return Err(format!(
                "{} reached only {origin}/{have} of {seq} in {limit:?}; links: {}",
                node.id,
                links()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A root and its child `site` behind a relay that passes everything (until
/// told otherwise), the site's heartbeat at one second and the rest of its
/// configuration as `adjust` leaves it.
async fn root_and_site(
    adjust: impl FnOnce(&mut cascade_node::Checked),
) -> (Harness, RunningNode, relay::Relay, RunningNode) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h = harness("Stress").unwrap();
    let root = h.start("root", None, |_| {}).await.unwrap();
    add_child(&root.node, "site").await.unwrap();
    let link = relay::start(root.addr.to_string(), None).await.unwrap();
    let parent = Some((root.node.id.clone(), link.addr.clone()));
    let site = h
        .start("site", parent, |c| {
            c.heartbeat_seconds = 1;
            adjust(c);
        })
        .await
        .unwrap();
    (h, root, link, site)
}

/// Records signed as their agents would, taken at `site` as batch `seq` of
/// its agents (queued for its parent).
fn report_at(
    site: &Node,
    agents: &mut cascade_agent::attest::PaperAgents,
    mut records: Vec<cascade_core::model::ComplianceRecord>,
    seq: u64,
) {
    let certificates = agents.sign(&mut records).unwrap();
    site.store.put_agent_certificates(&certificates, true).unwrap();
    site.store.ingest("agents", seq, &records, true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_syncs_through_a_faulty_link_all_reach_the_head() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let syncs = env("CASCADE_STRESS_SYNCS", 8);
    let updates = env("CASCADE_STRESS_UPDATES", 5_000);
    let seed = env("CASCADE_STRESS_SEED", 17);
    let h = harness("Stress").unwrap();
    let root = h.start("root", None, |_| {}).await.unwrap();
    let root_id = root.node.id.clone();
    let ops = generated_updates(updates);
    for chunk in ops.chunks(5_000) {
        root.node.append_local_many(chunk.to_vec()).await.unwrap();
    }
    let mut cuts = 0;
    let mut snapshots = 0;
    for i in 0..syncs {
        let name = format!("fresh-{i}");
        add_child(&root.node, &name).await.unwrap();
        if i % 2 == 1 {
            // The children before are gone; the log is compacted to its tail.
            for gone in 0..i {
                let id = NodeId::new(&format!("fresh-{gone}")).unwrap();
                root.node.store.remove_subscriber(&id).unwrap();
            }
            assert!(root.node.store.compact(100).unwrap() > 0, "sync {i}: nothing compacted");
            snapshots += 1;
        }
        let head = root.node.store.applied_seq(&root_id).unwrap();
        // About 700 bytes a change on the wire: cuts fall anywhere in the sync.
        let faults = Faults {
            seed: seed.wrapping_add(i),
            delay_chance: 0.05,
            max_delay: Duration::from_millis(100),
            cut_chance: 0.5,
            cut_after: 16 * 1024..(updates * 700).max(16 * 1024 + 1),
        };
        let link = relay::start(root.addr.to_string(), Some(faults)).await.unwrap();
        let child = h
            .start(&name, Some((root_id.clone(), link.addr.clone())), |c| {
                c.heartbeat_seconds = 1
            })
            .await
            .unwrap();
        let outcome = synced(
            &child.node,
            &root_id,
            head,
            // Longer than the node's own stall_seconds (120): the node
            // finds a stall and recovers first; this catches what it cannot.
            Duration::from_secs(150),
            Duration::from_secs(600),
        )
        .await;
        if let Err(e) = outcome {
            panic!("sync {i} (seed {}): {e}", seed.wrapping_add(i));
        }
        // What the child holds is the root's catalog.
        let have = child
            .node
            .store
            .objects(cascade_core::model::ObjectKind::Update)
            .unwrap();
        assert_eq!(have.len() as u64, updates, "sync {i}");
        cuts += link.cuts.load(std::sync::atomic::Ordering::Relaxed);
    }
    // The faults happened: some connections were cut mid-sync.
    assert!(cuts > 0 || syncs < 4, "no connection was cut in {syncs} syncs");
    assert!(snapshots > 0 || syncs < 2);
}

/// A site's whole state sent up again (its outbox lost) through a relay
/// that keeps cutting the connection: the snapshot goes on where it was
/// broken off, and the root ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upward_snapshot_through_a_faulty_link_ends_exact_at_the_root() {
    use cascade_core::compliance::ComplianceState;
    use cascade_core::model::{ComplianceRecord, ComputerId};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = env("CASCADE_STRESS_SEED", 17);
    let h = harness("Stress").unwrap();
    let root = h.start("root", None, |_| {}).await.unwrap();
    let root_id = root.node.id.clone();
    add_child(&root.node, "site").await.unwrap();
    let faults = Faults {
        seed,
        delay_chance: 0.05,
        max_delay: Duration::from_millis(50),
        cut_chance: 0.7,
        cut_after: 1024..6 * 1024,
    };
    let link = relay::start(root.addr.to_string(), Some(faults)).await.unwrap();
    link.set_down(true);
    let site = h
        .start("site", Some((root_id.clone(), link.addr.clone())), |c| {
            c.heartbeat_seconds = 1;
            c.report_batch = 50;
        })
        .await
        .unwrap();
    let pki = h.dir.path().join("agents");
    h.ca.write(&pki).unwrap();
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki).unwrap(), cascade_node::now() - 60);
    let site_id = site.node.id.clone();
    for batch in 0..10u64 {
        let records: Vec<ComplianceRecord> = (batch * 30..(batch + 1) * 30)
            .flat_map(|c| (0..20).map(move |u| (c, u)))
            .map(|(c, u)| ComplianceRecord {
                computer: ComputerId::new(&format!("pc-{c:04}")).unwrap(),
                update: UpdateId::kb(5_000_000 + u),
                site: site_id.clone(),
                state: if (c + u) % 3 == 0 {
                    ComplianceState::Installed
                } else {
                    ComplianceState::Required
                },
                severity: Severity::Important,
                counter: 1,
                observed_at: 1,
                attestation: None,
            })
            .collect();
        report_at(&site.node, &mut agents, records, batch + 1);
    }
    // Every computer's summary, read in pages of the batch size too.
    let summaries: Vec<_> = (0..300)
        .map(|c| cascade_core::model::ComputerSummary {
            computer: ComputerId::new(&format!("pc-{c:04}")).unwrap(),
            site: site_id.clone(),
            os: "Windows 11".into(),
            release: Some("23H2".into()),
            version: None,
            last_scan: 1,
            last_report: 1,
            agent_version: "0.1.0".into(),
            pending_restart: false,
            recent_events: Vec::new(),
        })
        .collect();
    site.node.store.put_summaries(&summaries, true).unwrap();
    // Lost before the parent had any of it.
    site.node.store.outbox_compact(0).unwrap();
    assert!(site.node.store.outbox_state().unwrap().snapshot_required);
    link.set_down(false);
    site.node.replicate_now();
    let totals = |store: &cascade_store::Store| -> Vec<u64> {
        let mut out = vec![0; 9];
        for counts in store.summary_by_update().unwrap().values() {
            for (slot, n) in out.iter_mut().zip(counts.0) {
                *slot += n;
            }
        }
        out
    };
    let expected = totals(&site.node.store);
    assert_eq!(expected.iter().sum::<u64>(), 6_000);
    let started = Instant::now();
    loop {
        let outbox = site.node.store.outbox_state().unwrap();
        if !outbox.snapshot_required
            && totals(&root.node.store) == expected
            && root.node.store.summaries_after(None, 1000).unwrap().len() == 300
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the root has {:?} of {expected:?} and {} summaries; site links: {:?}",
            totals(&root.node.store),
            root.node.store.summaries_after(None, 1000).unwrap().len(),
            site.node.links()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        link.cuts.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no connection was cut"
    );
}

/// A link that hangs (connections open, nothing passing) is found without
/// progress after `stall_seconds`, said so in the link status (which the
/// metrics and `ctl links` show), and connected afresh; once traffic passes
/// again, what waited reaches the root and the link is no longer stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_link_is_reported_stalled_and_recovers_by_itself() {
    use cascade_core::compliance::ComplianceState;
    use cascade_core::model::{ComplianceRecord, ComputerId};
    let (h, root, link, site) = root_and_site(|c| c.stall_seconds = 5).await;
    let root_id = root.node.id.clone();
    let head = root.node.store.applied_seq(&root_id).unwrap();
    synced(
        &site.node,
        &root_id,
        head,
        Duration::from_secs(30),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let up = |node: &Node| {
        node.links()
            .into_iter()
            .find(|(_, direction, _)| *direction == "up")
            .map(|(_, _, status)| status)
            .unwrap_or_default()
    };
    link.set_frozen(true);
    let pki = h.dir.path().join("agents");
    h.ca.write(&pki).unwrap();
    let mut agents = cascade_agent::attest::PaperAgents::new(Ca::load(&pki).unwrap(), cascade_node::now() - 60);
    let site_id = site.node.id.clone();
    let records: Vec<ComplianceRecord> = (0..200u64)
        .map(|n| ComplianceRecord {
            computer: ComputerId::new(&format!("pc-{:03}", n / 20)).unwrap(),
            update: UpdateId::kb(5_000_000 + n % 20),
            site: site_id.clone(),
            state: ComplianceState::Required,
            severity: Severity::Important,
            counter: 1,
            observed_at: 1,
            attestation: None,
        })
        .collect();
    report_at(&site.node, &mut agents, records, 1);
    site.node.upward_ready();
    let started = Instant::now();
    while !(up(&site.node).stalled && up(&site.node).stalls > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hung link was not found stalled: {:?}",
            site.node.links()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up(&site.node).last_error.contains("no progress"),
        "{:?}",
        up(&site.node)
    );
    assert_eq!(
        root.node.store.computer_count().unwrap(),
        0,
        "nothing passed while hung"
    );
    link.set_frozen(false);
    let started = Instant::now();
    while root.node.store.computer_count().unwrap() != 10 || up(&site.node).stalled {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the link did not recover: root has {} computers; {:?}",
            root.node.store.computer_count().unwrap(),
            site.node.links()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child that stays connected tells its parent how far it has applied
/// (once a heartbeat, when it moved): the parent's log is compacted behind
/// it without waiting for the child to connect again, and the live tail
/// goes on over the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_childs_cursor_reaches_its_parent_and_compaction_follows() {
    let (_h, root, link, site) = root_and_site(|_| {}).await;
    let root_id = root.node.id.clone();
    let (quiet, limit) = (Duration::from_secs(30), Duration::from_secs(60));
    let subscribed = root.node.store.applied_seq(&root_id).unwrap();
    synced(&site.node, &root_id, subscribed, quiet, limit).await.unwrap();
    // The site subscribed before these: at subscribe the root recorded less.
    for chunk in generated_updates(300).chunks(100) {
        root.node.append_local_many(chunk.to_vec()).await.unwrap();
    }
    let head = root.node.store.applied_seq(&root_id).unwrap();
    synced(&site.node, &root_id, head, quiet, limit).await.unwrap();
    let site_id = site.node.id.clone();
    let recorded = || {
        root.node
            .store
            .subscriber_cursors()
            .unwrap()
            .get(&site_id)
            .and_then(|c| c.get(&root_id).copied())
    };
    let started = Instant::now();
    while recorded() != Some(head) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the root records the site at {root_id}/{:?}, not {head}",
            recorded()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Operators see it: the root's link to the site lacks nothing.
    let child_down = || {
        root.node
            .links()
            .into_iter()
            .find(|(peer, direction, _)| peer.as_str() == "site" && *direction == "child-down")
            .map(|(_, _, status)| status)
            .unwrap()
    };
    while child_down().seq_lag != 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", child_down());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connections = link.connections.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        root.node.store.compact(0).unwrap() as u64,
        head,
        "the whole log is behind the site"
    );
    assert_eq!(
        root.node
            .store
            .changes_since(&root_id, subscribed, 10)
            .unwrap()
            .unwrap_err()
            .floor,
        head
    );
    // The same connection carries what comes next: no snapshot, no reconnect.
    root.node
        .append_local_many(generated_updates(301)[300..].to_vec())
        .await
        .unwrap();
    let next = root.node.store.applied_seq(&root_id).unwrap();
    assert!(next > head);
    synced(&site.node, &root_id, next, quiet, limit).await.unwrap();
    assert_eq!(
        link.connections.load(std::sync::atomic::Ordering::Relaxed),
        connections,
        "the site connected again"
    );
}

/// A child away longer than `log_hold_days` no longer holds its parent's
/// change log: compaction goes on without it (and says so); a child away
/// for less still holds what it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_away_longer_than_the_hold_no_longer_holds_the_log() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(cascade_node::ManualClock::new(cascade_node::now()));
    let h = harness("Hold").unwrap();
    let root = {
        let clock = clock.clone();
        h.start("root", None, move |c| {
            c.clock = clock;
            c.log_hold_days = 2;
        })
        .await
        .unwrap()
    };
    let root_id = root.node.id.clone();
    add_child(&root.node, "site").await.unwrap();
    let parent = Some((root_id.clone(), root.addr.to_string()));
    let site = h.start("site", parent, |c| c.heartbeat_seconds = 1).await.unwrap();
    let (quiet, limit) = (Duration::from_secs(30), Duration::from_secs(60));
    let had = root.node.store.applied_seq(&root_id).unwrap();
    synced(&site.node, &root_id, had, quiet, limit).await.unwrap();
    drop(site);
    let started = Instant::now();
    while root
        .node
        .links()
        .iter()
        .any(|(peer, direction, status)| peer.as_str() == "site" && *direction == "child-down" && status.connected)
    {
        assert!(started.elapsed() < limit, "the root still counts the site connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More changes than the log keeps of an origin anyway, made while the
    // site is away.
    for chunk in generated_updates(cascade_node::LOG_RETAIN + 500).chunks(5_000) {
        root.node.append_local_many(chunk.to_vec()).await.unwrap();
    }
    let head = root.node.store.applied_seq(&root_id).unwrap();
    let held = root.node.compact_log().await.unwrap();
    assert!(held.released.is_empty(), "{held:?}");
    assert!(
        root.node.store.changes_since(&root_id, had, 10).unwrap().is_ok(),
        "the log the site lacks is held for it"
    );
    // A day later it still is; three days later (the hold is two) it is not.
    clock.advance(86_400);
    assert!(root.node.compact_log().await.unwrap().released.is_empty());
    clock.advance(2 * 86_400);
    let released = root.node.compact_log().await.unwrap();
    assert_eq!(released.released, [NodeId::new("site").unwrap()]);
    assert!(released.changes > 0, "{released:?}");
    assert_eq!(
        root.node
            .store
            .changes_since(&root_id, had, 10)
            .unwrap()
            .unwrap_err()
            .floor,
        head - cascade_node::LOG_RETAIN,
        "the last LOG_RETAIN changes are kept; the site gets a snapshot when it comes back"
    );
}
