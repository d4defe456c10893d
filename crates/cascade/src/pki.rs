//! `cascade pki`: the organisation CA and the certificates it issues.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_core::model::{ComputerId, NodeId};
use cascade_trust::{Ca, Identity, Role};

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create the organisation CA (ca.crt, ca.key) in a directory.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Organisation name written into the CA.
        #[arg(long, default_value = "Cascade")]
        org: String,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate and key signed by the CA in --dir.
    Issue {
        #[command(subcommand)]
        what: IssueWhat,
        /// The CA's directory; the files are written there too unless --out is given.
        #[arg(long, global = true, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, global = true, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long, global = true, default_value_t = 397)]
        days: i64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum IssueWhat {
    /// A node: <id>.crt and <id>.key, also valid as a TLS server for localhost and --host names.
    Node {
        #[arg(long)]
        id: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// An agent: agent-<id>.crt and agent-<id>.key.
    Agent {
        #[arg(long)]
        id: String,
    },
    /// A site's agent-enrollment CA (a sub-CA for the node's `[enrollment]`):
    /// enroll-<site>.crt and enroll-<site>.key.
    EnrollmentCa {
        #[arg(long)]
        site: String,
    },
    /// An administrator: admin-<name>.crt and admin-<name>.key.
    Admin {
        #[arg(long)]
        name: String,
        /// admin, site-operator or auditor.
        #[arg(long)]
        role: String,
        /// The site a site operator operates (its subtree); required for site-operator.
        #[arg(long)]
        site: Option<String>,
    },
}

pub fn run(command: PkiCommand) -> anyhow::Result<ExitCode> {
    let now = cascade_node::now();
    match command {
        PkiCommand::Init { dir, org, days } => {
            let ca = Ca::generate(&org, now, days)?;
            ca.write(&dir)?;
            println!("created the {org} CA in {}", dir.display());
        }
        PkiCommand::Issue { what, dir, out, days } => {
            let dir = dir.ok_or_else(|| anyhow::anyhow!("--dir: the CA's directory is required"))?;
            let ca = Ca::load(&dir)?;
            if let IssueWhat::EnrollmentCa { site } = &what {
                let site = NodeId::new(site).map_err(|e| anyhow::anyhow!("--site: {e}"))?;
                let issued = ca.issue_enrollment_ca(&site, now, days)?;
                let (cert, key) = issued.write(out.as_deref().unwrap_or(&dir), &format!("enroll-{site}"))?;
                println!(
                    "issued the enrollment CA of {site}: {} {}",
                    cert.display(),
                    key.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let (identity, hosts, stem) = match what {
                IssueWhat::Node { id, hosts } => {
                    let id = NodeId::new(&id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
                    let stem = id.to_string();
                    (Identity::Node(id), hosts, stem)
                }
                IssueWhat::Agent { id } => {
                    let id = ComputerId::new(&id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
                    let stem = format!("agent-{id}");
                    (Identity::Agent(id), Vec::new(), stem)
                }
                IssueWhat::EnrollmentCa { .. } => unreachable!("handled above"),
                IssueWhat::Admin { name, role, site } => {
                    let role = Role::parse(&role)
                        .ok_or_else(|| anyhow::anyhow!("--role: {role:?} is not admin, site-operator or auditor"))?;
                    if name.is_empty() || name.contains(['/', '?']) {
                        anyhow::bail!("--name: {name:?} may not be empty or contain / or ?");
                    }
                    let stem = format!("admin-{name}");
                    let site = site
                        .map(|s| NodeId::new(&s).map_err(|e| anyhow::anyhow!("--site: {e}")))
                        .transpose()?;
                    if role == Role::SiteOperator && site.is_none() {
                        anyhow::bail!("--site: a site operator needs the site whose subtree it operates");
                    }
                    (Identity::Admin { name, role, site }, Vec::new(), stem)
                }
            };
            let issued = ca.issue(&identity, &hosts, now, days)?;
            let (cert, key) = issued.write(out.as_deref().unwrap_or(&dir), &stem)?;
            println!("issued {identity}: {} {}", cert.display(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
