//! Windows Package Manager manifests (github.com/microsoft/winget-pkgs):
//! multi-file (version, installer, default locale) and singleton manifests
//! of schema 1.x. One update per package version and installer
//! (architecture, scope, installer type, locale), detected from the
//! computer's installed software, installed silently with the manifest's
//! switches or the installer type's, and superseded by newer versions of the
//! same package.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ImportError;
use crate::ids::UpdateId;
use crate::rule::{Cmp, Rule};
use crate::software::SoftwareMatch;
use crate::update::{Classification, Content, ExitCode, ExitMeaning, InstallCommand, Package, RestartBehavior, Update};

/// The fields Cascade reads; a manifest's others are left alone.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Manifest {
    package_identifier: String,
    package_version: String,
    manifest_type: String,
    manifest_version: String,
    // Locale fields (defaultLocale and singleton manifests).
    publisher: String,
    package_name: String,
    release_notes_url: String,
    // Installer fields at the root: defaults for every installer.
    #[serde(flatten)]
    defaults: InstallerFields,
    installers: Vec<Installer>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct InstallerFields {
    installer_type: Option<String>,
    nested_installer_type: Option<String>,
    nested_installer_files: Option<Vec<NestedFile>>,
    scope: Option<String>,
    installer_locale: Option<String>,
    installer_switches: Option<Switches>,
    installer_success_codes: Option<Vec<i64>>,
    expected_return_codes: Option<Vec<ReturnCode>>,
    product_code: Option<String>,
    apps_and_features_entries: Option<Vec<ArpEntry>>,
    release_date: Option<String>,
    #[serde(rename = "MinimumOSVersion")]
    minimum_os_version: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct NestedFile {
    relative_file_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Installer {
    architecture: String,
    installer_url: String,
    installer_sha256: String,
    #[serde(flatten)]
    fields: InstallerFields,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct Switches {
    silent: Option<String>,
    silent_with_progress: Option<String>,
    custom: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct ArpEntry {
    display_name: Option<String>,
    publisher: Option<String>,
    display_version: Option<String>,
    product_code: Option<String>,
    upgrade_code: Option<String>,
    /// How the entry is registered (`msi` for a Windows Installer product
    /// that an `exe` bootstrapper installs).
    installer_type: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct ReturnCode {
    installer_return_code: i64,
    return_response: String,
}

/// Whether `text` is a winget manifest: YAML naming a package and its
/// manifest type.
pub fn looks_like(text: &str) -> bool {
    let has = |key: &str| text.lines().any(|l| l.trim_start().starts_with(key));
    has("PackageIdentifier:") && has("ManifestType:") && has("PackageVersion:")
}

/// One manifest file read: its package, version and type, and the file
/// name for errors.
struct Read {
    source: String,
    manifest: Manifest,
}

fn read(source: &str, text: &str) -> Result<Read, ImportError> {
    let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        let message = e.to_string();
        // serde-saphyr writes the place into its message; keep the cause.
        let cause = message.lines().next().unwrap_or(&message).to_owned();
        ImportError::Format {
            source_name: source.to_owned(),
            message: if line > 0 {
                format!("line {line}: {cause}")
            } else {
                cause
            },
        }
    })?;
    let missing = |field: &str| ImportError::Format {
        source_name: source.to_owned(),
        message: format!("the manifest has no {field}"),
    };
    if manifest.package_identifier.trim().is_empty() {
        return Err(missing("PackageIdentifier"));
    }
    if manifest.package_version.trim().is_empty() {
        return Err(missing("PackageVersion"));
    }
    match manifest.manifest_type.as_str() {
        "version" | "installer" | "defaultLocale" | "locale" | "singleton" => {}
        other => {
            return Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!(
                    "line {}: ManifestType {other:?} is not one of version, installer, defaultLocale, locale, singleton",
                    line_of(text, "ManifestType:")
                ),
            });
        }
    }
    if !manifest.manifest_version.is_empty() && !manifest.manifest_version.starts_with("1.") {
        return Err(ImportError::Format {
            source_name: source.to_owned(),
            message: format!(
                "line {}: ManifestVersion {} is not a schema this build reads (1.x)",
                line_of(text, "ManifestVersion:"),
                manifest.manifest_version
            ),
        });
    }
    Ok(Read {
        source: source.to_owned(),
        manifest,
    })
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map_or(0, |i| i + 1)
}

/// What the import of a set of manifest files produced.
#[derive(Debug, Default)]
pub struct Imported {
    pub updates: Vec<Update>,
    /// Files or installers passed over, with why.
    pub skipped: Vec<String>,
}

/// Imports manifest files (`(name, text)`), the files of one version folder
/// or of a whole repository in its layout. `include`, when not empty, keeps
/// only those package identifiers (case-insensitive).
pub fn import(files: &[(String, String)], include: &[String]) -> Result<Imported, ImportError> {
    let mut by_version: BTreeMap<(String, String), Vec<Read>> = BTreeMap::new();
    for (name, text) in files {
        let read = read(name, text)?;
        let id = read.manifest.package_identifier.trim().to_owned();
        if !include.is_empty() && !include.iter().any(|i| i.eq_ignore_ascii_case(&id)) {
            continue;
        }
        let version = read.manifest.package_version.trim().to_owned();
        by_version
            .entry((id.to_ascii_lowercase(), version))
            .or_default()
            .push(read);
    }
    let mut out = Imported::default();
    for reads in by_version.into_values() {
        let Some(installer) = reads
            .iter()
            .find(|r| matches!(r.manifest.manifest_type.as_str(), "installer" | "singleton"))
        else {
            out.skipped.push(format!(
                "{}: {} {} has no installer manifest among the files given",
                reads[0].source, reads[0].manifest.package_identifier, reads[0].manifest.package_version
            ));
            continue;
        };
        let locale = reads
            .iter()
            .find(|r| matches!(r.manifest.manifest_type.as_str(), "defaultLocale" | "singleton"))
            .map(|r| &r.manifest);
        build(installer, locale, &mut out)?;
    }
    Ok(out)
}

/// The updates of one package version: one per installer.
fn build(read: &Read, locale: Option<&Manifest>, out: &mut Imported) -> Result<(), ImportError> {
    let m = &read.manifest;
    let id = m.package_identifier.trim();
    let version = m.package_version.trim();
    let publisher = locale
        .map(|l| l.publisher.trim().to_owned())
        .filter(|p| !p.is_empty())
        .or_else(|| {
            m.installers
                .iter()
                .flat_map(|i| i.fields.apps_and_features_entries.iter().flatten())
                .chain(m.defaults.apps_and_features_entries.iter().flatten())
                .find_map(|a| a.publisher.clone())
        })
        .unwrap_or_else(|| id.split('.').next().unwrap_or(id).to_owned());
    let package_name = locale
        .map(|l| l.package_name.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.to_owned());
    if m.installers.is_empty() {
        return Err(ImportError::Format {
            source_name: read.source.clone(),
            message: format!("{id} {version}: the installer manifest lists no Installers"),
        });
    }
    for (n, installer) in m.installers.iter().enumerate() {
        let fields = merge(&m.defaults, &installer.fields);
        let bad = |message: String| ImportError::Format {
            source_name: read.source.clone(),
            message: format!("{id} {version}: installer {}: {message}", n + 1),
        };
        let installer_type = fields
            .installer_type
            .clone()
            .ok_or_else(|| bad("no InstallerType".into()))?
            .to_ascii_lowercase();
        let sha256 = installer.installer_sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "InstallerSha256 {:?} is not a SHA-256",
                installer.installer_sha256
            )));
        }
        let url = installer.installer_url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(bad(format!("InstallerUrl {url:?} is not an http(s) address")));
        }
        let arch = crate::windows::normalize_arch(&installer.architecture).to_owned();
        let scope = fields.scope.clone().map(|s| s.to_ascii_lowercase());
        let locale_code = fields.installer_locale.clone();
        let Some(install) = install_command(&installer_type, &fields) else {
            out.skipped.push(format!(
                "{}: {id} {version} installer {} ({installer_type}): no silent way to install it",
                read.source,
                n + 1
            ));
            continue;
        };
        let mut key = vec![arch.clone()];
        key.extend(scope.clone());
        key.push(installer_type.clone());
        key.extend(locale_code.clone());
        let update_id = UpdateId::new(&format!("winget:{id}@{version}/{}", key.join("/")));
        let mut described = vec![arch.clone()];
        described.extend(scope.clone());
        described.extend(locale_code.clone());
        described.push(installer_type.clone());
        let mut update = Update::new(
            update_id,
            format!("{package_name} {version} ({})", described.join(", ")),
            Classification::Update,
        );
        update.vendor = publisher.clone();
        update.product = id.to_owned();
        update.release_date = fields.release_date.as_deref().and_then(|d| d.get(..10)?.parse().ok());
        update.restart = RestartBehavior::May;
        update.install = Some(install);
        // Manifests do not give the installer's size: 0 says "not known".
        // The root learns it from its first download (verified by the
        // sha256) and publishes the update again with it.
        update.content = vec![Content {
            file_name: file_name(url, &installer_type),
            sha256,
            size: 0,
            url: Some(url.to_owned()),
        }];
        let arp: Vec<&ArpEntry> = fields.apps_and_features_entries.iter().flatten().collect();
        let installed_version = arp
            .iter()
            .find_map(|a| a.display_version.clone())
            .unwrap_or_else(|| version.to_owned());
        let mut names: Vec<String> = arp.iter().filter_map(|a| a.display_name.clone()).collect();
        if names.is_empty() {
            names.push(package_name.clone());
        }
        let mut product_codes: Vec<String> = arp.iter().filter_map(|a| a.product_code.clone()).collect();
        product_codes.extend(fields.product_code.clone());
        product_codes.sort();
        product_codes.dedup();
        let upgrade_codes: Vec<String> = arp.iter().filter_map(|a| a.upgrade_code.clone()).collect();
        let matcher = SoftwareMatch {
            names,
            publisher: Some(publisher.clone()),
            product_codes,
            upgrade_codes,
            arch: (arch != "neutral").then(|| arch.clone()),
            // How the installation shows in Add/Remove Programs: as the
            // manifest says, else as the installer type registers.
            windows_installer: match arp
                .iter()
                .find_map(|a| a.installer_type.as_deref())
                .unwrap_or(installer_type.as_str())
                .to_ascii_lowercase()
                .as_str()
            {
                "msi" | "wix" => Some(true),
                "exe" | "nullsoft" | "inno" | "burn" => Some(false),
                _ => None,
            },
            locale: locale_code.clone(),
            cmp: None,
            version: None,
        };
        let mut applicable = vec![Rule::fact("os.family", Cmp::Eq, "windows")];
        if let Some(min) = fields.minimum_os_version.as_deref().map(str::trim)
            && min.parse::<crate::version::Version>().is_ok()
        {
            applicable.push(Rule::fact("os.version", Cmp::Ge, min));
        }
        applicable.push(Rule::Software(Box::new(matcher.clone())));
        update.applicable_when = Some(Rule::and(applicable));
        update.installed_when = Some(Rule::Software(Box::new(SoftwareMatch {
            cmp: Some(Cmp::Ge),
            version: Some(installed_version),
            ..matcher
        })));
        update.package = Some(Package {
            id: id.to_owned(),
            version: version.to_owned(),
            arch,
            scope,
            installer_type,
            locale: locale_code,
        });
        update.release_notes_url = locale
            .map(|l| l.release_notes_url.trim().to_owned())
            .filter(|u| !u.is_empty());
        out.updates.push(update);
    }
    Ok(())
}

/// An installer's fields: its own, else the manifest's root defaults.
fn merge(defaults: &InstallerFields, own: &InstallerFields) -> InstallerFields {
    InstallerFields {
        installer_type: own.installer_type.clone().or_else(|| defaults.installer_type.clone()),
        nested_installer_type: own
            .nested_installer_type
            .clone()
            .or_else(|| defaults.nested_installer_type.clone()),
        nested_installer_files: own
            .nested_installer_files
            .clone()
            .or_else(|| defaults.nested_installer_files.clone()),
        scope: own.scope.clone().or_else(|| defaults.scope.clone()),
        installer_locale: own
            .installer_locale
            .clone()
            .or_else(|| defaults.installer_locale.clone()),
        installer_switches: own
            .installer_switches
            .clone()
            .or_else(|| defaults.installer_switches.clone()),
        installer_success_codes: own
            .installer_success_codes
            .clone()
            .or_else(|| defaults.installer_success_codes.clone()),
        expected_return_codes: own
            .expected_return_codes
            .clone()
            .or_else(|| defaults.expected_return_codes.clone()),
        product_code: own.product_code.clone().or_else(|| defaults.product_code.clone()),
        apps_and_features_entries: own
            .apps_and_features_entries
            .clone()
            .or_else(|| defaults.apps_and_features_entries.clone()),
        release_date: own.release_date.clone().or_else(|| defaults.release_date.clone()),
        minimum_os_version: own
            .minimum_os_version
            .clone()
            .or_else(|| defaults.minimum_os_version.clone()),
    }
}

/// The installer's file name: the last part of its address, decoded, with
/// the extension its type needs where the address has none.
fn file_name(url: &str, installer_type: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("installer");
    let mut name = String::new();
    let bytes = last.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = last.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
            && b.is_ascii()
            && !matches!(b, b'/' | b'\\' | 0)
        {
            name.push(b as char);
            i += 3;
            continue;
        }
        name.push(bytes[i] as char);
        i += 1;
    }
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let name = if name.trim().is_empty() {
        "installer".to_owned()
    } else {
        name
    };
    let ext = match installer_type {
        "msi" | "wix" => ".msi",
        "msix" | "appx" => ".msix",
        "zip" => ".zip",
        _ => ".exe",
    };
    if name.contains('.') {
        name
    } else {
        format!("{name}{ext}")
    }
}

fn split_args(text: &str) -> Vec<String> {
    // Switches are written as one command line; quoted parts stay one.
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// How the agent installs it silently: the manifest's silent switches
/// first, else the installer type's; `None` when the type has no silent
/// mode and the manifest gives none (a plain `exe`).
fn install_command(installer_type: &str, fields: &InstallerFields) -> Option<InstallCommand> {
    let switches = fields.installer_switches.clone().unwrap_or_default();
    let silent = switches
        .silent
        .as_deref()
        .or(switches.silent_with_progress.as_deref())
        .map(split_args);
    let custom = switches.custom.as_deref().map(split_args).unwrap_or_default();
    let defaults = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let (program, mut arguments): (String, Vec<String>) = match installer_type {
        "msi" | "wix" => (
            "msiexec.exe".into(),
            [
                vec!["/i".to_owned(), "{content}".to_owned()],
                silent.unwrap_or_else(|| defaults(&["/qn", "/norestart"])),
            ]
            .concat(),
        ),
        "inno" => (
            "{content}".into(),
            silent.unwrap_or_else(|| defaults(&["/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART", "/SP-"])),
        ),
        "nullsoft" => ("{content}".into(), silent.unwrap_or_else(|| defaults(&["/S"]))),
        "burn" => (
            "{content}".into(),
            silent.unwrap_or_else(|| defaults(&["/quiet", "/norestart"])),
        ),
        "msix" | "appx" => (
            "powershell.exe".into(),
            defaults(&[
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                "Add-AppxPackage",
                "-Path",
                "{content}",
            ]),
        ),
        "zip" => {
            // Extracted into the content directory; a portable program is
            // then in place, another nested installer is run silently.
            let nested = fields
                .nested_installer_type
                .as_deref()
                .unwrap_or("portable")
                .to_ascii_lowercase();
            let inner = fields
                .nested_installer_files
                .as_ref()
                .and_then(|f| f.first())
                .map(|f| f.relative_file_path.clone())
                .unwrap_or_default();
            let expand =
                "Expand-Archive -LiteralPath '{content}' -DestinationPath '{content_dir}\\expanded' -Force".to_owned();
            let then = match nested.as_str() {
                "portable" if !inner.is_empty() => format!(
                    "; New-Item -ItemType Directory -Force \"$env:ProgramFiles\\WinGet\\Links\" | Out-Null; Copy-Item -Force '{{content_dir}}\\expanded\\{inner}' \"$env:ProgramFiles\\WinGet\\Links\\\""
                ),
                "portable" => String::new(),
                "msi" | "wix" => format!(
                    "; Start-Process msiexec.exe -Wait -ArgumentList '/i','{{content_dir}}\\expanded\\{inner}','/qn','/norestart'"
                ),
                _ => return None,
            };
            (
                "powershell.exe".into(),
                vec![
                    "-NoProfile".into(),
                    "-NonInteractive".into(),
                    "-Command".into(),
                    expand + &then,
                ],
            )
        }
        "portable" => (
            "powershell.exe".into(),
            defaults(&[
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                "New-Item -ItemType Directory -Force \"$env:ProgramFiles\\WinGet\\Links\" | Out-Null; Copy-Item -Force '{content}' \"$env:ProgramFiles\\WinGet\\Links\\\"",
            ]),
        ),
        "exe" => ("{content}".into(), silent?),
        _ => return None,
    };
    arguments.extend(custom);
    let mut exit_codes: Vec<ExitCode> = fields
        .installer_success_codes
        .iter()
        .flatten()
        .map(|&code| ExitCode {
            code,
            meaning: ExitMeaning::Success,
        })
        .collect();
    for rc in fields.expected_return_codes.iter().flatten() {
        if let Some(meaning) = return_meaning(&rc.return_response) {
            exit_codes.retain(|e| e.code != rc.installer_return_code);
            exit_codes.push(ExitCode {
                code: rc.installer_return_code,
                meaning,
            });
        }
    }
    if matches!(installer_type, "msi" | "wix") {
        // Windows Installer's own codes.
        for (code, meaning) in [
            (1618, ExitMeaning::InUse),
            (1638, ExitMeaning::NotApplicable),
            (1641, ExitMeaning::RestartStarted),
            (3010, ExitMeaning::SuccessRestartRequired),
        ] {
            if !exit_codes.iter().any(|e| e.code == code) {
                exit_codes.push(ExitCode { code, meaning });
            }
        }
    }
    exit_codes.sort_by_key(|e| e.code);
    Some(InstallCommand {
        program,
        arguments,
        exit_codes,
    })
}

/// What winget's ExpectedReturnCodes responses mean to Cascade.
fn return_meaning(response: &str) -> Option<ExitMeaning> {
    Some(match response {
        "rebootRequiredToFinish" | "rebootRequiredForInstall" => ExitMeaning::SuccessRestartRequired,
        "rebootInitiated" => ExitMeaning::RestartStarted,
        "alreadyInstalled" | "downgrade" => ExitMeaning::NotApplicable,
        "packageInUse" | "packageInUseByApplication" | "installInProgress" | "fileInUse" => ExitMeaning::InUse,
        "missingDependency" | "diskFull" | "insufficientMemory" | "invalidParameter" | "noNetwork"
        | "contactSupport" | "cancelledByUser" | "blockedByPolicy" | "systemNotSupported" | "custom" => {
            ExitMeaning::Failure
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    use crate::version::winget_version_cmp as version_cmp;

    #[test]
    fn versions_in_wingets_order() {
        assert_eq!(version_cmp("156.0.1", "139.0"), Greater);
        assert_eq!(version_cmp("1.2.0", "1.2"), Equal);
        assert_eq!(version_cmp("1.0-beta", "1.0"), Less);
        assert_eq!(version_cmp("8.0.4010.10", "8.0.3110.11"), Greater);
        assert_eq!(version_cmp("19.00", "23.01"), Less);
        assert_eq!(version_cmp("v2", "1.9"), Greater);
        assert_eq!(version_cmp("14.40.33810.0", "14.29.30133.0"), Greater);
    }

    #[test]
    fn file_names_from_addresses() {
        assert_eq!(
            file_name(
                "https://x/pub/firefox/releases/156.0.1/win64/en-US/Firefox%20Setup%20156.0.1.exe",
                "nullsoft"
            ),
            "Firefox Setup 156.0.1.exe"
        );
        assert_eq!(file_name("https://x/download?id=3", "msi"), "download.msi");
        assert_eq!(file_name("https://x/a%2F..%2Fb.exe", "exe"), "a%2F..%2Fb.exe");
    }

    #[test]
    fn switches_split_like_a_command_line() {
        assert_eq!(
            split_args(r#"/S /InstallDirectoryPath="C:\Program Files\X" /PreventRebootRequired=true"#),
            [
                "/S",
                r#"/InstallDirectoryPath="C:\Program Files\X""#,
                "/PreventRebootRequired=true"
            ]
        );
    }
}
