//! Property tests of the planner's supersedence invariants over random
//! catalogs, cycles included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};

use cascade_core::planner;
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{Classification, Severity, Target};
use cascade_core::{Catalog, Inventory, Update, UpdateId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    /// Per update: applies to the computer, listed as installed, what it supersedes.
    updates: Vec<(bool, bool, Vec<usize>)>,
    order: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..24).prop_flat_map(|n| {
        let update = (
            any::<bool>(),
            prop::bool::weighted(0.2),
            prop::collection::vec(0..n, 0..3),
        );
        (
            prop::collection::vec(update, n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(|(updates, order)| Case { updates, order })
    })
}

fn id(n: usize) -> UpdateId {
    UpdateId::kb(1000 + n as u64)
}

fn build(case: &Case, order: &[usize]) -> (Catalog, Inventory) {
    let updates = order.iter().map(|&n| {
        let (applies, _, supersedes) = &case.updates[n];
        let mut u = Update::new(id(n), format!("update {n}"), Classification::SecurityUpdate);
        u.severity = Severity::Important;
        u.targets = vec![Target {
            product: "Windows 10".into(),
            rule: Rule::fact("os.release", Cmp::Eq, if *applies { "21H2" } else { "22H2" }),
            severity: Severity::Important,
            fixed_build: None,
        }];
        u.supersedes = supersedes.iter().filter(|&&s| s != n).map(|&s| id(s)).collect();
        u
    });
    let catalog = Catalog::new(updates.collect::<Vec<_>>());
    let mut inv = Inventory::windows("10.0.19044".parse().unwrap(), false, Some("x64"));
    inv.products = Some(Vec::new());
    inv.installed_updates = case
        .updates
        .iter()
        .enumerate()
        .filter(|(_, u)| u.1)
        .map(|(n, _)| id(n))
        .collect();
    (catalog, inv)
}

/// Transitive superseders of every update, ignoring edges inside cycles, the
/// way the catalog reports cycles.
fn superseders(case: &Case) -> HashMap<usize, BTreeSet<usize>> {
    let n = case.updates.len();
    let mut direct: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (newer, (_, _, olds)) in case.updates.iter().enumerate() {
        for &old in olds.iter().filter(|&&o| o != newer) {
            direct[old].insert(newer);
        }
    }
    let reach = |start: usize| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(x) = stack.pop() {
            for &s in &direct[x] {
                if seen.insert(s) {
                    stack.push(s);
                }
            }
        }
        seen
    };
    let all: Vec<BTreeSet<usize>> = (0..n).map(reach).collect();
    (0..n)
        .map(|x| (x, all[x].iter().copied().filter(|&s| !all[s].contains(&x)).collect()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn supersedence_invariants(case in case()) {
        let identity: Vec<usize> = (0..case.updates.len()).collect();
        let (catalog, inv) = build(&case, &identity);
        let plan = planner::plan(&catalog, &inv);
        let required: BTreeSet<UpdateId> = plan.required.iter().map(|e| e.id.clone()).collect();
        let installed: BTreeSet<UpdateId> = inv.installed_updates.clone();
        let above = superseders(&case);
        for (n, (applies, listed, _)) in case.updates.iter().enumerate() {
            let me = id(n);
            if required.contains(&me) {
                // Never offer an update whose superseder is offered or installed.
                for s in &above[&n] {
                    prop_assert!(!required.contains(&id(*s)), "{me} offered with its superseder {}", id(*s));
                    prop_assert!(!installed.contains(&id(*s)), "{me} offered though {} is installed", id(*s));
                }
                prop_assert!(*applies && !*listed);
            }
            // An applicable update that is not installed is either offered or
            // covered by a superseder that is offered or installed.
            if *applies && !*listed && !required.contains(&me) {
                prop_assert!(above[&n].iter().any(|s| required.contains(&id(*s)) || installed.contains(&id(*s))),
                    "{me} applies, is missing, and nothing covers it");
            }
        }
        // Every update is accounted for exactly once.
        let listed = plan.required.len() + plan.installed.len() + plan.superseded.len() + plan.unknown.len();
        prop_assert_eq!(listed + plan.not_applicable, catalog.len());
    }

    #[test]
    fn plan_does_not_depend_on_catalog_order(case in case()) {
        let identity: Vec<usize> = (0..case.updates.len()).collect();
        let (a, inv) = build(&case, &identity);
        let (b, _) = build(&case, &case.order);
        prop_assert_eq!(planner::plan(&a, &inv), planner::plan(&b, &inv));
    }
}
