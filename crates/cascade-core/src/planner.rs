//! The applicability planner: for one inventory, what each update in the
//! catalog means for it, and the install order of what it needs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::civil::Date;

use crate::version::Version;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::ids::UpdateId;
use crate::inventory::{Inventory, InventoryHash};
use crate::rule::Truth;
use crate::update::{Classification, RestartBehavior, Servicing, Severity, Track, Update};

/// One update the computer needs, in install order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    pub id: UpdateId,
    pub title: Arc<str>,
    /// The highest vendor severity over the products this computer matched.
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_severity: Option<String>,
    pub classification: Classification,
    /// "yes", "no" or "maybe".
    pub restart: &'static str,
    pub reason: String,
    /// Updates of this plan that must be installed before this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<UpdateId>,
    /// Updates installed as part of this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bundled: Vec<UpdateId>,
}

/// An update that is not to be installed, with why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub id: UpdateId,
    pub title: Arc<str>,
    pub reason: Reason,
}

/// Why an update is installed, superseded or unknown. Written as text; kept
/// structured so that planning a large catalog allocates no text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Listed,
    /// The computer's build (raised by `via`, an installed cumulative
    /// update, where the inventory's own build is older) is at or past the
    /// update's fixed build.
    FixedBuild {
        build: Version,
        fixed: Version,
        via: Option<UpdateId>,
    },
    Detection,
    BundleInstalled,
    SupersededBy {
        by: UpdateId,
        installed: bool,
    },
    Unknown(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Listed => f.write_str("listed as installed on the computer"),
            Reason::FixedBuild {
                build,
                fixed,
                via: None,
            } => {
                write!(f, "OS build {build} is at or past the fixed build {fixed}")
            }
            Reason::FixedBuild {
                build,
                fixed,
                via: Some(via),
            } => write!(
                f,
                "OS build {build} (with {via} installed) is at or past the fixed build {fixed}"
            ),
            Reason::Detection => f.write_str("its detection rule finds it installed"),
            Reason::BundleInstalled => f.write_str("its bundled updates are installed"),
            Reason::SupersededBy { by, installed: true } => write!(f, "superseded by {by}, which is installed"),
            Reason::SupersededBy { by, installed: false } => write!(f, "superseded by {by}, which is offered instead"),
            Reason::Unknown(why) => f.write_str(why),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What one computer needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In install order: service packs first, prerequisites before their
    /// dependants, then by severity, then oldest first.
    pub required: Vec<PlanEntry>,
    pub installed: Vec<PlanItem>,
    /// Not offered: a superseding update is installed or offered instead.
    pub superseded: Vec<PlanItem>,
    pub not_applicable: usize,
    /// Could not be decided; each says why.
    pub unknown: Vec<PlanItem>,
}

impl Plan {
    /// Whether installing the plan may restart the computer.
    pub fn restart(&self) -> RestartBehavior {
        let words: Vec<&str> = self.required.iter().map(|e| e.restart).collect();
        if words.contains(&"yes") {
            RestartBehavior::Always
        } else if words.contains(&"maybe") {
            RestartBehavior::May
        } else {
            RestartBehavior::Never
        }
    }
}

/// Plans computers against one catalog, evaluating each distinct inventory
/// once.
#[derive(Debug)]
pub struct Planner {
    catalog: Arc<Catalog>,
    track: Track,
    cache: Mutex<HashMap<InventoryHash, Arc<Plan>>>,
}

impl Planner {
    pub fn new(catalog: Arc<Catalog>) -> Planner {
        Planner::with_track(catalog, Track::Rollup)
    }

    /// A planner for computers on `track` (Windows 7 to 8.1: rollups or
    /// security-only updates).
    pub fn with_track(catalog: Arc<Catalog>, track: Track) -> Planner {
        Planner {
            catalog,
            track,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The plan for `inv`, from the cache when an equal inventory was planned.
    pub fn plan(&self, inv: &Inventory) -> Arc<Plan> {
        self.plan_hashed(inv, inv.content_hash())
    }

    /// The plan for `inv` whose content hash the caller already has (a node
    /// checked it when the inventory arrived): not hashed again.
    pub fn plan_hashed(&self, inv: &Inventory, hash: InventoryHash) -> Arc<Plan> {
        if let Some(plan) = self.lock().get(&hash) {
            return plan.clone();
        }
        let plan = Arc::new(plan_on(&self.catalog, inv, self.track));
        self.lock().entry(hash).or_insert(plan).clone()
    }

    /// How many distinct inventories have been evaluated.
    pub fn distinct_evaluations(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InventoryHash, Arc<Plan>>> {
        // A panic while holding the lock leaves only a cache behind; keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an update counts as installed; the text is made only for the plan.
#[derive(Clone, Copy, Debug)]
enum InstalledBy {
    Listed,
    /// The computer's build is at or past this target's fixed build.
    FixedBuild(u32),
    Detection,
    Bundle,
}

/// An update's state while planning. Texts are made when the plan is
/// written, so that the thousands of states a large catalog goes through
/// cost no allocation.
#[derive(Clone, Debug)]
enum State {
    Installed(InstalledBy),
    Required {
        severity: Severity,
    },
    NotApplicable,
    Unknown(String),
    Superseded {
        by: u32,
        installed: bool,
    },
    /// Installed as part of a required bundle.
    Bundled,
}

/// A hasher for dense `u32` catalog indices (the default SipHash is the
/// planner's largest cost otherwise).
#[derive(Default)]
struct IndexHasher(u64);

impl std::hash::Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

struct Evaluation<'a> {
    catalog: &'a Catalog,
    inv: &'a Inventory,
    track: Track,
    /// The computer's full build, raised to the fixed build of the newest
    /// cumulative update it lists as installed, and that update.
    build: Option<(Version, Option<UpdateId>)>,
    /// The place of each catalog index in the vectors below (u32::MAX for
    /// none yet): array lookups instead of hashing, which planning does
    /// thousands of times per computer.
    slot: Vec<u32>,
    /// By place: the state, and the memoised first installed and first
    /// offered superseder.
    states: Vec<Option<State>>,
    installed_memo: Vec<Option<Option<u32>>>,
    offered_memo: Vec<Option<Option<u32>>>,
    in_progress: Vec<u32>,
    /// Every index with a state, in the order first evaluated.
    evaluated: Vec<u32>,
    /// Whether any update looked at has prerequisites.
    any_prerequisites: bool,
    /// Catalog updates the computer lists as installed (by id or alias).
    listed: std::collections::HashSet<u32, std::hash::BuildHasherDefault<IndexHasher>>,
}

/// Plans one inventory against a catalog without caching, on the default
/// (rollup) track.
pub fn plan(catalog: &Catalog, inv: &Inventory) -> Plan {
    plan_on(catalog, inv, Track::Rollup)
}

/// The computer's build with what its installed cumulative updates say: an
/// installed cumulative update brings the OS to its fixed build.
fn effective_build(catalog: &Catalog, inv: &Inventory, listed: &[u32]) -> Option<(Version, Option<UpdateId>)> {
    let own = inv.os.version.clone()?;
    if own.len() < 3 {
        return None;
    }
    let mut best: (Version, Option<UpdateId>) = (own, None);
    for &i in listed {
        let u = catalog.update(i);
        if u.servicing != Some(Servicing::Cumulative) {
            continue;
        }
        for t in &u.targets {
            if let Some(fixed) = &t.fixed_build
                && fixed.len() >= 4
                && fixed.same_prefix(&best.0, 3)
                && *fixed > best.0
                && t.rule.eval(inv).is_true()
            {
                best = (fixed.clone(), Some(u.id.clone()));
            }
        }
    }
    (best.0.len() >= 4).then_some(best)
}

/// Plans one inventory against a catalog without caching.
pub fn plan_on(catalog: &Catalog, inv: &Inventory, track: Track) -> Plan {
    let candidates = catalog.candidates(inv);
    let capacity = candidates.len() + candidates.len() / 2;
    let listed: Vec<u32> = inv
        .installed_updates
        .iter()
        .filter_map(|id| catalog.index_of(id))
        .collect();
    let mut ev = Evaluation {
        catalog,
        inv,
        track,
        build: effective_build(catalog, inv, &listed),
        slot: vec![u32::MAX; catalog.len()],
        states: Vec::with_capacity(capacity),
        installed_memo: Vec::with_capacity(capacity),
        offered_memo: Vec::with_capacity(capacity),
        in_progress: Vec::new(),
        evaluated: Vec::with_capacity(capacity),
        listed: listed.into_iter().collect(),
        any_prerequisites: false,
    };
    for &i in &candidates {
        ev.state(i);
    }
    ev.apply_prerequisites();
    ev.apply_supersedence();
    ev.apply_bundles();
    ev.into_plan()
}

impl<'a> Evaluation<'a> {
    /// The place of catalog index `i`, made when it has none.
    fn place(&mut self, i: u32) -> usize {
        let at = self.slot[i as usize];
        if at != u32::MAX {
            return at as usize;
        }
        let at = self.states.len();
        self.slot[i as usize] = at as u32;
        self.states.push(None);
        self.installed_memo.push(None);
        self.offered_memo.push(None);
        at
    }

    fn found(&self, i: u32) -> Option<usize> {
        let at = self.slot[i as usize];
        (at != u32::MAX).then_some(at as usize)
    }

    fn get(&self, i: u32) -> Option<&State> {
        self.found(i).and_then(|at| self.states[at].as_ref())
    }

    fn set(&mut self, i: u32, state: State) {
        let at = self.place(i);
        self.states[at] = Some(state);
    }

    fn state(&mut self, i: u32) -> State {
        if let Some(s) = self.get(i) {
            return s.clone();
        }
        if self.in_progress.contains(&i) {
            return State::Unknown(format!("{} is bundled into itself", self.catalog.update(i).id));
        }
        self.in_progress.push(i);
        let s = self.own_state(i);
        self.in_progress.pop();
        self.set(i, s.clone());
        self.evaluated.push(i);
        s
    }

    fn listed_installed(&self, i: u32) -> bool {
        if self.listed.contains(&i) {
            return true;
        }
        // An alias shared with another update resolves to that one; ask the
        // computer's list directly for those.
        let u = self.catalog.update(i);
        !u.aliases.is_empty() && u.aliases.iter().any(|a| self.inv.has_update(a))
    }

    /// The update's state from its own rules, before supersedence and
    /// prerequisites are considered.
    fn own_state(&mut self, i: u32) -> State {
        let catalog = self.catalog;
        let inv = self.inv;
        let u = catalog.update(i);
        self.any_prerequisites |= !u.prerequisites.is_empty();
        if self.listed_installed(i) {
            return State::Installed(InstalledBy::Listed);
        }
        if u.hotpatch && !inv.hotpatch_enrolled {
            return State::NotApplicable;
        }
        // One track: a computer on security-only updates is offered no rollup.
        if self.track == Track::SecurityOnly && u.servicing == Some(Servicing::MonthlyRollup) {
            return State::NotApplicable;
        }
        // A hotpatch goes on top of its baseline; below it, the cumulative
        // update is what the computer needs.
        if u.hotpatch
            && let Some(b) = catalog.baseline(i)
            && !matches!(self.state(b), State::Installed(_))
        {
            return State::NotApplicable;
        }
        let mut applies = Truth::False;
        let mut matched: u32 = 0;
        let mut severity = Severity::Unspecified;
        let mut fixed_build_installed = None;
        if u.targets.is_empty() {
            applies = Truth::True;
        }
        let full_build = self.build.as_ref().map(|(v, _)| v);
        for (n, t) in u.targets.iter().enumerate() {
            match t.rule.eval(inv) {
                Truth::True => {
                    matched += 1;
                    severity = severity.max(t.severity);
                    if let (Some(version), Some(fixed)) = (full_build, &t.fixed_build)
                        && fixed.len() >= 4
                        && version.same_prefix(fixed, 3)
                        && version >= fixed
                    {
                        fixed_build_installed.get_or_insert(n as u32);
                    }
                }
                Truth::Unknown(why) if !applies.is_true() => applies = Truth::Unknown(why),
                _ => {}
            }
        }
        if matched > 0 {
            applies = Truth::True;
        }
        if applies.is_true()
            && let Some(rule) = &u.applicable_when
        {
            applies = rule.eval(inv);
        }
        if let Some(target) = fixed_build_installed {
            return State::Installed(InstalledBy::FixedBuild(target));
        }
        if let Some(rule) = &u.installed_when {
            match rule.eval(inv) {
                Truth::True => return State::Installed(InstalledBy::Detection),
                Truth::Unknown(why) if !applies.is_false() => {
                    return State::Unknown(format!("cannot tell whether it is installed: {why}"));
                }
                _ => {}
            }
        }
        let own_rules = !u.targets.is_empty() || u.applicable_when.is_some() || u.installed_when.is_some();
        if !own_rules && !u.bundled.is_empty() {
            return self.bundle_state(u);
        }
        match applies {
            Truth::True => {
                let severity = if severity == Severity::Unspecified {
                    u.severity
                } else {
                    severity
                };
                State::Required { severity }
            }
            Truth::False => State::NotApplicable,
            Truth::Unknown(why) => State::Unknown(why),
        }
    }

    /// A bundle with no rules of its own is what its children are.
    fn bundle_state(&mut self, u: &Update) -> State {
        let mut children = Vec::new();
        for child in &u.bundled {
            match self.catalog.index_of(child) {
                Some(c) => children.push(self.state(c)),
                None => {
                    return State::Unknown(format!("bundled update {child} is not in the catalog"));
                }
            }
        }
        if let Some(severity) = children.iter().find_map(|s| match s {
            State::Required { severity, .. } => Some(*severity),
            _ => None,
        }) {
            return State::Required {
                severity: severity.max(u.severity),
            };
        }
        if let Some(why) = children.iter().find_map(|s| match s {
            State::Unknown(why) => Some(why.clone()),
            _ => None,
        }) {
            return State::Unknown(why);
        }
        if children.iter().any(|s| matches!(s, State::Installed(_))) {
            return State::Installed(InstalledBy::Bundle);
        }
        State::NotApplicable
    }

    /// The first superseder (transitively) that is installed.
    fn installed_above(&mut self, i: u32) -> Option<u32> {
        let at = self.place(i);
        if let Some(found) = self.installed_memo[at] {
            return found;
        }
        self.installed_memo[at] = Some(None);
        let mut found = None;
        for &s in self.catalog.superseded_by(i) {
            if self.listed_installed(s) || matches!(self.state(s), State::Installed(_)) {
                found = Some(s);
                break;
            }
            if let Some(above) = self.installed_above(s) {
                found = Some(above);
                break;
            }
        }
        self.installed_memo[at] = Some(found);
        found
    }

    /// The first superseder (transitively) that is offered to this computer.
    fn offered_above(&mut self, i: u32) -> Option<u32> {
        let at = self.place(i);
        if let Some(found) = self.offered_memo[at] {
            return found;
        }
        self.offered_memo[at] = Some(None);
        let mut found = None;
        for &s in self.catalog.superseded_by(i) {
            if let Some(above) = self.offered_above(s) {
                found = Some(above);
                break;
            }
            if matches!(self.state(s), State::Required { .. }) && self.installed_above(s).is_none() {
                found = Some(s);
                break;
            }
        }
        self.offered_memo[at] = Some(found);
        found
    }

    /// Whether prerequisite `id` is met, will be met by this plan, or why not.
    fn prerequisite(&mut self, id: &UpdateId, category: bool) -> Result<Option<u32>, Truth> {
        if self.inv.has_update(id) {
            return Ok(None);
        }
        let Some(p) = self.catalog.index_of(id) else {
            return Err(Truth::Unknown(format!("prerequisite {id} is not in the catalog")));
        };
        if self.installed_above(p).is_some() {
            return Ok(None);
        }
        match self.state(p) {
            State::Installed(_) => Ok(None),
            // A category that applies is present: nothing to install.
            State::Required { .. } if category => Ok(None),
            State::Required { .. } => Ok(Some(p)),
            State::Unknown(why) => Err(Truth::Unknown(format!("prerequisite {id}: {why}"))),
            _ => Err(Truth::False),
        }
    }

    /// Required updates whose prerequisites can never be met here are not
    /// applicable (or unknown, when a prerequisite is); repeated until stable
    /// because that can cascade.
    fn apply_prerequisites(&mut self) {
        if !self.any_prerequisites {
            return;
        }
        loop {
            let mut changes = Vec::new();
            let required: Vec<u32> = self
                .required_indices()
                .into_iter()
                .filter(|&i| !self.catalog.update(i).prerequisites.is_empty())
                .collect();
            for i in required {
                let u = self.catalog.update(i);
                for group in &u.prerequisites {
                    let mut verdict = None;
                    for id in &group.all_of {
                        if let Err(t) = self.prerequisite(id, group.category) {
                            verdict = Some(t);
                            break;
                        }
                    }
                    if verdict.is_none() && !group.any_of.is_empty() {
                        let mut best: Option<Truth> = Some(Truth::False);
                        for id in &group.any_of {
                            match self.prerequisite(id, group.category) {
                                Ok(_) => {
                                    best = None;
                                    break;
                                }
                                Err(Truth::Unknown(why)) => best = Some(Truth::Unknown(why)),
                                Err(_) => {}
                            }
                        }
                        verdict = best;
                    }
                    if let Some(v) = verdict {
                        changes.push((i, v));
                        break;
                    }
                }
            }
            if changes.is_empty() {
                return;
            }
            for (i, verdict) in changes {
                let state = match verdict {
                    Truth::Unknown(why) => State::Unknown(why),
                    _ => State::NotApplicable,
                };
                self.set(i, state);
            }
            // Memoised superseder answers may rest on the old states.
            self.installed_memo.iter_mut().for_each(|m| *m = None);
        }
    }

    fn required_indices(&self) -> Vec<u32> {
        self.evaluated
            .iter()
            .copied()
            .filter(|&i| matches!(self.get(i), Some(State::Required { .. })))
            .collect()
    }

    fn apply_supersedence(&mut self) {
        let mut changes = Vec::new();
        for i in self.evaluated.clone() {
            if !matches!(self.get(i), Some(State::Required { .. } | State::Unknown(_))) {
                continue;
            }
            if let Some(s) = self.installed_above(i) {
                changes.push((i, State::Superseded { by: s, installed: true }));
            } else if let Some(s) = self.offered_above(i) {
                changes.push((
                    i,
                    State::Superseded {
                        by: s,
                        installed: false,
                    },
                ));
            }
        }
        for (i, s) in changes {
            self.set(i, s);
        }
    }

    /// Children of a required bundle are installed with it, not on their own.
    fn apply_bundles(&mut self) {
        let in_bundles: Vec<u32> = self
            .evaluated
            .iter()
            .copied()
            .filter(|&i| !self.catalog.bundled_in(i).is_empty())
            .collect();
        for i in in_bundles {
            if !matches!(self.get(i), Some(State::Required { .. })) {
                continue;
            }
            let in_required_bundle = self
                .catalog
                .bundled_in(i)
                .iter()
                .any(|&b| matches!(self.get(b), Some(State::Required { .. })));
            if in_required_bundle {
                self.set(i, State::Bundled);
            }
        }
    }

    fn installed_reason(&self, u: &Update, by: InstalledBy) -> Reason {
        match by {
            InstalledBy::Listed => Reason::Listed,
            InstalledBy::Detection => Reason::Detection,
            InstalledBy::Bundle => Reason::BundleInstalled,
            InstalledBy::FixedBuild(t) => Reason::FixedBuild {
                build: self.build.as_ref().map(|(v, _)| v.clone()).unwrap_or_default(),
                fixed: u.targets[t as usize].fixed_build.clone().unwrap_or_default(),
                via: self.build.as_ref().and_then(|(_, via)| via.clone()),
            },
        }
    }

    fn required_reason(&self, u: &Update) -> String {
        if u.targets.is_empty() && u.applicable_when.is_none() && !u.bundled.is_empty() {
            return "a bundled update applies and is not installed".to_owned();
        }
        let products: Vec<&str> = u
            .targets
            .iter()
            .filter(|t| t.rule.eval(self.inv).is_true())
            .map(|t| t.product.as_str())
            .collect();
        if products.is_empty() {
            "its applicability rules hold; not installed".to_owned()
        } else {
            format!("applies to {}; not installed", products.join(", "))
        }
    }

    fn into_plan(mut self) -> Plan {
        let catalog = self.catalog;
        let mut plan = Plan::default();
        let mut listed = 0usize;
        let mut required = Vec::new();
        let keys = std::mem::take(&mut self.evaluated);
        let detectoids = catalog.detectoids();
        for i in keys {
            let u = catalog.update(i);
            if u.classification == Classification::Detectoid {
                continue;
            }
            let item = |reason: Reason| PlanItem {
                id: u.id.clone(),
                title: u.title.clone(),
                reason,
            };
            let Some(state) = self.get(i) else {
                continue;
            };
            match state {
                State::Installed(by) => plan.installed.push(item(self.installed_reason(u, *by))),
                State::Superseded { by, installed } => plan.superseded.push(item(Reason::SupersededBy {
                    by: catalog.update(*by).id.clone(),
                    installed: *installed,
                })),
                State::Unknown(reason) => plan.unknown.push(item(Reason::Unknown(reason.clone()))),
                State::Required { severity } => required.push((i, self.required_reason(u), *severity)),
                State::Bundled => {}
                State::NotApplicable => continue,
            }
            listed += 1;
        }
        plan.not_applicable = catalog.len().saturating_sub(listed + detectoids);
        plan.required = self.order(required);
        for list in [&mut plan.installed, &mut plan.superseded, &mut plan.unknown] {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        plan
    }

    /// Kahn's algorithm over prerequisite edges, taking the most urgent ready
    /// update each time.
    fn order(&mut self, required: Vec<(u32, String, Severity)>) -> Vec<PlanEntry> {
        let catalog = self.catalog;
        let position: HashMap<u32, usize> = required.iter().enumerate().map(|(n, (i, _, _))| (*i, n)).collect();
        let mut after: Vec<Vec<usize>> = vec![Vec::new(); required.len()];
        for (n, (i, _, _)) in required.iter().enumerate() {
            for group in &catalog.update(*i).prerequisites {
                if group.category {
                    continue;
                }
                let mut wanted: Vec<&UpdateId> = group.all_of.iter().collect();
                // Of "at least one", the first this plan installs.
                if let Some(first) = group.any_of.iter().find(|id| {
                    catalog.index_of(id).is_some_and(|p| {
                        position.contains_key(&p)
                            || self.found(p).and_then(|at| self.offered_memo[at]).flatten().is_some()
                    })
                }) {
                    wanted.push(first);
                }
                for id in wanted {
                    let Some(p) = catalog.index_of(id) else {
                        continue;
                    };
                    let target = if position.contains_key(&p) {
                        Some(p)
                    } else {
                        self.offered_above(p)
                    };
                    if let Some(m) = target.and_then(|t| position.get(&t))
                        && *m != n
                        && !after[n].contains(m)
                    {
                        after[n].push(*m);
                    }
                }
            }
        }
        // A prerequisite is as urgent as the most severe update waiting for it.
        let mut urgency: Vec<Severity> = required.iter().map(|(_, _, s)| *s).collect();
        for _ in 0..required.len() {
            let mut changed = false;
            for n in 0..required.len() {
                for &m in &after[n] {
                    if urgency[m] < urgency[n] {
                        urgency[m] = urgency[n];
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        type Key = (bool, Reverse<Severity>, Option<Date>, UpdateId, usize);
        let key = |n: usize| -> Key {
            let u = catalog.update(required[n].0);
            (
                u.classification != Classification::ServicePack,
                Reverse(urgency[n]),
                u.release_date,
                u.id.clone(),
                n,
            )
        };
        let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); required.len()];
        for (n, list) in after.iter().enumerate() {
            for &m in list {
                dependants[m].push(n);
            }
        }
        let mut ready: BinaryHeap<Reverse<Key>> = (0..required.len())
            .filter(|&n| waiting[n] == 0)
            .map(|n| Reverse(key(n)))
            .collect();
        let mut done = vec![false; required.len()];
        let mut order = Vec::with_capacity(required.len());
        while order.len() < required.len() {
            let n = match ready.pop() {
                Some(Reverse(k)) => k.4,
                // Prerequisites in a circle: take the most urgent of them.
                None => match (0..required.len()).filter(|&n| !done[n]).map(key).min() {
                    Some(k) => k.4,
                    None => break,
                },
            };
            if std::mem::replace(&mut done[n], true) {
                continue;
            }
            order.push(n);
            for &d in &dependants[n] {
                waiting[d] = waiting[d].saturating_sub(1);
                if waiting[d] == 0 && !done[d] {
                    ready.push(Reverse(key(d)));
                }
            }
        }
        order
            .into_iter()
            .map(|n| {
                let (i, reason, severity) = &required[n];
                let u = catalog.update(*i);
                PlanEntry {
                    id: u.id.clone(),
                    title: u.title.clone(),
                    severity: *severity,
                    custom_severity: u.custom_severity.clone(),
                    classification: u.classification,
                    restart: u.restart.word(),
                    reason: reason.clone(),
                    after: after[n]
                        .iter()
                        .map(|&m| catalog.update(required[m].0).id.clone())
                        .collect(),
                    bundled: u
                        .bundled
                        .iter()
                        .filter(|c| {
                            catalog
                                .index_of(c)
                                .is_some_and(|c| matches!(self.get(c), Some(State::Bundled)))
                        })
                        .cloned()
                        .collect(),
                }
            })
            .collect()
    }
}
