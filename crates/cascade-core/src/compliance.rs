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
        Self::index_is_compliant(self.index())
    }

    /// Whether the state at `index` (in `NAMES`) is compliant: installed,
    /// not applicable or superseded.
    pub fn index_is_compliant(index: usize) -> bool {
        matches!(index, 0 | 2 | 3)
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

    /// Why the computer is in this state, in words for a report.
    pub fn reason(&self) -> String {
        match self {
            ComplianceState::Installed => "installed".to_owned(),
            ComplianceState::Required => "applicable and not installed".to_owned(),
            ComplianceState::NotApplicable => "not applicable to this computer".to_owned(),
            ComplianceState::Superseded => "a newer update that replaces it is installed or offered".to_owned(),
            ComplianceState::Downloaded => "downloaded; waits for its maintenance window".to_owned(),
            ComplianceState::PendingRestart => "installed; the computer must restart to finish".to_owned(),
            ComplianceState::Failed { code } => match code_meaning(*code) {
                Some(meaning) => format!("failed with code {code} ({}): {meaning}", code_hex(*code)),
                None => format!("failed with code {code} ({})", code_hex(*code)),
            },
            ComplianceState::Unknown { reason } | ComplianceState::Stale { reason } => reason.clone(),
        }
    }
}

/// An installer code as Windows tools show it: hexadecimal, 32 bits.
pub fn code_hex(code: i64) -> String {
    if (i32::MIN as i64..=u32::MAX as i64).contains(&code) {
        format!("0x{:08X}", code as u32)
    } else {
        format!("0x{code:X}")
    }
}

/// The agent's own code: the installer could not be started.
pub const CODE_NOT_STARTED: i64 = -1;
/// The agent's own code: the installer ran past its timeout.
pub const CODE_TIMED_OUT: i64 = -2;
/// The agent's own code: the update's content could not be fetched or verified.
pub const CODE_CONTENT: i64 = -3;

/// What an installer's exit code means: the agent's own codes, Windows
/// Installer and Win32 codes, and the HRESULTs of Windows Update, the
/// standalone installer (wusa) and component servicing (DISM, CBS), as
/// Microsoft documents them. HRESULTs match whether the agent reported them
/// signed (-2145124329) or unsigned (0x80240017). `None` for a code not
/// known here.
pub fn code_meaning(code: i64) -> Option<&'static str> {
    match code {
        CODE_NOT_STARTED => return Some("the installer could not be started (missing, or not executable)"),
        CODE_TIMED_OUT => return Some("the installer ran past its timeout and was stopped"),
        CODE_CONTENT => return Some("the update's files could not be downloaded or did not match their hashes"),
        _ => {}
    }
    // A 32-bit code, signed or not.
    let code = if (i32::MIN as i64..0).contains(&code) {
        code as i32 as u32
    } else {
        u32::try_from(code).ok()?
    };
    Some(match code {
        0 => "success",
        2 | 0x8007_0002 => "the system cannot find the file specified",
        5 | 0x8007_0005 => "access is denied",
        13 | 0x8007_000D => "the data is invalid",
        87 | 0x8007_0057 => "a parameter is incorrect",
        112 | 0x8007_0070 => "there is not enough space on the disk",
        1223 | 0x8007_04C7 => "the operation was cancelled by the user",
        1460 | 0x8007_05B4 => "the operation returned because the timeout period expired",
        1602 => "the user cancelled the installation (Windows Installer)",
        1603 | 0x8007_0643 => "fatal error during installation (Windows Installer)",
        1605 => "this action is only valid for products that are currently installed",
        1612 => "the installation source for this product is not available",
        1618 | 0x8007_0652 => "another installation is already in progress",
        1619 => "the installation package could not be opened",
        1620 => "the installation package is not a valid Windows Installer package",
        1624 => "error applying transforms",
        1625 => "the installation is forbidden by system policy",
        1633 => "the installation package is not supported by this processor type",
        1638 => "another version of this product is already installed",
        1641 => "success: the installer started a restart to finish",
        1642 => "the upgrade cannot be installed: the program to upgrade is missing or another version",
        3010 | 0x8007_0BC2 => "success: a restart is required to finish",
        3017 | 0x8007_0BC9 => "the operation failed: a restart is required to roll back its changes",
        0x0024_0006 => "the update is already installed",
        0x8024_0017 => "the update is not applicable to this computer",
        0x8024_001E => "Windows Update stopped: the service or system was shutting down",
        0x8024_0022 => "the operation failed for every update",
        0x8024_200D => "the update must be downloaded again",
        0x8024_2016 => "the update's state after the restart is not valid",
        0x8024_402C => "the proxy or update server's name could not be resolved",
        0x8024_4022 => "the update server is unavailable (HTTP 503)",
        0x8007_3712 => "the component store is corrupt (run DISM /RestoreHealth)",
        0x800F_081F => "the source files could not be found (component store)",
        0x800F_0823 => "a newer servicing stack update must be installed first",
        0x800F_0831 => "the component store lacks the manifest of a required package",
        0x800F_0922 => "the update's advanced installers failed (often: the system reserved partition is full)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::ComplianceState;

    #[test]
    fn a_state_and_its_index_agree_on_compliance() {
        let every = [
            ComplianceState::Installed,
            ComplianceState::Required,
            ComplianceState::NotApplicable,
            ComplianceState::Superseded,
            ComplianceState::Downloaded,
            ComplianceState::PendingRestart,
            ComplianceState::Failed { code: 1 },
            ComplianceState::Unknown { reason: "r".into() },
            ComplianceState::Stale { reason: "r".into() },
        ];
        assert_eq!(every.len(), ComplianceState::COUNT);
        for state in every {
            assert_eq!(
                ComplianceState::index_is_compliant(state.index()),
                state.is_compliant(),
                "{state:?}"
            );
        }
    }
}
