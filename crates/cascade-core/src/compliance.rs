//! Compliance states of one update on one computer.

use serde::{Deserialize, Serialize};

/// The state of one update on one computer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ComplianceState {
    Installed,
    Required,
    NotApplicable,
    /// A superseding update is installed or offered instead.
    Superseded,
    Downloaded,
    PendingRestart,
    Failed {
        code: i64,
    },
    Unknown {
        reason: String,
    },
    /// The agent's newest signed timestamp from the root is older than its
    /// limit: what it sees may be a frozen view, so it claims nothing.
    Stale {
        reason: String,
    },
}

impl ComplianceState {
    /// Whether the computer is compliant for this update.
    pub fn is_compliant(&self) -> bool {
        matches!(
            self,
            ComplianceState::Installed | ComplianceState::NotApplicable | ComplianceState::Superseded
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            ComplianceState::Installed => "installed",
            ComplianceState::Required => "required",
            ComplianceState::NotApplicable => "not_applicable",
            ComplianceState::Superseded => "superseded",
            ComplianceState::Downloaded => "downloaded",
            ComplianceState::PendingRestart => "pending_restart",
            ComplianceState::Failed { .. } => "failed",
            ComplianceState::Unknown { .. } => "unknown",
            ComplianceState::Stale { .. } => "stale",
        }
    }
}
