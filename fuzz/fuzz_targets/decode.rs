//! Protobuf decoding of the messages nodes receive, and their conversion
//! at the edge.
#![no_main]
use prost::Message;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use cascade_proto::v1;
    if let Ok(batch) = v1::UpBatch::decode(data) {
        let _ = serde_json::from_slice::<Vec<cascade_core::model::Upward>>(&batch.items);
        for record in batch.records {
            let _ = cascade_core::model::ComplianceRecord::try_from(record);
        }
        for report in batch.reports {
            let _ = cascade_core::report::Report::try_from(report);
        }
        if let Some(subtree) = batch.subtree {
            let _ = cascade_proto::convert::DeclaredSubtree::try_from(subtree);
        }
    }
    if let Ok(down) = v1::DownMessage::decode(data) {
        match down.body {
            Some(v1::down_message::Body::Change(change)) => {
                let _ = cascade_core::model::Change::try_from(change);
            }
            Some(v1::down_message::Body::SnapshotPart(part)) => {
                let mut snapshot = cascade_store::Snapshot::default();
                let _ = cascade_node::wire::add_snapshot_part(&mut snapshot, part);
            }
            _ => {}
        }
    }
    if let Ok(report) = v1::ReportRequest::decode(data) {
        let _ = cascade_proto::convert::AgentReport::try_from(report);
    }
    if let Ok(check_in) = v1::CheckInRequest::decode(data) {
        let _ = cascade_proto::convert::CheckIn::try_from(check_in);
    }
    if let Ok(reply) = v1::CheckInReply::decode(data) {
        let _ = cascade_proto::convert::CheckInAnswer::try_from(reply);
    }
    let _ = v1::EnrollRequest::decode(data);
    let _ = v1::InvokeRequest::decode(data);
    let _ = v1::ContentRequest::decode(data);
});
