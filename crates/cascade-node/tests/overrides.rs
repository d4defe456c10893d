//! Overrides are applied in one place, with what the owner lets children
//! override now: a field the owner locked again after a child overrode it
//! is the owner's again in the node's targeting, whatever the child's
//! stored override still says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cascade_core::model::{Change, ChangeOp, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Override, Policy};
use cascade_node::{Checked, Node};
use cascade_store::Store;

fn policy(overridable: &[&str]) -> Change {
    let mut p = Policy::new(ObjectId::new("pilot").unwrap(), "Pilot");
    p.enabled = true;
    p.overridable = overridable.iter().map(|f| (*f).to_owned()).collect::<BTreeSet<_>>();
    Change {
        origin: NodeId::new("root").unwrap(),
        seq: 0,
        op: ChangeOp::Upsert(Object::Policy(Box::new(p))).into(),
        seal: None,
    }
}

fn enabled(node: &Node) -> bool {
    match node.effective_objects(ObjectKind::Policy).unwrap().as_slice() {
        [Object::Policy(p)] => p.enabled,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_field_the_owner_locked_again_is_the_owners_in_targeting() {
    let site = NodeId::new("site").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Checked::standalone(site.clone(), dir.path().to_path_buf()).unwrap();
    let store = Arc::new(Store::temporary(site.clone()).unwrap());
    let node = Node::new(config, store.clone());
    // The root lets children switch the policy off; this site does.
    let mut first = policy(&["enabled"]);
    first.seq = 1;
    store.apply_changes(&[first]).unwrap();
    store
        .append_local(ChangeOp::Override(Override {
            target: ObjectKey {
                kind: ObjectKind::Policy,
                id: ObjectId::new("pilot").unwrap(),
            },
            fields: BTreeMap::from([("enabled".to_owned(), serde_json::json!(false))]),
        }))
        .unwrap();
    assert!(!enabled(&node), "the site's override is in force");
    // The root locks the field again (another stays overridable): the
    // site's stored override stays, and no longer counts.
    let mut second = policy(&["name"]);
    second.seq = 2;
    store.apply_changes(&[second]).unwrap();
    assert_eq!(
        store
            .overrides(&ObjectKey {
                kind: ObjectKind::Policy,
                id: ObjectId::new("pilot").unwrap()
            })
            .unwrap()
            .len(),
        1
    );
    assert!(enabled(&node), "the owner locked the field: its own value applies");
}
