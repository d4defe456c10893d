//! Targeting at the node: the objects in force here (overrides applied in
//! the one way `Object::with_overrides` applies them), the sites above this
//! one, the targeting built from them (rebuilt only when the kinds it reads
//! change) and each agent's assignment.

use std::collections::HashMap;
use std::sync::Arc;

use cascade_core::UpdateId;
use cascade_core::assignment::{Assignment, Placement, Targeting};
use cascade_core::inventory::Inventory;
use cascade_core::model::{ComputerId, NodeId, Object, ObjectKind};
use cascade_core::planner::Planner;

use crate::Node;

/// The kinds targeting is built from: those it reads, and the sites whose
/// order places their overrides.
const TARGETING_KINDS: [ObjectKind; 6] = [
    ObjectKind::Update,
    ObjectKind::Policy,
    ObjectKind::Approval,
    ObjectKind::MaintenanceWindow,
    ObjectKind::Rollout,
    ObjectKind::Site,
];

/// What targeting needs, rebuilt when the objects change.
#[derive(Debug)]
pub(crate) struct TargetingCache {
    version: u64,
    targeting: Arc<Targeting>,
    /// One planner per approved set, so equal inventories under equal
    /// approvals are evaluated once.
    planners: HashMap<(cascade_core::update::Track, Vec<UpdateId>), Arc<Planner>>,
}

impl Node {
    /// The effective objects of a kind: each with the overrides in force
    /// here applied (those of the farthest origin first, this node's last).
    /// An object or override a later release signed with fields this node
    /// does not know is left out, with the reason logged: those fields may
    /// narrow what it means.
    pub fn effective_objects(&self, kind: ObjectKind) -> Result<Vec<Object>, cascade_store::StoreError> {
        let mut rank: HashMap<NodeId, usize> = HashMap::new();
        for (i, site) in self.sites_up()?.iter().enumerate() {
            rank.insert(site.clone(), i);
        }
        let mut all_overrides = self.store.overrides_of_kind(kind)?;
        let mut out = Vec::new();
        for stored in self.store.objects(kind)? {
            if let Some(why) = stored.object.unknown_reason() {
                let key = stored.object.key().map(|k| k.to_string()).unwrap_or_default();
                tracing::warn!(%key, origin = %stored.origin, "not targeting: {why}");
                continue;
            }
            let mut object = stored.object.into_value();
            if let Ok(key) = object.key() {
                let mut overrides: Vec<_> = all_overrides
                    .remove(&key.id)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(origin, over)| match over.unknown_reason() {
                        Some(why) => {
                            tracing::warn!(%key, %origin, "not applying an override: {why}");
                            false
                        }
                        None => true,
                    })
                    .collect();
                if !overrides.is_empty() {
                    // The farthest origin's first, this node's last.
                    overrides
                        .sort_by_key(|(origin, _)| std::cmp::Reverse(rank.get(origin).copied().unwrap_or(usize::MAX)));
                    let (applied, notes) = object.with_overrides(overrides.iter().map(|(o, over)| (o, over.value())));
                    for note in notes {
                        tracing::warn!(%key, "{note}");
                    }
                    object = applied;
                }
            }
            out.push(object);
        }
        Ok(out)
    }

    /// This node and the sites above it, nearest first, from the site
    /// records that replicated down.
    pub fn sites_up(&self) -> Result<Vec<NodeId>, cascade_store::StoreError> {
        let sites: HashMap<String, Option<NodeId>> = self
            .store
            .objects(ObjectKind::Site)?
            .into_iter()
            .filter_map(|s| match s.object.into_value() {
                Object::Site(site) => Some((site.id.to_string(), site.parent)),
                _ => None,
            })
            .collect();
        let mut out = vec![self.id.clone()];
        let mut current = self.id.to_string();
        while let Some(Some(parent)) = sites.get(&current) {
            if out.contains(parent) || out.len() > sites.len() {
                break;
            }
            out.push(parent.clone());
            current = parent.to_string();
        }
        Ok(out)
    }

    pub(crate) fn targeting(&self) -> Result<(Arc<Targeting>, u64), cascade_store::StoreError> {
        // Rebuilt only when objects it reads change (not for the root's
        // timestamps, which come every minute: a rebuild reads the whole
        // catalog). Read before the objects are.
        let version = self.store.generation(&TARGETING_KINDS);
        {
            let cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.as_ref().filter(|c| c.version == version) {
                return Ok((c.targeting.clone(), version));
            }
        }
        let mut updates = Vec::new();
        let mut policies = Vec::new();
        let mut approvals = Vec::new();
        let mut windows = Vec::new();
        let mut rollouts = Vec::new();
        for kind in [
            ObjectKind::Update,
            ObjectKind::Policy,
            ObjectKind::Approval,
            ObjectKind::MaintenanceWindow,
            ObjectKind::Rollout,
        ] {
            for object in self.effective_objects(kind)? {
                match object {
                    Object::Update(u) => updates.push(*u),
                    Object::Policy(p) => policies.push(*p),
                    Object::Approval(a) => approvals.push(a),
                    Object::MaintenanceWindow(w) => windows.push(*w),
                    Object::Rollout(r) => rollouts.push(r),
                    _ => {}
                }
            }
        }
        let targeting = Arc::new(Targeting::new(updates, policies, approvals, windows).with_rollouts(rollouts));
        let mut cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
        *cache = Some(TargetingCache {
            version,
            targeting: targeting.clone(),
            planners: HashMap::new(),
        });
        Ok((targeting, version))
    }

    /// The assignment of a computer with this inventory, now.
    pub fn assignment(
        &self,
        computer: &ComputerId,
        inventory_hash: &str,
        inventory: &Inventory,
        at: i64,
    ) -> Result<Assignment, cascade_store::StoreError> {
        let (targeting, version) = self.targeting()?;
        let sites = self.sites_up()?;
        let selection = targeting.select(&Placement {
            sites: &sites,
            inventory,
            now: at,
        });
        let key = (selection.track, selection.catalog_key());
        let planner = {
            let mut cache = self.targeting.lock().unwrap_or_else(|e| e.into_inner());
            match cache.as_mut().filter(|c| c.version == version) {
                Some(c) => c
                    .planners
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Planner::with_track(
                            Arc::new(targeting.catalog(&selection)),
                            selection.track,
                        ))
                    })
                    .clone(),
                // The objects changed meanwhile: plan without caching.
                None => Arc::new(Planner::with_track(
                    Arc::new(targeting.catalog(&selection)),
                    selection.track,
                )),
            }
        };
        // The hash was checked when the inventory arrived (or is the key it
        // is stored under): the planner need not compute it again.
        let plan = match inventory_hash.parse() {
            Ok(hash) => planner.plan_hashed(inventory, hash),
            Err(_) => planner.plan(inventory),
        };
        Ok(targeting.assignment(computer, &self.id, inventory_hash, &selection, &plan, at))
    }

    /// The revision of what this node plans with: every change applied
    /// here, of every origin, moves it on.
    pub fn revision(&self) -> Result<u64, cascade_store::StoreError> {
        Ok(self.store.cursor()?.values().sum())
    }
}
