//! Helpers for the tests that run real `cascade` processes: a tree of
//! nodes on 127.0.0.1 with ports the system picks, and ways to wait.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cascade_core::UpdateId;
use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ComplianceRecord, ComputerId, NodeId};
use cascade_core::update::Severity;
use cascade_store::Store;

pub const BIN: &str = env!("CARGO_BIN_EXE_cascade");

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run cascade")
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Waits for `condition` until `limit`, polling; panics with `what` if it never holds.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub struct NodeProc {
    pub id: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// Largest file the node may write (prlimit --fsize): writes past it
    /// fail as on a full disk.
    pub file_size_limit: Option<u64>,
    /// Most open files (prlimit --nofile).
    pub open_files: Option<u64>,
}

impl NodeProc {
    pub fn data(&self) -> PathBuf {
        self.dir.join(format!("{}-data", self.id))
    }

    pub fn addr(&self) -> String {
        std::fs::read_to_string(self.data().join("node.addr")).unwrap_or_default()
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.data().join("node.addr"));
        let log = std::fs::File::create(self.dir.join(format!("{}.log", self.id))).unwrap();
        let config = self.dir.join(format!("{}.toml", self.id));
        let mut limits = String::new();
        if let Some(limit) = self.file_size_limit {
            limits.push_str(&format!(" --fsize={limit}"));
        }
        if let Some(limit) = self.open_files {
            limits.push_str(&format!(" --nofile={limit}"));
        }
        let mut command = if limits.is_empty() {
            let mut c = Command::new(BIN);
            c.args(["node", "run", "--config"]).arg(&config);
            c
        } else {
            // Ignoring SIGXFSZ is inherited across exec: a write past the
            // limit then fails with EFBIG instead of killing the node.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "trap '' XFSZ; exec prlimit{limits} -- \"$0\" node run --config \"$1\""
                ))
                .arg(BIN)
                .arg(&config);
            c
        };
        let child = command.stdout(Stdio::null()).stderr(log).spawn().expect("start a node");
        self.child = Some(child);
        let data = self.data();
        wait_for(&format!("{} to listen", self.id), Duration::from_secs(20), || {
            data.join("node.addr").exists()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Tree {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<String, NodeProc>,
    pub parents: BTreeMap<String, Option<String>>,
    /// Further configuration (TOML tables) per node.
    pub extra: BTreeMap<String, String>,
    /// Further top-level keys per node.
    pub top: BTreeMap<String, String>,
}

impl Tree {
    /// Creates the PKI and configs for `(id, parent)` pairs, parents first.
    pub fn new(shape: &[(&str, Option<&str>)]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        ok(run(&["pki", "init", "--dir", pki.to_str().unwrap()]));
        ok(run(&[
            "pki",
            "issue",
            "admin",
            "--name",
            "ops",
            "--role",
            "admin",
            "--dir",
            pki.to_str().unwrap(),
        ]));
        let mut tree = Tree {
            dir,
            nodes: BTreeMap::new(),
            parents: BTreeMap::new(),
            extra: BTreeMap::new(),
            top: BTreeMap::new(),
        };
        for (id, parent) in shape {
            ok(run(&[
                "pki",
                "issue",
                "node",
                "--id",
                id,
                "--dir",
                pki.to_str().unwrap(),
            ]));
            tree.parents.insert(id.to_string(), parent.map(str::to_owned));
            tree.nodes.insert(
                id.to_string(),
                NodeProc {
                    id: id.to_string(),
                    dir: tree.dir.path().to_path_buf(),
                    child: None,
                    file_size_limit: None,
                    open_files: None,
                },
            );
        }
        tree
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An admin certificate of the tree's CA, `pki/admin-<name>.crt`, with
    /// a role (admin, site-operator, auditor) and a site operator's site.
    pub fn issue_admin(&self, name: &str, role: &str, site: Option<&str>) {
        let pki = self.path().join("pki");
        let mut args = vec![
            "pki",
            "issue",
            "admin",
            "--name",
            name,
            "--role",
            role,
            "--dir",
            pki.to_str().unwrap(),
        ];
        if let Some(site) = site {
            args.extend(["--site", site]);
        }
        ok(run(&args));
    }

    /// The nodes' content import directory (`content_import`).
    pub fn import_dir(&self) -> std::path::PathBuf {
        self.path().join("import")
    }

    pub fn write_config(&self, id: &str) {
        let parent = match &self.parents[id] {
            Some(p) => format!("[parent]\naddress = \"{}\"\nid = \"{p}\"\n", self.nodes[p].addr()),
            None => String::new(),
        };
        // A restarted node keeps the port the system gave it the first time.
        let listen = match self.nodes[id].addr() {
            a if a.is_empty() => "127.0.0.1:0".to_owned(),
            a => a,
        };
        let extra = self.extra.get(id).cloned().unwrap_or_default();
        let top = self.top.get(id).cloned().unwrap_or_default();
        // Files for content.add come from the tree's import directory.
        std::fs::create_dir_all(self.import_dir()).unwrap();
        let text = format!(
            "id = \"{id}\"\nlisten = \"{listen}\"\ndata = \"{id}-data\"\nheartbeat_seconds = 1\ncontent_import = [\"import\"]\n{top}{parent}[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/{id}.crt\"\nkey = \"pki/{id}.key\"\n{extra}"
        );
        std::fs::write(self.path().join(format!("{id}.toml")), text).unwrap();
    }

    /// Starts every node, parents first, registering each with its parent.
    pub fn start_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        let mut order: Vec<String> = ids.iter().filter(|i| self.parents[*i].is_none()).cloned().collect();
        while order.len() < ids.len() {
            for id in &ids {
                if !order.contains(id) && self.parents[id].as_ref().is_some_and(|p| order.contains(p)) {
                    order.push(id.clone());
                }
            }
        }
        for id in order {
            if let Some(parent) = self.parents[&id].clone() {
                ok(self.ctl(&parent, &["site", "add", "--id", &id]));
            }
            self.write_config(&id);
            self.nodes.get_mut(&id).unwrap().start();
        }
    }

    /// Gives `site` an enrollment CA (`[enrollment]` in its configuration),
    /// so that agents enroll and renew there.
    pub fn enrollment(&mut self, site: &str) {
        let pki = self.path().join("pki");
        ok(run(&[
            "pki",
            "issue",
            "enrollment-ca",
            "--site",
            site,
            "--dir",
            pki.to_str().unwrap(),
        ]));
        let table = format!("[enrollment]\nca_cert = \"pki/enroll-{site}.crt\"\nca_key = \"pki/enroll-{site}.key\"\n");
        self.extra.entry(site.to_owned()).or_default().push_str(&table);
    }

    /// Starts a stopped node again on the same address.
    pub fn restart(&mut self, id: &str) {
        self.write_config(id);
        self.nodes.get_mut(id).unwrap().start();
    }

    pub fn ctl(&self, id: &str, args: &[&str]) -> Output {
        let addr = self.nodes[id].addr();
        let pki = self.path().join("pki");
        let mut full = vec![
            "ctl",
            "--node",
            &addr,
            "--node-id",
            id,
            "--pki",
            pki.to_str().unwrap(),
            "--as",
            "ops",
        ];
        full.extend_from_slice(args);
        run(&full)
    }

    pub fn json(&self, id: &str, args: &[&str]) -> serde_json::Value {
        let out = self.ctl(id, args);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub fn approvals(&self, id: &str) -> usize {
        self.json(id, &["objects", "--kind", "approval"])
            .as_array()
            .map_or(0, Vec::len)
    }

    pub fn records(&self, id: &str) -> u64 {
        self.json(id, &["--json", "compliance"])["records"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Puts compliance records into a stopped node's store, as its agents'
    /// reports would, queued for its parent.
    pub fn seed_records(&self, id: &str, count: u64) {
        let node = NodeId::new(id).unwrap();
        let store = Store::open(&self.nodes[id].data().join("store"), node.clone()).unwrap();
        let mut records: Vec<ComplianceRecord> = (0..count)
            .map(|c| ComplianceRecord {
                computer: ComputerId::new(&format!("{id}-pc-{c}")).unwrap(),
                update: UpdateId::new("KB5021233"),
                site: node.clone(),
                state: if c % 3 == 0 {
                    ComplianceState::Required
                } else {
                    ComplianceState::Installed
                },
                severity: Severity::Critical,
                counter: 1,
                observed_at: 1_780_000_000,
                attestation: None,
            })
            .collect();
        // Signed as their agents would sign them, with their certificates
        // beside them, so that the nodes above accept them.
        let ca = cascade_trust::Ca::load(&self.path().join("pki")).unwrap();
        let mut agents = cascade_agent::attest::PaperAgents::new(ca, cascade_node::now() - 60);
        store
            .put_agent_certificates(&agents.sign(&mut records).unwrap(), true)
            .unwrap();
        for (n, chunk) in records.chunks(500).enumerate() {
            store.ingest("agents", n as u64 + 1, chunk, true).unwrap();
        }
    }
}

/// A file of the real vendor data in tests/fixtures.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `<tree>/<pc>` with an agent certificate for `pc` from the tree's CA,
/// as enrollment would leave it (ca.crt, agent.crt, agent.key).
pub fn agent_dir(tree: &Tree, pc: &str) -> PathBuf {
    let pki = tree.path().join("pki");
    ok(run(&[
        "pki",
        "issue",
        "agent",
        "--id",
        pc,
        "--dir",
        pki.to_str().unwrap(),
    ]));
    let dir = tree.path().join(pc);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(pki.join("ca.crt"), dir.join("ca.crt")).unwrap();
    std::fs::copy(pki.join(format!("agent-{pc}.crt")), dir.join("agent.crt")).unwrap();
    std::fs::copy(pki.join(format!("agent-{pc}.key")), dir.join("agent.key")).unwrap();
    dir
}

/// A Debian agent configuration reading the fixture system files, whose
/// restart command writes a new boot id (and the first boot id).
pub fn agent_config(dir: &Path, nodes: &[(&str, u32)]) -> String {
    let mut text = format!(
        "data = \".\"\ncheck_in_seconds = 60\nrestart_command = [\"/bin/sh\", \"-c\", \"echo rebooted-$$ > {}\"]\ninstall_timeout_seconds = 60\nboot_id_file = \"boot_id\"\n\n[collect]\nos_release = \"{}\"\ndpkg_status = \"{}\"\nrpm_db = \"no-rpm\"\nkernel_release = \"no-kernel\"\n",
        // The restart command runs in the test's directory: it writes the
        // agent's own boot id file, named in full.
        dir.join("boot_id").display(),
        fixture("linux/os-release").display(),
        fixture("linux/dpkg-status").display()
    );
    for (address, priority) in nodes {
        text.push_str(&format!("\n[[node]]\naddress = \"{address}\"\npriority = {priority}\n"));
    }
    std::fs::write(dir.join("boot_id"), "first-boot\n").unwrap();
    text
}

/// One `cascade agent run --once`; its summary.
pub fn run_agent(config: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["agent", "run", "--once", "--config"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_str(&ok(out)).unwrap()
}

/// A TLS client configuration trusting the organisation CA `ca`, with a
/// client certificate when `identity` names its PEM files, speaking `alpn`.
pub fn client_tls(ca: &Path, identity: Option<(&Path, &Path)>, alpn: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    std::sync::Arc::new(config)
}

/// An Admin client of the node at `address` over `config` (made by
/// `client_tls` with ALPN h2), checking nothing of the server beyond the
/// organisation CA: for tests that need a caller `cascade ctl` cannot be
/// (none, an agent's or a node's certificate).
pub async fn admin_client(
    address: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> cascade_proto::v1::admin_client::AdminClient<tonic::transport::Channel> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let connect = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp =
                tokio::net::TcpStream::connect((uri.host().unwrap_or_default(), uri.port_u16().unwrap_or(443))).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connector.connect(name, tcp).await?))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_with_connector(connect)
        .await
        .unwrap();
    cascade_proto::v1::admin_client::AdminClient::new(channel).max_encoding_message_size(256 << 20)
}
