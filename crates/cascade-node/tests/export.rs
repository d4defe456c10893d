//! Exports stream every page of a report: through a listing that goes on
//! from its last row (pages of `KEYSET_PAGE_ROWS`) and through one that
//! goes on by offset (a sorted listing), each row once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cascade_core::model::{ComputerId, ComputerSummary, NodeId};
use cascade_node::api::Caller;
use cascade_node::api::export::{Format, KEYSET_PAGE_ROWS};
use cascade_node::{Checked, Node};
use cascade_store::Store;
use serde_json::{Value, json};

const COMPUTERS: u64 = KEYSET_PAGE_ROWS * 2 + 500;

fn node() -> (Arc<Node>, tempfile::TempDir) {
    let id = NodeId::new("root").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Checked::standalone(id.clone(), dir.path().to_path_buf()).unwrap();
    let store = Arc::new(Store::temporary(id.clone()).unwrap());
    let summaries: Vec<ComputerSummary> = (0..COMPUTERS)
        .map(|c| ComputerSummary {
            computer: ComputerId::new(&format!("pc-{c:05}")).unwrap(),
            site: id.clone(),
            os: "Windows 11".into(),
            release: Some("23H2".into()),
            version: None,
            last_scan: 1_700_000_000 + c as i64,
            last_report: 1_700_000_000 + c as i64,
            agent_version: "1.0.0".into(),
            pending_restart: false,
            recent_events: Vec::new(),
        })
        .collect();
    store.put_summaries(&summaries, false).unwrap();
    (Node::new(config, store), dir)
}

async fn export(node: &Arc<Node>, params: Value, format: Format) -> String {
    let auditor = Caller {
        name: "test".into(),
        role: "auditor".into(),
        site: None,
        via: "token".into(),
    };
    let authorized = node.authorize(auditor, "reports.computers").unwrap();
    let mut rx = node.export(authorized, params, format).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = rx.recv().await {
        text.push_str(&chunk.unwrap());
    }
    text
}

fn computers(csv: &str) -> Vec<String> {
    let mut lines = csv.split("\r\n").filter(|l| !l.is_empty());
    assert!(lines.next().unwrap().starts_with("computer,site,"), "{csv:.200}");
    lines.map(|l| l.split(',').next().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_export_streams_every_page_of_a_report_once() {
    let (node, _dir) = node();
    let all: Vec<String> = (0..COMPUTERS).map(|c| format!("pc-{c:05}")).collect();
    // By computer: pages that go on from the last row.
    let csv = export(&node, json!({}), Format::Csv).await;
    assert_eq!(computers(&csv), all);
    // Sorted by last scan, newest first: pages that go on by offset.
    let csv = export(&node, json!({"sort": "last_scan", "descending": true}), Format::Csv).await;
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_eq!(computers(&csv), newest_first);
    // The caller's page size is kept; JSON lines carry the same rows.
    let lines = export(&node, json!({"limit": 700}), Format::JsonLines).await;
    let listed: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["computer"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed, all);
}
