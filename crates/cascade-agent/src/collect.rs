//! Inventory collectors: what the computer says about itself. On Linux the
//! os-release file, the kernel, the architecture and the dpkg or rpm
//! package database; on Windows `systeminfo` and registry values (compiled
//! only there); on both, a facts file that adds or overrides facts.

use std::path::Path;

use cascade_core::assignment::GROUPS_FACT;
use cascade_core::inventory::Inventory;

use crate::config::CollectPaths;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{0}")]
    Parse(String),
    #[error("{path}: `{key}`: {detail}")]
    Facts { path: String, key: String, detail: String },
}

/// The architecture as inventories name it.
pub fn architecture(machine: &str) -> String {
    match machine {
        "x86_64" | "amd64" | "AMD64" => "x64",
        "aarch64" | "arm64" | "ARM64" => "arm64",
        "x86" | "i386" | "i686" => "x86",
        other => other,
    }
    .to_owned()
}

/// Collects this computer's inventory.
pub fn collect(
    paths: &CollectPaths,
    facts_file: Option<&Path>,
    software_file: Option<&Path>,
) -> Result<Inventory, CollectError> {
    let mut inventory = system(paths)?;
    if let Some(path) = facts_file {
        apply_facts_file(&mut inventory, path)?;
    }
    if let Some(path) = software_file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CollectError::Read {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let list: cascade_core::software::SoftwareList =
            serde_json::from_str(&text).map_err(|e| CollectError::Read {
                path: shown,
                detail: format!("not a software list ({e})"),
            })?;
        let _ = inventory.merge(Inventory {
            software: Some(list),
            ..Inventory::default()
        });
    }
    inventory.normalize();
    Ok(inventory)
}

#[cfg(not(windows))]
fn system(paths: &CollectPaths) -> Result<Inventory, CollectError> {
    use cascade_core::import::linux;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| CollectError::Read {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    };
    let source = paths.os_release.display().to_string();
    let mut inventory =
        linux::parse_os_release(&source, &read(&paths.os_release)?).map_err(|e| CollectError::Parse(e.to_string()))?;
    inventory.os.arch = Some(architecture(std::env::consts::ARCH));
    if let Ok(kernel) = std::fs::read_to_string(&paths.kernel_release) {
        inventory
            .facts
            .insert("kernel.release".into(), kernel.trim().to_owned());
    }
    if paths.dpkg_status.exists() {
        let source = paths.dpkg_status.display().to_string();
        let packages = linux::parse_dpkg_status(&source, &read(&paths.dpkg_status)?)
            .map_err(|e| CollectError::Parse(e.to_string()))?;
        inventory.merge(packages);
    } else if paths.rpm_db.exists() {
        let output = std::process::Command::new("rpm")
            .args([
                "-qa",
                "--queryformat",
                "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n",
            ])
            .output()
            .map_err(|e| CollectError::Read {
                path: "rpm -qa".into(),
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(CollectError::Read {
                path: "rpm -qa".into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let packages = linux::parse_rpm_list("rpm -qa", &String::from_utf8_lossy(&output.stdout))
            .map_err(|e| CollectError::Parse(e.to_string()))?;
        inventory.merge(packages);
    }
    Ok(inventory)
}

#[cfg(windows)]
fn system(_paths: &CollectPaths) -> Result<Inventory, CollectError> {
    let run = |program: &str, args: &[&str]| -> Result<Vec<u8>, CollectError> {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| CollectError::Read {
                path: program.into(),
                detail: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(CollectError::Read {
                path: program.into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(output.stdout)
    };
    let (_, mut inventory) = cascade_core::import::import_inventory("systeminfo", &run("systeminfo", &[])?)
        .map_err(|e| CollectError::Parse(e.to_string()))?;
    // Registry values detection rules read most often; keys that cannot be
    // read stay absent (rules over them are then unknown).
    let mut registry = std::collections::BTreeMap::new();
    for key in [
        r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion",
        r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management",
    ] {
        if let Ok(out) = run("reg", &["query", key]) {
            registry.extend(parse_reg_query(&String::from_utf8_lossy(&out)));
        }
    }
    if !registry.is_empty() {
        inventory.registry = Some(registry);
    }
    // Installed software: `reg export` of every key it is registered
    // under (a key that does not exist fails and is left out), per-user
    // Uninstall keys of the loaded profiles included.
    let dir = std::env::temp_dir().join(format!("cascade-software-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CollectError::Read {
        path: dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let users = run("reg", &["query", "HKU"])
        .map(|out| user_hives(&String::from_utf8_lossy(&out)))
        .unwrap_or_default();
    let mut exports = Vec::new();
    for (n, key) in software_keys(&users).iter().enumerate() {
        let file = dir.join(format!("{n}.reg"));
        let file_arg = file.display().to_string();
        if run("reg", &["export", key, &file_arg, "/y"]).is_ok()
            && let Ok(bytes) = std::fs::read(&file)
        {
            exports.push((key.clone(), bytes));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let software = software_inventory(&exports)?;
    inventory.merge(software);
    Ok(inventory)
}

/// The keys installed software is registered under, for `reg export`: the
/// machine-wide Uninstall keys of both registry views and of each loaded
/// user profile, Windows Installer products, Office Click-to-Run, the .NET
/// Framework and runtimes, SQL Server, Exchange and SharePoint.
pub fn software_keys(users: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = [
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall",
        r"HKLM\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
        r"HKLM\SOFTWARE\Classes\Installer\Products",
        r"HKLM\SOFTWARE\Classes\Installer\UpgradeCodes",
        r"HKLM\SOFTWARE\Microsoft\Office\ClickToRun\Configuration",
        r"HKLM\SOFTWARE\Microsoft\NET Framework Setup\NDP",
        r"HKLM\SOFTWARE\dotnet\Setup\InstalledVersions",
        r"HKLM\SOFTWARE\WOW6432Node\dotnet\Setup\InstalledVersions",
        r"HKLM\SOFTWARE\Microsoft\Microsoft SQL Server",
        r"HKLM\SOFTWARE\Microsoft\ExchangeServer",
        r"HKLM\SOFTWARE\Microsoft\Shared Tools\Web Server Extensions",
    ]
    .iter()
    .map(|k| k.replace("\\\\", "\\"))
    .collect();
    for sid in users {
        keys.push(format!(r"HKU\{sid}\Software\Microsoft\Windows\CurrentVersion\Uninstall").replace("\\\\", "\\"));
    }
    keys
}

/// The user profiles loaded under HKEY_USERS, from `reg query HKU`: real
/// accounts' SIDs, without their `_Classes` hives and the built-in ones.
pub fn user_hives(reg_query: &str) -> Vec<String> {
    reg_query
        .lines()
        .filter_map(|l| l.trim().strip_prefix("HKEY_USERS\\"))
        .filter(|sid| sid.starts_with("S-1-5-21-") && !sid.ends_with("_Classes") && !sid.contains('\\'))
        .map(str::to_owned)
        .collect()
}

/// One inventory of the exports of [`software_keys`] (key, the file's bytes).
pub fn software_inventory(exports: &[(String, Vec<u8>)]) -> Result<Inventory, CollectError> {
    use cascade_core::import::{regedit, text};
    let mut all: Option<regedit::RegistryExport> = None;
    for (key, bytes) in exports {
        let export = regedit::parse(key, &text::decode(bytes)).map_err(|e| CollectError::Parse(e.to_string()))?;
        match &mut all {
            Some(a) => a.merge(export),
            None => all = Some(export),
        }
    }
    let Some(all) = all else {
        return Ok(Inventory::default());
    };
    let collected = regedit::software(&all);
    let mut inventory = Inventory {
        software: Some(regedit::software_list(&collected)),
        installed_updates: collected.installed_updates,
        ..Inventory::default()
    };
    inventory.normalize();
    Ok(inventory)
}

/// `reg query` output: a key line, then `    Name    REG_TYPE    Value`
/// lines; values by full path (`HKEY_LOCAL_MACHINE\...\Name`).
pub fn parse_reg_query(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut key = String::new();
    for line in text.lines() {
        if line.starts_with("HKEY_") {
            key = line.trim().to_owned();
            continue;
        }
        let trimmed = line.trim();
        let mut parts = trimmed.splitn(3, "    ");
        if let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
            && kind.starts_with("REG_")
            && !key.is_empty()
        {
            let value = value.trim();
            let value = match kind {
                "REG_DWORD" | "REG_QWORD" => value
                    .strip_prefix("0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| value.to_owned()),
                _ => value.to_owned(),
            };
            out.insert(format!("{key}\\{name}"), value);
        }
    }
    out
}

/// Applies a facts file: `name = "value"` (numbers and booleans as text),
/// and `groups = ["a", "b"]` for the groups policies target.
pub fn apply_facts_file(inventory: &mut Inventory, path: &Path) -> Result<(), CollectError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CollectError::Read {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| CollectError::Facts {
        path: shown.clone(),
        key: "(file)".into(),
        detail: e.to_string().trim().to_owned(),
    })?;
    for (key, value) in table {
        let text = match (&*key, value) {
            ("groups", toml::Value::Array(items)) => {
                let mut groups = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(g) if !g.contains(',') && !g.trim().is_empty() => {
                            groups.push(g.trim().to_owned())
                        }
                        other => {
                            return Err(CollectError::Facts {
                                path: shown,
                                key,
                                detail: format!("{other} is not a group name (text without commas)"),
                            });
                        }
                    }
                }
                inventory.facts.insert(GROUPS_FACT.into(), groups.join(","));
                continue;
            }
            (_, toml::Value::String(s)) => s,
            (_, toml::Value::Integer(n)) => n.to_string(),
            (_, toml::Value::Float(f)) => f.to_string(),
            (_, toml::Value::Boolean(b)) => b.to_string(),
            (_, other) => {
                return Err(CollectError::Facts {
                    path: shown,
                    key,
                    detail: format!("{} is not text, a number or a boolean", other.type_str()),
                });
            }
        };
        inventory.facts.insert(key, text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/linux")
            .join(name)
    }

    #[test]
    fn collects_this_kind_of_machine_from_its_files() {
        let paths = CollectPaths {
            os_release: fixture("os-release"),
            dpkg_status: fixture("dpkg-status"),
            rpm_db: fixture("no-rpm"),
            kernel_release: fixture("no-kernel"),
        };
        let dir = tempfile::tempdir().unwrap();
        let facts = dir.path().join("facts.toml");
        std::fs::write(
            &facts,
            "groups = [\"web\", \"eu\"]\nrack = 12\n\"deb:openssl\" = \"9.9\"\n",
        )
        .unwrap();
        let inv = collect(&paths, Some(&facts), None).unwrap();
        assert_eq!(inv.os.family, cascade_core::inventory::OsFamily::Linux);
        assert_eq!(
            inv.os.arch.as_deref(),
            Some(architecture(std::env::consts::ARCH).as_str())
        );
        assert_eq!(inv.facts[GROUPS_FACT], "web,eu");
        assert_eq!(inv.facts["rack"], "12");
        assert_eq!(inv.facts["deb:openssl"], "9.9", "the facts file overrides");
        assert!(inv.facts.keys().filter(|k| k.starts_with("deb:")).count() >= 15);

        std::fs::write(&facts, "groups = [\"a,b\"]\n").unwrap();
        let e = collect(&paths, Some(&facts), None).unwrap_err().to_string();
        assert!(e.contains("groups") && e.contains("facts.toml"), "{e}");
        std::fs::write(&facts, "nested = { a = 1 }\n").unwrap();
        let e = collect(&paths, Some(&facts), None).unwrap_err().to_string();
        assert!(e.contains("nested"), "{e}");
    }

    #[test]
    fn software_from_the_exports_of_its_keys() {
        let listing = "\r\nHKEY_USERS\\.DEFAULT\r\nHKEY_USERS\\S-1-5-19\r\nHKEY_USERS\\S-1-5-21-3623811015-3361044348-30300820-1013\r\nHKEY_USERS\\S-1-5-21-3623811015-3361044348-30300820-1013_Classes\r\n";
        let users = user_hives(listing);
        assert_eq!(users, ["S-1-5-21-3623811015-3361044348-30300820-1013"]);
        let keys = software_keys(&users);
        assert!(keys.iter().all(|k| !k.contains("\\\\")), "{keys:?}");
        assert!(keys.last().unwrap().starts_with("HKU\\S-1-5-21-"));
        // The real export of a Windows XP machine's Uninstall key (GPL test
        // data, read in place), with a Windows Installer key beside it.
        let real = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/windows-software-inventory/glpi-agent_xp-Uninstall.reg");
        let Ok(xp) = std::fs::read(&real) else {
            eprintln!("skipped: {} is not here", real.display());
            return;
        };
        let msi = "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products]\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products\\00004109110000000000000000F01FEC]\r\n\"ProductName\"=\"Microsoft Office Professional Plus 2010\"\r\n";
        let inv = software_inventory(&[(keys[0].clone(), xp), (keys[2].clone(), msi.as_bytes().to_vec())]).unwrap();
        let list = inv.software.as_ref().unwrap();
        assert!(
            list.complete,
            "both the Uninstall and the Windows Installer keys were read"
        );
        assert!(
            list.entries
                .iter()
                .any(|s| s.name.starts_with("Mozilla Firefox 10.0.2"))
        );
        assert!(inv.installed_updates.len() > 250);
        // A file that is not an export is an error naming it.
        let e = software_inventory(&[(keys[0].clone(), b"HKEY_LOCAL_MACHINE\\X\r\n".to_vec())]).unwrap_err();
        assert!(e.to_string().contains("Uninstall"), "{e}");
    }

    #[test]
    fn reg_query_output() {
        let text = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\r\n    CurrentBuild    REG_SZ    19045\r\n    UBR    REG_DWORD    0xd1b\r\n    ProductName    REG_SZ    Windows 10 Pro\r\n";
        let values = parse_reg_query(text);
        let key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion";
        assert_eq!(values[&format!("{key}\\UBR")], "3355");
        assert_eq!(values[&format!("{key}\\ProductName")], "Windows 10 Pro");
    }
}
