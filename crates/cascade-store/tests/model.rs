//! Random operation sequences against the store and a simple in-memory
//! model give the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{Change, ChangeOp, ComputerId, Object, ObjectId, ObjectKey, ObjectKind};
use cascade_store::Store;
use common::{node, record, setting};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    RootUpsert(u8, i64),
    RootDelete(u8),
    LocalUpsert(u8, i64),
    Ingest {
        source: u8,
        skip: u8,
        records: Vec<(u8, u8, u8, u64)>,
    },
    Ack(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<i64>()).prop_map(|(i, v)| Op::RootUpsert(i, v)),
        (0u8..5).prop_map(Op::RootDelete),
        (0u8..8, any::<i64>()).prop_map(|(i, v)| Op::LocalUpsert(i, v)),
        (
            0u8..3,
            0u8..3,
            prop::collection::vec((0u8..6, 0u8..4, 0u8..4, 0u64..6), 0..8)
        )
            .prop_map(|(source, skip, records)| Op::Ingest { source, skip, records }),
        (0u64..40).prop_map(Op::Ack),
    ]
}

const STATES: [&str; 4] = ["installed", "required", "not_applicable", "failed"];

fn state(i: u8) -> ComplianceState {
    match i {
        0 => ComplianceState::Installed,
        1 => ComplianceState::Required,
        2 => ComplianceState::NotApplicable,
        _ => ComplianceState::Failed { code: 5 },
    }
}

#[derive(Default, Debug)]
struct Model {
    /// id -> (origin, value)
    objects: BTreeMap<String, (String, i64)>,
    seq: BTreeMap<String, u64>,
    /// (computer, update) -> (state, counter)
    records: BTreeMap<(String, String), (u8, u64)>,
    marks: BTreeMap<u8, u64>,
    outbox_last: u64,
    outbox_acked: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let store = Store::temporary(node("site")).unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::RootUpsert(i, v) | Op::LocalUpsert(i, v) => {
                    let origin = if matches!(op, Op::RootUpsert(..)) { "root" } else { "site" };
                    let id = format!("s{i}");
                    let owned_by_other = m.objects.get(&id).is_some_and(|(o, _)| o != origin);
                    let object = setting(&id, serde_json::json!(v), false);
                    let result = if origin == "root" {
                        let seq = m.seq.get("root").copied().unwrap_or(0) + 1;
                        store.apply_change(&Change { origin: node("root"), seq, op: ChangeOp::Upsert(object).into(), seal: None }).map(|_| ())
                    } else {
                        store.append_local(ChangeOp::Upsert(object)).map(|_| ())
                    };
                    prop_assert_eq!(result.is_err(), owned_by_other, "{:?}", result);
                    if !owned_by_other {
                        *m.seq.entry(origin.to_owned()).or_default() += 1;
                        m.objects.insert(id, (origin.to_owned(), v));
                    }
                }
                Op::RootDelete(i) => {
                    let id = format!("s{i}");
                    let owned_by_other = m.objects.get(&id).is_some_and(|(o, _)| o != "root");
                    let seq = m.seq.get("root").copied().unwrap_or(0) + 1;
                    let key = ObjectKey { kind: ObjectKind::Setting, id: ObjectId::new(&id).unwrap() };
                    let result = store.apply_change(&Change { origin: node("root"), seq, op: ChangeOp::Delete(key).into(), seal: None });
                    prop_assert_eq!(result.is_err(), owned_by_other);
                    if !owned_by_other {
                        *m.seq.entry("root".to_owned()).or_default() += 1;
                        m.objects.remove(&id);
                    }
                }
                Op::Ingest { source, skip, records } => {
                    let mark = m.marks.get(&source).copied().unwrap_or(0);
                    // skip 0 repeats the last batch; more jumps ahead.
                    let seq = if skip == 0 { mark } else { mark + u64::from(skip) };
                    let batch: Vec<_> = records
                        .iter()
                        .map(|(c, u, s, counter)| record(&format!("pc-{c}"), &format!("KB{u}"), "site", state(*s), *counter))
                        .collect();
                    let out = store.ingest(&format!("src-{source}"), seq, &batch, true).unwrap();
                    if seq <= mark {
                        prop_assert!(out.duplicate);
                        continue;
                    }
                    m.marks.insert(source, seq);
                    let mut applied = 0;
                    for (c, u, s, counter) in records {
                        let key = (format!("pc-{c}"), format!("KB{}", u));
                        if m.records.get(&key).is_none_or(|(_, old)| *old < counter) {
                            m.records.insert(key, (s, counter));
                            applied += 1;
                        }
                    }
                    prop_assert_eq!(out.applied, applied);
                    if applied > 0 {
                        m.outbox_last += 1;
                    }
                }
                Op::Ack(n) => {
                    let result = store.outbox_ack(n);
                    prop_assert_eq!(result.is_err(), n > m.outbox_last && n > m.outbox_acked, "{:?}", result);
                    if result.is_ok() {
                        m.outbox_acked = m.outbox_acked.max(n);
                    }
                }
            }
            // Same answers.
            let objects: BTreeMap<String, (String, i64)> = store
                .objects(ObjectKind::Setting)
                .unwrap()
                .into_iter()
                .map(|o| match o.object.value() {
                    Object::Setting(s) => (s.id.to_string(), (o.origin.to_string(), s.value.as_i64().unwrap())),
                    _ => unreachable!(),
                })
                .collect();
            prop_assert_eq!(&objects, &m.objects);
            for (origin, seq) in &m.seq {
                prop_assert_eq!(store.applied_seq(&node(origin)).unwrap(), *seq);
            }
            let mut records = BTreeMap::new();
            for c in 0..6 {
                for r in store.by_computer(&ComputerId::new(&format!("pc-{c}")).unwrap()).unwrap() {
                    let s = STATES.iter().position(|n| *n == r.state.name()).unwrap() as u8;
                    records.insert((r.computer.to_string(), r.update.to_string()), (s, r.counter));
                }
            }
            prop_assert_eq!(&records, &m.records);
            for u in 0..4 {
                let update = UpdateId::new(&format!("KB{u}"));
                let counts = store.summary_for_update(&update).unwrap();
                for (s, name) in STATES.iter().enumerate() {
                    let expected = m.records.iter().filter(|((_, up), (st, _))| *up == update.as_str() && *st as usize == s).count() as u64;
                    prop_assert_eq!(counts.get(name), expected, "{} {}", update, name);
                }
            }
            let outbox = store.outbox_state().unwrap();
            prop_assert_eq!(outbox.last, m.outbox_last);
            prop_assert_eq!(outbox.pending, m.outbox_last.saturating_sub(m.outbox_acked.min(m.outbox_last)));
        }
    }
}
