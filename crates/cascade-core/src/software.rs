//! Installed software as a computer lists it: the Uninstall keys, Windows
//! Installer products, Office Click-to-Run, the .NET Framework and runtimes,
//! SQL Server instances, Exchange and SharePoint builds.

use serde::{Deserialize, Serialize};

/// Where an entry of the software list was found.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SoftwareSource {
    /// An `...\CurrentVersion\Uninstall\<key>` entry (Add/Remove Programs).
    #[default]
    Uninstall,
    /// A Windows Installer product registration.
    Msi,
    /// Office Click-to-Run (`...\Office\ClickToRun\Configuration`).
    ClickToRun,
    /// The .NET Framework (`...\NET Framework Setup\NDP`).
    DotnetFramework,
    /// A .NET (Core) shared runtime (`...\dotnet\Setup\InstalledVersions`).
    Dotnet,
    /// A SQL Server instance (`...\Microsoft SQL Server\<id>\Setup`).
    SqlServer,
    /// Exchange Server (`...\ExchangeServer\v15\Setup`).
    Exchange,
    /// SharePoint Server (`...\Shared Tools\Web Server Extensions`).
    SharePoint,
    /// Given by an admin or another tool.
    Other,
}

/// One installed program.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Software {
    /// The name as the computer shows it (DisplayName), or for the sources
    /// that have none, the product ("Microsoft .NET Framework 4.8",
    /// "Microsoft SQL Server 2019", a Click-to-Run product id such as
    /// "O365ProPlusRetail").
    pub name: String,
    /// The version as written (DisplayVersion); not always a dotted number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// `x86`, `x64` or `arm64`: the registry view or platform it was found in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Windows Installer ProductCode, `{GUID}` in upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Windows Installer UpgradeCode, `{GUID}` in upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_code: Option<String>,
    #[serde(default)]
    pub source: SoftwareSource,
    /// Click-to-Run update channel ("Current", "MonthlyEnterprise",
    /// "SemiAnnual", ...); a SQL Server or Exchange edition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The Uninstall key or instance name it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A per-user installation: the user's SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What a computer has installed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftwareList {
    /// Every source of installed software was read: a product missing from
    /// the list is not installed. When false, a missing product is unknown.
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub entries: Vec<Software>,
}
