//! The applicability planner: for one inventory, what each update in the
//! catalog means for it, and the install order of what it needs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::civil::Date;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::ids::UpdateId;
use crate::inventory::{Inventory, InventoryHash};
use crate::rule::Truth;
use crate::update::{Classification, RestartBehavior, Severity, Update};

/// One update the computer needs, in install order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    pub id: UpdateId,
    pub title: String,
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
    pub title: String,
    pub reason: String,
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
    cache: Mutex<HashMap<InventoryHash, Arc<Plan>>>,
}

impl Planner {
    pub fn new(catalog: Arc<Catalog>) -> Planner {
        Planner { catalog, cache: Mutex::new(HashMap::new()) }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The plan for `inv`, from the cache when an equal inventory was planned.
    pub fn plan(&self, inv: &Inventory) -> Arc<Plan> {
        let hash = inv.content_hash();
        if let Some(plan) = self.lock().get(&hash) {
            return plan.clone();
        }
        let plan = Arc::new(plan(&self.catalog, inv));
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

#[derive(Clone, Debug)]
enum State {
    Installed(String),
    Required { reason: String, severity: Severity },
    NotApplicable,
    Unknown(String),
    Superseded(String),
    /// Installed as part of a required bundle.
    Bundled,
}

struct Evaluation<'a> {
    catalog: &'a Catalog,
    inv: &'a Inventory,
    states: HashMap<u32, State>,
    installed_above: HashMap<u32, Option<u32>>,
    offered_above: HashMap<u32, Option<u32>>,
    in_progress: Vec<u32>,
}

/// Plans one inventory against a catalog without caching.
pub fn plan(catalog: &Catalog, inv: &Inventory) -> Plan {
    let mut ev = Evaluation {
        catalog,
        inv,
        states: HashMap::new(),
        installed_above: HashMap::new(),
        offered_above: HashMap::new(),
        in_progress: Vec::new(),
    };
    let candidates = catalog.candidates(inv);
    for &i in &candidates {
        ev.state(i);
    }
    ev.apply_prerequisites();
    ev.apply_supersedence();
    ev.apply_bundles();
    ev.into_plan()
}

impl<'a> Evaluation<'a> {
    fn state(&mut self, i: u32) -> State {
        if let Some(s) = self.states.get(&i) {
            return s.clone();
        }
        if self.in_progress.contains(&i) {
            return State::Unknown(format!("{} is bundled into itself", self.catalog.update(i).id));
        }
        self.in_progress.push(i);
        let s = self.own_state(i);
        self.in_progress.pop();
        self.states.insert(i, s.clone());
        s
    }

    fn listed_installed(&self, u: &Update) -> bool {
        self.inv.has_update(&u.id) || u.aliases.iter().any(|a| self.inv.has_update(a))
    }

    /// The update's state from its own rules, before supersedence and
    /// prerequisites are considered.
    fn own_state(&mut self, i: u32) -> State {
        let catalog = self.catalog;
        let inv = self.inv;
        let u = catalog.update(i);
        if self.listed_installed(u) {
            return State::Installed("listed as installed on the computer".to_owned());
        }
        if u.hotpatch && !inv.hotpatch_enrolled {
            return State::NotApplicable;
        }
        let mut applies = Truth::False;
        let mut matched = Vec::new();
        if u.targets.is_empty() {
            applies = Truth::True;
        }
        for t in &u.targets {
            match t.rule.eval(inv) {
                Truth::True => matched.push(t),
                Truth::Unknown(why) if !applies.is_true() => applies = Truth::Unknown(why),
                _ => {}
            }
        }
        if !matched.is_empty() {
            applies = Truth::True;
        }
        if applies.is_true() {
            if let Some(rule) = &u.applicable_when {
                applies = rule.eval(inv);
            }
        }
        if let Some(version) = inv.os.version.as_ref().filter(|v| v.len() >= 4) {
            for t in &matched {
                if let Some(fixed) = &t.fixed_build {
                    if fixed.len() >= 4 && version.same_prefix(fixed, 3) && version >= fixed {
                        return State::Installed(format!("OS build {version} is at or past the fixed build {fixed}"));
                    }
                }
            }
        }
        if let Some(rule) = &u.installed_when {
            match rule.eval(inv) {
                Truth::True => return State::Installed("its detection rule finds it installed".to_owned()),
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
                let severity = matched.iter().map(|t| t.severity).max().filter(|s| *s != Severity::Unspecified).unwrap_or(u.severity);
                let reason = if matched.is_empty() {
                    "its applicability rules hold; not installed".to_owned()
                } else {
                    let products: Vec<&str> = matched.iter().map(|t| t.product.as_str()).collect();
                    format!("applies to {}; not installed", products.join(", "))
                };
                State::Required { reason, severity }
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
                None => return State::Unknown(format!("bundled update {child} is not in the catalog")),
            }
        }
        if let Some(severity) = children.iter().find_map(|s| match s {
            State::Required { severity, .. } => Some(*severity),
            _ => None,
        }) {
            return State::Required {
                reason: "a bundled update applies and is not installed".to_owned(),
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
            return State::Installed("its bundled updates are installed".to_owned());
        }
        State::NotApplicable
    }

    /// The first superseder (transitively) that is installed.
    fn installed_above(&mut self, i: u32) -> Option<u32> {
        if let Some(found) = self.installed_above.get(&i) {
            return *found;
        }
        self.installed_above.insert(i, None);
        let mut found = None;
        for &s in self.catalog.superseded_by(i) {
            if self.listed_installed(self.catalog.update(s)) || matches!(self.state(s), State::Installed(_)) {
                found = Some(s);
                break;
            }
            if let Some(above) = self.installed_above(s) {
                found = Some(above);
                break;
            }
        }
        self.installed_above.insert(i, found);
        found
    }

    /// The first superseder (transitively) that is offered to this computer.
    fn offered_above(&mut self, i: u32) -> Option<u32> {
        if let Some(found) = self.offered_above.get(&i) {
            return *found;
        }
        self.offered_above.insert(i, None);
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
        self.offered_above.insert(i, found);
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
        loop {
            let mut changes = Vec::new();
            let required: Vec<u32> = self.required_indices();
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
                self.states.insert(i, state);
            }
            // Memoised superseder answers may rest on the old states.
            self.installed_above.clear();
        }
    }

    fn required_indices(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .states
            .iter()
            .filter(|(_, s)| matches!(s, State::Required { .. }))
            .map(|(i, _)| *i)
            .collect();
        v.sort_unstable();
        v
    }

    fn apply_supersedence(&mut self) {
        let mut keys: Vec<u32> = self.states.keys().copied().collect();
        keys.sort_unstable();
        let mut changes = Vec::new();
        for i in keys {
            if !matches!(self.states[&i], State::Required { .. } | State::Unknown(_)) {
                continue;
            }
            if let Some(s) = self.installed_above(i) {
                changes.push((i, State::Superseded(format!("superseded by {}, which is installed", self.catalog.update(s).id))));
            } else if let Some(s) = self.offered_above(i) {
                changes.push((i, State::Superseded(format!("superseded by {}, which is offered instead", self.catalog.update(s).id))));
            }
        }
        for (i, s) in changes {
            self.states.insert(i, s);
        }
    }

    /// Children of a required bundle are installed with it, not on their own.
    fn apply_bundles(&mut self) {
        for i in self.required_indices() {
            let in_required_bundle = self
                .catalog
                .bundled_in(i)
                .iter()
                .any(|b| matches!(self.states.get(b), Some(State::Required { .. })));
            if in_required_bundle {
                self.states.insert(i, State::Bundled);
            }
        }
    }

    fn into_plan(mut self) -> Plan {
        let catalog = self.catalog;
        let mut plan = Plan::default();
        let mut listed = 0usize;
        let mut required = Vec::new();
        let mut keys: Vec<u32> = self.states.keys().copied().collect();
        keys.sort_unstable();
        let detectoids = catalog.updates().iter().filter(|u| u.classification == Classification::Detectoid).count();
        for i in keys {
            let u = catalog.update(i);
            if u.classification == Classification::Detectoid {
                continue;
            }
            let item = |reason: String| PlanItem { id: u.id.clone(), title: u.title.clone(), reason };
            match self.states[&i].clone() {
                State::Installed(reason) => plan.installed.push(item(reason)),
                State::Superseded(reason) => plan.superseded.push(item(reason)),
                State::Unknown(reason) => plan.unknown.push(item(reason)),
                State::Required { reason, severity } => required.push((i, reason, severity)),
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
                    catalog.index_of(id).is_some_and(|p| position.contains_key(&p) || self.offered_above.get(&p).copied().flatten().is_some())
                }) {
                    wanted.push(first);
                }
                for id in wanted {
                    let Some(p) = catalog.index_of(id) else { continue };
                    let target = if position.contains_key(&p) { Some(p) } else { self.offered_above(p) };
                    if let Some(m) = target.and_then(|t| position.get(&t)) {
                        if *m != n && !after[n].contains(m) {
                            after[n].push(*m);
                        }
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
            (u.classification != Classification::ServicePack, Reverse(urgency[n]), u.release_date, u.id.clone(), n)
        };
        let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); required.len()];
        for (n, list) in after.iter().enumerate() {
            for &m in list {
                dependants[m].push(n);
            }
        }
        let mut ready: BinaryHeap<Reverse<Key>> = (0..required.len()).filter(|&n| waiting[n] == 0).map(|n| Reverse(key(n))).collect();
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
                    after: after[n].iter().map(|&m| catalog.update(required[m].0).id.clone()).collect(),
                    bundled: u
                        .bundled
                        .iter()
                        .filter(|c| catalog.index_of(c).is_some_and(|c| matches!(self.states.get(&c), Some(State::Bundled))))
                        .cloned()
                        .collect(),
                }
            })
            .collect()
    }
}
