//! Store benchmarks. Goals: durable ingest of compliance records in batches
//! of 1,000 at 100,000 records/s or more; an aggregate query over 100,000
//! computers and 1,000 updates in under 10 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::update::Severity;
use cascade_store::Store;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const COMPUTERS: u64 = 100_000;
const UPDATES: u64 = 1_000;
const PER_COMPUTER: u64 = 10;
const SITES: u64 = 50;

fn record(computer: u64, update: u64, counter: u64) -> ComplianceRecord {
    let states = [
        ComplianceState::Installed,
        ComplianceState::Required,
        ComplianceState::NotApplicable,
        ComplianceState::Failed { code: 1603 },
    ];
    let severities = [
        Severity::Critical,
        Severity::Important,
        Severity::Moderate,
        Severity::Low,
    ];
    ComplianceRecord {
        computer: ComputerId::new(&format!("computer-{computer:06}")).unwrap(),
        update: UpdateId::kb(5_000_000 + update),
        site: NodeId::new(&format!("site-{:02}", computer % SITES)).unwrap(),
        state: states[((computer + update + counter) % 4) as usize].clone(),
        severity: severities[(update % 4) as usize],
        counter,
        observed_at: 1_700_000_000,
        attestation: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ingest"), NodeId::new("bench").unwrap()).unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1000));
    // As a site forwards its agents' reports: each agent reports its
    // computer's updates together (20 computers x 50 updates), again and
    // again with a rising counter.
    let mut seq = 0u64;
    group.bench_function("ingest_1000_records_from_20_computers", |b| {
        b.iter(|| {
            seq += 1;
            let first = (seq * 20) % COMPUTERS;
            let batch: Vec<_> = (0..20)
                .flat_map(|c| (0..50).map(move |u| record((first + c) % COMPUTERS, u * 20, seq)))
                .collect();
            store.ingest("site-a", seq, &batch, true).unwrap()
        })
    });
    // The worst case: 1,000 different computers in one batch.
    let mut seq = 0u64;
    group.bench_function("ingest_1000_records_from_1000_computers", |b| {
        b.iter(|| {
            seq += 1;
            let batch: Vec<_> = (0..1000)
                .map(|i| record((seq * 1000 + i) % COMPUTERS, (seq + i) % UPDATES, seq))
                .collect();
            store.ingest("site-b", seq, &batch, true).unwrap()
        })
    });
    // The baseline: the same 1,000 records of 20 computers, one commit
    // (and flush) per record, as without batching.
    group.sample_size(10);
    let mut seq = 0u64;
    group.bench_function("ingest_1000_records_one_per_commit", |b| {
        b.iter(|| {
            for c in 0..20u64 {
                for u in 0..50u64 {
                    seq += 1;
                    let r = record((seq / 50 + c) % COMPUTERS, u * 20, seq);
                    store.ingest("site-c", seq, std::slice::from_ref(&r), true).unwrap();
                }
            }
        })
    });
    group.finish();

    // 100,000 computers, 10 records each, over 1,000 updates.
    let store = Store::open(&dir.path().join("aggregate"), NodeId::new("bench").unwrap()).unwrap();
    let mut seq = 0;
    for chunk in 0..(COMPUTERS / 1000) {
        seq += 1;
        let batch: Vec<_> = (chunk * 1000..(chunk + 1) * 1000)
            .flat_map(|computer| {
                (0..PER_COMPUTER).map(move |k| record(computer, (computer * 7 + k * 101) % UPDATES, 1))
            })
            .collect();
        store.ingest("agents", seq, &batch, false).unwrap();
    }
    let mut group = c.benchmark_group("store");
    group.sample_size(30);
    group.bench_function("summary_by_update_100k_computers_1000_updates", |b| {
        b.iter(|| {
            let summary = store.summary_by_update().unwrap();
            assert_eq!(summary.len() as u64, UPDATES);
            summary
        })
    });
    group.bench_function("summary_by_site_and_severity", |b| {
        b.iter(|| store.summary_by_site().unwrap())
    });
    group.bench_function("summary_for_one_update", |b| {
        b.iter(|| store.summary_for_update(&UpdateId::kb(5_000_001)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
