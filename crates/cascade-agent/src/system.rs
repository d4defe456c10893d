//! The agent on a real computer: the system's clock, collectors, installers,
//! restart command and OS updater.

use std::path::PathBuf;

use cascade_core::assignment::Step;
use cascade_core::inventory::Inventory;
use cascade_core::model::ComputerId;

use crate::config::Checked;
use crate::cycle::{Agent, AgentError, Credentials, Env};
use crate::install::{self, Outcome};
use crate::journal::Journal;
use crate::os_updater::PackageResult;

/// The real computer.
#[derive(Debug, Clone)]
pub struct SystemEnv {
    pub config: Checked,
}

/// The agent's clock: the one place it reads the time of day.
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Env for SystemEnv {
    fn now(&self) -> i64 {
        unix_now()
    }

    fn inventory(&self) -> Result<Inventory, String> {
        crate::collect::collect(
            &self.config.collect,
            self.config.facts_file.as_deref(),
            self.config.software_file.as_deref(),
        )
        .map_err(|e| e.to_string())
    }

    fn boot_id(&self) -> Option<String> {
        std::fs::read_to_string(&self.config.boot_id_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn fetches_content(&self) -> bool {
        true
    }

    async fn install(&self, step: &Step, files: &[PathBuf]) -> Outcome {
        let command = step.install.clone().or_else(|| install::default_command(files));
        let Some(command) = command else {
            return Outcome {
                code: install::CODE_NOT_STARTED,
                meaning: cascade_core::update::ExitMeaning::Failure,
                detail: "no install command".into(),
            };
        };
        let workdir = files
            .first()
            .and_then(|f| f.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| self.config.data.clone());
        install::run(&command, files, &workdir, self.config.install_timeout).await
    }

    async fn restart(&self) -> Result<(), String> {
        let argv = &self.config.restart_command;
        let status = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(&self.config.data)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| format!("{}: {e}", argv[0]))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} exited with {status}", argv.join(" ")))
        }
    }

    async fn os_updater(&self) -> Option<Result<Vec<PackageResult>, String>> {
        Some(crate::os_updater::run(&self.config.os_updater, self.config.install_timeout).await)
    }

    /// Writes the renewed key and certificate beside the old ones, then
    /// moves them into place (the key first: a crash in between leaves a
    /// key that the next renewal replaces, never a certificate without it).
    fn keep_credentials(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let write = |path: &std::path::Path, text: &str, secret: bool| -> Result<(), String> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = path.with_extension("renewed");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(if secret { 0o600 } else { 0o644 })
                .open(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(&self.config.key_path, key_pem, true)?;
        write(&self.config.cert_path, cert_pem, false)
    }
}

/// The agent of this computer, from its checked configuration.
pub fn agent(config: Checked) -> Result<Agent<SystemEnv>, AgentError> {
    let first = cascade_trust::pem_certs(&config.cert_pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| AgentError::Refused("the agent certificate holds no certificate".into()))?;
    let computer: ComputerId = match cascade_trust::identity_of(&first) {
        Ok(cascade_trust::Identity::Agent(id)) => id,
        Ok(other) => {
            return Err(AgentError::Refused(format!(
                "the certificate is for {other}, not an agent"
            )));
        }
        Err(e) => return Err(AgentError::Refused(e.to_string())),
    };
    let journal = Journal::open(&config.data)?;
    Ok(Agent {
        computer,
        journal,
        nodes: config.nodes.clone(),
        credentials: Credentials {
            ca_pem: config.ca_pem.clone(),
            cert_pem: config.cert_pem.clone(),
            key_pem: config.key_pem.clone(),
            root: config.root.clone(),
            max_timestamp_age: config.max_timestamp_age_seconds as i64,
        },
        content_dir: config.data.join("content"),
        content_limit: config.content_max_bytes,
        probe: true,
        env: SystemEnv { config },
    })
}
