//! Planner benchmark: a generated catalog of 100,000 updates over 200
//! products with supersedence chains, and 10,000 computers drawn from 500
//! distinct inventories.
//!
//! Goals: one inventory planned in under 1 ms (median), also with a
//! 300-entry software list to derive its products from; all 10,000 in
//! under 2 s on one core.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cascade_core::inventory::InstalledProduct;
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{Classification, Severity, Target};
use cascade_core::{Catalog, Inventory, Planner, Update, UpdateId, planner};
use criterion::{Criterion, criterion_group, criterion_main};

const PRODUCTS: usize = 200;
const OS_PRODUCTS: usize = 40;
const UPDATES_PER_PRODUCT: usize = 500;
const CHAIN: usize = 10;
const DISTINCT: usize = 500;
const COMPUTERS: usize = 10_000;
const APPS_PER_COMPUTER: usize = 8;

/// A small deterministic generator, so every run plans the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn kb(product: usize, n: usize) -> UpdateId {
    UpdateId::kb(1_000_000 + (product * UPDATES_PER_PRODUCT + n) as u64)
}

fn os_name(p: usize) -> String {
    format!("Bench OS {p}")
}

/// Application names a software list can show (the product map makes
/// "PowerShell 7.2" from an installed PowerShell 7.2.x).
fn app_name(p: usize) -> String {
    format!("PowerShell 7.{p}")
}

pub fn catalog() -> Catalog {
    let severities = [
        Severity::Low,
        Severity::Moderate,
        Severity::Important,
        Severity::Critical,
    ];
    let mut updates = Vec::with_capacity(PRODUCTS * UPDATES_PER_PRODUCT);
    for p in 0..PRODUCTS {
        for n in 0..UPDATES_PER_PRODUCT {
            let mut u = Update::new(
                kb(p, n),
                format!("update {n} for product {p}"),
                Classification::SecurityUpdate,
            );
            let severity = severities[(p + n) % severities.len()];
            u.severity = severity;
            let rule = if p < OS_PRODUCTS {
                Rule::and(vec![
                    Rule::fact("os.family", Cmp::Eq, "windows"),
                    Rule::fact("os.product", Cmp::Eq, os_name(p)),
                    Rule::fact("os.arch", Cmp::Eq, if n % 2 == 0 { "x64" } else { "x86" }),
                ])
            } else {
                // The update fixes version n of the application.
                Rule::Product {
                    name: app_name(p),
                    cmp: Some(Cmp::Lt),
                    version: Some(format!("1.{}", n + 1).parse().unwrap()),
                }
            };
            u.targets = vec![Target {
                product: format!("product {p}"),
                rule,
                severity,
                fixed_build: None,
            }];
            // Chains of CHAIN updates, each superseding the one before.
            if n % CHAIN != 0 {
                u.supersedes = vec![kb(p, n - 1)];
            }
            updates.push(u);
        }
    }
    Catalog::new(updates)
}

pub fn inventories() -> (Vec<Inventory>, Vec<Inventory>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let distinct: Vec<Inventory> = (0..DISTINCT)
        .map(|_| {
            let os = rng.below(OS_PRODUCTS);
            let mut inv = Inventory::windows(
                "10.0.19045".parse().unwrap(),
                false,
                Some(if rng.below(4) == 0 { "x86" } else { "x64" }),
            );
            inv.os.product = Some(os_name(os));
            let mut products = Vec::new();
            for _ in 0..APPS_PER_COMPUTER {
                let app = OS_PRODUCTS + rng.below(PRODUCTS - OS_PRODUCTS);
                let version = format!("1.{}", rng.below(UPDATES_PER_PRODUCT)).parse().ok();
                products.push(InstalledProduct {
                    name: app_name(app),
                    version,
                });
            }
            inv.products = Some(products);
            for _ in 0..40 {
                inv.installed_updates.insert(kb(os, rng.below(UPDATES_PER_PRODUCT)));
            }
            inv.normalize();
            inv
        })
        .collect();
    let computers = (0..COMPUTERS)
        .map(|c| {
            let mut inv = distinct[c % DISTINCT].clone();
            inv.computer = Some(format!("computer-{c}"));
            inv
        })
        .collect();
    (distinct, computers)
}

/// A software list of `n` entries as the Windows collector gives one: most
/// third-party programs the product map does not know, and the Microsoft
/// products it does (Click-to-Run Office, the .NET Framework, SQL Server,
/// Visual Studio, PowerShell).
fn software(rng: &mut Rng, n: usize) -> cascade_core::software::SoftwareList {
    use cascade_core::software::{Software, SoftwareList, SoftwareSource};
    let mut entries = vec![
        Software {
            name: "O365ProPlusRetail".into(),
            version: Some("16.0.15726.20202".into()),
            arch: Some("x64".into()),
            source: SoftwareSource::ClickToRun,
            ..Software::default()
        },
        Software {
            name: "Microsoft .NET Framework 4.8".into(),
            version: Some("4.8.04084".into()),
            source: SoftwareSource::DotnetFramework,
            ..Software::default()
        },
        Software {
            name: "Microsoft SQL Server 2019".into(),
            version: Some("15.0.4261.1".into()),
            source: SoftwareSource::SqlServer,
            ..Software::default()
        },
        Software {
            name: "Visual Studio Professional 2022".into(),
            version: Some("17.4.33122.133".into()),
            ..Software::default()
        },
        Software {
            name: "PowerShell 7-x64".into(),
            version: Some("7.2.7.0".into()),
            ..Software::default()
        },
    ];
    while entries.len() < n {
        let i = rng.below(5000);
        entries.push(Software {
            name: format!("Vendor {} Tool {i} (x64)", i % 97),
            version: Some(format!("{}.{}.{}", i % 13, i % 7, i)),
            publisher: Some(format!("Vendor {}", i % 97)),
            key: Some(format!("{{{i:08X}-0000-0000-0000-000000000000}}")),
            ..Software::default()
        });
    }
    SoftwareList {
        complete: true,
        entries,
    }
}

fn bench(c: &mut Criterion) {
    let catalog = Arc::new(catalog());
    let (distinct, computers) = inventories();
    let mut rng = Rng(0x5eed_50f7);
    let with_software: Vec<Inventory> = distinct
        .iter()
        .take(50)
        .map(|inv| {
            let mut inv = inv.clone();
            inv.software = Some(software(&mut rng, 300));
            inv.normalize();
            inv
        })
        .collect();
    let mut group = c.benchmark_group("planner");
    group.sample_size(20);
    let mut next = 0;
    group.bench_function("plan_one_inventory", |b| {
        b.iter(|| {
            next = (next + 1) % distinct.len();
            planner::plan(&catalog, &distinct[next])
        })
    });
    // As a node plans a computer that reported its inventory: its products
    // derived from the software list (the copy made before each run has
    // none yet), then the plan. The content hash is measured apart: a node
    // computes it once, when the inventory arrives.
    let mut next = 0;
    group.bench_function("plan_one_inventory_300_software_entries", |b| {
        b.iter_batched_ref(
            || {
                next = (next + 1) % with_software.len();
                let mut inv = with_software[next].clone();
                inv.normalize();
                inv
            },
            |inv| planner::plan(&catalog, inv),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("content_hash_300_software_entries", |b| {
        b.iter(|| {
            next = (next + 1) % with_software.len();
            with_software[next].content_hash()
        })
    });
    group.sample_size(10);
    group.bench_function("plan_10000_computers_500_distinct", |b| {
        b.iter(|| {
            let planner = Planner::new(catalog.clone());
            for inv in &computers {
                std::hint::black_box(planner.plan(inv));
            }
            assert_eq!(planner.distinct_evaluations(), DISTINCT);
        })
    });
    // The baseline: every computer evaluated on its own, without the
    // cache of distinct inventories (1,000 computers; scale by 10).
    group.bench_function("plan_1000_computers_without_dedup", |b| {
        b.iter(|| {
            for inv in computers.iter().take(1000) {
                std::hint::black_box(planner::plan(&catalog, inv));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
