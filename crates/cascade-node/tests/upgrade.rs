//! A tree in the middle of an upgrade (root first, then children): the
//! root already writes what a later release writes — a policy with a field
//! this release does not know and an object of a kind it does not know —
//! and the nodes below run this release. Each node verifies the root's
//! signatures over the bytes as signed, stores and forwards them unchanged
//! (over the links and in a snapshot), and leaves them out of its
//! targeting, while everything it does know goes on as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cascade_core::exact::Exact;
use cascade_core::model::{ChangeOp, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Policy, Site};
use cascade_node::Node;
use cascade_store::Store;
use common::{Harness, wait_for};

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn site(name: &str, parent: &str) -> ChangeOp {
    ChangeOp::Upsert(Object::Site(Site {
        id: ObjectId::new(name).unwrap(),
        name: name.to_owned(),
        parent: Some(id(parent)),
    }))
}

/// What a later release signs for a policy with a field this one does not
/// know: this release's canonical JSON of the policy, plus the field.
fn policy_with_a_later_field() -> Exact<ChangeOp> {
    let mut p = Policy::new(ObjectId::new("next").unwrap(), "Next release's policy");
    p.enabled = true;
    let mut tree = serde_json::to_value(ChangeOp::Upsert(Object::Policy(Box::new(p)))).unwrap();
    tree["upsert"]["object"].as_object_mut().unwrap().insert(
        "quiet_hours".into(),
        serde_json::json!({"from": "22:00", "to": "06:00"}),
    );
    Exact::from_json(&serde_json::to_string(&tree).unwrap()).unwrap()
}

const WIDGET: &str = r#"{"upsert":{"kind":"widget","object":{"colour":"blue","id":"w1"}}}"#;
const WIDGET_GONE: &str = r#"{"delete":{"id":"w1","kind":"widget"}}"#;

fn key(kind: ObjectKind, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        id: ObjectId::new(name).unwrap(),
    }
}

fn policy_ids(node: &Node) -> Vec<String> {
    node.effective_objects(ObjectKind::Policy)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o {
            Object::Policy(p) => Some(p.id.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_releases_objects_are_verified_kept_forwarded_and_not_acted_on() {
    let h = Harness::new(3650);
    let (root, root_addr) = h.node("root", None, |_| {}).await;
    root.append_local(site("mid", "root")).await.unwrap();
    let (mid, mid_addr) = h.node("mid", Some((id("root"), root_addr)), |_| {}).await;
    mid.append_local(site("leaf", "mid")).await.unwrap();
    let (leaf, _) = h.node("leaf", Some((id("mid"), mid_addr)), |_| {}).await;

    // The root writes as the later release would, and a policy this
    // release knows all of.
    let later = policy_with_a_later_field();
    assert!(later.unknown()[0].contains("quiet_hours"), "{:?}", later.unknown());
    root.append_local(later.clone()).await.unwrap();
    let widget = Exact::<ChangeOp>::from_json(WIDGET).unwrap();
    assert_eq!(widget.unknown(), ["kind `widget`"]);
    root.append_local(widget).await.unwrap();
    let mut known = Policy::new(ObjectId::new("known").unwrap(), "Known");
    known.enabled = true;
    let head = root
        .append_local(ChangeOp::Upsert(Object::Policy(Box::new(known))))
        .await
        .unwrap()
        .seq;
    wait_for("the leaf to apply the root's changes", Duration::from_secs(30), || {
        leaf.store.applied_seq(&id("root")).unwrap() == head
    })
    .await;

    let widget_key = key(ObjectKind::unknown("widget").unwrap(), "w1");
    let policy_key = key(ObjectKind::Policy, "next");
    let at_root = root.store.object(&policy_key).unwrap().unwrap();
    let widget_at_root = root.store.object(&widget_key).unwrap().unwrap();
    for node in [&mid, &leaf] {
        // Verified (they applied it), and kept as the root signed it.
        let policy = node.store.object(&policy_key).unwrap().unwrap();
        assert_eq!(policy.object.raw(), at_root.object.raw());
        assert!(policy.object.raw().contains("quiet_hours"));
        assert_eq!(policy.seal, at_root.seal);
        assert!(
            policy.object.unknown_reason().unwrap().contains("quiet_hours"),
            "{:?}",
            policy.object.unknown()
        );
        let widget = node.store.object(&widget_key).unwrap().unwrap();
        assert_eq!(widget.object.raw(), widget_at_root.object.raw());
        // Targeting leaves out what it cannot read whole.
        assert_eq!(policy_ids(node), ["known"], "at {}", node.id);
    }
    assert_eq!(policy_ids(&root), ["known"]);

    // A snapshot (what a new or far-behind child gets) carries them as
    // signed, and the state hash over them checks out at a fresh store.
    let snapshot = mid.store.snapshot(&[id("root"), id("mid")]).unwrap();
    let roots = cascade_trust::pem_certs(&h.ca.cert_pem).unwrap();
    let fresh = Store::temporary(id("late")).unwrap();
    fresh
        .apply_snapshot_verified(
            &snapshot,
            &|change, keys, any_key| cascade_trust::sign::check_change(&roots, change, keys, any_key),
            &|origin, tip, keys| cascade_trust::sign::check_tip(origin, tip, keys),
        )
        .unwrap();
    assert_eq!(
        fresh.object(&policy_key).unwrap().unwrap().object.raw(),
        at_root.object.raw()
    );
    assert_eq!(
        fresh.object(&widget_key).unwrap().unwrap().object.raw(),
        widget_at_root.object.raw()
    );

    // The later release deletes its object: this release follows.
    let head = root
        .append_local(Exact::<ChangeOp>::from_json(WIDGET_GONE).unwrap())
        .await
        .unwrap()
        .seq;
    wait_for("the leaf to apply the delete", Duration::from_secs(30), || {
        leaf.store.applied_seq(&id("root")).unwrap() == head
    })
    .await;
    assert!(leaf.store.object(&widget_key).unwrap().is_none());
    assert!(mid.store.object(&widget_key).unwrap().is_none());

    // Each link knows the protocol its parent named, and each parent the
    // protocol of its child (what a mixed tree's operator looks at).
    for (node, parent) in [(&mid, "root"), (&leaf, "mid")] {
        let links = node.links();
        assert!(
            links
                .iter()
                .any(|(_, direction, l)| *direction == "down" && l.protocol == cascade_proto::PROTOCOL),
            "{} to {parent}: {links:?}",
            node.id
        );
    }
    for (node, child) in [(&root, "mid"), (&mid, "leaf")] {
        let links = node.links();
        for direction in ["child-down", "child-up"] {
            assert!(
                links
                    .iter()
                    .any(|(peer, d, l)| peer == child && *d == direction && l.protocol == cascade_proto::PROTOCOL),
                "{} from {child} ({direction}): {links:?}",
                node.id
            );
        }
    }
}

/// A registered child of a release before protocol versions (it names no
/// protocol) is refused when it connects, with both releases named and
/// what to do; naming this release's protocol it is let in, and the reply
/// names the parent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_of_an_older_protocol_is_refused_with_what_to_do() {
    let h = Harness::new(3650);
    let (root, root_addr) = h.node("root", None, |_| {}).await;
    root.append_local(site("mid", "root")).await.unwrap();
    let mid = h.issue("mid");
    let channel = cascade_node::channel(
        &root_addr,
        Some(&id("root")),
        &h.ca.cert_pem,
        &mid.cert_pem,
        &mid.key_pem,
    )
    .await
    .unwrap();
    let mut client = cascade_proto::v1::hierarchy_client::HierarchyClient::new(channel);
    let refused = client
        .subscribe(cascade_proto::v1::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("before protocol versions") && refused.message().contains("upgrade"),
        "{}",
        refused.message()
    );
    assert_eq!(cascade_proto::protocol_of(refused.metadata()), cascade_proto::PROTOCOL);
    let accepted = client
        .subscribe(cascade_proto::with_protocol(
            cascade_proto::v1::SubscribeRequest::default(),
        ))
        .await
        .unwrap();
    assert_eq!(cascade_proto::protocol_of(accepted.metadata()), cascade_proto::PROTOCOL);
}

#[test]
fn a_seal_of_a_later_format_is_refused_with_the_reason() {
    let why = cascade_core::seal::unverifiable_format(cascade_core::exact::FORMAT + 1).unwrap();
    assert!(why.contains("upgrade this node"), "{why}");
    assert!(cascade_core::seal::unverifiable_format(cascade_core::exact::FORMAT).is_none());
    assert!(cascade_core::seal::unverifiable_format(2).is_none());
    assert!(cascade_core::seal::unverifiable_format(1).is_some());
}
