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

/// Which installed software a rule means: by Windows Installer code, or by
/// name as Add/Remove Programs shows it (matched with the tolerance real
/// Uninstall keys need: versions, architecture and locale words are not
/// part of the name), and the version it must have.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftwareMatch {
    /// Display names ("Mozilla Firefox (x64 en-US)", "7-Zip 23.01 (x64)").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The publisher a name match must also have, where given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Windows Installer ProductCodes, or Uninstall key names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_codes: Vec<String>,
    /// The platform the software must be installed for (`x64` software in the
    /// 64-bit view, `x86` in the 32-bit one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Installed with Windows Installer (`true`: the entry has a ProductCode)
    /// or not (`false`), where it matters: an MSI package updates an MSI
    /// installation, an executable installer its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_installer: Option<bool>,
    /// The installer's language ("en-US"): an entry whose name names
    /// another language is not this software; one naming none is taken for
    /// en-US.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// With `version`: how the installed version must compare, in winget's
    /// version order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmp: Option<crate::logic::Cmp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A name without what varies between installs of one program: versions,
/// architecture and locale words, trade marks, case.
pub fn plain_name(name: &str) -> String {
    let lower = name
        .to_lowercase()
        .replace("(tm)", " ")
        .replace("(r)", " ")
        .replace(['®', '™'], " ")
        .replace(['(', ')', ',', '[', ']'], " ");
    let words: Vec<&str> = lower
        .split_whitespace()
        .filter(|w| {
            let w = w.trim_matches(['-', '_']);
            let version = w.trim_start_matches('v');
            let is_version = !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
            let arch = matches!(
                w,
                "x64"
                    | "x86"
                    | "64-bit"
                    | "32-bit"
                    | "64bit"
                    | "32bit"
                    | "arm64"
                    | "amd64"
                    | "ia64"
                    | "win64"
                    | "win32"
            );
            let locale = is_locale(w);
            // "(x64 edition)" says the platform, like "(x64)".
            let noise = matches!(w, "-" | "edition" | "bit");
            !w.is_empty() && !is_version && !arch && !locale && !noise
        })
        .collect();
    words.join(" ")
}

/// A language tag as installers write it in names: "en-US", "zh-cn".
fn is_locale(word: &str) -> bool {
    word.len() == 5 && word.as_bytes()[2] == b'-' && word.chars().filter(char::is_ascii_alphabetic).count() == 4
}

fn plain_code(code: &str) -> String {
    code.trim().trim_matches(['{', '}']).to_ascii_lowercase()
}

impl SoftwareMatch {
    /// Whether `s` (installed for `os_arch` when its entry says nothing) is
    /// this software, whatever its version.
    pub fn matches(&self, s: &Software, os_arch: Option<&str>) -> bool {
        let by_code = s.product_code.as_deref().or(s.key.as_deref()).is_some_and(|code| {
            let code = plain_code(code);
            self.product_codes.iter().any(|c| plain_code(c) == code)
        }) || s
            .upgrade_code
            .as_deref()
            .is_some_and(|u| self.upgrade_codes.iter().any(|c| plain_code(c) == plain_code(u)));
        let by_name = !by_code && {
            let name = plain_name(&s.name);
            !name.is_empty()
                && self.names.iter().any(|n| {
                    let want = plain_name(n);
                    !want.is_empty() && (name == want || name.starts_with(&format!("{want} ")))
                })
                && match (&self.publisher, &s.publisher) {
                    (Some(want), Some(have)) => {
                        let first = plain_name(want).split(' ').next().unwrap_or("").to_owned();
                        first.is_empty() || plain_name(have).contains(&first)
                    }
                    _ => true,
                }
        };
        if !(by_code || by_name) {
            return false;
        }
        if let Some(msi) = self.windows_installer
            && s.product_code.is_some() != msi
        {
            return false;
        }
        if let Some(want) = &self.locale {
            let named: Vec<&str> = s
                .name
                .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ','))
                .filter(|w| is_locale(w))
                .collect();
            let fits = if named.is_empty() {
                want.eq_ignore_ascii_case("en-US")
            } else {
                named.iter().any(|w| w.eq_ignore_ascii_case(want))
            };
            if !fits {
                return false;
            }
        }
        match &self.arch {
            None => true,
            Some(want) => {
                let have = s.arch.as_deref().or(os_arch).map(crate::windows::normalize_arch);
                // Without the platform of the entry or of the OS, a name or
                // code match is taken for the platform asked.
                have.is_none_or(|h| h == crate::windows::normalize_arch(want))
            }
        }
    }

    /// What the rule says of a computer's software list (none: it sent
    /// none) on its processor architecture.
    pub fn eval(&self, software: Option<&SoftwareList>, os_arch: Option<&str>) -> crate::logic::Truth {
        use crate::logic::Truth;
        let Some(list) = software else {
            return Truth::Unknown(format!(
                "the inventory does not list installed software (needed for {})",
                self.describe()
            ));
        };
        let found: Vec<&Software> = list.entries.iter().filter(|s| self.matches(s, os_arch)).collect();
        if found.is_empty() {
            return if list.complete {
                Truth::False
            } else {
                Truth::Unknown(format!(
                    "{} is not listed, and the computer's software list is not complete",
                    self.describe()
                ))
            };
        }
        let (Some(cmp), Some(want)) = (self.cmp, &self.version) else {
            return Truth::True;
        };
        let mut unknown = false;
        for s in found {
            match &s.version {
                Some(have) if cmp.accepts(crate::version::winget_version_cmp(have, want)) => return Truth::True,
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            Truth::Unknown(format!("the software list has no version for {}", self.describe()))
        } else {
            Truth::False
        }
    }

    /// A short description for reasons: the first name, else the first code.
    pub fn describe(&self) -> String {
        let what = self
            .names
            .first()
            .or(self.product_codes.first())
            .cloned()
            .unwrap_or_else(|| "the software".to_owned());
        match (&self.arch, self.cmp, &self.version) {
            (arch, Some(cmp), Some(v)) => format!(
                "{what}{} {} {v}",
                arch.as_deref().map(|a| format!(" ({a})")).unwrap_or_default(),
                cmp.symbol()
            ),
            (Some(a), _, _) => format!("{what} ({a})"),
            _ => what,
        }
    }
}
