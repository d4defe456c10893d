#![allow(dead_code)]

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId, Object, ObjectId, Setting};
use cascade_core::update::Severity;

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub fn record(computer: &str, update: &str, site: &str, state: ComplianceState, counter: u64) -> ComplianceRecord {
    ComplianceRecord {
        computer: ComputerId::new(computer).unwrap(),
        update: UpdateId::new(update),
        site: node(site),
        state,
        severity: Severity::Critical,
        counter,
        observed_at: 1_700_000_000 + counter as i64,
        attestation: None,
    }
}

pub fn setting(id: &str, value: serde_json::Value, overridable: bool) -> Object {
    Object::Setting(Setting {
        id: ObjectId::new(id).unwrap(),
        value,
        overridable,
    })
}
