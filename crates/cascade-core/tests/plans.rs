//! Plans a Windows admin would sign, class by class, on the real December
//! 2022 MSRC document and real `systeminfo` outputs with software lists
//! made from real ones (tests/fixtures/software): the expected plans are
//! written out. Then the properties every plan keeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cascade_core::catalog::CatalogDiagnostic;
use cascade_core::planner::{self, Plan};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::software::SoftwareList;
use cascade_core::update::{Classification, Servicing, Severity, Target, Track};
use cascade_core::{Catalog, Inventory, Update, UpdateId};
use proptest::prelude::*;

fn software(name: &str) -> SoftwareList {
    serde_json::from_slice(&common::fixture(&format!("software/{name}.json"))).unwrap()
}

fn computer(systeminfo: &str, list: Option<&str>) -> Inventory {
    let mut inv = common::inventory(&format!("windows-inventory/{systeminfo}"));
    if let Some(list) = list {
        inv.software = Some(software(list));
        inv.normalize();
    }
    inv
}

fn required(plan: &Plan) -> Vec<&str> {
    plan.required.iter().map(|e| e.id.as_str()).collect()
}

fn lines(items: &[cascade_core::planner::PlanItem]) -> Vec<String> {
    items.iter().map(|i| format!("{} {}", i.id, i.reason)).collect()
}

/// Each row: a real computer, its software, the track, and the plan:
/// required in install order, and what is superseded with why.
#[test]
fn december_2022_on_real_computers() {
    let catalog = common::december_2022();
    type Row = (
        &'static str,
        Option<&'static str>,
        Track,
        &'static [&'static str],
        &'static [&'static str],
    );
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Windows 10 21H1 with the .NET Framework 4.8 it ships with: the
        // month's cumulative update and .NET's for 4.8 on 21H1.
        ("10_21H1_x64_enterprise_systeminfo.txt", Some("plain"), Track::Rollup,
         &["KB5021233", "KB5021087"], &[]),
        // With Visio 2016 (64-bit, as the OS): its security update as well.
        ("10_21H1_x64_enterprise_systeminfo.txt", Some("visio"), Track::Rollup,
         &["KB5021233", "KB5002286", "KB5021087"], &[]),
        // A Windows Server 2016 running SharePoint Server 2019.
        ("srv_2016_1607_datacenter_en-us_systeminfo.txt", Some("sharepoint"), Track::Rollup,
         &["KB5002311", "KB5021235", "KB5020873"], &[]),
        // Windows 7 SP1 with the .NET Framework 4.8 and 3.5.1: one track,
        // the month's rollups (OS and .NET) on the default one ...
        ("7_sp1_x64_enterprise_en-us_A_systeminfo.txt", Some("legacy-office"), Track::Rollup,
         &["KB5021291", "KB5021091"],
         &["KB5021079 superseded by KB5021091, which is offered instead",
           "KB5021288 superseded by KB5021291, which is offered instead"]),
        // ... the security-only updates where an admin asks for them.
        ("7_sp1_x64_enterprise_en-us_A_systeminfo.txt", Some("legacy-office"), Track::SecurityOnly,
         &["KB5021288", "KB5021079"], &[]),
        ("8.1_u1_x64_enterprise_en-us_systeminfo.txt", Some("legacy"), Track::Rollup,
         &["KB5021294", "KB5021093"],
         &["KB5021081 superseded by KB5021093, which is offered instead",
           "KB5021296 superseded by KB5021294, which is offered instead"]),
        ("8.1_u1_x64_enterprise_en-us_systeminfo.txt", Some("legacy"), Track::SecurityOnly,
         &["KB5021296", "KB5021081"], &[]),
        ("srv_2012r2_u1_systeminfo.txt", Some("server"), Track::Rollup,
         &["KB5021294", "KB5021093"],
         &["KB5021081 superseded by KB5021093, which is offered instead",
           "KB5021296 superseded by KB5021294, which is offered instead"]),
    ];
    for (systeminfo, list, track, want, superseded) in rows {
        let inv = computer(systeminfo, *list);
        let plan = planner::plan_on(&catalog, &inv, *track);
        let context = format!("{systeminfo} with {list:?} on {track:?}");
        assert_eq!(required(&plan), *want, "{context}");
        assert_eq!(lines(&plan.superseded), *superseded, "{context}");
        // A complete software list leaves nothing undecided.
        assert!(plan.unknown.is_empty(), "{context}: {:?}", plan.unknown);
    }
}

#[test]
fn what_the_software_list_decides_and_what_it_cannot() {
    let catalog = common::december_2022();
    let dotnet = UpdateId::new("KB5021087");
    let state = |inv: &Inventory| {
        let plan = planner::plan(&catalog, inv);
        if plan.required.iter().any(|e| e.id == dotnet) {
            "required".to_owned()
        } else if let Some(u) = plan.unknown.iter().find(|u| u.id == dotnet) {
            format!("unknown: {}", u.reason)
        } else {
            "not applicable".to_owned()
        }
    };
    // The .NET Framework 4.8 listed: required.
    assert_eq!(
        state(&computer("10_21H1_x64_enterprise_systeminfo.txt", Some("plain"))),
        "required"
    );
    // A complete list without it: not applicable.
    let mut without = computer("10_21H1_x64_enterprise_systeminfo.txt", Some("plain"));
    if let Some(list) = &mut without.software {
        list.entries.retain(|s| !s.name.contains(".NET"));
    }
    without.normalize();
    assert_eq!(state(&without), "not applicable");
    // The same list, not complete: unknown, and why.
    if let Some(list) = &mut without.software {
        list.complete = false;
    }
    without.normalize();
    assert_eq!(
        state(&without),
        "unknown: Microsoft .NET Framework 3.5 AND 4.8.1 is not listed, and the computer's software list is not complete"
    );
    // No software list at all: unknown, as before.
    assert!(
        state(&computer("10_21H1_x64_enterprise_systeminfo.txt", None))
            .starts_with("unknown: the inventory does not list installed software")
    );
}

#[test]
fn a_build_that_is_both_a_client_and_a_server_is_not_guessed() {
    let catalog = common::december_2022();
    let by_build = |version: &str| {
        common::windows(serde_json::json!({"os": {"family": "windows", "version": version, "arch": "x64"}}))
    };
    // 20348 is only ever Windows Server 2022.
    let server = by_build("10.0.20348.1366");
    assert_eq!(server.os.product.as_deref(), Some("Windows Server 2022"));
    // 17763 is Windows 10 1809 and Windows Server 2019: every update of
    // either is unknown, with the reason, and none is dropped.
    let both = by_build("10.0.17763.3770");
    assert_eq!(both.os.product, None);
    let plan = planner::plan(&catalog, &both);
    assert!(plan.required.is_empty(), "{:?}", plan.required);
    let os_unknown: Vec<&str> = plan
        .unknown
        .iter()
        .filter(|u| {
            u.reason
                .to_string()
                .contains("is both Windows 10 1809 and Windows Server 2019")
        })
        .map(|u| u.id.as_str())
        .collect();
    assert!(os_unknown.contains(&"KB5021237"), "{:?}", lines(&plan.unknown));
    // Said to be a server, it is Windows Server 2019.
    let mut stated = both.clone();
    stated.os.installation = Some(cascade_core::inventory::Installation::Server);
    stated.normalize();
    assert_eq!(stated.os.product.as_deref(), Some("Windows Server 2019"));
}

#[test]
fn inventories_merge_fact_by_fact() {
    let mut a = common::windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19044", "installation": "client"}
    }));
    let b = common::windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19044.2364", "arch": "AMD64", "installation": "client"}
    }));
    assert!(a.merge(b).is_empty());
    // The build with its revision and the stated architecture win.
    assert_eq!(
        a.os.version.as_ref().map(ToString::to_string).as_deref(),
        Some("10.0.19044.2364")
    );
    assert_eq!(a.os.arch.as_deref(), Some("x64"));
    // A real conflict is reported, and the first inventory's value kept.
    let c = common::windows(serde_json::json!({
        "os": {"family": "windows", "version": "10.0.19045.2364", "arch": "x86", "installation": "client"}
    }));
    let conflicts: Vec<String> = a.merge(c).iter().map(ToString::to_string).collect();
    assert_eq!(
        conflicts,
        [
            "os.version: the inventories disagree (\"10.0.19044.2364\" and \"10.0.19045.2364\"); kept \"10.0.19044.2364\", the first",
            "os.release: the inventories disagree (\"21H2\" and \"22H2\"); kept \"21H2\", the first",
            "os.arch: the inventories disagree (\"x64\" and \"x86\"); kept \"x64\", the first",
        ]
    );
    assert_eq!(a.os.release.as_deref(), Some("21H2"));
}

/// Windows 10 21H2 x64's cumulative updates of October and November 2022
/// as their own documents describe them (KB, fixed build, date; October's
/// fixed build printed as 22H2's, as MSRC sometimes does), without a word
/// on supersedence.
fn earlier_cumulative(id: &str, fixed: &str, date: &str) -> Update {
    let mut u = Update::new(
        UpdateId::new(id),
        format!("Security Update for Windows 10 Version 21H2 for x64-based Systems ({id})"),
        Classification::SecurityUpdate,
    );
    u.severity = Severity::Critical;
    u.servicing = Some(Servicing::Cumulative);
    u.release_date = Some(date.parse().unwrap());
    u.targets = vec![Target {
        product: "Windows 10 Version 21H2 for x64-based Systems".into(),
        rule: Rule::and(vec![
            Rule::fact("os.family", Cmp::Eq, "windows"),
            Rule::fact("os.product", Cmp::Eq, "Windows 10"),
            Rule::fact("os.release", Cmp::Eq, "21H2"),
            Rule::fact("os.arch", Cmp::Eq, "x64"),
        ]),
        severity: Severity::Critical,
        fixed_build: Some(fixed.parse().unwrap()),
    }];
    u
}

fn three_months() -> Vec<Update> {
    let mut all = common::updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    all.push(earlier_cumulative("KB5018410", "10.0.19045.2130", "2022-10-11"));
    let mut november = earlier_cumulative("KB5019959", "10.0.19044.2251", "2022-11-08");
    // Named again by a later document, dated with it.
    november.release_date = Some("2022-12-13".parse().unwrap());
    all.push(november);
    all
}

fn win10_21h2(version: &str, installed: &[&str]) -> Inventory {
    common::windows(serde_json::json!({
        "os": {"family": "windows", "version": version, "installation": "client", "arch": "x64"},
        "products": [],
        "installed_updates": installed,
    }))
}

#[test]
fn cumulative_updates_contain_the_older_ones_even_unsaid() {
    let catalog = Catalog::new(three_months());
    // What was derived, and why.
    let derived: Vec<String> = catalog
        .diagnostics()
        .iter()
        .filter(|d| matches!(d, CatalogDiagnostic::Contains { .. }))
        .map(ToString::to_string)
        .filter(|d| d.contains("Windows 10 Version 21H2 for x64"))
        .collect();
    assert_eq!(
        derived,
        [
            // October's fixed build names another OS build: the date places it.
            "KB5019959 contains KB5018410: both are cumulative updates for Windows 10 Version 21H2 for x64-based Systems, and it was released later (2022-12-13 after 2022-10-11)",
        ],
        "November to December is the vendor's own word and is not repeated"
    );
    let plan = planner::plan(&catalog, &win10_21h2("10.0.19044", &[]));
    assert_eq!(required(&plan), ["KB5021233"]);
    assert_eq!(
        lines(&plan.superseded),
        [
            "KB5018410 superseded by KB5021233, which is offered instead",
            "KB5019959 superseded by KB5021233, which is offered instead",
        ]
    );
    // At November's build, November is installed and October with it.
    let plan = planner::plan(&catalog, &win10_21h2("10.0.19044.2251", &[]));
    assert_eq!(required(&plan), ["KB5021233"]);
    assert_eq!(
        lines(&plan.installed),
        ["KB5019959 OS build 10.0.19044.2251 is at or past the fixed build 10.0.19044.2251"]
    );
    assert_eq!(
        lines(&plan.superseded),
        ["KB5018410 superseded by KB5019959, which is installed"]
    );
    // December listed as installed (the build without its revision, as
    // systeminfo says it): the build is December's, everything is installed.
    let plan = planner::plan(&catalog, &win10_21h2("10.0.19044", &["KB5021233"]));
    assert!(plan.required.is_empty());
    assert_eq!(
        lines(&plan.installed),
        [
            "KB5019959 OS build 10.0.19044.2364 (with KB5021233 installed) is at or past the fixed build 10.0.19044.2251",
            "KB5021233 listed as installed on the computer",
        ]
    );
}

/// Hotpatches of Windows Server 2022 Datacenter: Azure Edition, in the
/// shape MSRC documents them: a quarter's baseline cumulative update in
/// January, a hotpatch in February beside that month's cumulative update for
/// computers not enrolled. (Ids made for the test.)
fn hotpatch_quarter() -> Vec<Update> {
    let update = |id: &str, fixed: &str, date: &str, hotpatch: bool| {
        let mut u = Update::new(UpdateId::new(id), id, Classification::SecurityUpdate);
        u.servicing = Some(Servicing::Cumulative);
        u.hotpatch = hotpatch;
        u.release_date = Some(date.parse().unwrap());
        u.restart = if hotpatch {
            cascade_core::RestartBehavior::Never
        } else {
            cascade_core::RestartBehavior::Always
        };
        u.targets = vec![Target {
            product: "Windows Server 2022 Datacenter: Azure Edition".into(),
            rule: Rule::and(vec![
                Rule::fact("os.family", Cmp::Eq, "windows"),
                Rule::fact("os.product", Cmp::Eq, "Windows Server 2022"),
            ]),
            severity: Severity::Critical,
            fixed_build: Some(fixed.parse().unwrap()),
        }];
        u
    };
    vec![
        update("KB9000101", "10.0.20348.2227", "2024-01-09", false),
        update("KB9000102", "10.0.20348.2322", "2024-02-13", false),
        update("KB9000202", "10.0.20348.2294", "2024-02-13", true),
    ]
}

#[test]
fn a_hotpatch_goes_on_its_baseline() {
    let catalog = Catalog::new(hotpatch_quarter());
    let server = |version: &str, enrolled: bool| {
        let mut inv = common::windows(serde_json::json!({
            "os": {"family": "windows", "version": version, "installation": "server", "arch": "x64"},
            "products": [],
        }));
        inv.hotpatch_enrolled = enrolled;
        inv
    };
    // Enrolled and on the baseline: the hotpatch, no restart; February's
    // cumulative update is not offered as well.
    let plan = planner::plan(&catalog, &server("10.0.20348.2227", true));
    assert_eq!(required(&plan), ["KB9000202"]);
    assert_eq!(
        lines(&plan.superseded),
        ["KB9000102 superseded by KB9000202, which is offered instead"]
    );
    // Enrolled but below the baseline: the cumulative update only.
    let plan = planner::plan(&catalog, &server("10.0.20348.2113", true));
    assert_eq!(required(&plan), ["KB9000102"]);
    assert_eq!(
        lines(&plan.superseded),
        ["KB9000101 superseded by KB9000102, which is offered instead"]
    );
    // Not enrolled: the cumulative update, never the hotpatch.
    let plan = planner::plan(&catalog, &server("10.0.20348.2227", false));
    assert_eq!(required(&plan), ["KB9000102"]);
}

/// Every update that supersedes `id` in the catalog, directly or not.
fn contains(catalog: &Catalog, newer: &UpdateId, older: &UpdateId) -> bool {
    catalog.superseders_of(older).iter().any(|u| u.id == *newer)
}

fn inventories() -> Vec<(Inventory, Track)> {
    let mut out = Vec::new();
    for (systeminfo, lists) in [
        (
            "10_21H1_x64_enterprise_systeminfo.txt",
            &["plain", "visio", "developer"][..],
        ),
        ("11_21H2_x64_enterprise_systeminfo.txt", &["office", "plain"][..]),
        (
            "srv_2016_1607_datacenter_en-us_systeminfo.txt",
            &["sharepoint", "sql-server"][..],
        ),
        ("7_sp1_x64_enterprise_en-us_A_systeminfo.txt", &["legacy-office"][..]),
        ("8.1_u1_x64_enterprise_en-us_systeminfo.txt", &["legacy"][..]),
        ("srv_2012r2_u1_systeminfo.txt", &["server"][..]),
    ] {
        for list in lists {
            for track in [Track::Rollup, Track::SecurityOnly] {
                out.push((computer(systeminfo, Some(list)), track));
            }
        }
    }
    out.push((win10_21h2("10.0.19044", &[]), Track::Rollup));
    out.push((win10_21h2("10.0.19044.2251", &["KB5018410"]), Track::Rollup));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever part of the catalog is approved, in whatever order, a plan
    /// never offers two updates one of which contains the other.
    #[test]
    fn a_plan_never_holds_an_update_and_one_that_contains_it(
        keep in proptest::collection::vec(any::<bool>(), 60),
        seed in any::<u64>(),
        which in 0usize..100,
    ) {
        let mut all: Vec<Update> = three_months()
            .into_iter()
            .zip(keep.iter().cycle())
            .filter(|(_, k)| **k)
            .map(|(u, _)| u)
            .collect();
        // A shuffled order: what the catalog derives must not depend on it.
        let n = all.len();
        if n > 1 {
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                all.swap(i, (s >> 33) as usize % (i + 1));
            }
        }
        let catalog = Catalog::new(all);
        let cases = inventories();
        let (inv, track) = &cases[which % cases.len()];
        let plan = planner::plan_on(&catalog, inv, *track);
        for a in &plan.required {
            for b in &plan.required {
                prop_assert!(
                    a.id == b.id || !contains(&catalog, &a.id, &b.id),
                    "{} and {} are both offered, and the first contains the second", a.id, b.id
                );
            }
        }
    }

    /// Adding an update that another one of the catalog contains never
    /// changes what a computer is offered.
    #[test]
    fn adding_a_contained_update_changes_no_plan(which in 0usize..100, older in 0usize..2) {
        let base: Vec<Update> = common::updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml");
        let contained = [
            earlier_cumulative("KB5018410", "10.0.19044.2130", "2022-10-11"),
            earlier_cumulative("KB5019959", "10.0.19044.2251", "2022-11-08"),
        ][older].clone();
        let before = Catalog::new(base.clone());
        let mut with = base;
        with.push(contained.clone());
        let after = Catalog::new(with);
        prop_assert!(after.is_superseded(&contained.id));
        let cases = inventories();
        let (inv, track) = &cases[which % cases.len()];
        let a = planner::plan_on(&before, inv, *track);
        let b = planner::plan_on(&after, inv, *track);
        prop_assert_eq!(required(&a), required(&b));
    }
}
