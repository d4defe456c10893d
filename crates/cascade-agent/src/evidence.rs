//! The agent's own check of what its node hands it: the node computes the
//! assignment, but every update it says to install must be one its origin
//! signed (same content hashes, same command) and one a signed approval or
//! a signed policy (with its signed overrides) of the computer's policies
//! approves; the root's signed timestamp says how fresh the view is. A
//! node that lies cannot make the agent install something else, and cannot
//! freeze it unnoticed.

use std::collections::BTreeMap;

use cascade_core::UpdateId;
use cascade_core::assignment::{Assignment, Targeting};
use cascade_core::model::{ChangeOp, NodeId, Object, ObjectId, Override, Policy, SigningKey};
use cascade_core::seal::{Attack, Evidence, Refused};

/// What the evidence says about one assignment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Steps that must not be installed, with the attack.
    pub refused: BTreeMap<UpdateId, Refused>,
    /// Why the view is stale (a freeze), when it is.
    pub stale: Option<Refused>,
    /// The newest root timestamp known, this one included.
    pub newest_timestamp: Option<i64>,
}

/// Checks `evidence` (as the node sent it) for the assignment's steps.
pub fn check(
    roots: &[Vec<u8>],
    root: Option<&NodeId>,
    evidence: &Evidence,
    assignment: &Assignment,
    newest_seen: Option<i64>,
    now: i64,
    max_age: i64,
) -> Verdict {
    let steps = &assignment.steps;
    let mut verdict = Verdict::default();
    // Objects of one import share one signature: checked once.
    let verified = cascade_trust::sign::Verified::default();
    let check_change = |change: &cascade_core::model::Change, keys: Option<&SigningKey>| {
        cascade_trust::sign::check_change_with(roots, change, keys, true, Some(&verified))
    };
    let mut keys: BTreeMap<&NodeId, &SigningKey> = BTreeMap::new();
    for item in &evidence.objects {
        if let Object::SigningKey(k) = item.object.value() {
            match check_change(&item.change(), None) {
                Ok(()) if k.node == item.origin => {
                    keys.insert(&item.origin, k);
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(origin = %item.origin, "refused the signing keys sent: {e}"),
            }
        }
    }
    let mut updates = BTreeMap::new();
    let mut approved: Vec<(ObjectId, UpdateId)> = Vec::new();
    let mut policies: BTreeMap<ObjectId, Policy> = BTreeMap::new();
    let mut timestamp: Option<i64> = None;
    for item in &evidence.objects {
        if matches!(item.object.value(), Object::SigningKey(_)) {
            continue;
        }
        if let Err(e) = cascade_trust::sign::check_change(roots, &item.change(), keys.get(&item.origin).copied(), true)
        {
            tracing::warn!(origin = %item.origin, "refused evidence: {e}");
            if let Object::Update(u) = item.object.value() {
                verdict.refused.insert(u.id.clone(), e);
            }
            continue;
        }
        // Signed by a later release with fields this agent does not know:
        // they may narrow what the object means, so it is not acted on.
        if let Some(why) = item.object.unknown_reason() {
            tracing::warn!(origin = %item.origin, "not acting on {}: {why}", item.object.key().map(|k| k.to_string()).unwrap_or_default());
            continue;
        }
        match item.object.value() {
            Object::Update(u) => {
                updates.insert(u.id.clone(), u.as_ref());
            }
            Object::Timestamp(t) if t.node == item.origin && root.is_none_or(|r| *r == item.origin) => {
                timestamp = Some(timestamp.map_or(t.at, |old| old.max(t.at)));
            }
            Object::Approval(a) => approved.push((a.policy.clone(), a.update.clone())),
            Object::Policy(p) => {
                policies.insert(p.id.clone(), p.as_ref().clone());
            }
            _ => {}
        }
    }
    // The policies as they apply: the owner's version with the fields
    // that signed overrides change and the owner lets them change.
    let mut overrides: BTreeMap<_, Vec<(&NodeId, &Override)>> = BTreeMap::new();
    for change in &evidence.overrides {
        let ChangeOp::Override(over) = change.op.value() else {
            continue;
        };
        if let Some(why) = change.op.unknown_reason() {
            tracing::warn!(origin = %change.origin, "not applying an override: {why}");
            continue;
        }
        if let Err(e) = check_change(change, keys.get(&change.origin).copied()) {
            tracing::warn!(origin = %change.origin, "refused an override sent: {e}");
            continue;
        }
        overrides
            .entry(over.target.id.clone())
            .or_default()
            .push((&change.origin, over));
    }
    // Each policy once, from the owner's version, in the order the node
    // sent them (the farthest origin's first).
    for (id, list) in overrides {
        let Some(policy) = policies.get_mut(&id) else {
            continue;
        };
        let (applied, notes) = Object::Policy(Box::new(policy.clone())).with_overrides(list);
        for note in notes {
            tracing::warn!(policy = %id, "{note}");
        }
        if let Object::Policy(p) = applied {
            *policy = *p;
        }
    }
    for step in steps {
        if verdict.refused.contains_key(&step.update) {
            continue;
        }
        let problem = match updates.get(&step.update) {
            None => Some(Refused::new(
                Attack::BadSignature,
                format!("{}: the node sent no signed update for it", step.update),
            )),
            Some(u) if u.content != step.content => Some(Refused::new(
                Attack::BadSignature,
                format!("{}: its content differs from what its origin signed", step.update),
            )),
            Some(u) if u.install != step.install => Some(Refused::new(
                Attack::BadSignature,
                format!(
                    "{}: its install command differs from what its origin signed",
                    step.update
                ),
            )),
            Some(u) => {
                let by_approval = approved
                    .iter()
                    .any(|(policy, update)| *update == step.update && assignment.policies.contains(policy));
                let by_filter = assignment.policies.iter().any(|id| {
                    policies
                        .get(id)
                        .is_some_and(|p| p.enabled && Targeting::filter_takes(p, u, now))
                });
                (!by_approval && !by_filter).then(|| {
                    Refused::new(
                        Attack::BadSignature,
                        format!(
                            "{}: no signed approval or policy of this computer's policies approves it",
                            step.update
                        ),
                    )
                })
            }
        };
        if let Some(p) = problem {
            verdict.refused.insert(step.update.clone(), p);
        }
    }
    if let (Some(got), Some(seen)) = (timestamp, newest_seen)
        && got < seen
    {
        tracing::warn!(
            "{}",
            Refused::new(
                Attack::Rollback,
                format!("the node sent a root timestamp ({got}) older than one seen before ({seen})")
            )
        );
    }
    verdict.newest_timestamp = match (timestamp, newest_seen) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    verdict.stale = match verdict.newest_timestamp {
        None => Some(Refused::new(
            Attack::Freeze,
            "no signed timestamp from the root was received",
        )),
        Some(at) if now - at > max_age => Some(Refused::new(
            Attack::Freeze,
            format!(
                "the newest signed timestamp from the root is {} s old (limit {max_age} s)",
                now - at
            ),
        )),
        Some(_) => None,
    };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::assignment::Step;
    use cascade_core::model::{Approval, Override, Timestamp};
    use cascade_core::seal::SignedObject;
    use cascade_core::update::{Classification, Content, InstallCommand, Severity, Update};
    use cascade_store::Store;
    use cascade_trust::sign::KeySigner;
    use cascade_trust::{Ca, Identity};
    use std::sync::Arc;

    const NOW: i64 = 1_790_000_000;

    struct Origin {
        store: Store,
        id: NodeId,
        signer: Arc<KeySigner>,
    }

    impl Origin {
        fn new(ca: &Ca, id: &str) -> Origin {
            use base64::Engine;
            let id = NodeId::new(id).unwrap();
            let issued = ca.issue(&Identity::Node(id.clone()), &[], NOW - 60, 30).unwrap();
            let signer = Arc::new(KeySigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap());
            let store = Store::temporary(id.clone()).unwrap();
            store.set_signer(signer.clone());
            let origin = Origin {
                store,
                id,
                signer: signer.clone(),
            };
            origin.put(Object::SigningKey(SigningKey {
                node: origin.id.clone(),
                certificates: vec![base64::engine::general_purpose::STANDARD.encode(signer.certificate())],
            }));
            origin
        }

        fn put(&self, object: Object) -> SignedObject {
            let key = object.key().unwrap();
            self.store.append_local(ChangeOp::Upsert(object)).unwrap();
            self.store.object(&key).unwrap().unwrap()
        }

        fn keys(&self) -> SignedObject {
            self.store
                .object(&cascade_core::model::ObjectKey {
                    kind: cascade_core::model::ObjectKind::SigningKey,
                    id: ObjectId::new(self.id.as_str()).unwrap(),
                })
                .unwrap()
                .unwrap()
        }
    }

    fn update(id: &str, sha: char) -> Update {
        let mut u = Update::new(UpdateId::new(id), id.to_owned(), Classification::SecurityUpdate);
        u.severity = Severity::Critical;
        u.install = Some(InstallCommand {
            program: "/bin/true".into(),
            arguments: vec![],
            exit_codes: vec![],
        });
        u.content = vec![Content {
            file_name: format!("{id}.bin"),
            sha256: sha.to_string().repeat(64),
            size: 1,
            url: None,
        }];
        u
    }

    fn step(u: &Update) -> Step {
        Step {
            update: u.id.clone(),
            title: u.title.to_string(),
            severity: u.severity,
            classification: u.classification,
            restart: u.restart,
            install: u.install.clone(),
            content: u.content.clone(),
            deadline: None,
            after: vec![],
        }
    }

    fn assignment(policies: &[&str], steps: Vec<Step>) -> Assignment {
        serde_json::from_value(serde_json::json!({
            "computer": "pc-1", "site": "site", "inventory": "x", "issued_at": NOW,
            "policies": policies, "restart": "as_vendor_says", "vendor_catalog": true, "os_updater": false
        }))
        .map(|mut a: Assignment| {
            a.steps = steps;
            a
        })
        .unwrap()
    }

    #[test]
    fn steps_must_be_signed_and_approved_and_the_view_fresh() {
        let ca = Ca::generate("Example", NOW - 3600, 10).unwrap();
        let roots = [ca.cert_der()];
        let root = Origin::new(&ca, "root");
        let site = Origin::new(&ca, "site");
        let ex1 = update("EX-1", 'a');
        let ex2 = update("EX-2", 'b');
        let signed1 = root.put(Object::Update(Box::new(ex1.clone())));
        let signed2 = root.put(Object::Update(Box::new(ex2.clone())));
        let mut policy = Policy::new(ObjectId::new("servers").unwrap(), "Servers");
        policy.overridable.insert("updates".into());
        let signed_policy = root.put(Object::Policy(Box::new(policy.clone())));
        let approval = root.put(Object::Approval(Approval {
            id: ObjectId::new("servers/EX-1").unwrap(),
            policy: ObjectId::new("servers").unwrap(),
            update: UpdateId::new("EX-1"),
            deadline: None,
        }));
        let stamp = root.put(Object::Timestamp(Timestamp {
            node: root.id.clone(),
            at: NOW - 10,
        }));
        let base = Evidence {
            objects: vec![
                root.keys(),
                signed1.clone(),
                signed2.clone(),
                signed_policy,
                approval.clone(),
                stamp.clone(),
            ],
            overrides: vec![],
        };
        let check = |e: &Evidence, a: &Assignment, now: i64| check(&roots, Some(&root.id), e, a, None, now, 3600);

        // Honest: EX-1 is signed and approved.
        let honest = assignment(&["servers"], vec![step(&ex1)]);
        let v = check(&base, &honest, NOW);
        assert!(v.refused.is_empty(), "{v:?}");
        assert!(v.stale.is_none());
        assert_eq!(v.newest_timestamp, Some(NOW - 10));

        // The step's hash altered by the node.
        let mut altered = step(&ex1);
        altered.content[0].sha256 = "e".repeat(64);
        let v = check(&base, &assignment(&["servers"], vec![altered]), NOW);
        assert!(v.refused[&ex1.id].detail.contains("content differs"), "{v:?}");

        // The evidence altered to match: its seal no longer holds.
        let mut forged = base.clone();
        for o in &mut forged.objects {
            if let Object::Update(u) = o.object.value()
                && u.id == ex1.id
            {
                let mut u = u.clone();
                u.content[0].sha256 = "e".repeat(64);
                o.object = Object::Update(u).into();
            }
        }
        let mut altered = step(&ex1);
        altered.content[0].sha256 = "e".repeat(64);
        let v = check(&forged, &assignment(&["servers"], vec![altered]), NOW);
        assert_eq!(v.refused[&ex1.id].attack, Attack::BadSignature, "{v:?}");

        // A signed update that nothing approved (EX-2), or approved for a
        // policy that is not this computer's.
        let v = check(&base, &assignment(&["servers"], vec![step(&ex2)]), NOW);
        assert!(v.refused[&ex2.id].detail.contains("no signed approval"), "{v:?}");
        let v = check(&base, &assignment(&["other"], vec![step(&ex1)]), NOW);
        assert!(v.refused.contains_key(&ex1.id), "{v:?}");

        // A site's signed override of an overridable filter approves EX-2.
        let over = Override {
            target: signed_policy_key(),
            fields: [("updates".to_owned(), serde_json::json!({"updates": ["EX-2"]}))].into(),
        };
        let override_change = sealed_override(&site, over.clone());
        let mut with_override = base.clone();
        with_override.objects.push(site.keys());
        with_override.overrides.push(override_change.clone());
        let v = check(&with_override, &assignment(&["servers"], vec![step(&ex2)]), NOW);
        assert!(v.refused.is_empty(), "{v:?}");
        // An override of a field the owner keeps is ignored.
        let mut locked = with_override.clone();
        let mut change = override_change;
        if let ChangeOp::Override(o) = change.op.value() {
            let mut o = o.clone();
            o.fields = [("enabled".to_owned(), serde_json::json!(true))].into();
            change.op = ChangeOp::Override(o).into();
        }
        locked.overrides = vec![change];
        let v = check(&locked, &assignment(&["servers"], vec![step(&ex2)]), NOW);
        assert!(v.refused.contains_key(&ex2.id), "{v:?}");

        // Freshness: too old, missing, from another origin, or older than
        // one seen before.
        let v = check(&base, &honest, NOW + 4000);
        assert_eq!(v.stale.as_ref().unwrap().attack, Attack::Freeze);
        let mut no_stamp = base.clone();
        no_stamp
            .objects
            .retain(|o| !matches!(o.object.value(), Object::Timestamp(_)));
        assert!(check(&no_stamp, &honest, NOW).stale.is_some());
        let mut foreign = no_stamp.clone();
        foreign.objects.push(site.keys());
        foreign.objects.push(site.put(Object::Timestamp(Timestamp {
            node: site.id.clone(),
            at: NOW,
        })));
        assert!(
            check(&foreign, &honest, NOW).stale.is_some(),
            "only the root's timestamps count"
        );
        let v = super::check(&roots, Some(&root.id), &base, &honest, Some(NOW + 100), NOW + 200, 3600);
        assert_eq!(
            v.newest_timestamp,
            Some(NOW + 100),
            "a newer one seen before stays the newest"
        );
    }

    /// An approval a later release signed with a field this agent does
    /// not know (it may narrow the approval) approves nothing here; the
    /// same approval without it does.
    #[test]
    fn an_object_with_fields_this_agent_does_not_know_is_not_acted_on() {
        let ca = Ca::generate("Example", NOW - 3600, 10).unwrap();
        let roots = [ca.cert_der()];
        let root = Origin::new(&ca, "root");
        let ex2 = update("EX-2", 'b');
        let signed2 = root.put(Object::Update(Box::new(ex2.clone())));
        let policy = root.put(Object::Policy(Box::new(Policy::new(
            ObjectId::new("servers").unwrap(),
            "Servers",
        ))));
        let stamp = root.put(Object::Timestamp(Timestamp {
            node: root.id.clone(),
            at: NOW - 10,
        }));
        let approval = Approval {
            id: ObjectId::new("servers/EX-2").unwrap(),
            policy: ObjectId::new("servers").unwrap(),
            update: UpdateId::new("EX-2"),
            deadline: None,
        };
        let mut tree = serde_json::to_value(ChangeOp::Upsert(Object::Approval(approval.clone()))).unwrap();
        tree["upsert"]["object"]["only_on_weekends"] = serde_json::json!(true);
        let later: cascade_core::exact::Exact<ChangeOp> =
            cascade_core::exact::Exact::from_json(&tree.to_string()).unwrap();
        root.store.append_local(later).unwrap();
        let key = Object::Approval(approval.clone()).key().unwrap();
        let signed_later = root.store.object(&key).unwrap().unwrap();
        assert!(signed_later.object.raw().contains("only_on_weekends"));
        let evidence = |approval: SignedObject| Evidence {
            objects: vec![root.keys(), signed2.clone(), policy.clone(), approval, stamp.clone()],
            overrides: vec![],
        };
        let wanted = assignment(&["servers"], vec![step(&ex2)]);
        let v = check(
            &roots,
            Some(&root.id),
            &evidence(signed_later),
            &wanted,
            None,
            NOW,
            3600,
        );
        assert!(v.refused[&ex2.id].detail.contains("no signed approval"), "{v:?}");
        let known = root.put(Object::Approval(approval));
        let v = check(&roots, Some(&root.id), &evidence(known), &wanted, None, NOW, 3600);
        assert!(v.refused.is_empty(), "{v:?}");
    }

    fn signed_policy_key() -> cascade_core::model::ObjectKey {
        cascade_core::model::ObjectKey {
            kind: cascade_core::model::ObjectKind::Policy,
            id: ObjectId::new("servers").unwrap(),
        }
    }

    /// A site's sealed override, as its store would make it.
    fn sealed_override(site: &Origin, over: Override) -> cascade_core::model::Change {
        let mut change = cascade_core::model::Change {
            origin: site.id.clone(),
            seq: 99,
            op: ChangeOp::Override(over).into(),
            seal: None,
        };
        change
            .seal_with(String::new(), String::new(), site.signer.as_ref())
            .unwrap();
        change
    }
}
