//! What vendors' documents imply but do not always say: a cumulative
//! update contains the older ones of its product, a monthly rollup contains
//! the month's security-only update, every earlier rollup and security-only
//! update and the month's Internet Explorer cumulative update, and a
//! hotpatch sits on its baseline cumulative update.
//!
//! Derived from the data alone: the product a target names, the update's
//! servicing kind, the fixed build of the same OS build (a later revision
//! is newer), and release dates where fixed builds cannot tell (missing,
//! or printed for another build). Every relation derived here that the
//! vendor did not state is reported with why.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;

use crate::diagnostic::CatalogDiagnostic;
use crate::update::{Servicing, Update};
use crate::version::Version;

/// What the derivation adds to a catalog.
#[derive(Debug, Default)]
pub(crate) struct Derived {
    pub diagnostics: Vec<CatalogDiagnostic>,
    /// The baseline cumulative update of each hotpatch, where the catalog has one.
    pub baselines: HashMap<u32, u32>,
}

#[derive(Clone, Debug)]
struct Member {
    index: u32,
    fixed: Option<Version>,
    date: Option<Date>,
    internet_explorer: bool,
}

fn month(date: Option<Date>) -> Option<(i16, i8)> {
    date.map(|d| (d.year(), d.month()))
}

/// Adds the relations to `superseded_by` (direct superseders by index).
pub(crate) fn derive(updates: &[Update], superseded_by: &mut [Vec<u32>]) -> Derived {
    let mut groups: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    // The product as the vendor writes it, for the reasons given.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for (i, u) in updates.iter().enumerate() {
        if u.servicing.is_none() {
            continue;
        }
        let internet_explorer = u.title.contains("Internet Explorer") || u.product.contains("Internet Explorer");
        let mut keys: Vec<String> = Vec::new();
        for t in &u.targets {
            // Internet Explorer's updates belong with the OS they are for.
            let product = match t.product.rsplit_once(" on ") {
                Some((app, os)) if internet_explorer || app.contains("Internet Explorer") => os,
                _ => t.product.as_str(),
            };
            let key = product.trim().to_ascii_lowercase();
            if keys.contains(&key) {
                continue;
            }
            keys.push(key.clone());
            shown.entry(key.clone()).or_insert_with(|| product.trim().to_owned());
            groups.entry(key).or_default().push(Member {
                index: i as u32,
                fixed: t.fixed_build.clone().filter(|v| v.len() >= 4),
                date: u.release_date,
                internet_explorer,
            });
        }
    }
    let mut derived = Derived::default();
    let mut add = |older: u32, newer: u32, why: String, diagnostics: &mut Vec<CatalogDiagnostic>| {
        if older == newer || superseded_by[older as usize].contains(&newer) {
            return;
        }
        let (o, n) = (&updates[older as usize], &updates[newer as usize]);
        if superseded_by[newer as usize].contains(&older) {
            diagnostics.push(CatalogDiagnostic::ContainmentConflict {
                newer: n.id.clone(),
                older: o.id.clone(),
                why,
            });
            return;
        }
        superseded_by[older as usize].push(newer);
        diagnostics.push(CatalogDiagnostic::Contains {
            newer: n.id.clone(),
            older: o.id.clone(),
            why,
        });
    };
    for (key, members) in &groups {
        let product = shown.get(key).map_or(key.as_str(), String::as_str);
        let kind = |m: &Member| updates[m.index as usize].servicing;
        let hotpatch = |m: &Member| updates[m.index as usize].hotpatch;
        let cumulative: Vec<Member> = members
            .iter()
            .filter(|m| kind(m) == Some(Servicing::Cumulative) && !hotpatch(m))
            .cloned()
            .collect();
        let hotpatches: Vec<Member> = members.iter().filter(|m| hotpatch(m)).cloned().collect();
        let mut rollups: Vec<&Member> = members
            .iter()
            .filter(|m| kind(m) == Some(Servicing::MonthlyRollup))
            .collect();
        rollups.sort_by_key(|m| (m.date, updates[m.index as usize].id.clone()));
        let security_only: Vec<&Member> = members
            .iter()
            .filter(|m| kind(m) == Some(Servicing::SecurityOnly))
            .collect();

        // Cumulative updates (Internet Explorer's apart where rollups hold them).
        let (ie, os): (Vec<Member>, Vec<Member>) = cumulative.into_iter().partition(|m| m.internet_explorer);
        for chain in [os.clone(), ie.clone()] {
            let ordered = order(chain, updates);
            for pair in ordered.windows(2) {
                let (older, newer) = (&pair[0], &pair[1]);
                add(
                    older.index,
                    newer.index,
                    format!(
                        "both are cumulative updates for {product}, and {}",
                        newer_because(older, newer)
                    ),
                    &mut derived.diagnostics,
                );
            }
        }

        // Monthly rollups: one chain, and each holds the security-only and
        // Internet Explorer updates of its month and before.
        for pair in rollups.windows(2) {
            add(
                pair[0].index,
                pair[1].index,
                format!(
                    "both are monthly rollups for {product}, and {}",
                    newer_because(pair[0], pair[1])
                ),
                &mut derived.diagnostics,
            );
        }
        for m in security_only.iter().copied().chain(ie.iter()) {
            let Some(at) = month(m.date) else { continue };
            if let Some(r) = rollups.iter().find(|r| month(r.date).is_some_and(|rm| rm >= at)) {
                let what = if m.internet_explorer {
                    "the Internet Explorer cumulative update"
                } else {
                    "the security-only update"
                };
                add(
                    m.index,
                    r.index,
                    format!(
                        "the monthly rollup for {product} of {} contains {what} of {} and every earlier one",
                        show_month(r.date),
                        show_month(m.date)
                    ),
                    &mut derived.diagnostics,
                );
            }
        }

        // Hotpatches: a month with a hotpatch has a cumulative update for
        // computers not enrolled (the hotpatch stands in for it on enrolled
        // ones); the baseline is the last cumulative update of a month
        // without a hotpatch; the next cumulative update contains the hotpatch.
        if hotpatches.is_empty() {
            continue;
        }
        let hot_months: Vec<(i16, i8)> = hotpatches.iter().filter_map(|h| month(h.date)).collect();
        let ordered_hot = order(hotpatches.clone(), updates);
        for pair in ordered_hot.windows(2) {
            add(
                pair[0].index,
                pair[1].index,
                format!(
                    "both are hotpatches for {product}, and {}",
                    newer_because(&pair[0], &pair[1])
                ),
                &mut derived.diagnostics,
            );
        }
        for h in &hotpatches {
            let Some(hm) = month(h.date) else { continue };
            let mut baseline: Option<&Member> = None;
            for c in &os {
                match month(c.date) {
                    Some(cm)
                        if cm < hm
                            && !hot_months.contains(&cm)
                            && baseline.is_none_or(|b| month(b.date) < Some(cm)) =>
                    {
                        baseline = Some(c);
                    }
                    Some(cm) if cm == hm => add(
                        c.index,
                        h.index,
                        format!(
                            "on computers enrolled in hotpatching the hotpatch for {product} of {} stands in for that month's cumulative update",
                            show_month(h.date)
                        ),
                        &mut derived.diagnostics,
                    ),
                    _ => {}
                }
            }
            if let Some(b) = baseline {
                derived.baselines.insert(h.index, b.index);
            }
            if let Some(next) = os
                .iter()
                .filter(|c| month(c.date).is_some_and(|cm| cm > hm))
                .min_by_key(|c| c.date)
            {
                add(
                    h.index,
                    next.index,
                    format!(
                        "the cumulative update for {product} of {} contains the hotpatch of {}",
                        show_month(next.date),
                        show_month(h.date)
                    ),
                    &mut derived.diagnostics,
                );
            }
        }
    }
    // Package versions (winget): a newer version of the same package line
    // (architecture, scope, installer type, locale) replaces the older ones.
    let mut lines: BTreeMap<(String, String, Option<String>), Vec<u32>> = BTreeMap::new();
    for (i, u) in updates.iter().enumerate() {
        if let Some(p) = &u.package {
            let (id, arch, scope) = p.line();
            lines
                .entry((id, arch.to_owned(), scope.map(str::to_owned)))
                .or_default()
                .push(i as u32);
        }
    }
    for members in lines.values_mut() {
        let version = |i: &u32| {
            updates[*i as usize]
                .package
                .as_ref()
                .map(|p| p.version.as_str())
                .unwrap_or("")
        };
        members.sort_by(|a, b| {
            crate::version::winget_version_cmp(version(a), version(b))
                .then_with(|| updates[*a as usize].id.cmp(&updates[*b as usize].id))
        });
        // Each version is replaced by every installer of the next version.
        for (at, &older) in members.iter().enumerate() {
            let Some(next) = members[at + 1..]
                .iter()
                .map(&version)
                .find(|v| crate::version::winget_version_cmp(v, version(&older)).is_gt())
            else {
                continue;
            };
            for &newer in members[at + 1..].iter().filter(|n| version(n) == next) {
                let p = updates[newer as usize].package.as_ref();
                add(
                    older,
                    newer,
                    format!(
                        "{} {} replaces {} of the same package, architecture and scope",
                        p.map_or("", |p| p.id.as_str()),
                        version(&newer),
                        version(&older)
                    ),
                    &mut derived.diagnostics,
                );
            }
        }
    }
    derived
}

fn show_month(date: Option<Date>) -> String {
    date.map(|d| format!("{:04}-{:02}", d.year(), d.month()))
        .unwrap_or_else(|| "an unknown month".to_owned())
}

/// Why `newer` is after `older` in [`order`].
fn newer_because(older: &Member, newer: &Member) -> String {
    match (&older.fixed, &newer.fixed) {
        (Some(o), Some(n)) if o.same_prefix(n, 3) && n > o => format!("fixed build {n} is past {o}"),
        _ => format!(
            "it was released later ({} after {})",
            newer.date.map(|d| d.to_string()).unwrap_or_default(),
            older.date.map(|d| d.to_string()).unwrap_or_default()
        ),
    }
}

/// Oldest first: by fixed-build revision where members share the group's
/// OS build, the others placed by release date; members with neither are
/// left out (nothing says where they belong).
fn order(members: Vec<Member>, updates: &[Update]) -> Vec<Member> {
    let mut builds: HashMap<(u64, u64, u64), usize> = HashMap::new();
    for m in &members {
        if let Some(f) = &m.fixed {
            *builds.entry((f.part(0), f.part(1), f.part(2))).or_default() += 1;
        }
    }
    let dominant = builds.into_iter().max_by_key(|(b, n)| (*n, *b)).map(|(b, _)| b);
    let revision = |m: &Member| {
        m.fixed
            .as_ref()
            .filter(|f| Some((f.part(0), f.part(1), f.part(2))) == dominant)
            .map(|f| f.part(3))
    };
    let id = |m: &Member| updates[m.index as usize].id.clone();
    let (mut by_build, mut rest): (Vec<Member>, Vec<Member>) = members.into_iter().partition(|m| revision(m).is_some());
    by_build.sort_by_key(|m| (revision(m), m.date, id(m)));
    rest.retain(|m| m.date.is_some());
    rest.sort_by_key(|m| (m.date, id(m)));
    for m in rest {
        let at = by_build
            .iter()
            .rposition(|b| b.date.is_some_and(|d| Some(d) <= m.date))
            .map_or(0, |p| p + 1);
        by_build.insert(at, m);
    }
    by_build
}
