//! Staged rollout. Every node counts, per policy with rings, how each ring
//! of its own computers did with each approved update and sends the counts
//! up the tree; the node that owns the policy adds up its subtree's counts
//! and opens the next ring once the current one has soaked with failures
//! under its threshold, or halts the rollout when they are above it. The
//! rollout is a replicated object, so every node targets by it.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::UpdateId;
use cascade_core::assignment::Placement;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ChangeOp, NodeId, Object, ObjectId, ObjectKind, Policy, Rollout, RolloutTally, Upward};

use crate::Node;

/// (node, policy, update, ring)
pub(crate) type TallyKey = (NodeId, ObjectId, UpdateId, u32);

/// A tally's counts: computers, installed, failed.
type Counts = (u64, u64, u64);

/// What was last sent up per tally, and when everything was last sent.
type Sent = (BTreeMap<TallyKey, Counts>, i64);

/// Tallies known here: this node's own and those its subtree sent up.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    pub(crate) known: std::sync::Mutex<BTreeMap<TallyKey, RolloutTally>>,
    /// What was last sent up, and when everything was last sent.
    sent: std::sync::Mutex<Sent>,
}

fn key(t: &RolloutTally) -> TallyKey {
    (t.node.clone(), t.policy.clone(), t.update.clone(), t.ring)
}

impl Node {
    /// A tally from below.
    pub(crate) fn note_tally(&self, tally: RolloutTally) {
        self.tallies
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(&tally), tally);
    }

    /// The sums per (policy, update, ring) over the subtree: computers,
    /// installed, failed.
    pub fn ring_totals(&self) -> BTreeMap<(ObjectId, UpdateId, u32), Counts> {
        let mut out: BTreeMap<(ObjectId, UpdateId, u32), Counts> = BTreeMap::new();
        for t in self.tallies.known.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let slot = out.entry((t.policy.clone(), t.update.clone(), t.ring)).or_default();
            slot.0 += t.computers;
            slot.1 += t.installed;
            slot.2 += t.failed;
        }
        out
    }

    /// This node's own computers, counted per ring.
    /// Whether a policy in force here has rings: without, a rollout round
    /// has nothing to count or move (and needs no targeting, which reads
    /// the whole catalog when it changed).
    fn any_rings(&self) -> Result<bool, cascade_store::StoreError> {
        Ok(self
            .effective_objects(ObjectKind::Policy)?
            .iter()
            .any(|o| matches!(o, Object::Policy(p) if p.enabled && !p.rings.is_empty())))
    }

    fn own_tallies(&self, at: i64) -> Result<Vec<RolloutTally>, cascade_store::StoreError> {
        if !self.any_rings()? {
            return Ok(Vec::new());
        }
        let (targeting, _) = self.targeting()?;
        let sites = self.sites_up()?;
        let mut counts: BTreeMap<(ObjectId, UpdateId, u32), Counts> = BTreeMap::new();
        for agent in self.agents()? {
            let Some(hash) = &agent.inventory else { continue };
            let Some(inventory) = self.store.inventory(hash)? else {
                continue;
            };
            let placement = Placement {
                sites: &sites,
                inventory: &inventory,
                now: at,
            };
            for membership in targeting.memberships(&placement) {
                for update in membership.updates {
                    if !targeting.open_to(&membership.policy, &update, membership.ring) {
                        continue;
                    }
                    let slot = counts
                        .entry((membership.policy.clone(), update.clone(), membership.ring as u32))
                        .or_default();
                    slot.0 += 1;
                    match self.store.record(&agent.id, &update)?.map(|r| r.state) {
                        Some(ComplianceState::Failed { .. }) => slot.2 += 1,
                        Some(s) if s.is_compliant() => slot.1 += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok(counts
            .into_iter()
            .map(
                |((policy, update, ring), (computers, installed, failed))| RolloutTally {
                    node: self.id.clone(),
                    policy,
                    update,
                    ring,
                    computers,
                    installed,
                    failed,
                    at,
                },
            )
            .collect())
    }

    /// One round: count this node's rings, send changed counts up, and
    /// move the rollouts of the policies this node owns.
    pub async fn rollout_cycle(self: &Arc<Self>) -> Result<(), cascade_store::StoreError> {
        let node = self.clone();
        let at = self.now();
        let own = node.run(move |node| node.own_tallies(at)).await?;
        {
            let mut known = self.tallies.known.lock().unwrap_or_else(|e| e.into_inner());
            // Nodes below resend every minute: counts not heard of for five
            // minutes (computers moved, an update withdrawn) no longer count.
            known.retain(|k, t| k.0 != self.id && at - t.at < 300);
            for t in &own {
                known.insert(key(t), t.clone());
            }
        }
        if self.config.parent.is_some() {
            // Changed counts at once; everything every minute, so that a
            // parent that restarted learns them again.
            let items: Vec<Upward> = {
                let mut sent = self.tallies.sent.lock().unwrap_or_else(|e| e.into_inner());
                let all = at - sent.1 >= 60;
                let items = own
                    .iter()
                    .filter(|t| all || sent.0.get(&key(t)) != Some(&(t.computers, t.installed, t.failed)))
                    .map(|t| Upward::Rollout(t.clone()))
                    .collect();
                if all {
                    sent.1 = at;
                }
                for t in &own {
                    sent.0.insert(key(t), (t.computers, t.installed, t.failed));
                }
                items
            };
            if !items.is_empty() {
                let store = self.db.clone();
                store.run(move |store| store.push_upward(items)).await?;
                self.upward_ready();
            }
        }
        self.advance_rollouts(at).await
    }

    /// The owned policies with rings and their approved updates, each with
    /// its rollout as it stands.
    pub fn rollouts(&self, at: i64) -> Result<Vec<(Policy, bool, UpdateId, Rollout)>, cascade_store::StoreError> {
        if !self.any_rings()? {
            return Ok(Vec::new());
        }
        let (targeting, _) = self.targeting()?;
        let origins: BTreeMap<ObjectId, NodeId> = self
            .store
            .objects(ObjectKind::Policy)?
            .into_iter()
            .filter_map(|s| s.object.key().ok().map(|k| (k.id, s.origin)))
            .collect();
        let mut out = Vec::new();
        for policy in targeting.policies().iter().filter(|p| !p.rings.is_empty()) {
            let owned = origins.get(&policy.id) == Some(&self.id);
            for (update, _) in targeting.approved_by(policy, at) {
                let rollout = targeting
                    .rollout(&policy.id, &update)
                    .cloned()
                    .unwrap_or_else(|| Rollout {
                        id: ObjectId::new(&format!("{}/{update}", policy.id)).unwrap_or_else(|_| policy.id.clone()),
                        policy: policy.id.clone(),
                        update: update.clone(),
                        opened: Vec::new(),
                        halted: None,
                    });
                out.push((policy.clone(), owned, update, rollout));
            }
        }
        Ok(out)
    }

    async fn advance_rollouts(self: &Arc<Self>, at: i64) -> Result<(), cascade_store::StoreError> {
        let node = self.clone();
        let rollouts = node.run(move |node| node.rollouts(at)).await?;
        let totals = self.ring_totals();
        let mut changes = Vec::new();
        for (policy, owned, update, mut rollout) in rollouts {
            if !owned || rollout.halted.is_some() {
                continue;
            }
            let before = rollout.clone();
            if rollout.opened.is_empty() {
                rollout.opened.push(at);
            }
            let current = rollout.opened.len() - 1;
            if current + 1 < policy.rings.len() {
                let ring = &policy.rings[current];
                let (computers, installed, failed) = totals
                    .get(&(policy.id.clone(), update.clone(), current as u32))
                    .copied()
                    .unwrap_or_default();
                let done = installed + failed;
                if done > 0 && failed * 100 > u64::from(ring.max_failure_percent) * done {
                    rollout.halted = Some(format!(
                        "ring {}: {failed} of {done} installs failed ({}%), above its {}%",
                        ring.name,
                        failed * 100 / done,
                        ring.max_failure_percent
                    ));
                } else if at >= rollout.opened[current] + i64::from(ring.soak_hours) * 3600
                    && (done > 0 || computers == 0)
                {
                    rollout.opened.push(at);
                }
            }
            if rollout != before {
                tracing::info!(policy = %policy.id, %update, rings = rollout.opened.len(), halted = ?rollout.halted, "rollout moved");
                changes.push(ChangeOp::Upsert(Object::Rollout(rollout)));
            }
        }
        if !changes.is_empty() {
            self.append_local_many(changes).await?;
        }
        Ok(())
    }
}
