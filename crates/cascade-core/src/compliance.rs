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

    /// Every state's name, in the one order the store's tags, the counts'
    /// slots and the summaries use.
    pub const NAMES: [&'static str; 9] = [
        "installed",
        "required",
        "not_applicable",
        "superseded",
        "downloaded",
        "pending_restart",
        "failed",
        "unknown",
        "stale",
    ];

    /// How many states there are.
    pub const COUNT: usize = Self::NAMES.len();

    /// This state's place in `NAMES`.
    pub fn index(&self) -> usize {
        match self {
            ComplianceState::Installed => 0,
            ComplianceState::Required => 1,
            ComplianceState::NotApplicable => 2,
            ComplianceState::Superseded => 3,
            ComplianceState::Downloaded => 4,
            ComplianceState::PendingRestart => 5,
            ComplianceState::Failed { .. } => 6,
            ComplianceState::Unknown { .. } => 7,
            ComplianceState::Stale { .. } => 8,
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}
