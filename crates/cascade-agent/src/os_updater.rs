//! The operating system's own updater, run after the vendor catalog when a
//! policy turns both on. On Debian: apt, limited to upgradable packages
//! from the security suite.

use std::time::Duration;

use cascade_core::UpdateId;
use cascade_core::update::{ExitMeaning, InstallCommand};

use crate::config::OsUpdaterConfig;
use crate::install;

/// The most of a listing's output that is read.
const LISTING_MAX: usize = 16 << 20;

/// A package the updater would upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgradable {
    pub package: String,
    pub from: Option<String>,
    pub to: String,
    /// The suites the new version comes from, as apt prints them.
    pub suites: String,
}

impl Upgradable {
    /// The update id its results are reported under: `apt:<package>`.
    pub fn update_id(&self) -> UpdateId {
        UpdateId::new(&format!("apt:{}", self.package))
    }
}

/// The `Inst` lines of a simulated apt upgrade
/// (`Inst libssl3 [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])`).
pub fn parse_simulation(text: &str) -> Vec<Upgradable> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (package, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let rest = rest.trim();
            let (from, rest) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (v, r) = r.split_once(']')?;
                    (Some(v.to_owned()), r.trim())
                }
                None => (None, rest),
            };
            let inner = rest.strip_prefix('(')?.rsplit_once(')')?.0;
            let (to, suites) = inner.split_once(' ').unwrap_or((inner, ""));
            Some(Upgradable {
                package: package.to_owned(),
                from,
                to: to.to_owned(),
                suites: suites.to_owned(),
            })
        })
        .collect()
}

/// What one package came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageResult {
    pub package: Upgradable,
    /// Exit code of the install command; 0 when the package is upgraded.
    pub code: i64,
    pub installed: bool,
    pub detail: String,
}

fn command(argv: &[String], extra: &[String]) -> InstallCommand {
    InstallCommand {
        program: argv[0].clone(),
        arguments: argv[1..].iter().chain(extra).cloned().collect(),
        // apt's codes: 0 success, anything else failure.
        exit_codes: vec![],
    }
}

/// Security upgrades available now.
pub async fn security_upgrades(config: &OsUpdaterConfig, timeout: Duration) -> Result<Vec<Upgradable>, String> {
    let dir = std::env::temp_dir();
    let refresh = install::run(&command(&config.refresh_command, &[]), &[], &dir, timeout).await;
    if refresh.meaning != ExitMeaning::Success {
        tracing::warn!(code = refresh.code, detail = %refresh.detail, "the package lists were not refreshed");
    }
    let list = install::run_keeping(&command(&config.list_command, &[]), &[], &dir, timeout, LISTING_MAX).await;
    if list.meaning != ExitMeaning::Success {
        return Err(format!(
            "{} failed ({}): {}",
            config.list_command.join(" "),
            list.code,
            list.detail
        ));
    }
    Ok(parse_simulation(&list.detail)
        .into_iter()
        .filter(|u| u.suites.contains(&config.security_suite))
        .collect())
}

/// Lists and installs the security upgrades; each package's result is
/// read from a second listing (still listed: not upgraded).
pub async fn run(config: &OsUpdaterConfig, timeout: Duration) -> Result<Vec<PackageResult>, String> {
    let wanted = security_upgrades(config, timeout).await?;
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = wanted.iter().map(|u| u.package.clone()).collect();
    let dir = std::env::temp_dir();
    let outcome = install::run(&command(&config.install_command, &names), &[], &dir, timeout).await;
    let left: Vec<String> = security_upgrades(config, timeout)
        .await
        .map(|l| l.into_iter().map(|u| u.package).collect())
        .unwrap_or(names.clone());
    Ok(wanted
        .into_iter()
        .map(|package| {
            let installed = !left.contains(&package.package);
            PackageResult {
                code: if installed { 0 } else { outcome.code.max(1) },
                installed,
                detail: if installed {
                    format!("upgraded to {}", package.to)
                } else {
                    outcome.detail.clone()
                },
                package,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULATION: &str = "Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  libssl3 openssl tzdata
3 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Inst libssl3 [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst openssl [3.0.11-1~deb12u1] (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2024b-0+deb12u1 Debian:12.7/stable [all])
Conf libssl3 (3.0.11-1~deb12u2 Debian-Security:12/stable-security [amd64])
";

    #[test]
    fn simulated_upgrades_are_read() {
        let all = parse_simulation(SIMULATION);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            Upgradable {
                package: "libssl3".into(),
                from: Some("3.0.11-1~deb12u1".into()),
                to: "3.0.11-1~deb12u2".into(),
                suites: "Debian-Security:12/stable-security [amd64]".into(),
            }
        );
        assert_eq!(all[0].update_id().as_str(), "apt:libssl3");
        let new = parse_simulation("Inst newpkg (1.0 Debian:12/stable [amd64])\n");
        assert_eq!(new[0].from, None);
    }

    #[tokio::test]
    async fn installs_security_upgrades_and_reads_back_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let listing = dir.path().join("listing");
        std::fs::write(&listing, SIMULATION).unwrap();
        // The "install" upgrades libssl3 only: openssl stays listed.
        let install = format!(
            "grep -v '^Inst libssl3' {0} > {0}.new; mv {0}.new {0}; echo E: openssl held >&2; exit 100",
            listing.display()
        );
        let config = OsUpdaterConfig {
            refresh_command: vec!["/bin/true".into()],
            list_command: vec!["/bin/cat".into(), listing.display().to_string()],
            install_command: vec!["/bin/sh".into(), "-c".into(), install, "apt".into()],
            security_suite: "-security".into(),
        };
        let results = run(&config, Duration::from_secs(30)).await.unwrap();
        let summary: Vec<(&str, bool, i64)> = results
            .iter()
            .map(|r| (r.package.package.as_str(), r.installed, r.code))
            .collect();
        assert_eq!(
            summary,
            vec![("libssl3", true, 0), ("openssl", false, 100)],
            "tzdata is not a security update"
        );
        assert!(results[1].detail.contains("openssl held"));
    }
}
