//! The planner on real catalogs and on small catalogs written out here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cascade_core::planner::{self, Plan};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::update::{Classification, Prerequisite, RestartBehavior, Severity, Target};
use cascade_core::{Catalog, Inventory, Planner, Update, UpdateId};
use common::{updates, windows};

fn ids<T>(items: &[T], id: impl Fn(&T) -> &UpdateId) -> Vec<&str> {
    items.iter().map(|i| id(i).as_str()).collect()
}

fn required(plan: &Plan) -> Vec<&str> {
    ids(&plan.required, |e| &e.id)
}

fn win10_21h2(installed: &[&str], version: &str) -> Inventory {
    windows(serde_json::json!({
        "os": {"family": "windows", "version": version, "installation": "client", "arch": "x64"},
        "products": [],
        "installed_updates": installed,
    }))
}

/// KB5019959, the November 2022 cumulative update for Windows 10 21H2, as
/// the November document would have it; December's KB5021233 supersedes it.
fn november_cu() -> Update {
    let mut u = Update::new(
        UpdateId::new("KB5019959"),
        "2022-Nov Security Update for Windows 10 Version 21H2 for x64-based Systems (KB5019959)",
        Classification::SecurityUpdate,
    );
    u.severity = Severity::Critical;
    u.targets = vec![Target {
        product: "Windows 10 Version 21H2 for x64-based Systems".into(),
        rule: Rule::and(vec![
            Rule::fact("os.family", Cmp::Eq, "windows"),
            Rule::fact("os.product", Cmp::Eq, "Windows 10"),
            Rule::fact("os.release", Cmp::Eq, "21H2"),
            Rule::fact("os.arch", Cmp::Eq, "x64"),
        ]),
        severity: Severity::Critical,
        fixed_build: Some("10.0.19044.2251".parse().unwrap()),
    }];
    u
}

#[test]
fn december_2022_on_windows_10_21h2() {
    let plan = planner::plan(&common::december_2022(), &win10_21h2(&[], "10.0.19044"));
    assert_eq!(required(&plan), ["KB5021233"]);
    let entry = &plan.required[0];
    assert_eq!((entry.severity, entry.restart), (Severity::Critical, "yes"));
    assert_eq!(
        entry.reason.to_string(),
        "applies to Windows 10 Version 21H2 for x64-based Systems; not installed"
    );
    assert!(plan.unknown.is_empty(), "{:?}", plan.unknown);
    assert_eq!(plan.not_applicable, 53);
}

#[test]
fn superseded_cumulative_update_is_not_offered() {
    // Whichever document comes first, KB5019959 is superseded by KB5021233.
    for newer_first in [true, false] {
        let mut all = updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
        if newer_first {
            all.push(november_cu())
        } else {
            all.insert(0, november_cu())
        }
        let catalog = Catalog::new(all);
        let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044"));
        assert_eq!(required(&plan), ["KB5021233"]);
        assert_eq!(ids(&plan.superseded, |i| &i.id), ["KB5019959"]);
        assert_eq!(
            plan.superseded[0].reason.to_string(),
            "superseded by KB5021233, which is offered instead"
        );
    }
}

#[test]
fn installed_superseder_satisfies_the_old_update() {
    let mut all = updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    all.push(november_cu());
    let catalog = Catalog::new(all);
    let plan = planner::plan(&catalog, &win10_21h2(&["KB5021233"], "10.0.19044"));
    assert_eq!(required(&plan), Vec::<&str>::new());
    // The installed cumulative update brings the computer to its fixed
    // build, at which November's is installed too.
    assert_eq!(ids(&plan.installed, |i| &i.id), ["KB5019959", "KB5021233"]);
    assert_eq!(
        plan.installed[0].reason.to_string(),
        "OS build 10.0.19044.2364 (with KB5021233 installed) is at or past the fixed build 10.0.19044.2251"
    );
    // Without a fixed build to go by, the superseder being installed decides.
    let mut no_build = november_cu();
    no_build.targets[0].fixed_build = None;
    let mut all = updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    all.push(no_build);
    let plan = planner::plan(&Catalog::new(all), &win10_21h2(&["KB5021233"], "10.0.19044"));
    assert_eq!(
        plan.superseded[0].reason.to_string(),
        "superseded by KB5021233, which is installed"
    );
    // A computer at December's build has it, listed or not.
    let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044.2364"));
    assert_eq!(required(&plan), Vec::<&str>::new());
    let december = plan
        .installed
        .iter()
        .find(|i| i.id.as_str() == "KB5021233")
        .expect("KB5021233 installed");
    assert_eq!(
        december.reason.to_string(),
        "OS build 10.0.19044.2364 is at or past the fixed build 10.0.19044.2364"
    );
    // November's build has November's update and still needs December's.
    let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044.2251"));
    assert_eq!(required(&plan), ["KB5021233"]);
    assert_eq!(ids(&plan.installed, |i| &i.id), ["KB5019959"]);
}

#[test]
fn old_kb_named_again_by_an_older_document_stays_superseded() {
    // December names KB5019959 only as superseded; a November document
    // imported afterwards describes it without saying what supersedes it.
    let mut all = updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    let mut older = november_cu();
    older.superseded_by.clear();
    all.push(older);
    let catalog = Catalog::new(all);
    assert!(catalog.is_superseded(&UpdateId::new("KB5019959")));
    let superseders: Vec<&str> = catalog
        .superseders_of(&UpdateId::new("KB5019959"))
        .iter()
        .map(|u| u.id.as_str())
        .collect();
    assert_eq!(superseders, ["KB5021233"]);
}

#[test]
fn systeminfo_of_a_real_windows_7_machine() {
    let catalog = common::december_2022();
    let inv = common::inventory("windows-inventory/7_sp1_x64_enterprise_fr_systeminfo_cmd.txt");
    let plan = planner::plan(&catalog, &inv);
    // Both the security-only update and the monthly rollup apply; CVRF does
    // not say that one contains the other, the month does: on the default
    // track the rollup is offered and the security-only update is not.
    assert_eq!(required(&plan), ["KB5021291"]);
    let superseded: Vec<String> = plan
        .superseded
        .iter()
        .map(|i| format!("{} {}", i.id, i.reason))
        .collect();
    assert_eq!(
        superseded,
        ["KB5021288 superseded by KB5021291, which is offered instead"]
    );
    // On the security-only track, the security-only update and no rollup.
    let plan_so = planner::plan_on(&catalog, &inv, cascade_core::update::Track::SecurityOnly);
    assert_eq!(required(&plan_so), ["KB5021288"]);
    assert!(plan_so.superseded.is_empty(), "{:?}", plan_so.superseded);
    // The computer's software is unknown: application updates are unknown, with why.
    assert!(
        plan.unknown
            .iter()
            .all(|u| u.reason.to_string().contains("does not list installed software")),
        "{:?}",
        plan.unknown
    );
    assert!(!plan.unknown.is_empty());
}

fn win11_arm64() -> Inventory {
    windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.22621", "installation": "client", "arch": "ARM64"},
        "products": [],
    }))
}

fn update_catalog(filter: impl Fn(&Update) -> bool) -> Catalog {
    Catalog::new(
        common::update_catalog_updates()
            .into_iter()
            .filter(|u| filter(u))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn update_catalog_cumulative_chain() {
    let plan = planner::plan(&update_catalog(|_| true), &win11_arm64());
    assert_eq!(required(&plan), ["KB5026446"]);
    assert_eq!(
        ids(&plan.superseded, |i| &i.id),
        ["KB5025239", "KB5025305", "KB5026372"]
    );
    // Approving security updates only: the newest security update is offered.
    let plan = planner::plan(
        &update_catalog(|u| u.classification == Classification::SecurityUpdate),
        &win11_arm64(),
    );
    assert_eq!(required(&plan), ["KB5026372"]);
    assert_eq!(ids(&plan.superseded, |i| &i.id), ["KB5025239"]);
    assert_eq!(plan.required[0].restart, "maybe");
}

fn simple(id: &str, classification: Classification, severity: Severity) -> Update {
    let mut u = Update::new(UpdateId::new(id), id, classification);
    u.severity = severity;
    u.restart = RestartBehavior::Never;
    u.targets = vec![Target {
        product: "Windows 10".into(),
        rule: Rule::fact("os.product", Cmp::Eq, "Windows 10"),
        severity,
        fixed_build: None,
    }];
    u
}

#[test]
fn install_order() {
    let sp = simple("SP1", Classification::ServicePack, Severity::Important);
    let ssu = simple("KB100", Classification::CriticalUpdate, Severity::Moderate);
    let mut cu = simple("KB200", Classification::SecurityUpdate, Severity::Critical);
    cu.prerequisites = vec![Prerequisite {
        all_of: vec![UpdateId::new("KB100")],
        ..Prerequisite::default()
    }];
    let low = simple("KB300", Classification::Update, Severity::Low);
    let important = simple("KB400", Classification::SecurityUpdate, Severity::Important);
    let catalog = Catalog::new(vec![low, cu, important, ssu, sp]);
    let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044"));
    // Service pack first; the servicing stack before the update that needs
    // it even though it is less severe; then by severity.
    assert_eq!(required(&plan), ["SP1", "KB100", "KB200", "KB400", "KB300"]);
    assert_eq!(ids(&plan.required[2].after, |i| i), ["KB100"]);
}

#[test]
fn prerequisites_that_cannot_be_met() {
    let mut needs_missing = simple("KB1", Classification::SecurityUpdate, Severity::Critical);
    needs_missing.prerequisites = vec![Prerequisite {
        all_of: vec![UpdateId::new("KB999")],
        ..Prerequisite::default()
    }];
    let mut other_os = simple("KB2", Classification::Update, Severity::Low);
    other_os.targets[0].rule = Rule::fact("os.product", Cmp::Eq, "Windows 11");
    let mut needs_other_os = simple("KB3", Classification::SecurityUpdate, Severity::Critical);
    needs_other_os.prerequisites = vec![Prerequisite {
        any_of: vec![UpdateId::new("KB2"), UpdateId::new("KB999")],
        ..Prerequisite::default()
    }];
    let mut chained = simple("KB4", Classification::SecurityUpdate, Severity::Critical);
    chained.prerequisites = vec![Prerequisite {
        all_of: vec![UpdateId::new("KB3")],
        ..Prerequisite::default()
    }];
    let mut needs_only_other_os = simple("KB7", Classification::SecurityUpdate, Severity::Critical);
    needs_only_other_os.prerequisites = vec![Prerequisite {
        all_of: vec![UpdateId::new("KB2")],
        ..Prerequisite::default()
    }];
    let catalog = Catalog::new(vec![
        needs_missing,
        other_os,
        needs_other_os,
        chained,
        needs_only_other_os,
    ]);
    let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044"));
    assert_eq!(required(&plan), Vec::<&str>::new());
    // Unknown spreads to what depends on it.
    assert_eq!(ids(&plan.unknown, |i| &i.id), ["KB1", "KB3", "KB4"]);
    assert_eq!(
        plan.unknown[0].reason.to_string(),
        "prerequisite KB999 is not in the catalog"
    );
    assert_eq!(
        plan.not_applicable, 2,
        "KB2 for another OS, KB7 whose prerequisite never applies here"
    );
    // Once the missing prerequisite is on the computer, KB1 is required.
    let plan = planner::plan(&catalog, &win10_21h2(&["KB999"], "10.0.19044"));
    assert_eq!(required(&plan), ["KB1", "KB3", "KB4"]);
}

#[test]
fn hotpatches_only_for_enrolled_computers() {
    let mut hot = simple("KB5", Classification::SecurityUpdate, Severity::Important);
    hot.hotpatch = true;
    let catalog = Catalog::new(vec![hot]);
    let mut inv = win10_21h2(&[], "10.0.19044");
    assert_eq!(required(&planner::plan(&catalog, &inv)), Vec::<&str>::new());
    inv.hotpatch_enrolled = true;
    assert_eq!(required(&planner::plan(&catalog, &inv)), ["KB5"]);
}

#[test]
fn bundles_install_their_children() {
    let child_a = simple(
        "a0000000-0000-0000-0000-000000000001",
        Classification::DefinitionUpdate,
        Severity::Unspecified,
    );
    let mut child_b = simple(
        "a0000000-0000-0000-0000-000000000002",
        Classification::DefinitionUpdate,
        Severity::Unspecified,
    );
    child_b.targets[0].rule = Rule::Never;
    let mut bundle = Update::new(
        UpdateId::new("b0000000-0000-0000-0000-000000000000"),
        "bundle",
        Classification::DefinitionUpdate,
    );
    bundle.bundled = vec![child_a.id.clone(), child_b.id.clone()];
    let catalog = Catalog::new(vec![bundle, child_a, child_b]);
    let plan = planner::plan(&catalog, &win10_21h2(&[], "10.0.19044"));
    assert_eq!(required(&plan), ["b0000000-0000-0000-0000-000000000000"]);
    assert_eq!(
        ids(&plan.required[0].bundled, |i| i),
        ["a0000000-0000-0000-0000-000000000001"]
    );
}

#[test]
fn each_distinct_inventory_is_evaluated_once() {
    let planner = Planner::new(Arc::new(common::december_2022()));
    let mut a = win10_21h2(&[], "10.0.19044");
    a.computer = Some("A".into());
    let mut b = a.clone();
    b.computer = Some("B".into());
    let c = win10_21h2(&["KB5021233"], "10.0.19044");
    let plans: Vec<_> = [&a, &b, &c].iter().map(|i| planner.plan(i)).collect();
    assert!(Arc::ptr_eq(&plans[0], &plans[1]));
    assert_eq!(planner.distinct_evaluations(), 2);
    assert_eq!(required(&plans[2]), Vec::<&str>::new());
}

#[test]
fn unknown_says_why() {
    // A rule over a fact the inventory lacks is unknown, never a silent no.
    let mut u = simple("KB6", Classification::Update, Severity::Low);
    u.applicable_when = Some(Rule::fact("device:OSSkuId", Cmp::Eq, "4"));
    let plan = planner::plan(&Catalog::new(vec![u]), &win10_21h2(&[], "10.0.19044"));
    assert_eq!(ids(&plan.unknown, |i| &i.id), ["KB6"]);
    assert_eq!(
        plan.unknown[0].reason.to_string(),
        "the inventory has no fact device:OSSkuId"
    );
}
