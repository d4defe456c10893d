//! Targeting: which policies reach a computer, which updates they approve
//! for it, and the assignment a node hands the computer's agent (its plan
//! with install commands, content, windows, deadlines and restart rules).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::compliance::ComplianceState;
use crate::ids::UpdateId;
use crate::inventory::Inventory;
use crate::model::{Approval, ComputerId, MaintenanceWindow, NodeId, ObjectId, Policy, RestartPolicy, Rollout};
use crate::planner::Plan;
use crate::update::{Classification, Content, InstallCommand, RestartBehavior, Severity, Track, Update};

/// The fact an agent sets (from its facts file) to put its computer in
/// groups that policies target: a comma-separated list.
pub const GROUPS_FACT: &str = "cascade.groups";

/// One update to install, in plan order, with what the agent needs for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub update: UpdateId,
    pub title: String,
    pub severity: Severity,
    pub classification: Classification,
    pub restart: RestartBehavior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallCommand>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Content>,
    /// Unix seconds after which it installs even outside the windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    /// Steps of this assignment that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<UpdateId>,
}

/// The state of an approved update the computer does not install now.
/// (Not `deny_unknown_fields`: serde does not support it with `flatten`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    pub update: UpdateId,
    pub severity: Severity,
    #[serde(flatten)]
    pub state: ComplianceState,
}

/// What a node hands one computer's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub computer: ComputerId,
    /// The node (site) that made it.
    pub site: NodeId,
    /// Content hash of the inventory it was made for.
    pub inventory: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// The policies that target the computer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ObjectId>,
    /// In install order: service packs first, prerequisites before what
    /// needs them, then by severity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Every other approved update for the computer, with its state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
    /// Installing and restarting happen inside any of these (none: any time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Install the steps (the vendor catalog method).
    pub vendor_catalog: bool,
    /// After the steps, run the operating system's own updater.
    pub os_updater: bool,
}

/// The approved, targeted view of a node's objects.
#[derive(Clone, Debug, Default)]
pub struct Targeting {
    policies: Vec<Policy>,
    /// Policy id -> approvals for it.
    approvals: BTreeMap<ObjectId, Vec<Approval>>,
    windows: BTreeMap<ObjectId, MaintenanceWindow>,
    updates: BTreeMap<UpdateId, Arc<Update>>,
    /// (policy, update) -> how far it rolled out, for policies with rings.
    rollouts: BTreeMap<(ObjectId, UpdateId), Rollout>,
}

/// Where a computer is in a policy with rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub policy: ObjectId,
    pub ring: usize,
    /// The policy's approved updates for the computer, open to its ring or not.
    pub updates: Vec<UpdateId>,
}

/// Where a computer sits and what it says about itself, for targeting.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// The computer's site and the sites above it, nearest first.
    pub sites: &'a [NodeId],
    pub inventory: &'a Inventory,
    /// Unix seconds, for release-age filters.
    pub now: i64,
}

/// What targeting chose for one computer: the policies, and each approved
/// update with its earliest deadline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub policies: Vec<ObjectId>,
    pub updates: BTreeMap<UpdateId, Option<i64>>,
    /// Security-only when any of the policies asks for it.
    pub track: Track,
}

impl Selection {
    /// A stable key of the approved set: computers with equal keys plan
    /// against the same catalog.
    pub fn catalog_key(&self) -> Vec<UpdateId> {
        self.updates.keys().cloned().collect()
    }
}

impl Targeting {
    pub fn new(
        updates: impl IntoIterator<Item = Update>,
        policies: impl IntoIterator<Item = Policy>,
        approvals: impl IntoIterator<Item = Approval>,
        windows: impl IntoIterator<Item = MaintenanceWindow>,
    ) -> Targeting {
        let mut by_policy: BTreeMap<ObjectId, Vec<Approval>> = BTreeMap::new();
        for approval in approvals {
            by_policy.entry(approval.policy.clone()).or_default().push(approval);
        }
        Targeting {
            policies: policies.into_iter().filter(|p| p.enabled).collect(),
            approvals: by_policy,
            windows: windows.into_iter().map(|w| (w.id.clone(), w)).collect(),
            updates: updates.into_iter().map(|u| (u.id.clone(), Arc::new(u))).collect(),
            rollouts: BTreeMap::new(),
        }
    }

    /// How far each update of a policy with rings has rolled out.
    pub fn with_rollouts(mut self, rollouts: impl IntoIterator<Item = Rollout>) -> Targeting {
        self.rollouts = rollouts
            .into_iter()
            .map(|r| ((r.policy.clone(), r.update.clone()), r))
            .collect();
        self
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn rollout(&self, policy: &ObjectId, update: &UpdateId) -> Option<&Rollout> {
        self.rollouts.get(&(policy.clone(), update.clone()))
    }

    /// The ring of a policy a computer is in: the first whose targets take
    /// it in, else the last. `None` when the policy has no rings.
    pub fn ring_of(policy: &Policy, at: &Placement<'_>) -> Option<usize> {
        if policy.rings.is_empty() {
            return None;
        }
        let probe = |targets: &crate::model::TargetFilter| {
            let mut p = policy.clone();
            p.targets = targets.clone();
            Self::targets(&p, at)
        };
        Some(
            policy
                .rings
                .iter()
                .position(|r| probe(&r.targets))
                .unwrap_or(policy.rings.len() - 1),
        )
    }

    /// Whether an update of a policy has reached a ring.
    pub fn open_to(&self, policy: &ObjectId, update: &UpdateId, ring: usize) -> bool {
        ring < self.rollout(policy, update).map_or(1, Rollout::open_rings)
    }

    /// The updates a policy approves (explicitly or by its filter).
    pub fn approved_by(&self, policy: &Policy, now: i64) -> Vec<(UpdateId, Option<i64>)> {
        let mut out: BTreeMap<UpdateId, Option<i64>> = BTreeMap::new();
        for approval in self.approvals.get(&policy.id).into_iter().flatten() {
            if self.updates.contains_key(&approval.update) {
                out.insert(approval.update.clone(), approval.deadline);
            }
        }
        for update in self.updates.values() {
            if Self::filter_takes(policy, update, now) {
                out.entry(update.id.clone()).or_insert(None);
            }
        }
        out.into_iter().collect()
    }

    /// For each policy with rings that targets the computer: its ring and
    /// the policy's approved updates.
    pub fn memberships(&self, at: &Placement<'_>) -> Vec<Membership> {
        self.policies
            .iter()
            .filter(|p| Self::targets(p, at))
            .filter_map(|p| {
                Some(Membership {
                    policy: p.id.clone(),
                    ring: Self::ring_of(p, at)?,
                    updates: self.approved_by(p, at.now).into_iter().map(|(u, _)| u).collect(),
                })
            })
            .collect()
    }

    /// Whether a policy's targets take in this computer. A rule that
    /// cannot be decided does not target it.
    pub fn targets(policy: &Policy, at: &Placement<'_>) -> bool {
        let targets = &policy.targets;
        if !targets.sites.is_empty() && !targets.sites.iter().any(|s| at.sites.contains(s)) {
            return false;
        }
        if !targets.groups.is_empty() {
            let groups = at.inventory.fact(GROUPS_FACT).unwrap_or_default();
            let mine: BTreeSet<&str> = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            if !targets.groups.iter().any(|g| mine.contains(g.as_str())) {
                return false;
            }
        }
        targets
            .rule
            .as_ref()
            .is_none_or(|rule| rule.eval(at.inventory).is_true())
    }

    /// Whether a policy's update filter (besides its explicit approvals)
    /// takes in an update. An empty filter takes in nothing.
    pub fn filter_takes(policy: &Policy, update: &Update, now: i64) -> bool {
        let f = &policy.updates;
        let any = !f.severities.is_empty()
            || !f.custom_severities.is_empty()
            || !f.products.is_empty()
            || !f.classifications.is_empty()
            || !f.publishers.is_empty()
            || !f.packages.is_empty()
            || f.min_age_days.is_some();
        if f.updates.contains(&update.id) {
            return true;
        }
        if !any {
            return false;
        }
        (f.severities.is_empty() || f.severities.contains(&update.severity))
            && (f.custom_severities.is_empty()
                || update
                    .custom_severity
                    .as_ref()
                    .is_some_and(|c| f.custom_severities.contains(c)))
            && (f.products.is_empty()
                || f.products
                    .iter()
                    .any(|p| update.product.eq_ignore_ascii_case(p) || update.targets.iter().any(|t| t.product == *p)))
            && (f.classifications.is_empty() || f.classifications.contains(&update.classification))
            && (f.publishers.is_empty() || f.publishers.iter().any(|p| update.vendor.eq_ignore_ascii_case(p)))
            && (f.packages.is_empty()
                || update
                    .package
                    .as_ref()
                    .is_some_and(|pk| f.packages.iter().any(|p| pk.id.eq_ignore_ascii_case(p))))
            && f.min_age_days.is_none_or(|days| {
                update.release_date.is_some_and(|released| {
                    let age = jiff::Timestamp::from_second(now)
                        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
                        .ok()
                        .and_then(|today| (today - released).get_days().try_into().ok());
                    age.is_some_and(|age: u32| age >= days)
                })
            })
    }

    /// The policies that target the computer and the updates they approve
    /// for it, each with its earliest deadline.
    pub fn select(&self, at: &Placement<'_>) -> Selection {
        let mut selection = Selection::default();
        for policy in self.policies.iter().filter(|p| Self::targets(p, at)) {
            selection.policies.push(policy.id.clone());
            selection.track = selection.track.max(policy.track);
            let ring = Self::ring_of(policy, at);
            for (update, deadline) in self.approved_by(policy, at.now) {
                // A staged rollout reaches this computer's ring in its time.
                if ring.is_some_and(|r| !self.open_to(&policy.id, &update, r)) {
                    continue;
                }
                let deadline = [deadline, policy.deadline].into_iter().flatten().min();
                let slot = selection.updates.entry(update).or_insert(deadline);
                *slot = [*slot, deadline].into_iter().flatten().min();
            }
        }
        selection
    }

    /// The catalog of a selection's updates.
    pub fn catalog(&self, selection: &Selection) -> Catalog {
        Catalog::new(
            selection
                .updates
                .keys()
                .filter_map(|id| self.updates.get(id))
                .map(|u| Update::clone(u)),
        )
    }

    /// The assignment for a computer, from the plan of its inventory
    /// against the selection's catalog.
    pub fn assignment(
        &self,
        computer: &ComputerId,
        site: &NodeId,
        inventory_hash: &str,
        selection: &Selection,
        plan: &Plan,
        now: i64,
    ) -> Assignment {
        let policies: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| selection.policies.contains(&p.id))
            .collect();
        let mut window_ids = BTreeSet::new();
        for policy in &policies {
            window_ids.extend(policy.maintenance_windows.iter().cloned());
        }
        // A policy that names windows none of which replicated here cannot
        // be honoured by "any time": it keeps an empty set of windows only
        // when no policy names any.
        let maintenance_windows = window_ids
            .iter()
            .filter_map(|id| self.windows.get(id).cloned())
            .collect();
        let steps = plan
            .required
            .iter()
            .filter_map(|entry| {
                let update = self.updates.get(&entry.id)?;
                Some(Step {
                    update: entry.id.clone(),
                    title: entry.title.to_string(),
                    severity: entry.severity,
                    classification: entry.classification,
                    restart: update.restart,
                    install: update.install.clone(),
                    content: update.content.clone(),
                    deadline: selection.updates.get(&entry.id).copied().flatten(),
                    after: entry.after.clone(),
                })
            })
            .collect();
        let severity = |id: &UpdateId| self.updates.get(id).map(|u| u.severity).unwrap_or_default();
        let mut statuses = Vec::new();
        let mut listed = BTreeSet::new();
        let mut push = |id: &UpdateId, state: ComplianceState| {
            if listed.insert(id.clone()) {
                statuses.push(Status {
                    update: id.clone(),
                    severity: severity(id),
                    state,
                });
            }
        };
        for item in &plan.installed {
            push(&item.id, ComplianceState::Installed);
        }
        for item in &plan.superseded {
            push(&item.id, ComplianceState::Superseded);
        }
        for item in &plan.unknown {
            push(
                &item.id,
                ComplianceState::Unknown {
                    reason: item.reason.to_string(),
                },
            );
        }
        let required: BTreeSet<&UpdateId> = plan.required.iter().map(|e| &e.id).collect();
        for id in selection.updates.keys() {
            if !required.contains(id) {
                push(id, ComplianceState::NotApplicable);
            }
        }
        Assignment {
            computer: computer.clone(),
            site: site.clone(),
            inventory: inventory_hash.to_owned(),
            issued_at: now,
            policies: selection.policies.clone(),
            steps,
            statuses,
            maintenance_windows,
            restart: if policies.iter().any(|p| p.restart == RestartPolicy::Suppress) {
                RestartPolicy::Suppress
            } else {
                RestartPolicy::AsVendorSays
            },
            vendor_catalog: policies.iter().any(|p| p.vendor_catalog),
            os_updater: policies.iter().any(|p| p.os_updater),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TargetFilter, UpdateFilter};
    use crate::planner;
    use crate::rule::{Cmp, Rule};
    use crate::version::Version;

    fn id(s: &str) -> UpdateId {
        UpdateId::new(s)
    }

    fn oid(s: &str) -> ObjectId {
        ObjectId::new(s).unwrap()
    }

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn update(kb: &str, severity: Severity, supersedes: &[&str]) -> Update {
        let mut u = Update::new(id(kb), format!("Update {kb}"), Classification::SecurityUpdate);
        u.severity = severity;
        u.supersedes = supersedes.iter().map(|s| id(s)).collect();
        u.applicable_when = Some(Rule::fact("os.family", Cmp::Eq, "windows"));
        u
    }

    fn policy(name: &str, targets: TargetFilter, updates: UpdateFilter) -> Policy {
        Policy {
            updates,
            targets,
            maintenance_windows: vec![oid("nightly")],
            ..Policy::new(oid(name), name)
        }
    }

    fn approval(policy: &str, kb: &str, deadline: Option<i64>) -> Approval {
        Approval {
            id: oid(&format!("{policy}-{kb}")),
            policy: oid(policy),
            update: id(kb),
            deadline,
        }
    }

    fn windows_pc(groups: &str) -> Inventory {
        let mut inv = Inventory::windows(Version::new(vec![10, 0, 19044, 1000]), false, Some("x64"));
        if !groups.is_empty() {
            inv.facts.insert(GROUPS_FACT.into(), groups.into());
        }
        inv
    }

    #[test]
    fn policies_target_by_site_group_and_rule_and_approve_with_the_earliest_deadline() {
        let targeting = Targeting::new(
            [
                update("KB1", Severity::Critical, &[]),
                update("KB2", Severity::Important, &["KB1"]),
                update("KB3", Severity::Low, &[]),
            ],
            [
                policy(
                    "branch",
                    TargetFilter {
                        sites: vec![node("region-eu")],
                        ..Default::default()
                    },
                    UpdateFilter::default(),
                ),
                policy(
                    "servers",
                    TargetFilter {
                        groups: vec!["servers".into()],
                        ..Default::default()
                    },
                    UpdateFilter {
                        severities: vec![Severity::Low],
                        ..Default::default()
                    },
                ),
                policy(
                    "linux-only",
                    TargetFilter {
                        rule: Some(Rule::fact("os.family", Cmp::Eq, "linux")),
                        ..Default::default()
                    },
                    UpdateFilter::default(),
                ),
            ],
            [
                approval("branch", "KB1", Some(2_000)),
                approval("branch", "KB2", None),
                approval("linux-only", "KB3", Some(10)),
                approval("branch", "KB-not-in-catalog", None),
            ],
            [],
        );
        let sites = [node("site-a"), node("region-eu"), node("root")];
        let inv = windows_pc("desktops, servers");
        let at = Placement {
            sites: &sites,
            inventory: &inv,
            now: 0,
        };
        let selection = targeting.select(&at);
        assert_eq!(selection.policies, vec![oid("branch"), oid("servers")]);
        assert_eq!(
            selection.updates,
            BTreeMap::from([(id("KB1"), Some(2_000)), (id("KB2"), None), (id("KB3"), None)])
        );
        let other_region = [node("site-b"), node("region-us")];
        let plain = windows_pc("");
        let elsewhere = targeting.select(&Placement {
            sites: &other_region,
            inventory: &plain,
            now: 0,
        });
        assert!(elsewhere.policies.is_empty() && elsewhere.updates.is_empty());

        let catalog = targeting.catalog(&selection);
        let plan = planner::plan(&catalog, &inv);
        let assignment = targeting.assignment(
            &ComputerId::new("pc-1").unwrap(),
            &node("site-a"),
            "hash",
            &selection,
            &plan,
            5,
        );
        let steps: Vec<&str> = assignment.steps.iter().map(|s| s.update.as_str()).collect();
        assert_eq!(steps, vec!["KB2", "KB3"], "KB1 is superseded by the approved KB2");
        let superseded: Vec<&str> = assignment
            .statuses
            .iter()
            .filter(|s| s.state == ComplianceState::Superseded)
            .map(|s| s.update.as_str())
            .collect();
        assert_eq!(superseded, vec!["KB1"]);
        assert!(assignment.vendor_catalog && !assignment.os_updater);
        assert!(
            assignment.maintenance_windows.is_empty(),
            "the named window did not replicate"
        );
    }

    #[test]
    fn publisher_and_package_filters() {
        let mut firefox = update(
            "winget:Mozilla.Firefox@156.0.1/x64/machine/nullsoft",
            Severity::Unspecified,
            &[],
        );
        firefox.vendor = "Mozilla".into();
        firefox.package = Some(crate::update::Package {
            id: "Mozilla.Firefox".into(),
            version: "156.0.1".into(),
            arch: "x64".into(),
            scope: Some("machine".into()),
            installer_type: "nullsoft".into(),
            locale: None,
        });
        let kb = update("KB5021233", Severity::Critical, &[]);
        let by_package = policy(
            "browsers",
            TargetFilter::default(),
            UpdateFilter {
                packages: vec!["mozilla.firefox".into()],
                ..UpdateFilter::default()
            },
        );
        assert!(Targeting::filter_takes(&by_package, &firefox, 0));
        assert!(!Targeting::filter_takes(&by_package, &kb, 0));
        let by_publisher = policy(
            "microsoft",
            TargetFilter::default(),
            UpdateFilter {
                publishers: vec!["microsoft".into()],
                ..UpdateFilter::default()
            },
        );
        assert!(Targeting::filter_takes(&by_publisher, &kb, 0));
        assert!(!Targeting::filter_takes(&by_publisher, &firefox, 0));
    }

    #[test]
    fn release_age_filters_count_whole_days() {
        let mut u = update("KB9", Severity::Low, &[]);
        u.release_date = Some(jiff::civil::date(2026, 11, 20));
        let p = policy(
            "aged",
            TargetFilter::default(),
            UpdateFilter {
                min_age_days: Some(7),
                ..Default::default()
            },
        );
        let nov_26 = 1_795_651_200; // 2026-11-26T00:00:00Z
        assert!(!Targeting::filter_takes(&p, &u, nov_26));
        assert!(Targeting::filter_takes(&p, &u, nov_26 + 86_400));
    }

    #[test]
    fn rings_receive_an_update_as_its_rollout_opens_them() {
        use crate::model::{Ring, Rollout};
        let mut staged = policy("staged", TargetFilter::default(), UpdateFilter::default());
        staged.rings = vec![
            Ring {
                name: "pilot".into(),
                targets: TargetFilter {
                    groups: vec!["pilot".into()],
                    ..Default::default()
                },
                soak_hours: 24,
                max_failure_percent: 10,
            },
            Ring {
                name: "production".into(),
                targets: TargetFilter::default(),
                soak_hours: 0,
                max_failure_percent: 5,
            },
        ];
        let base = Targeting::new(
            [update("KB1", Severity::Critical, &[])],
            [staged.clone()],
            [approval("staged", "KB1", None)],
            [],
        );
        let sites = [node("site-a")];
        let pilot = windows_pc("pilot");
        let other = windows_pc("desktops");
        let at = |inv| Placement {
            sites: &sites,
            inventory: inv,
            now: 0,
        };
        assert_eq!(Targeting::ring_of(&staged, &at(&pilot)), Some(0));
        assert_eq!(
            Targeting::ring_of(&staged, &at(&other)),
            Some(1),
            "no ring took it in: the last"
        );
        // No rollout yet: the first ring only.
        assert_eq!(base.select(&at(&pilot)).updates.len(), 1);
        assert!(base.select(&at(&other)).updates.is_empty());
        assert_eq!(
            base.select(&at(&other)).policies,
            vec![oid("staged")],
            "targeted, nothing open yet"
        );
        let memberships = base.memberships(&at(&other));
        assert_eq!(memberships[0].ring, 1);
        assert_eq!(memberships[0].updates, vec![id("KB1")]);
        let opened = base.clone().with_rollouts([Rollout {
            id: oid("staged/KB1"),
            policy: oid("staged"),
            update: id("KB1"),
            opened: vec![0, 86_400],
            halted: None,
        }]);
        assert_eq!(opened.select(&at(&other)).updates.len(), 1, "the second ring is open");
    }
}
