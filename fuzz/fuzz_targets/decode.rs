//! Protobuf decoding of the messages nodes receive, and their conversion
//! at the edge.
#![no_main]
use prost::Message;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use cascade_proto::v1;
    if let Ok(batch) = v1::UpBatch::decode(data) {
        let _ = serde_json::from_slice::<Vec<cascade_core::model::Upward>>(&batch.items);
        for record in batch.records {
            let _ = cascade_node::wire::Record::try_from(record);
        }
    }
    if let Ok(down) = v1::DownMessage::decode(data)
        && let Some(v1::down_message::Body::Change(change)) = down.body
    {
        let _ = serde_json::from_slice::<cascade_core::model::ChangeOp>(&change.op);
    }
    if let Ok(report) = v1::ReportRequest::decode(data) {
        let _ = serde_json::from_slice::<Vec<cascade_core::model::ComplianceRecord>>(&report.records);
    }
    let _ = v1::CheckInRequest::decode(data);
    let _ = v1::EnrollRequest::decode(data);
    let _ = v1::InvokeRequest::decode(data);
    let _ = v1::ContentRequest::decode(data);
});
