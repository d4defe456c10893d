//! The store's API: replication objects, compliance, outbox, local state,
//! formats, damage, backups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::inventory::Inventory;
use cascade_core::model::{
    Agent, AuditEntry, Change, ChangeOp, ComputerId, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Override, Upward,
};
use cascade_store::{Applied, FORMAT_VERSION, Settings, Store, StoreError};
use common::{node, record, setting};

fn key(kind: ObjectKind, id: &str) -> ObjectKey {
    ObjectKey {
        kind,
        id: ObjectId::new(id).unwrap(),
    }
}

fn change(origin: &str, seq: u64, op: ChangeOp) -> Change {
    Change::new(node(origin), seq, op)
}

#[test]
fn changes_apply_in_order_once() {
    let store = Store::temporary(node("site-a")).unwrap();
    let c1 = change(
        "root",
        1,
        ChangeOp::Upsert(setting("scan-interval", serde_json::json!(3600), true)),
    );
    assert_eq!(store.apply_change(&c1).unwrap(), Applied::Applied);
    assert_eq!(store.apply_change(&c1).unwrap(), Applied::Duplicate);
    let c3 = change("root", 3, ChangeOp::Delete(key(ObjectKind::Setting, "scan-interval")));
    match store.apply_change(&c3) {
        Err(StoreError::Gap { seq: 3, applied: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.applied_seq(&node("root")).unwrap(), 1);
    let stored = store
        .object(&key(ObjectKind::Setting, "scan-interval"))
        .unwrap()
        .unwrap();
    assert_eq!((stored.origin.as_str(), stored.seq), ("root", 1));
    assert_eq!(store.changes_since(&node("root"), 0, 10).unwrap().unwrap(), vec![c1]);
}

#[test]
fn one_owner_per_object_and_overrides_where_allowed() {
    let store = Store::temporary(node("site-a")).unwrap();
    store
        .apply_change(&change(
            "root",
            1,
            ChangeOp::Upsert(setting("scan-interval", serde_json::json!(3600), true)),
        ))
        .unwrap();
    store
        .apply_change(&change(
            "root",
            2,
            ChangeOp::Upsert(setting("content-source", serde_json::json!("vendor"), false)),
        ))
        .unwrap();
    // The site may not change what the root owns...
    let err = store
        .append_local(ChangeOp::Upsert(setting("scan-interval", serde_json::json!(60), true)))
        .unwrap_err();
    assert!(matches!(err, StoreError::NotOwner { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "site-a may not change setting/scan-interval: it belongs to root"
    );
    // ...may override a field the owner marked overridable...
    let fields = std::collections::BTreeMap::from([("value".to_owned(), serde_json::json!(900))]);
    store
        .append_local(ChangeOp::Override(Override {
            target: key(ObjectKind::Setting, "scan-interval"),
            fields: fields.clone(),
        }))
        .unwrap();
    let target = key(ObjectKind::Setting, "scan-interval");
    let owner = store.object(&target).unwrap().unwrap().object;
    let overrides = store.overrides(&target).unwrap();
    match owner
        .with_overrides(overrides.iter().map(|(o, over)| (o, over.value())))
        .0
    {
        Object::Setting(s) => assert_eq!(s.value, serde_json::json!(900)),
        other => panic!("{other:?}"),
    }
    // ...and not one it did not.
    let err = store
        .append_local(ChangeOp::Override(Override {
            target: key(ObjectKind::Setting, "content-source"),
            fields,
        }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "site-a may not override setting/content-source: its owner does not let child sites override value"
    );
    // A refused change used no sequence number; local objects sit beside inherited ones.
    assert_eq!(store.applied_seq(&node("site-a")).unwrap(), 1);
    store
        .append_local(ChangeOp::Upsert(setting("site-local", serde_json::json!(true), false)))
        .unwrap();
    let origins: Vec<String> = store
        .objects(ObjectKind::Setting)
        .unwrap()
        .iter()
        .map(|s| s.origin.to_string())
        .collect();
    assert_eq!(origins, ["root", "root", "site-a"]);
}

#[test]
fn a_log_longer_than_a_commit_is_compacted_over_several() {
    // The log is cut in commits of at most COMPACT_COMMIT entries, to the
    // same floor, every entry counted once.
    let root = Store::temporary(node("root")).unwrap();
    let ops: Vec<ChangeOp> = (0..cascade_store::COMPACT_COMMIT + 5)
        .map(|n| ChangeOp::Upsert(setting(&format!("bulk{}", n % 7), serde_json::json!(n), false)))
        .collect();
    let last = root.append_local_many(ops).unwrap().last().unwrap().seq;
    root.set_subscriber_cursor(&node("child-1"), &node("root"), last)
        .unwrap();
    root.set_subscriber_cursor(&node("child-2"), &node("root"), last)
        .unwrap();
    assert_eq!(root.compact(3).unwrap() as u64, last - 3);
    assert_eq!(
        root.changes_since(&node("root"), last - 3, 100).unwrap().unwrap().len(),
        3
    );
    assert_eq!(
        root.changes_since(&node("root"), last - 4, 100)
            .unwrap()
            .unwrap_err()
            .floor,
        last - 3
    );
    assert_eq!(root.compact(3).unwrap(), 0);
}

/// A root store whose log holds `count` changes of its own, settings
/// s0, s1, ...
fn root_with_settings(count: usize) -> Store {
    let root = Store::temporary(node("root")).unwrap();
    for n in 0..count {
        root.append_local(ChangeOp::Upsert(setting(&format!("s{n}"), serde_json::json!(n), false)))
            .unwrap();
    }
    root
}

#[test]
fn a_subscribers_claimed_cursor_moves_only_its_own_recorded_cursors_up_to_the_head() {
    let root = root_with_settings(10);
    let cursors = |who: &str| root.subscriber_cursors().unwrap().get(&node(who)).cloned();
    let claim = |pairs: &[(&str, u64)]| -> BTreeMap<NodeId, u64> { pairs.iter().map(|(o, s)| (node(o), *s)).collect() };
    root.set_subscriber_cursor(&node("child-1"), &node("root"), 2).unwrap();
    root.set_subscriber_cursor(&node("child-2"), &node("root"), 2).unwrap();

    // Up to what it has applied; other subscribers keep theirs.
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-1"), &claim(&[("root", 7)]))
            .unwrap(),
        1
    );
    assert_eq!(cursors("child-1").unwrap()[&node("root")], 7);
    assert_eq!(cursors("child-2").unwrap()[&node("root")], 2);
    // Never down (a late claim), never past this node's own head.
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-1"), &claim(&[("root", 5)]))
            .unwrap(),
        0
    );
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-1"), &claim(&[("root", u64::MAX)]))
            .unwrap(),
        1
    );
    assert_eq!(cursors("child-1").unwrap()[&node("root")], 10);
    assert_eq!(root.subscriber_lag(&node("child-1")).unwrap(), 0);
    assert_eq!(root.subscriber_lag(&node("child-2")).unwrap(), 8);
    // An origin this node does not have, or a subscriber not subscribed
    // (gone, or never here), records nothing: a claim cannot hold the log.
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-1"), &claim(&[("elsewhere", 3)]))
            .unwrap(),
        0
    );
    // An origin this node took after the subscriber subscribed is recorded.
    let upstream = change(
        "upstream",
        1,
        ChangeOp::Upsert(setting("up-1", serde_json::json!(1), false)),
    );
    assert_eq!(root.apply_change(&upstream).unwrap(), Applied::Applied);
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-1"), &claim(&[("upstream", 5)]))
            .unwrap(),
        1
    );
    assert_eq!(cursors("child-1").unwrap()[&node("upstream")], 1);
    assert_eq!(
        root.advance_subscriber_cursors(&node("stranger"), &claim(&[("root", 1)]))
            .unwrap(),
        0
    );
    assert_eq!(cursors("stranger"), None);
    root.remove_subscriber(&node("child-2")).unwrap();
    assert_eq!(
        root.advance_subscriber_cursors(&node("child-2"), &claim(&[("root", 9)]))
            .unwrap(),
        0
    );
    assert_eq!(cursors("child-2"), None);
    // Compaction follows the slowest subscriber that is left, or the one
    // after it when that one is released (away too long).
    root.set_subscriber_cursor(&node("child-3"), &node("root"), 4).unwrap();
    let released = std::collections::BTreeSet::from([node("child-3")]);
    assert_eq!(root.compact(0).unwrap(), 4);
    // 5..=10 of root, and upstream's 1 that child-1 has.
    assert_eq!(root.compact_without(0, &released).unwrap(), 7);
    assert_eq!(root.changes_since(&node("root"), 4, 10).unwrap().unwrap_err().floor, 10);
}

#[test]
fn compaction_keeps_what_subscribers_need_then_snapshots() {
    let root = root_with_settings(10);
    root.append_local(ChangeOp::Delete(key(ObjectKind::Setting, "s0")))
        .unwrap();
    root.set_subscriber_cursor(&node("child-1"), &node("root"), 4).unwrap();
    root.set_subscriber_cursor(&node("child-2"), &node("root"), 8).unwrap();
    assert_eq!(root.compact(0).unwrap(), 4, "entries 1..=4 are applied everywhere");
    assert_eq!(root.changes_since(&node("root"), 4, 100).unwrap().unwrap().len(), 7);
    assert_eq!(root.changes_since(&node("root"), 2, 100).unwrap().unwrap_err().floor, 4);
    // A child that is gone no longer holds compaction back.
    root.remove_subscriber(&node("child-1")).unwrap();
    assert_eq!(root.compact(0).unwrap(), 4, "now through child-2's 8");
    assert!(!root.subscriber_cursors().unwrap().contains_key(&node("child-1")));
    root.set_subscriber_cursor(&node("child-1"), &node("root"), 4).unwrap();

    // A new child catches up from a snapshot, then the live tail.
    let child = Store::temporary(node("child-3")).unwrap();
    child
        .apply_change(&change(
            "root",
            1,
            ChangeOp::Upsert(setting("stale", serde_json::json!(1), false)),
        ))
        .unwrap();
    let snapshot = root.snapshot(&[node("root")]).unwrap();
    child.apply_snapshot(&snapshot).unwrap();
    assert_eq!(child.applied_seq(&node("root")).unwrap(), 11);
    let ids: Vec<String> = child
        .objects(ObjectKind::Setting)
        .unwrap()
        .iter()
        .map(|s| s.object.key().unwrap().id.to_string())
        .collect();
    assert_eq!(ids, ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"]);
    let next = root
        .append_local(ChangeOp::Upsert(setting("s10", serde_json::json!(10), false)))
        .unwrap();
    assert_eq!(child.apply_change(&next).unwrap(), Applied::Applied);
    assert_eq!(child.cursor().unwrap().get(&node("root")), Some(&12));
}

#[test]
fn compliance_ingest_aggregates_and_queries() {
    let store = Store::temporary(node("region")).unwrap();
    let batch: Vec<_> = (0..30)
        .map(|c| {
            record(
                &format!("pc-{c:02}"),
                if c % 3 == 0 { "KB1" } else { "KB2" },
                if c < 20 { "site-a" } else { "site-b" },
                if c % 2 == 0 {
                    ComplianceState::Installed
                } else {
                    ComplianceState::Required
                },
                1,
            )
        })
        .collect();
    let out = store.ingest("site-a", 1, &batch, true).unwrap();
    assert_eq!((out.applied, out.stale, out.duplicate), (30, 0, false));
    // The same batch again changes nothing.
    assert!(store.ingest("site-a", 1, &batch, true).unwrap().duplicate);
    // An older report never replaces a newer one; a newer one moves the counts.
    let older = record("pc-01", "KB2", "site-a", ComplianceState::Failed { code: 1603 }, 0);
    let newer = record("pc-01", "KB2", "site-a", ComplianceState::Installed, 2);
    let out = store.ingest("site-a", 2, &[older, newer.clone()], true).unwrap();
    assert_eq!((out.applied, out.stale), (1, 1));
    assert_eq!(store.record(&newer.computer, &newer.update).unwrap(), Some(newer));

    let summary = store.summary_by_update().unwrap();
    assert_eq!(summary[&UpdateId::new("KB1")].total(), 10);
    assert_eq!(summary[&UpdateId::new("KB2")].get("installed"), 11);
    assert_eq!(summary[&UpdateId::new("KB2")].get("required"), 9);
    assert_eq!(store.recount().unwrap(), (summary, store.summary_by_site().unwrap()));

    // Pages of two, of the non-compliant computers for KB2.
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..20 {
        let page = store
            .by_update(&UpdateId::new("KB2"), true, after.as_deref(), 2)
            .unwrap();
        seen.extend(page.items.iter().map(|r| r.computer.to_string()));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 9);
    assert!(!seen.contains(&"pc-01".to_owned()));
    let site_b = store.by_site(&node("site-b"), false, None, 100).unwrap();
    assert_eq!(site_b.items.len(), 10);
    let pc = store.by_computer(&ComputerId::new("pc-03").unwrap()).unwrap();
    assert_eq!(pc.len(), 1);
    assert!(
        store.by_update(&UpdateId::new("KB2"), false, Some("00ff"), 2).is_err(),
        "a token from another listing"
    );

    // Forwarded records wait in the outbox, one entry per batch, until the
    // parent acknowledges them; they are sent in their latest state.
    let state = store.outbox_state().unwrap();
    assert_eq!((state.last, state.pending), (2, 2));
    let entries = store.outbox(0, 5).unwrap();
    assert_eq!(entries.iter().map(|e| e.items.len()).collect::<Vec<_>>(), [30, 1]);
    let pc01 = entries[0].items.iter().find_map(|i| match i {
        Upward::Compliance(r) if r.computer.as_str() == "pc-01" => Some(r.clone()),
        _ => None,
    });
    assert_eq!(pc01.map(|r| r.counter), Some(2), "the latest state of pc-01/KB2");
    assert!(store.outbox_ack(3).is_err(), "nothing was sent with sequence 3");
    store.outbox_ack(1).unwrap();
    assert_eq!(store.outbox(0, 100).unwrap().len(), 1);
}

#[test]
fn outbox_compaction_keeps_the_latest_and_asks_for_a_snapshot() {
    let store = Store::temporary(node("site-a")).unwrap();
    for counter in 1..=5 {
        store
            .ingest(
                "agent-1",
                counter,
                &[record("pc-1", "KB1", "site-a", ComplianceState::Required, counter)],
                true,
            )
            .unwrap();
    }
    store
        .ingest(
            "agent-2",
            1,
            &[record("pc-2", "KB1", "site-a", ComplianceState::Installed, 1)],
            true,
        )
        .unwrap();
    assert_eq!(store.outbox_compact(10).unwrap(), 0);
    assert_eq!(
        store.outbox_compact(2).unwrap(),
        4,
        "older upserts of pc-1/KB1 go first"
    );
    assert!(!store.outbox_state().unwrap().snapshot_required);
    assert_eq!(store.outbox_compact(1).unwrap(), 1);
    assert!(
        store.outbox_state().unwrap().snapshot_required,
        "a record the parent never got was dropped"
    );
    assert_eq!(
        store.all_records().map(|r| r.unwrap().len()).sum::<usize>(),
        2,
        "the snapshot source is intact"
    );
    store.outbox_snapshot_sent(6).unwrap();
    assert!(!store.outbox_state().unwrap().snapshot_required);
}

#[test]
fn an_upward_snapshot_goes_on_where_it_was_broken_off_unless_a_new_one_is_asked_for() {
    use cascade_store::SnapshotProgress;
    let store = Store::temporary(node("site-a")).unwrap();
    assert_eq!(store.outbox_snapshot_progress().unwrap(), None);
    store.require_upward_snapshot().unwrap();
    assert_eq!(store.outbox_snapshot_progress().unwrap(), Some(SnapshotProgress::Start));
    let certificates = SnapshotProgress::Certificates { upto: 4 };
    let after = |c: &str| SnapshotProgress::After {
        upto: 4,
        computer: ComputerId::new(c).unwrap(),
    };
    assert!(
        store
            .outbox_snapshot_progressed(&SnapshotProgress::Start, &certificates)
            .unwrap()
    );
    assert!(
        store
            .outbox_snapshot_progressed(&certificates, &after("pc-0042"))
            .unwrap()
    );
    // Kept across a reopen of the same state (it is in the store).
    assert_eq!(store.outbox_snapshot_progress().unwrap(), Some(after("pc-0042")));
    // A progress from a stale point is not recorded.
    assert!(
        !store
            .outbox_snapshot_progressed(&certificates, &after("pc-0099"))
            .unwrap()
    );
    // A new snapshot asked for meanwhile (a move, a lost outbox) starts
    // from the beginning, and the old one cannot finish over it.
    store.require_upward_snapshot().unwrap();
    assert_eq!(store.outbox_snapshot_progress().unwrap(), Some(SnapshotProgress::Start));
    assert!(!store.outbox_snapshot_finished(&after("pc-0042"), 4).unwrap());
    assert!(store.outbox_state().unwrap().snapshot_required);
    assert!(store.outbox_snapshot_finished(&SnapshotProgress::Start, 0).unwrap());
    assert!(!store.outbox_state().unwrap().snapshot_required);
}

#[test]
fn agents_inventories_and_audit() {
    let store = Store::temporary(node("site-a")).unwrap();
    let mut inv = Inventory::windows("10.0.19045".parse().unwrap(), false, Some("x64"));
    inv.computer = Some("pc-1".into());
    let h1 = store.put_inventory(&inv).unwrap();
    inv.computer = Some("pc-2".into());
    assert_eq!(store.put_inventory(&inv).unwrap(), h1, "one copy per distinct content");
    assert_eq!(store.inventory_count(), 1);
    assert_eq!(store.inventory(&h1).unwrap().unwrap().computer, None);
    let agent = Agent {
        last_seen: 2,
        inventory: Some(h1),
        ..Agent::new(ComputerId::new("pc-1").unwrap(), node("site-a"), 1)
    };
    store.put_agent(&agent).unwrap();
    assert_eq!(store.agents().unwrap(), vec![agent]);
    let entry = AuditEntry {
        at: 5,
        actor: "admin@example".into(),
        node: node("site-a"),
        action: "approve".into(),
        detail: "KB1".into(),
    };
    assert_eq!(store.audit(&entry, true).unwrap(), 1);
    assert_eq!(store.audit_log(0, 10).unwrap(), vec![(1, entry.clone())]);
    assert_eq!(store.outbox(0, 10).unwrap()[0].items, vec![Upward::Audit(entry)]);
}

#[test]
fn enrollment_tokens_are_one_time_expiring_and_per_site() {
    use cascade_store::{TokenRecord, TokenRefusal};
    let store = Store::temporary(node("site-a")).unwrap();
    let token = TokenRecord {
        site: node("site-a"),
        created_by: "alice".into(),
        created_at: 100,
        expires_at: 200,
    };
    store.put_token("h1", &token).unwrap();
    store.put_token("h2", &token).unwrap();
    store.put_token("h3", &token).unwrap();
    let agent = |name: &str, site: &str| Agent {
        last_seen: 0,
        ..Agent::new(ComputerId::new(name).unwrap(), node(site), 150)
    };
    assert_eq!(store.redeem_token("h1", &agent("pc-1", "site-a"), 150).unwrap(), Ok(()));
    assert_eq!(
        store.redeem_token("h1", &agent("pc-2", "site-a"), 150).unwrap(),
        Err(TokenRefusal::Unknown),
        "one use only"
    );
    assert_eq!(
        store.redeem_token("h2", &agent("pc-1", "site-a"), 150).unwrap(),
        Err(TokenRefusal::Enrolled)
    );
    assert_eq!(
        store.redeem_token("h2", &agent("pc-3", "site-b"), 150).unwrap(),
        Err(TokenRefusal::OtherSite { site: node("site-a") })
    );
    assert_eq!(
        store.redeem_token("h3", &agent("pc-3", "site-a"), 200).unwrap(),
        Err(TokenRefusal::Expired { expired_at: 200 })
    );
    assert_eq!(
        store.redeem_token("h3", &agent("pc-3", "site-a"), 150).unwrap(),
        Err(TokenRefusal::Unknown)
    );
    let ids: Vec<String> = store.agents().unwrap().iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, vec!["pc-1"]);

    let pc = ComputerId::new("pc-1").unwrap();
    let event = |n: i64| cascade_core::model::InstallEvent {
        at: n,
        update: UpdateId::new("KB1"),
        method: Default::default(),
        kind: cascade_core::model::EventKind::Installed,
        detail: String::new(),
    };
    for counter in 1..=5 {
        store.put_events(&pc, counter, &[event(counter as i64)], 2).unwrap();
    }
    store.put_events(&pc, 5, &[event(5)], 2).unwrap();
    let kept: Vec<i64> = store.events(&pc).unwrap().iter().map(|e| e.at).collect();
    assert_eq!(kept, vec![3, 4, 5], "a repeated counter replaces; old counters go");
}

/// sled itself, as another build would open it; its file lock is released a
/// moment after the last handle in this process is dropped.
fn open_raw(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn newer_format_is_refused_and_older_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // A store as format 1 wrote it: compliance records as JSON, no
        // format marker, no indexes or aggregates.
        let db = open_raw(&path);
        let tree = db.open_tree("cascade").unwrap();
        let r = record("pc-1", "KB1", "site-a", ComplianceState::Required, 3);
        let mut value = vec![1u8];
        value.extend(serde_json::to_vec(&r).unwrap());
        tree.insert(b"c/pc-1\0KB1", value).unwrap();
        let r = record("pc-1", "KB2", "site-a", ComplianceState::Failed { code: 1603 }, 3);
        let mut value = vec![1u8];
        value.extend(serde_json::to_vec(&r).unwrap());
        tree.insert(b"c/pc-1\0KB2", value).unwrap();
        let agent = Agent::new(ComputerId::new("pc-1").unwrap(), node("site-a"), 7);
        let mut value = vec![1u8];
        value.extend(serde_json::to_vec(&agent).unwrap());
        tree.insert(b"ag/pc-1", value).unwrap();
        db.flush().unwrap();
    }
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        assert_eq!(
            store.summary_for_update(&UpdateId::new("KB1")).unwrap().get("required"),
            1
        );
        assert_eq!(store.by_site(&node("site-a"), false, None, 10).unwrap().items.len(), 2);
        // Format 3: failures by code, and a summary of every computer.
        let failures = store.failure_counts().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!((failures[0].code, failures[0].computers), (1603, 1));
        let summary = store.summary(&ComputerId::new("pc-1").unwrap()).unwrap().unwrap();
        assert_eq!((summary.site.as_str(), summary.last_scan), ("site-a", 0));
        // Format 4: the computers counted once, then kept as a count.
        assert_eq!(store.computer_count().unwrap(), 1);
    }
    {
        let db = open_raw(&path);
        db.open_tree("cascade")
            .unwrap()
            .insert(b"m/format", &(FORMAT_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&path, node("site-a")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the node store was written by a newer Cascade (format {}; this build reads formats up to {FORMAT_VERSION})",
            path.display(),
            FORMAT_VERSION + 1
        )
    );
}

#[test]
fn computers_are_counted_as_they_first_report_and_a_format_3_store_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        assert_eq!(store.computer_count().unwrap(), 0);
        let first: Vec<_> = (0..3)
            .map(|i| record(&format!("pc-{i}"), "KB1", "site-a", ComplianceState::Required, 1))
            .collect();
        store.ingest("agent", 1, &first, false).unwrap();
        assert_eq!(store.computer_count().unwrap(), 3);
        // Another update of known computers, a newer state, a resent batch
        // and a new computer: one more.
        let more = vec![
            record("pc-0", "KB2", "site-a", ComplianceState::Required, 2),
            record("pc-1", "KB1", "site-a", ComplianceState::Installed, 2),
            record("pc-3", "KB1", "site-a", ComplianceState::Required, 2),
        ];
        store.ingest("agent", 2, &more, false).unwrap();
        store.ingest("agent", 2, &more, false).unwrap();
        assert_eq!(store.computer_count().unwrap(), 4);
    }
    {
        // The same store as format 3 left it: no count.
        let db = open_raw(&path);
        let tree = db.open_tree("cascade").unwrap();
        tree.remove(b"gc").unwrap();
        tree.insert(b"m/format", &3u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path, node("site-a")).unwrap();
    assert_eq!(store.computer_count().unwrap(), 4);
    store
        .ingest(
            "agent",
            3,
            &[record("pc-9", "KB1", "site-a", ComplianceState::Required, 3)],
            false,
        )
        .unwrap();
    assert_eq!(store.computer_count().unwrap(), 5);
}

fn damaged(how: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        for i in 0..200 {
            let r = record(&format!("pc-{i}"), "KB1", "site-a", ComplianceState::Required, 1);
            store.ingest("agent", i + 1, &[r], false).unwrap();
        }
    }
    let db = path.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    match how {
        "head" => {
            bytes[..512].iter_mut().for_each(|b| *b = 0);
            std::fs::write(&db, &bytes).unwrap();
        }
        "middle" => {
            let m = bytes.len() / 2;
            bytes[m..m + 2048].iter_mut().for_each(|b| *b = 0xA5);
            std::fs::write(&db, &bytes).unwrap();
        }
        "truncated" => std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap(),
        "removed" => std::fs::remove_file(&db).unwrap(),
        other => panic!("{other}"),
    }
    let err = Store::open(&path, node("site-a")).expect_err(how);
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: ", path.display())), "{text}");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
        "{text}"
    );
    text
}

#[test]
fn a_damaged_store_is_refused_with_its_path() {
    // sled itself opens a damaged log by dropping everything after the
    // damage; the commit sentinel turns that into a refusal.
    for how in ["head", "middle", "truncated", "removed"] {
        let text = damaged(how);
        assert!(text.contains("acknowledged writes are missing"), "{how}: {text}");
    }
}

#[test]
fn backup_while_writing_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(&dir.path().join("store"), node("site-a")).unwrap());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for seq in 1..=200u64 {
                let records: Vec<_> = (0..10)
                    .map(|c| {
                        record(
                            &format!("pc-{c}"),
                            &format!("KB{seq}"),
                            "site-a",
                            ComplianceState::Required,
                            seq,
                        )
                    })
                    .collect();
                store.ingest("agent", seq, &records, true).unwrap();
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut backup = Vec::new();
    let stats = store.backup(&mut backup).unwrap();
    writer.join().unwrap();
    assert!(stats.entries > 0);
    let (restored, restored_stats) =
        Store::restore(backup.as_slice(), &dir.path().join("restored"), Settings::default()).unwrap();
    assert_eq!(restored_stats.entries, stats.entries);
    assert_eq!(restored.node().as_str(), "site-a");
    // Consistent: the restored aggregates match its own records, and the
    // batch high-water mark matches the batches present.
    let (by_update, by_site) = restored.recount().unwrap();
    assert_eq!(restored.summary_by_update().unwrap(), by_update);
    assert_eq!(restored.summary_by_site().unwrap(), by_site);
    assert_eq!(restored.inbox_mark("agent").unwrap() as usize, by_update.len());
    // A damaged backup is refused, and nothing of it is left.
    let mut damaged = backup.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let err = Store::restore(damaged.as_slice(), &dir.path().join("other"), Settings::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!dir.path().join("other").exists());
    let err = Store::restore(backup.as_slice(), &dir.path().join("restored"), Settings::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an empty directory"), "{err}");
}

/// Hands out its bytes a few at a time, and panics (as a kill would stop
/// the restore) once `panic_at` bytes have been read.
struct Trickle<'a> {
    data: &'a [u8],
    at: usize,
    step: usize,
    panic_at: Option<usize>,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.panic_at.is_some_and(|p| self.at >= p) {
            panic!("killed in the middle of the restore");
        }
        let n = self.step.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_backup_restores_as_a_stream_and_a_restore_that_fails_or_is_killed_leaves_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), node("site-a")).unwrap();
    // Enough entries for several of a restore's commits.
    for batch in 0..30u64 {
        let records: Vec<_> = (0..100)
            .flat_map(|c| (0..5).map(move |u| (c, u)))
            .map(|(c, u)| {
                record(
                    &format!("pc-{batch}-{c}"),
                    &format!("KB{}", 5_000_000 + u),
                    "site-a",
                    ComplianceState::Required,
                    1,
                )
            })
            .collect();
        store.ingest("agent", batch + 1, &records, true).unwrap();
    }
    let mut backup = Vec::new();
    let stats = store.backup(&mut backup).unwrap();
    assert!(stats.entries as usize > 2 * cascade_store::RESTORE_BATCH, "{stats:?}");
    let expected = store.summary_by_update().unwrap();
    drop(store);

    // Read a few bytes at a time, as from a pipe.
    for step in [1, 7, 4096, 1 << 20] {
        let at = dir.path().join(format!("restored-{step}"));
        let input = Trickle {
            data: &backup,
            at: 0,
            step,
            panic_at: None,
        };
        let (restored, restored_stats) = Store::restore(input, &at, Settings::default()).unwrap();
        assert_eq!(restored_stats, stats, "read {step} bytes at a time");
        assert_eq!(restored.summary_by_update().unwrap(), expected);
        assert_eq!(restored.recount().unwrap().0, expected);
        assert!(!at.join(cascade_store::RESTORING).exists());
        // A copy as `node backup` takes it from a running node: the same bytes.
        let mut copy = Vec::new();
        let copied = Store::copy_backup(
            Trickle {
                data: &backup,
                at: 0,
                step,
                panic_at: None,
            },
            &mut copy,
        )
        .unwrap();
        assert_eq!((copied, copy == backup), (backup.len() as u64, true));
    }

    // Cut anywhere, or damaged anywhere, or with a byte more: refused,
    // named, and nothing left behind.
    let cuts = [
        0,
        10,
        30,
        40,
        backup.len() / 3,
        backup.len() / 2,
        backup.len() - 33,
        backup.len() - 32,
        backup.len() - 1,
    ];
    let mut bad: Vec<(String, Vec<u8>)> = cuts
        .iter()
        .map(|&n| (format!("cut at {n}"), backup[..n].to_vec()))
        .collect();
    for at in [5, 40, backup.len() / 2, backup.len() - 40, backup.len() - 5] {
        let mut damaged = backup.clone();
        damaged[at] ^= 0x20;
        bad.push((format!("byte {at} changed"), damaged));
    }
    let mut longer = backup.clone();
    longer.push(0);
    bad.push(("a byte more".into(), longer));
    for (n, (what, data)) in bad.iter().enumerate() {
        let at = dir.path().join(format!("bad-{n}"));
        let err = Store::restore(data.as_slice(), &at, Settings::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            [
                "truncated",
                "checksum mismatch",
                "not a Cascade store backup",
                "node id line"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{what}: {err}"
        );
        assert!(!at.exists(), "{what}: {err}");
        let mut copy = Vec::new();
        assert!(Store::copy_backup(data.as_slice(), &mut copy).is_err(), "{what}");
    }
    // Into an empty directory that was there: it stays, empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    Store::restore(&backup[..backup.len() / 2], &empty, Settings::default())
        .err()
        .unwrap();
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // Killed after some commits: what was written is not taken for a store.
    let killed = dir.path().join("killed");
    let input = Trickle {
        data: &backup,
        at: 0,
        step: 4096,
        panic_at: Some(backup.len() * 2 / 3),
    };
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Store::restore(input, &killed, Settings::default()).map(drop)
    }));
    assert!(panicked.is_err());
    assert!(killed.join(cascade_store::RESTORING).exists());
    for err in [
        Store::open_existing(&killed).err().unwrap(),
        Store::open(&killed, node("site-a")).err().unwrap(),
    ] {
        assert!(err.to_string().contains("a restore into it did not finish"), "{err}");
    }
}

#[test]
fn a_store_keeps_the_compression_it_was_created_with_and_a_restore_chooses_again() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..50)
        .map(|c| record(&format!("pc-{c}"), "KB5034441", "site-a", ComplianceState::Required, 1))
        .collect();
    let compress = Settings {
        compress: true,
        ..Settings::default()
    };
    for (made, opened) in [(compress, Settings::default()), (Settings::default(), compress)] {
        let path = dir.path().join(format!("made-{}", made.compress));
        {
            let store = Store::open_configured(&path, node("site-a"), made).unwrap();
            assert_eq!(store.compressed(), made.compress);
            store.ingest("agent", 1, &records, true).unwrap();
        }
        // Opened with the other setting: as it was made, nothing lost.
        let store = Store::open_configured(&path, node("site-a"), opened).unwrap();
        assert_eq!(store.compressed(), made.compress);
        let (by_update, _) = store.recount().unwrap();
        assert_eq!(store.summary_by_update().unwrap(), by_update);
        assert_eq!(
            store.computer_records(&records[7].computer).unwrap(),
            vec![records[7].clone()]
        );
        // The live data by kind of key: one document per computer, one
        // entry of what it needs.
        let usage = store.usage().unwrap();
        assert_eq!((usage["c/"].keys, usage["cr/"].keys), (50, 50));
        assert!(usage["c/"].value_bytes > 50 * 10, "{usage:?}");
        drop(store);
        assert_eq!(Store::open_existing(&path).unwrap().compressed(), made.compress);
        // A backup restored with the other setting is made with that one.
        let mut backup = Vec::new();
        Store::open_existing(&path).unwrap().backup(&mut backup).unwrap();
        let restored_at = dir.path().join(format!("restored-{}", made.compress));
        let (restored, _) = Store::restore(backup.as_slice(), &restored_at, opened).unwrap();
        assert_eq!(restored.compressed(), opened.compress);
        assert_eq!(restored.summary_by_update().unwrap(), by_update);
        assert_eq!(
            restored.computer_records(&records[49].computer).unwrap(),
            vec![records[49].clone()]
        );
    }
}

#[test]
fn a_run_of_changes_applies_whole_or_not_at_all() {
    let store = Store::temporary(node("site-a")).unwrap();
    let run: Vec<Change> = (1..=3)
        .map(|seq| {
            change(
                "root",
                seq,
                ChangeOp::Upsert(setting(&format!("s{seq}"), serde_json::json!(seq), false)),
            )
        })
        .collect();
    assert_eq!(store.apply_changes(&run).unwrap(), 3);
    assert_eq!(store.apply_changes(&run).unwrap(), 0, "all duplicates");
    // A run with a gap in its middle changes nothing.
    let broken = vec![
        change("root", 4, ChangeOp::Upsert(setting("s4", serde_json::json!(4), false))),
        change("root", 6, ChangeOp::Upsert(setting("s6", serde_json::json!(6), false))),
    ];
    assert!(matches!(
        store.apply_changes(&broken),
        Err(StoreError::Gap { seq: 6, applied: 4, .. })
    ));
    assert_eq!(store.applied_seq(&node("root")).unwrap(), 3);
    assert!(store.object(&key(ObjectKind::Setting, "s4")).unwrap().is_none());
    // Local changes in one batch take consecutive numbers.
    let made = store
        .append_local_many(vec![
            ChangeOp::Upsert(setting("l1", serde_json::json!(1), false)),
            ChangeOp::Upsert(setting("l2", serde_json::json!(2), false)),
        ])
        .unwrap();
    assert_eq!(made.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
}

/// Every compliance state has its slot in the counts, `stale` included
/// (an agent whose view may be frozen): its records are counted and a
/// recount agrees with the maintained counts.
#[test]
fn every_state_is_counted_and_recounted_stale_included() {
    let store = Store::temporary(node("region")).unwrap();
    let states = [
        ComplianceState::Installed,
        ComplianceState::Required,
        ComplianceState::NotApplicable,
        ComplianceState::Superseded,
        ComplianceState::Downloaded,
        ComplianceState::PendingRestart,
        ComplianceState::Failed { code: 1603 },
        ComplianceState::Unknown {
            reason: "no inventory".into(),
        },
        ComplianceState::Stale {
            reason: "the root's newest timestamp is 3 days old".into(),
        },
    ];
    assert_eq!(states.len(), ComplianceState::COUNT);
    let batch: Vec<_> = states
        .iter()
        .enumerate()
        .map(|(n, state)| record(&format!("pc-{n}"), "KB1", "site-a", state.clone(), 1))
        .collect();
    store.ingest("site-a", 1, &batch, true).unwrap();
    let summary = store.summary_by_update().unwrap();
    for state in &states {
        assert_eq!(summary[&UpdateId::new("KB1")].get(state.name()), 1, "{}", state.name());
    }
    assert_eq!(summary[&UpdateId::new("KB1")].total(), states.len() as u64);
    assert_eq!(store.recount().unwrap(), (summary, store.summary_by_site().unwrap()));
    let rendered = serde_json::to_value(store.summary_for_update(&UpdateId::new("KB1")).unwrap()).unwrap();
    assert_eq!(rendered["stale"], 1, "{rendered}");
}

#[test]
fn a_format_2_store_gains_failure_counts_and_summaries_once() {
    // A store a format 2 binary wrote has no failure counts; one a format 1
    // migration left after its format 2 commit (cut off before the last)
    // has them already.
    for counted_already in [false, true] {
        format_2_store_gains_failure_counts_once(counted_already);
    }
}

fn format_2_store_gains_failure_counts_once(counted_already: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        let failed = record(
            "pc-1",
            "KB2",
            "site-a",
            ComplianceState::Failed { code: -2147023293 },
            3,
        );
        store.ingest("agent/pc-1", 3, &[failed], false).unwrap();
        let agent = Agent::new(ComputerId::new("pc-1").unwrap(), node("site-a"), 7);
        store.put_agent(&agent).unwrap();
    }
    {
        // As format 2 left it: no failure counts, no summaries.
        let db = open_raw(&path);
        let tree = db.open_tree("cascade").unwrap();
        let dropped: &[&[u8]] = if counted_already {
            &[b"cm/", b"cn/"]
        } else {
            &[b"gf/", b"cm/", b"cn/"]
        };
        for prefix in dropped {
            for item in tree.scan_prefix(prefix) {
                tree.remove(item.unwrap().0).unwrap();
            }
        }
        tree.insert(b"m/format", &2u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path, node("site-a")).unwrap();
    let failures = store.failure_counts().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!((failures[0].code, failures[0].computers), (-2147023293, 1));
    assert!(store.summary(&ComputerId::new("pc-1").unwrap()).unwrap().is_some());
}

fn summary(computer: &str, site: &str, heard: i64) -> cascade_core::model::ComputerSummary {
    cascade_core::model::ComputerSummary {
        computer: ComputerId::new(computer).unwrap(),
        site: node(site),
        os: "Windows 11".into(),
        release: Some("23H2".into()),
        version: None,
        last_scan: heard,
        last_report: heard,
        agent_version: "0.1.0".into(),
        pending_restart: false,
        recent_events: Vec::new(),
    }
}

#[test]
fn summaries_keep_the_latest_page_by_site_and_follow_a_moved_computer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), node("root")).unwrap();
    let all: Vec<_> = (0..25)
        .map(|i| summary(&format!("pc-{i:02}"), if i % 2 == 0 { "site-a" } else { "site-b" }, 100))
        .collect();
    assert_eq!(store.put_summaries(&all, true).unwrap(), 25);
    assert_eq!(
        store.put_summaries(&all, true).unwrap(),
        0,
        "the same again changes nothing"
    );
    // Older news of a computer is not kept; newer news from another site is,
    // and the computer leaves its old site's listing.
    assert_eq!(store.put_summaries(&[summary("pc-00", "site-b", 50)], true).unwrap(), 0);
    assert_eq!(
        store.put_summaries(&[summary("pc-00", "site-b", 200)], true).unwrap(),
        1
    );
    let of = |sites: &[&str]| -> Vec<String> {
        let sites: Vec<_> = sites.iter().map(|s| node(s)).collect();
        let mut out = Vec::new();
        let mut after = None;
        for _ in 0..100 {
            let page = store.summaries(Some(&sites), after.as_deref(), 4, |_| true).unwrap();
            out.extend(page.items.iter().map(|s| s.computer.to_string()));
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
        panic!("pages did not end");
    };
    assert_eq!(of(&["site-a"]).len(), 12);
    assert_eq!(of(&["site-b"]).len(), 13);
    assert!(of(&["site-b"]).contains(&"pc-00".to_owned()));
    let both = of(&["site-b", "site-a"]);
    assert_eq!(both.len(), 25, "site by site, each computer once: {both:?}");
    let filtered = store.summaries(None, None, 100, |s| s.site == node("site-a")).unwrap();
    assert_eq!(filtered.items.len(), 12);
    assert!(
        store
            .summaries(Some(&[node("site-a")]), Some("00ff"), 4, |_| true)
            .is_err(),
        "a foreign page token"
    );
    // What changed went to the outbox for the parent.
    let queued: usize = store
        .outbox(0, 100)
        .unwrap()
        .iter()
        .flat_map(|e| e.items.iter())
        .filter(|i| matches!(i, Upward::Computer(_)))
        .count();
    assert_eq!(queued, 26);
    assert_eq!(store.summaries_after(None, 100).unwrap().len(), 25);
    assert_eq!(
        store
            .summaries_after(Some(&ComputerId::new("pc-20").unwrap()), 100)
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn history_keeps_the_days_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), node("root")).unwrap();
    let mut counts = cascade_store::StateCounts::default();
    for day in 100..110 {
        counts.0[0] = day as u64;
        let aggregates = cascade_store::DayAggregates::new(
            day,
            [((node("site-a"), cascade_core::update::Severity::Critical), counts)].into(),
            [(UpdateId::new("KB1"), counts)].into(),
        );
        store.put_history(&aggregates, 5).unwrap();
    }
    let kept = store.history(0, 1000, true, true).unwrap();
    assert_eq!(
        kept.iter().map(|d| d.day).collect::<Vec<_>>(),
        vec![105, 106, 107, 108, 109]
    );
    assert_eq!(kept[4].by_update[&UpdateId::new("KB1")].0[0], 109);
    assert_eq!(kept[4].by_site.len(), 1);
    let severities_only = store.history(106, 107, false, false).unwrap();
    assert_eq!(severities_only.len(), 2);
    assert!(severities_only[0].by_update.is_empty() && severities_only[0].by_site.is_empty());
    assert_eq!(
        severities_only[1].by_severity[&cascade_core::update::Severity::Critical].0[0],
        107
    );
}

#[test]
fn records_page_reads_through_the_narrowest_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), node("root")).unwrap();
    let mut all = Vec::new();
    for c in 0..30 {
        for u in 0..3 {
            let site = if c % 3 == 0 { "site-a" } else { "site-b" };
            let state = if u == 1 {
                ComplianceState::Required
            } else {
                ComplianceState::Installed
            };
            all.push(record(&format!("pc-{c:02}"), &format!("KB{u}"), site, state, 1));
        }
    }
    store.ingest("seed", 1, &all, false).unwrap();
    let read_from = |update: Option<&str>,
                     sites: Option<&[&str]>,
                     states: cascade_store::States,
                     keep: &dyn Fn(&cascade_core::model::ComplianceRecord) -> bool| {
        let update = update.map(UpdateId::new);
        let sites: Option<Vec<_>> = sites.map(|s| s.iter().map(|x| node(x)).collect());
        let (mut out, mut after) = (Vec::new(), None);
        for _ in 0..100 {
            let page = store
                .records_page(update.as_ref(), sites.as_deref(), states, after.as_deref(), 4, keep)
                .unwrap();
            out.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
        panic!("pages did not end");
    };
    let read = |update: Option<&str>,
                sites: Option<&[&str]>,
                keep: &dyn Fn(&cascade_core::model::ComplianceRecord) -> bool| {
        read_from(update, sites, cascade_store::States::Any, keep)
    };
    assert_eq!(read(None, None, &|_| true).len(), 90);
    assert_eq!(read(Some("KB1"), None, &|_| true).len(), 30);
    assert_eq!(read(None, Some(&["site-a"]), &|_| true).len(), 30);
    assert_eq!(read(None, Some(&["site-b", "site-a"]), &|_| true).len(), 90);
    let required_at_a = read(None, Some(&["site-a"]), &|r| r.state == ComplianceState::Required);
    assert_eq!(required_at_a.len(), 10);
    assert!(
        required_at_a
            .iter()
            .all(|r| r.site == node("site-a") && r.update == UpdateId::new("KB1"))
    );
    assert_eq!(read(Some("KB1"), Some(&["site-b"]), &|_| true).len(), 20);
    // The computers that need an update, from the index of those.
    let needs = |update: &str, sites: Option<&[&str]>| {
        read_from(Some(update), sites, cascade_store::States::NotCompliant, &|_| true)
    };
    assert_eq!(needs("KB1", None).len(), 30);
    assert_eq!(needs("KB0", None).len(), 0);
    let at_a = needs("KB1", Some(&["site-a"]));
    assert_eq!(at_a.len(), 10);
    assert!(
        at_a.iter()
            .all(|r| r.site == node("site-a") && r.state == ComplianceState::Required)
    );
    // State by state, site by site, then by computer.
    let order: Vec<_> = needs("KB1", None)
        .iter()
        .map(|r| (r.state.index(), r.site.to_string(), r.computer.to_string()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    // Installed since: no longer needed; moved to another site: needed
    // there and not at the first.
    let mut changed: Vec<_> = (0..5)
        .map(|c| record(&format!("pc-{c:02}"), "KB1", "site-a", ComplianceState::Installed, 2))
        .collect();
    changed.push(record("pc-05", "KB1", "site-a", ComplianceState::Failed { code: 5 }, 2));
    store.ingest("seed", 2, &changed, false).unwrap();
    assert_eq!(needs("KB1", None).len(), 25);
    // pc-05's document is under both sites now: each record is read once.
    assert_eq!(read(Some("KB1"), Some(&["site-a", "site-b"]), &|_| true).len(), 30);
    assert_eq!(read(None, Some(&["site-b", "site-a"]), &|_| true).len(), 90);
    let at_a: Vec<_> = needs("KB1", Some(&["site-a"]))
        .iter()
        .map(|r| r.computer.to_string())
        .collect();
    // Required ones first, then the failed one.
    assert_eq!(
        at_a,
        [
            "pc-06", "pc-09", "pc-12", "pc-15", "pc-18", "pc-21", "pc-24", "pc-27", "pc-05"
        ]
    );
    // One state: only its entries are read.
    let failed = read_from(
        Some("KB1"),
        None,
        cascade_store::States::Only(ComplianceState::Failed { code: 0 }.index()),
        &|_| true,
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].computer.to_string(), "pc-05");
    let installed = read_from(
        Some("KB1"),
        Some(&["site-a"]),
        cascade_store::States::Only(ComplianceState::Installed.index()),
        &|_| true,
    );
    assert_eq!(installed.len(), 5, "the five installed ones, all reported at site-a");
    assert!(
        store
            .records_page(
                Some(&UpdateId::new("KB1")),
                None,
                cascade_store::States::NotCompliant,
                Some("00ff"),
                4,
                |_| true
            )
            .is_err(),
        "a token from another listing"
    );
}

/// The keys of a store under `prefix`, read with the store closed.
fn keys_under(path: &std::path::Path, prefix: &[u8]) -> Vec<Vec<u8>> {
    let db = open_raw(path);
    let tree = db.open_tree("cascade").unwrap();
    tree.scan_prefix(prefix).keys().map(|k| k.unwrap().to_vec()).collect()
}

/// Format 5 indexes the records that are not compliant by update and site;
/// format 4 indexed every record by update. A format 4 store gets the new
/// index from its records and loses the old one when it is opened.
#[test]
fn a_format_4_store_indexes_what_is_needed_and_drops_its_index_of_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        let records: Vec<_> = (0..6)
            .flat_map(|c| {
                let state = if c % 2 == 0 {
                    ComplianceState::Required
                } else {
                    ComplianceState::Installed
                };
                [
                    record(&format!("pc-{c}"), "KB1", "site-a", state, 1),
                    record(&format!("pc-{c}"), "KB2", "site-a", ComplianceState::NotApplicable, 1),
                ]
            })
            .collect();
        store.ingest("agent", 1, &records, false).unwrap();
    }
    assert_eq!(keys_under(&path, b"cr/").len(), 3);
    {
        // The same store as format 4 left it.
        let db = open_raw(&path);
        let tree = db.open_tree("cascade").unwrap();
        for key in tree.scan_prefix(b"cr/").keys() {
            tree.remove(key.unwrap()).unwrap();
        }
        // What a migration cut off wrote, before an older binary changed
        // pc-1's record: left, it would list pc-1 as needing KB1.
        tree.insert(b"cr/KB1\0\x01\0site-a\0pc-1", &[]).unwrap();
        for c in 0..6 {
            for u in ["KB1", "KB2"] {
                tree.insert(format!("cu/{u}\0pc-{c}").as_bytes(), &[]).unwrap();
            }
        }
        tree.insert(b"m/format", &4u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    {
        let store = Store::open(&path, node("site-a")).unwrap();
        let needed: Vec<_> = store
            .by_update(&UpdateId::new("KB1"), true, None, 100)
            .unwrap()
            .items
            .iter()
            .map(|r| r.computer.to_string())
            .collect();
        assert_eq!(needed, ["pc-0", "pc-2", "pc-4"]);
        assert_eq!(
            store
                .by_update(&UpdateId::new("KB1"), false, None, 100)
                .unwrap()
                .items
                .len(),
            6
        );
        store
            .ingest(
                "agent",
                2,
                &[record("pc-0", "KB1", "site-a", ComplianceState::Installed, 2)],
                false,
            )
            .unwrap();
    }
    assert!(keys_under(&path, b"cu/").is_empty());
    assert_eq!(
        keys_under(&path, b"cr/"),
        ["pc-2", "pc-4"].map(|c| format!("cr/KB1\0\u{1}\0site-a\0{c}").into_bytes())
    );
    let db = open_raw(&path);
    let format = db.open_tree("cascade").unwrap().get(b"m/format").unwrap().unwrap();
    assert_eq!(format.as_ref(), 5u32.to_be_bytes());
}

/// A view built from some kinds of objects (the node's targeting, its
/// revocations) is rebuilt when, and only when, those kinds change: the
/// root's timestamps every minute leave a site's targeting as it is.
#[test]
fn a_kind_is_a_generation_on_after_each_commit_that_changes_it() {
    use cascade_core::model::{ObjectKind, Timestamp};
    let store = Store::temporary(node("root")).unwrap();
    let settings = [ObjectKind::Setting];
    let stamps = [ObjectKind::Timestamp];
    assert_eq!((store.generation(&settings), store.generation(&stamps)), (0, 0));
    store
        .append_local(ChangeOp::Upsert(setting(
            "scan-interval",
            serde_json::json!(3600),
            true,
        )))
        .unwrap();
    assert_eq!((store.generation(&settings), store.generation(&stamps)), (1, 0));
    for at in 0..3 {
        store
            .append_local(ChangeOp::Upsert(Object::Timestamp(Timestamp {
                node: node("root"),
                at: 1_700_000_000 + at,
            })))
            .unwrap();
    }
    assert_eq!((store.generation(&settings), store.generation(&stamps)), (1, 3));
    // A change that is refused commits nothing and moves nothing on.
    let site = Store::temporary(node("site")).unwrap();
    assert!(
        site.apply_change(&change(
            "root",
            2,
            ChangeOp::Upsert(setting("gap", serde_json::json!(1), false))
        ))
        .is_err()
    );
    assert_eq!(site.generation(&settings), 0);
    // Overrides count for the kind they override.
    site.apply_change(&change(
        "root",
        1,
        ChangeOp::Upsert(setting("scan-interval", serde_json::json!(3600), true)),
    ))
    .unwrap();
    site.append_local(ChangeOp::Override(cascade_core::model::Override {
        target: cascade_core::model::ObjectKey {
            kind: ObjectKind::Setting,
            id: cascade_core::model::ObjectId::new("scan-interval").unwrap(),
        },
        fields: std::collections::BTreeMap::from([("value".to_owned(), serde_json::json!(60))]),
    }))
    .unwrap();
    assert_eq!(site.generation(&settings), 2);
    assert_eq!(site.generation(&[ObjectKind::Setting, ObjectKind::Timestamp]), 2);
}
