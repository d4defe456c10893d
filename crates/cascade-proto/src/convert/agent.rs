//! Conversions of `agent.proto`: the JSON bodies of a check-in, its
//! answer and an agent's report.

use cascade_core::assignment::Assignment;
use cascade_core::inventory::Inventory;
use cascade_core::model::{ComplianceRecord, InstallEvent};
use cascade_core::seal::Evidence;

use super::{Invalid, invalid, scheme};
use crate::v1;

fn json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, Invalid> {
    serde_json::to_vec(value).map_err(|e| invalid(format!("{what}: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Invalid> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("{what}: {e}")))
}

/// An agent's check-in: the content hash of its inventory, and the
/// inventory itself when it changed or the node asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckIn {
    pub inventory_hash: String,
    pub inventory: Option<Inventory>,
    /// The agent's own version ("0.1.0").
    pub agent_version: String,
}

impl TryFrom<&CheckIn> for v1::CheckInRequest {
    type Error = Invalid;

    fn try_from(c: &CheckIn) -> Result<v1::CheckInRequest, Invalid> {
        Ok(v1::CheckInRequest {
            inventory_hash: c.inventory_hash.clone(),
            inventory: c
                .inventory
                .as_ref()
                .map(|i| json(i, "inventory"))
                .transpose()?
                .unwrap_or_default(),
            agent_version: c.agent_version.clone(),
        })
    }
}

impl TryFrom<v1::CheckInRequest> for CheckIn {
    type Error = Invalid;

    fn try_from(r: v1::CheckInRequest) -> Result<CheckIn, Invalid> {
        Ok(CheckIn {
            inventory: (!r.inventory.is_empty())
                .then(|| from_json(&r.inventory, "inventory"))
                .transpose()?,
            inventory_hash: r.inventory_hash,
            agent_version: r.agent_version,
        })
    }
}

/// A node's answer to a check-in.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckInAnswer {
    /// The node does not know the inventory: the agent sends it.
    NeedInventory { now: i64 },
    /// What the agent is to do, with the signed objects it rests on. The
    /// evidence is decoded apart: evidence a later release wrote that this
    /// agent cannot read leaves it with none, so that it refuses the steps
    /// it cannot check (and reports why) instead of not checking in.
    Assigned {
        now: i64,
        assignment: Box<Assignment>,
        evidence: Result<Box<Evidence>, Invalid>,
    },
}

impl TryFrom<&CheckInAnswer> for v1::CheckInReply {
    type Error = Invalid;

    fn try_from(answer: &CheckInAnswer) -> Result<v1::CheckInReply, Invalid> {
        Ok(match answer {
            CheckInAnswer::NeedInventory { now } => v1::CheckInReply {
                need_inventory: true,
                assignment: Vec::new(),
                now: *now,
                evidence: Vec::new(),
            },
            CheckInAnswer::Assigned {
                now,
                assignment,
                evidence,
            } => v1::CheckInReply {
                need_inventory: false,
                assignment: json(assignment, "assignment")?,
                now: *now,
                evidence: match evidence {
                    Ok(evidence) => json(evidence, "evidence")?,
                    Err(e) => return Err(invalid(format!("no evidence to send: {e}"))),
                },
            },
        })
    }
}

impl TryFrom<v1::CheckInReply> for CheckInAnswer {
    type Error = Invalid;

    fn try_from(r: v1::CheckInReply) -> Result<CheckInAnswer, Invalid> {
        if r.need_inventory {
            return Ok(CheckInAnswer::NeedInventory { now: r.now });
        }
        Ok(CheckInAnswer::Assigned {
            now: r.now,
            assignment: from_json(&r.assignment, "assignment")?,
            // A node of a release before evidence sends none.
            evidence: if r.evidence.is_empty() {
                Ok(Box::default())
            } else {
                from_json(&r.evidence, "evidence")
            },
        })
    }
}

/// One report of an agent: its counter, its records and install events,
/// and its signature over (computer, counter, the records' Merkle root).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentReport {
    pub counter: u64,
    pub records: Vec<ComplianceRecord>,
    pub events: Vec<InstallEvent>,
    pub scheme: u16,
    pub signature: Vec<u8>,
}

impl TryFrom<&AgentReport> for v1::ReportRequest {
    type Error = Invalid;

    fn try_from(r: &AgentReport) -> Result<v1::ReportRequest, Invalid> {
        Ok(v1::ReportRequest {
            counter: r.counter,
            records: json(&r.records, "records")?,
            events: if r.events.is_empty() {
                Vec::new()
            } else {
                json(&r.events, "events")?
            },
            scheme: u32::from(r.scheme),
            signature: r.signature.clone(),
        })
    }
}

impl TryFrom<v1::ReportRequest> for AgentReport {
    type Error = Invalid;

    fn try_from(r: v1::ReportRequest) -> Result<AgentReport, Invalid> {
        let records = if r.records.is_empty() {
            Vec::new()
        } else {
            from_json(&r.records, "records")?
        };
        let events = if r.events.is_empty() {
            Vec::new()
        } else {
            from_json(&r.events, "events")?
        };
        Ok(AgentReport {
            counter: r.counter,
            records,
            events,
            scheme: scheme(r.scheme, "scheme")?,
            signature: r.signature,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cascade_core::UpdateId;
    use cascade_core::compliance::ComplianceState;
    use cascade_core::model::{ComputerId, NodeId};
    use cascade_core::update::Severity;

    use super::*;

    #[test]
    fn the_agent_protocol_round_trips_and_bad_bodies_are_named() {
        let inventory = Inventory::default();
        let check_in = CheckIn {
            inventory_hash: inventory.content_hash().to_string(),
            inventory: Some(inventory),
            agent_version: "0.1.0".into(),
        };
        let wire = v1::CheckInRequest::try_from(&check_in).unwrap();
        assert_eq!(CheckIn::try_from(wire).unwrap(), check_in);
        let unchanged = CheckIn {
            inventory: None,
            ..check_in
        };
        let wire = v1::CheckInRequest::try_from(&unchanged).unwrap();
        assert!(wire.inventory.is_empty());
        assert_eq!(CheckIn::try_from(wire).unwrap(), unchanged);
        let bad = v1::CheckInRequest {
            inventory: b"{\"os\": 5}".to_vec(),
            ..Default::default()
        };
        assert!(CheckIn::try_from(bad).unwrap_err().0.starts_with("inventory: "));

        let need = CheckInAnswer::NeedInventory { now: 7 };
        assert_eq!(
            CheckInAnswer::try_from(v1::CheckInReply::try_from(&need).unwrap()).unwrap(),
            need
        );
        let assignment: Assignment = serde_json::from_value(serde_json::json!({
            "computer": "pc-1", "site": "site-a", "inventory": "ab", "issued_at": 7, "vendor_catalog": true,
            "os_updater": false
        }))
        .unwrap();
        let assigned = CheckInAnswer::Assigned {
            now: 7,
            assignment: Box::new(assignment),
            evidence: Ok(Box::default()),
        };
        let wire = v1::CheckInReply::try_from(&assigned).unwrap();
        assert_eq!(CheckInAnswer::try_from(wire.clone()).unwrap(), assigned);
        // Evidence that cannot be read is said, and the assignment kept.
        let bad = v1::CheckInReply {
            evidence: b"[".to_vec(),
            ..wire.clone()
        };
        match CheckInAnswer::try_from(bad).unwrap() {
            CheckInAnswer::Assigned { evidence, .. } => assert!(evidence.unwrap_err().0.starts_with("evidence: ")),
            other => panic!("{other:?}"),
        }
        // An assignment that cannot be read makes the answer unusable.
        let bad = v1::CheckInReply {
            assignment: b"{}".to_vec(),
            ..wire
        };
        assert!(CheckInAnswer::try_from(bad).unwrap_err().0.starts_with("assignment: "));

        let report = AgentReport {
            counter: 3,
            records: vec![ComplianceRecord {
                computer: ComputerId::new("pc-1").unwrap(),
                update: UpdateId::new("KB5021233"),
                site: NodeId::new("site-a").unwrap(),
                state: ComplianceState::Failed { code: 1603 },
                severity: Severity::Critical,
                counter: 3,
                observed_at: 5,
                attestation: None,
            }],
            events: Vec::new(),
            scheme: 0x0807,
            signature: vec![1; 64],
        };
        let wire = v1::ReportRequest::try_from(&report).unwrap();
        assert!(wire.events.is_empty());
        assert_eq!(AgentReport::try_from(wire.clone()).unwrap(), report);
        let bad = v1::ReportRequest {
            scheme: 70_000,
            ..wire.clone()
        };
        assert_eq!(
            AgentReport::try_from(bad).unwrap_err().0,
            "scheme is not a TLS scheme code"
        );
        let bad = v1::ReportRequest {
            records: b"{}".to_vec(),
            ..wire
        };
        assert!(AgentReport::try_from(bad).unwrap_err().0.starts_with("records: "));
    }
}
