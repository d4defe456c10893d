//! A node reads the time from its configured clock, so that what depends
//! on it is tested by setting the time, not by waiting: the freeze of a
//! view whose root timestamp is too old, and the expiry of an API token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cascade_core::model::NodeId;
use cascade_node::{Checked, ManualClock, Node};
use cascade_store::Store;
use cascade_trust::{Identity, Role};

const T: i64 = 1_800_000_000;

fn root(clock: Arc<ManualClock>) -> (Arc<Node>, tempfile::TempDir) {
    let id = NodeId::new("root").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Checked::standalone(id.clone(), dir.path().to_path_buf()).unwrap();
    config.clock = clock;
    let store = Arc::new(Store::temporary(id).unwrap());
    (Node::new(config, store), dir)
}

#[test]
fn a_root_timestamp_grows_stale_as_the_clock_moves() {
    let clock = Arc::new(ManualClock::new(T));
    let (node, _dir) = root(clock.clone());
    node.publish_timestamp().unwrap();
    let fresh = node.freshness().unwrap();
    assert_eq!(fresh.timestamp, Some(T));
    assert!(!fresh.stale, "{fresh:?}");
    // A day and a second later, nothing newer signed: a frozen view.
    clock.advance(fresh.max_age_seconds as i64 + 1);
    let frozen = node.freshness().unwrap();
    assert!(frozen.stale, "{frozen:?}");
    assert_eq!(frozen.age_seconds, Some(fresh.max_age_seconds as i64 + 1));
    // A new timestamp at the new time ends it.
    node.publish_timestamp().unwrap();
    assert!(!node.freshness().unwrap().stale);
}

#[tokio::test]
async fn an_api_token_expires_when_the_clock_passes_its_time() {
    let clock = Arc::new(ManualClock::new(T));
    let (node, _dir) = root(clock.clone());
    let admin = node
        .admin_caller(
            &Identity::Admin {
                name: "alice".into(),
                role: Role::Admin,
                site: None,
            },
            "certificate",
        )
        .unwrap();
    let authorized = node.authorize(admin, "tokens.create").unwrap();
    let made = node
        .invoke(
            authorized,
            serde_json::json!({"name": "dashboard", "role": "auditor", "ttl_hours": 2}),
        )
        .await
        .unwrap();
    assert_eq!(made["expires_at"], T + 2 * 3600);
    let token = made["token"].as_str().unwrap();
    assert!(node.token_caller(token).await.is_ok());
    clock.advance(2 * 3600 - 1);
    assert!(node.token_caller(token).await.is_ok(), "a second before it expires");
    clock.advance(1);
    let refused = node.token_caller(token).await.unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
}
