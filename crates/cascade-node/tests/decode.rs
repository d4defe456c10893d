//! Every message a node decodes from the network, from random bytes: a
//! value or an error, never a panic; and what decodes converts at the edge
//! (records to domain types, JSON payloads to operations) without one.
//! Bounded cases so that CI runs them; fuzz/ has the unbounded targets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cascade_core::inventory::Inventory;
use cascade_core::model::{Change, ChangeOp, ComplianceRecord, InstallEvent, Upward};
use cascade_proto::{convert, v1};
use proptest::prelude::*;
use prost::Message;

fn decode_all(bytes: &[u8]) {
    // Hierarchy.
    let _ = v1::SubscribeRequest::decode(bytes);
    if let Ok(down) = v1::DownMessage::decode(bytes) {
        match down.body {
            Some(v1::down_message::Body::Change(change)) => {
                let _ = serde_json::from_slice::<ChangeOp>(&change.op);
                let _ = Change::try_from(change);
            }
            Some(v1::down_message::Body::SnapshotPart(part)) => {
                let mut snapshot = cascade_store::Snapshot::default();
                let _ = cascade_node::wire::add_snapshot_part(&mut snapshot, part);
            }
            _ => {}
        }
    }
    if let Ok(batch) = v1::UpBatch::decode(bytes) {
        let _ = serde_json::from_slice::<Vec<Upward>>(&batch.items);
        for record in batch.records {
            let _ = ComplianceRecord::try_from(record);
        }
        for report in batch.reports {
            let _ = cascade_core::report::Report::try_from(report);
        }
        if let Some(subtree) = batch.subtree {
            let _ = convert::DeclaredSubtree::try_from(subtree);
        }
    }
    let _ = v1::UpAck::decode(bytes);
    // Admin: every operation comes through Invoke, its parameters checked
    // by the operation's own types.
    if let Ok(invoke) = v1::InvokeRequest::decode(bytes)
        && let Ok(params) = serde_json::from_slice::<serde_json::Value>(&invoke.params)
        && let Some(op) = cascade_node::api::find(&invoke.operation)
    {
        let _ = (op.check)(params);
    }
    // Agents.
    let _ = v1::EnrollRequest::decode(bytes);
    if let Ok(check_in) = v1::CheckInRequest::decode(bytes) {
        let _ = serde_json::from_slice::<Inventory>(&check_in.inventory);
        let _ = convert::CheckIn::try_from(check_in);
    }
    if let Ok(report) = v1::ReportRequest::decode(bytes) {
        let _ = serde_json::from_slice::<Vec<ComplianceRecord>>(&report.records);
        let _ = serde_json::from_slice::<Vec<InstallEvent>>(&report.events);
        let _ = convert::AgentReport::try_from(report);
    }
    // What an agent decodes from its node.
    if let Ok(reply) = v1::CheckInReply::decode(bytes) {
        let _ = convert::CheckInAnswer::try_from(reply);
    }
    let _ = v1::ContentRequest::decode(bytes);
    let _ = v1::ContentChunk::decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    /// Well-formed frames with hostile contents: a record with any state,
    /// severity and text converts or is refused.
    #[test]
    fn hostile_records_convert_or_are_refused(
        state in any::<i32>(),
        severity in any::<i32>(),
        computer in ".{0,300}",
        update in ".{0,64}",
        site in ".{0,64}",
        code in any::<i64>(),
    ) {
        let record = v1::ComplianceRecord {
            computer,
            update,
            site,
            state,
            failure_code: code,
            unknown_reason: String::new(),
            severity,
            counter: 1,
            observed_at: 0,
            attestation: None,
        };
        let batch = v1::UpBatch { seq: 1, items: Vec::new(), snapshot: false, records: vec![record], reports: Vec::new(), subtree: None, applied: Default::default() };
        decode_all(&batch.encode_to_vec());
    }
}

/// What the fuzz targets of the node found once (fuzz/regressions/<target>/),
/// replayed through the same calls on every CI run.
#[test]
fn fuzz_regressions_replay() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions"));
    let inputs = |target: &str| -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    };
    for bytes in inputs("decode") {
        decode_all(&bytes);
    }
    for bytes in inputs("api_params") {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            for operation in cascade_node::api::operations() {
                let _ = (operation.check)(value.clone());
            }
        }
    }
    for bytes in inputs("config") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = cascade_node::config::NodeConfig::parse(std::path::Path::new("fuzz.toml"), text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Any JSON object as any operation's parameters: accepted or refused
    /// as invalid, never a panic (the API's parameters, bounded for CI;
    /// fuzz/ has the unbounded target).
    #[test]
    fn any_parameters_are_accepted_or_refused(params in proptest::collection::btree_map("[a-z_]{1,12}", prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        proptest::collection::vec(".{0,10}", 0..4).prop_map(serde_json::Value::from),
    ], 0..6)) {
        let value = serde_json::Value::Object(params.into_iter().collect());
        for operation in cascade_node::api::operations() {
            let _ = (operation.check)(value.clone());
        }
    }

    /// Any text as the node's configuration: a configuration or an error.
    #[test]
    fn any_configuration_text_parses_or_fails_cleanly(text in ".{0,400}") {
        let _ = cascade_node::config::NodeConfig::parse(std::path::Path::new("fuzz.toml"), &text);
    }
}
