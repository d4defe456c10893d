//! Updates as vendors publish them.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::ids::UpdateId;
use crate::rule::Rule;
use crate::version::Version;

/// What kind of update this is, as the vendor classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    ServicePack,
    SecurityUpdate,
    CriticalUpdate,
    UpdateRollup,
    Hotfix,
    FeaturePack,
    DefinitionUpdate,
    Driver,
    Update,
    Upgrade,
    Tool,
    Optional,
    /// A category or detectoid: never installed itself, other updates name it.
    Detectoid,
}

impl Classification {
    pub fn label(self) -> &'static str {
        match self {
            Classification::ServicePack => "Service Pack",
            Classification::SecurityUpdate => "Security Update",
            Classification::CriticalUpdate => "Critical Update",
            Classification::UpdateRollup => "Update Rollup",
            Classification::Hotfix => "Hotfix",
            Classification::FeaturePack => "Feature Pack",
            Classification::DefinitionUpdate => "Definition Update",
            Classification::Driver => "Driver",
            Classification::Update => "Update",
            Classification::Upgrade => "Upgrade",
            Classification::Tool => "Tool",
            Classification::Optional => "Optional",
            Classification::Detectoid => "Detectoid",
        }
    }

    /// The classification a Microsoft catalog calls `name` ("Security
    /// Updates", "SecurityUpdates", "Service Packs", ...).
    pub fn from_microsoft(name: &str) -> Option<Classification> {
        let key: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Some(match key.trim_end_matches('s') {
            "securityupdate" => Classification::SecurityUpdate,
            "criticalupdate" => Classification::CriticalUpdate,
            "servicepack" => Classification::ServicePack,
            "updaterollup" => Classification::UpdateRollup,
            "hotfix" | "hotfixe" => Classification::Hotfix,
            "featurepack" => Classification::FeaturePack,
            "definitionupdate" => Classification::DefinitionUpdate,
            "driver" => Classification::Driver,
            "update" => Classification::Update,
            "upgrade" => Classification::Upgrade,
            "tool" => Classification::Tool,
            "optional" => Classification::Optional,
            _ => return None,
        })
    }
}

/// How an update relates to the other updates of its product, where the
/// vendor says (a document's subtype, a catalog's title).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Servicing {
    /// Contains every earlier cumulative update of its product (Windows 10
    /// and later, Internet Explorer, .NET on Windows 10 and later,
    /// SharePoint cumulative updates). A hotpatch is one since its baseline.
    Cumulative,
    /// Windows 7 to 8.1 and their servers: a month's rollup contains that
    /// month's security-only update, every earlier rollup and security-only
    /// update, and the month's Internet Explorer cumulative update.
    MonthlyRollup,
    /// That month's security fixes only.
    SecurityOnly,
}

impl Servicing {
    /// What a Microsoft catalog title says: "2023-04 Cumulative Update for
    /// Windows 11 ...", "... Security Monthly Quality Rollup for Windows 7
    /// ...", "... Security Only Quality Update for ...".
    pub fn from_title(title: &str) -> Option<Servicing> {
        let lower = title.to_ascii_lowercase();
        if lower.contains("security only") {
            Some(Servicing::SecurityOnly)
        } else if lower.contains("monthly quality rollup") || lower.contains("monthly rollup") {
            Some(Servicing::MonthlyRollup)
        } else if lower.contains("cumulative update") || lower.contains("cumulative security update") {
            Some(Servicing::Cumulative)
        } else {
            None
        }
    }

    /// What a CVRF remediation's SubType says ("Monthly Rollup", "Security
    /// Only", "Cumulative Update"); "Security Update" says nothing by itself.
    pub fn from_sub_type(sub_type: &str) -> Option<Servicing> {
        match sub_type.trim().to_ascii_lowercase().as_str() {
            "monthly rollup" => Some(Servicing::MonthlyRollup),
            "security only" => Some(Servicing::SecurityOnly),
            "cumulative update" | "security hotpatch update" => Some(Servicing::Cumulative),
            _ => None,
        }
    }
}

/// Which of the two Windows 7 to 8.1 servicing tracks a computer follows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    /// Monthly rollups (and whatever they contain).
    #[default]
    Rollup,
    /// Security-only updates, never rollups.
    SecurityOnly,
}

impl Track {
    pub fn is_default(&self) -> bool {
        *self == Track::Rollup
    }
}

/// Vendor severity, ordered from least to most severe.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Severity {
    #[default]
    Unspecified,
    Low,
    Moderate,
    Important,
    Critical,
}

impl Severity {
    /// Parses a vendor's word for a severity; `None` for anything else
    /// (including "n/a" and empty text).
    pub fn parse(text: &str) -> Option<Severity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "critical" => Some(Severity::Critical),
            "important" | "high" => Some(Severity::Important),
            "moderate" | "medium" => Some(Severity::Moderate),
            "low" => Some(Severity::Low),
            "unspecified" => Some(Severity::Unspecified),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Unspecified => "Unspecified",
            Severity::Low => "Low",
            Severity::Moderate => "Moderate",
            Severity::Important => "Important",
            Severity::Critical => "Critical",
        })
    }
}

/// Whether installing the update restarts the computer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartBehavior {
    Never,
    /// The installer may ask for a restart (exit code 3010).
    #[default]
    May,
    Always,
}

impl RestartBehavior {
    /// The word used in plans and reports: yes, no, maybe.
    pub fn word(self) -> &'static str {
        match self {
            RestartBehavior::Never => "no",
            RestartBehavior::May => "maybe",
            RestartBehavior::Always => "yes",
        }
    }

    /// Parses the vendors' words: CVRF `Yes/No/Maybe`, WSUS
    /// `NeverReboots/AlwaysRequiresReboot/CanRequestReboot`, Update Catalog
    /// "Can request restart", "Required", "Never restarts".
    pub fn parse(text: &str) -> Option<RestartBehavior> {
        let key = text.trim().to_ascii_lowercase();
        let key = key.as_str();
        if key.is_empty() {
            return None;
        }
        if matches!(key, "yes" | "true" | "required" | "alwaysrequiresreboot" | "always")
            || key.starts_with("always")
            || key.starts_with("requires")
        {
            return Some(RestartBehavior::Always);
        }
        if matches!(key, "no" | "false" | "neverreboots" | "never")
            || key.starts_with("never")
            || key.starts_with("doesn't")
        {
            return Some(RestartBehavior::Never);
        }
        if matches!(key, "maybe" | "canrequestreboot" | "may") || key.starts_with("can request") {
            return Some(RestartBehavior::May);
        }
        None
    }
}

/// What an installer's exit code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitMeaning {
    Success,
    SuccessRestartRequired,
    /// The installer has started a restart itself (1641).
    RestartStarted,
    /// The update was already installed or is not needed.
    NotApplicable,
    /// The program is in use or another installation is running: not a
    /// failure of the update, tried again at the next run.
    InUse,
    Failure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExitCode {
    pub code: i64,
    pub meaning: ExitMeaning,
}

/// How the agent installs the update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallCommand {
    pub program: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// Exit codes and their meaning; codes not listed are failures, except
    /// the defaults (0 success, 3010 success with restart, 1641 restart started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<ExitCode>,
}

impl InstallCommand {
    pub fn meaning(&self, code: i64) -> ExitMeaning {
        if let Some(entry) = self.exit_codes.iter().find(|e| e.code == code) {
            return entry.meaning;
        }
        match code {
            0 => ExitMeaning::Success,
            3010 => ExitMeaning::SuccessRestartRequired,
            1641 => ExitMeaning::RestartStarted,
            _ => ExitMeaning::Failure,
        }
    }
}

/// A file the update is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub file_name: String,
    /// Lower-case hexadecimal SHA-256 of the file.
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A prerequisite: every update in `all_of` and at least one of `any_of`
/// (when it is not empty) must be installed first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_of: Vec<UpdateId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<UpdateId>,
    /// The ids are categories (products, classifications): they are met by
    /// the category's own detection, not by installing anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub category: bool,
}

/// One product an update applies to, with what the vendor says for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The vendor's product name ("Windows 10 Version 21H2 for x64-based Systems").
    pub product: String,
    /// When a computer is this product.
    pub rule: Rule,
    /// Highest severity the vendor gives the update on this product.
    #[serde(default)]
    pub severity: Severity,
    /// The OS build the update brings this product to (CVRF FixedBuild): a
    /// computer whose full build is at or past it has the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_build: Option<Version>,
}

/// A package version of a package manager's catalog (winget), one
/// installer of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The package's identifier ("Mozilla.Firefox").
    pub id: String,
    pub version: String,
    /// `x86`, `x64`, `arm64`, `arm` or `neutral`.
    pub arch: String,
    /// `machine` or `user`, where the manifest says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `msi`, `wix`, `exe`, `nullsoft`, `inno`, `burn`, `msix`, `zip`, `portable`.
    pub installer_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl Package {
    /// Versions of one package that replace each other: same package,
    /// architecture and scope (whatever the installer type or locale).
    pub fn line(&self) -> (String, &str, Option<&str>) {
        (self.id.to_ascii_lowercase(), &self.arch, self.scope.as_deref())
    }
}

/// An update in the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub id: UpdateId,
    pub title: Arc<str>,
    #[serde(default = "default_vendor")]
    pub vendor: String,
    /// Product family the update belongs to ("Windows", "Microsoft Office").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub product: String,
    pub classification: Classification,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub release_date: Option<Date>,
    /// Products the update applies to; empty means "any computer the rules
    /// below accept".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// An extra condition for the update to apply (WSUS IsInstallable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_when: Option<Rule>,
    /// When the update counts as installed, besides being listed in the
    /// computer's installed updates (WSUS IsInstalled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_when: Option<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<UpdateId>,
    /// Superseders the vendor names on this update's own record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded_by: Vec<UpdateId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<Prerequisite>,
    /// Updates installed as part of this one (a WSUS bundle's children).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundled: Vec<UpdateId>,
    #[serde(default)]
    pub restart: RestartBehavior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallCommand>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// A hotpatch: only for computers enrolled in hotpatching, on top of
    /// its baseline cumulative update.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hotpatch: bool,
    /// Cumulative, monthly rollup or security-only, where the vendor says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servicing: Option<Servicing>,
    /// Other ids the vendor uses for this update (WSUS GUIDs of a KB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<UpdateId>,
    /// The vendor's release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_notes_url: Option<String>,
    /// The package version and installer, for updates from a package
    /// manager's catalog: newer versions of the same line supersede it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
}

fn default_vendor() -> String {
    "Microsoft".to_owned()
}

impl Update {
    /// A minimal update; importers fill in the rest.
    pub fn new(id: UpdateId, title: impl Into<Arc<str>>, classification: Classification) -> Self {
        Update {
            id,
            title: title.into(),
            vendor: default_vendor(),
            product: String::new(),
            classification,
            severity: Severity::Unspecified,
            custom_severity: None,
            release_date: None,
            targets: Vec::new(),
            applicable_when: None,
            installed_when: None,
            supersedes: Vec::new(),
            superseded_by: Vec::new(),
            prerequisites: Vec::new(),
            bundled: Vec::new(),
            restart: RestartBehavior::May,
            install: None,
            content: Vec::new(),
            cves: Vec::new(),
            hotpatch: false,
            servicing: None,
            aliases: Vec::new(),
            release_notes_url: None,
            package: None,
        }
    }

    /// Folds another record of the same update into this one: the same KB
    /// named by two documents, or two architectures of one catalog entry.
    /// Lists are united, the higher severity and the later date win, and
    /// fields this record lacks are taken from `other`.
    pub fn merge(&mut self, other: Update) {
        debug_assert_eq!(self.id, other.id);
        if self.title.is_empty() || (other.release_date > self.release_date && !other.title.is_empty()) {
            self.title = other.title;
        }
        if self.product.is_empty() {
            self.product = other.product;
        }
        if other.classification == Classification::SecurityUpdate
            || self.classification == Classification::Update && other.classification != Classification::Update
        {
            self.classification = other.classification;
        }
        self.severity = self.severity.max(other.severity);
        if self.custom_severity.is_none() {
            self.custom_severity = other.custom_severity;
        }
        self.release_date = self.release_date.max(other.release_date);
        for target in other.targets {
            match self
                .targets
                .iter_mut()
                .find(|t| t.product == target.product && t.rule == target.rule)
            {
                Some(existing) => {
                    existing.severity = existing.severity.max(target.severity);
                    if existing.fixed_build.is_none() {
                        existing.fixed_build = target.fixed_build;
                    }
                }
                None => self.targets.push(target),
            }
        }
        self.applicable_when = merge_rule(self.applicable_when.take(), other.applicable_when);
        self.installed_when = merge_rule(self.installed_when.take(), other.installed_when);
        union(&mut self.supersedes, other.supersedes);
        union(&mut self.superseded_by, other.superseded_by);
        for p in other.prerequisites {
            if !self.prerequisites.contains(&p) {
                self.prerequisites.push(p);
            }
        }
        union(&mut self.bundled, other.bundled);
        self.restart = match (self.restart, other.restart) {
            (RestartBehavior::Always, _) | (_, RestartBehavior::Always) => RestartBehavior::Always,
            (RestartBehavior::Never, RestartBehavior::Never) => RestartBehavior::Never,
            _ => RestartBehavior::May,
        };
        if self.install.is_none() {
            self.install = other.install;
        }
        for c in other.content {
            if !self.content.iter().any(|x| x.sha256 == c.sha256) {
                self.content.push(c);
            }
        }
        union(&mut self.cves, other.cves);
        self.hotpatch |= other.hotpatch;
        if self.servicing.is_none() {
            self.servicing = other.servicing;
        }
        if self.release_notes_url.is_none() {
            self.release_notes_url = other.release_notes_url;
        }
        if self.package.is_none() {
            self.package = other.package;
        }
        union(&mut self.aliases, other.aliases);
        self.supersedes.retain(|s| *s != self.id);
        self.superseded_by.retain(|s| *s != self.id);
    }
}

/// Either rule: merging many records of one update flattens into one `any`
/// rather than nesting one level deeper for each record.
fn merge_rule(a: Option<Rule>, b: Option<Rule>) -> Option<Rule> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Rule::or(vec![a, b])),
        (a, b) => a.or(b),
    }
}

fn union<T: Ord + Clone>(into: &mut Vec<T>, from: Vec<T>) {
    let mut seen: BTreeSet<T> = into.iter().cloned().collect();
    for item in from {
        if seen.insert(item.clone()) {
            into.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_words() {
        assert_eq!(RestartBehavior::parse("Yes"), Some(RestartBehavior::Always));
        assert_eq!(RestartBehavior::parse("Maybe"), Some(RestartBehavior::May));
        assert_eq!(RestartBehavior::parse("No"), Some(RestartBehavior::Never));
        assert_eq!(
            RestartBehavior::parse("Can request restart"),
            Some(RestartBehavior::May)
        );
        assert_eq!(RestartBehavior::parse("NeverReboots"), Some(RestartBehavior::Never));
        assert_eq!(
            RestartBehavior::parse("AlwaysRequiresReboot"),
            Some(RestartBehavior::Always)
        );
        assert_eq!(RestartBehavior::parse(""), None);
    }

    #[test]
    fn classification_names() {
        assert_eq!(
            Classification::from_microsoft("SecurityUpdates"),
            Some(Classification::SecurityUpdate)
        );
        assert_eq!(
            Classification::from_microsoft("Service Packs"),
            Some(Classification::ServicePack)
        );
        assert_eq!(Classification::from_microsoft("Updates"), Some(Classification::Update));
        assert_eq!(Classification::from_microsoft("Hotfixes"), Some(Classification::Hotfix));
        assert_eq!(Classification::from_microsoft("weird"), None);
    }

    #[test]
    fn exit_code_defaults() {
        let cmd = InstallCommand {
            program: "setup.exe".into(),
            arguments: vec![],
            exit_codes: vec![ExitCode {
                code: 2359302,
                meaning: ExitMeaning::NotApplicable,
            }],
        };
        assert_eq!(cmd.meaning(0), ExitMeaning::Success);
        assert_eq!(cmd.meaning(3010), ExitMeaning::SuccessRestartRequired);
        assert_eq!(cmd.meaning(1641), ExitMeaning::RestartStarted);
        assert_eq!(cmd.meaning(2359302), ExitMeaning::NotApplicable);
        assert_eq!(cmd.meaning(1603), ExitMeaning::Failure);
    }
}
