//! The agent's TOML configuration, checked at start with errors that name
//! the key. `cascade agent enroll` writes one beside the certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory of the agent's state, report queue, content and certificate.
    pub data: PathBuf,
    /// The nodes this agent may use; the nearest reachable one is chosen.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// Certificate files; by default `ca.crt`, `agent.crt`, `agent.key` in `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Seconds between check-ins.
    #[serde(default = "default_check_in")]
    pub check_in_seconds: u64,
    /// Facts that add to or override the collected ones (TOML: `name =
    /// "value"`, and `groups = [..]` for the groups policies target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts_file: Option<PathBuf>,
    /// A software list another tool made (Cascade's JSON: `{"complete":
    /// true, "entries": [...]}`), added to the collected one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_file: Option<PathBuf>,
    /// Run to restart the computer, batched at the end of a run.
    #[serde(default = "default_restart")]
    pub restart_command: Vec<String>,
    /// An installer running longer than this is stopped and fails.
    #[serde(default = "default_install_timeout")]
    pub install_timeout_seconds: u64,
    /// Largest content file the agent downloads.
    #[serde(default = "default_content_max")]
    pub content_max_bytes: u64,
    /// Changes at every boot; while it has not, the computer stays pending restart.
    #[serde(default = "default_boot_id")]
    pub boot_id_file: PathBuf,
    /// Where the collector reads the system (changed only for tests).
    #[serde(default)]
    pub collect: CollectPaths,
    /// The operating system's own updater, for policies that turn it on.
    #[serde(default)]
    pub os_updater: OsUpdaterConfig,
    /// The root node, the only origin whose signed timestamps count
    /// (written at enrollment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// A newest root timestamp older than this makes the agent report
    /// "stale" instead of compliant (a frozen view).
    #[serde(default = "default_max_timestamp_age")]
    pub max_timestamp_age_seconds: u64,
}

fn default_max_timestamp_age() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// `host:port` (an `https://` prefix is accepted).
    pub address: String,
    /// Among nodes equally near, the lower priority is preferred.
    #[serde(default)]
    pub priority: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectPaths {
    #[serde(default = "default_os_release")]
    pub os_release: PathBuf,
    #[serde(default = "default_dpkg_status")]
    pub dpkg_status: PathBuf,
    /// Directory whose presence says the rpm database is in use.
    #[serde(default = "default_rpm_db")]
    pub rpm_db: PathBuf,
    #[serde(default = "default_kernel")]
    pub kernel_release: PathBuf,
}

impl Default for CollectPaths {
    fn default() -> Self {
        CollectPaths {
            os_release: default_os_release(),
            dpkg_status: default_dpkg_status(),
            rpm_db: default_rpm_db(),
            kernel_release: default_kernel(),
        }
    }
}

/// Commands of the OS updater. The defaults are Debian's apt: the list is
/// a simulated upgrade whose `Inst` lines from a `-security` suite are the
/// security updates; they are installed with `--only-upgrade`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsUpdaterConfig {
    #[serde(default = "default_refresh")]
    pub refresh_command: Vec<String>,
    #[serde(default = "default_list")]
    pub list_command: Vec<String>,
    /// The package names are appended.
    #[serde(default = "default_install")]
    pub install_command: Vec<String>,
    /// Only packages from suites whose name contains this.
    #[serde(default = "default_security")]
    pub security_suite: String,
}

impl Default for OsUpdaterConfig {
    fn default() -> Self {
        OsUpdaterConfig {
            refresh_command: default_refresh(),
            list_command: default_list(),
            install_command: default_install(),
            security_suite: default_security(),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
fn default_check_in() -> u64 {
    3600
}
fn default_restart() -> Vec<String> {
    strings(&[
        "/sbin/shutdown",
        "-r",
        "+1",
        "Cascade: restarting to finish installing updates",
    ])
}
fn default_install_timeout() -> u64 {
    7200
}
fn default_content_max() -> u64 {
    8 << 30
}
fn default_boot_id() -> PathBuf {
    PathBuf::from("/proc/sys/kernel/random/boot_id")
}
fn default_os_release() -> PathBuf {
    PathBuf::from("/etc/os-release")
}
fn default_dpkg_status() -> PathBuf {
    PathBuf::from("/var/lib/dpkg/status")
}
fn default_rpm_db() -> PathBuf {
    PathBuf::from("/var/lib/rpm")
}
fn default_kernel() -> PathBuf {
    PathBuf::from("/proc/sys/kernel/osrelease")
}
fn default_refresh() -> Vec<String> {
    strings(&["apt-get", "update", "-q"])
}
fn default_list() -> Vec<String> {
    strings(&["apt-get", "-s", "-q", "dist-upgrade"])
}
fn default_install() -> Vec<String> {
    strings(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--only-upgrade",
        "-o",
        "Dpkg::Options::=--force-confold",
    ])
}
fn default_security() -> String {
    "-security".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: `{key}`: {detail}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        detail: String,
    },
}

/// The checked configuration, with the certificates read.
#[derive(Debug, Clone)]
pub struct Checked {
    pub data: PathBuf,
    pub nodes: Vec<NodeEntry>,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub check_in: Duration,
    pub facts_file: Option<PathBuf>,
    pub software_file: Option<PathBuf>,
    pub restart_command: Vec<String>,
    pub install_timeout: Duration,
    pub content_max_bytes: u64,
    pub boot_id_file: PathBuf,
    pub collect: CollectPaths,
    pub os_updater: OsUpdaterConfig,
    pub root: Option<cascade_core::model::NodeId>,
    pub max_timestamp_age_seconds: u64,
    /// Where a renewed certificate and key are written.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// `host:port` of an address given as `host:port` or `https://host:port`.
pub fn node_address(text: &str) -> Option<String> {
    let rest = text.trim();
    let rest = rest.strip_prefix("https://").unwrap_or(rest).trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then(|| rest.to_owned())
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string().trim().to_owned(),
        })?;
        config.check(path)
    }

    pub fn check(self, path: &Path) -> Result<Checked, ConfigError> {
        let invalid = |key: &'static str, detail: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            detail,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let data = resolve(&self.data);
        if self.nodes.is_empty() {
            return Err(invalid("node", "at least one [[node]] is needed".to_owned()));
        }
        let mut nodes = Vec::new();
        for entry in &self.nodes {
            let address = node_address(&entry.address)
                .ok_or_else(|| invalid("node.address", format!("{:?} is not host:port", entry.address)))?;
            nodes.push(NodeEntry {
                address,
                priority: entry.priority,
            });
        }
        let tls = self.tls.clone().unwrap_or_else(|| TlsFiles {
            ca: data.join("ca.crt"),
            cert: data.join("agent.crt"),
            key: data.join("agent.key"),
        });
        let read = |key: &'static str, p: &Path| {
            std::fs::read_to_string(resolve(p)).map_err(|e| invalid(key, format!("{}: {e}", resolve(p).display())))
        };
        let ca_pem = read("tls.ca", &tls.ca)?;
        let cert_pem = read("tls.cert", &tls.cert)?;
        let key_pem = read("tls.key", &tls.key)?;
        let certs = cascade_trust::pem_certs(&cert_pem).map_err(|e| invalid("tls.cert", e.to_string()))?;
        match certs.first().map(|c| cascade_trust::identity_of(c)) {
            Some(Ok(cascade_trust::Identity::Agent(_))) => {}
            Some(Ok(other)) => {
                return Err(invalid(
                    "tls.cert",
                    format!("the certificate is for {other}, not an agent"),
                ));
            }
            Some(Err(e)) => return Err(invalid("tls.cert", e.to_string())),
            None => return Err(invalid("tls.cert", "no certificate in the file".to_owned())),
        }
        if !(10..=7 * 86_400).contains(&self.check_in_seconds) {
            return Err(invalid(
                "check_in_seconds",
                format!("{} is not between 10 and 604800", self.check_in_seconds),
            ));
        }
        if self.restart_command.is_empty() {
            return Err(invalid("restart_command", "may not be empty".to_owned()));
        }
        if !(1..=7 * 86_400).contains(&self.install_timeout_seconds) {
            return Err(invalid(
                "install_timeout_seconds",
                format!("{} is not between 1 and 604800", self.install_timeout_seconds),
            ));
        }
        if self.content_max_bytes == 0 {
            return Err(invalid("content_max_bytes", "may not be 0".to_owned()));
        }
        for (key, command) in [
            ("os_updater.refresh_command", &self.os_updater.refresh_command),
            ("os_updater.list_command", &self.os_updater.list_command),
            ("os_updater.install_command", &self.os_updater.install_command),
        ] {
            if command.is_empty() {
                return Err(invalid(key, "may not be empty".to_owned()));
            }
        }
        let root = match &self.root {
            Some(r) => Some(cascade_core::model::NodeId::new(r).map_err(|e| invalid("root", e.to_string()))?),
            None => None,
        };
        if self.max_timestamp_age_seconds < 60 {
            return Err(invalid(
                "max_timestamp_age_seconds",
                format!("{} is less than a minute", self.max_timestamp_age_seconds),
            ));
        }
        Ok(Checked {
            cert_path: resolve(&tls.cert),
            key_path: resolve(&tls.key),
            root,
            max_timestamp_age_seconds: self.max_timestamp_age_seconds,
            data,
            nodes,
            ca_pem,
            cert_pem,
            key_pem,
            check_in: Duration::from_secs(self.check_in_seconds),
            facts_file: self.facts_file.as_deref().map(resolve),
            software_file: self.software_file.as_deref().map(resolve),
            restart_command: self.restart_command,
            install_timeout: Duration::from_secs(self.install_timeout_seconds),
            content_max_bytes: self.content_max_bytes,
            boot_id_file: resolve(&self.boot_id_file),
            collect: CollectPaths {
                os_release: resolve(&self.collect.os_release),
                dpkg_status: resolve(&self.collect.dpkg_status),
                rpm_db: resolve(&self.collect.rpm_db),
                kernel_release: resolve(&self.collect.kernel_release),
            },
            os_updater: self.os_updater,
        })
    }

    /// A configuration for a freshly enrolled agent using one node.
    pub fn enrolled(data: &Path, node: &str, root: Option<String>) -> AgentConfig {
        AgentConfig {
            data: data.to_path_buf(),
            nodes: vec![NodeEntry {
                address: node.to_owned(),
                priority: 0,
            }],
            tls: None,
            check_in_seconds: default_check_in(),
            facts_file: None,
            software_file: None,
            restart_command: default_restart(),
            install_timeout_seconds: default_install_timeout(),
            content_max_bytes: default_content_max(),
            boot_id_file: default_boot_id(),
            collect: CollectPaths::default(),
            os_updater: OsUpdaterConfig::default(),
            root,
            max_timestamp_age_seconds: default_max_timestamp_age(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(node_address("https://node-a:7443/").as_deref(), Some("node-a:7443"));
        assert_eq!(node_address("127.0.0.1:1").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(node_address("node-a"), None);
        assert_eq!(node_address("node-a:0"), None);
        assert_eq!(node_address(":7443"), None);
    }

    #[test]
    fn a_complete_sample_parses_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = cascade_trust::Ca::generate("T", 1_780_000_000, 10).unwrap();
        let agent = cascade_trust::Identity::Agent(cascade_core::model::ComputerId::new("pc-1").unwrap());
        ca.issue(&agent, &[], 1_780_000_000, 10)
            .unwrap()
            .write(dir.path(), "agent")
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem).unwrap();
        let sample = r#"
data = "."
check_in_seconds = 600
facts_file = "facts.toml"
restart_command = ["/bin/true"]
install_timeout_seconds = 60
content_max_bytes = 1000000
boot_id_file = "boot_id"

[[node]]
address = "https://node-a:7443"
priority = 1

[[node]]
address = "node-b:7443"
priority = 2

[collect]
os_release = "os-release"
dpkg_status = "status"
rpm_db = "rpm"
kernel_release = "osrelease"

[os_updater]
refresh_command = ["/bin/true"]
list_command = ["apt-get", "-s", "dist-upgrade"]
install_command = ["apt-get", "install", "-y"]
security_suite = "-security"
"#;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, sample).unwrap();
        let checked = AgentConfig::load(&path).unwrap();
        assert_eq!(checked.nodes[0].address, "node-a:7443");
        assert_eq!(checked.check_in, Duration::from_secs(600));
        assert_eq!(checked.facts_file, Some(dir.path().join("facts.toml")));
        for (text, key) in [
            (
                sample.replace("check_in_seconds = 600", "check_in_seconds = 1"),
                "check_in_seconds",
            ),
            (sample.replace("https://node-a:7443", "node-a"), "node.address"),
            (
                sample.replace("restart_command = [\"/bin/true\"]", "restart_command = []"),
                "restart_command",
            ),
            (sample.replace("priority = 1", "priority = 1\nweight = 3"), "weight"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = AgentConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
