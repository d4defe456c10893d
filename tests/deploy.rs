//! deploy/: every file parses, and names and ports agree with the
//! configuration the binary accepts; the Kubernetes manifests pass the real
//! schemas (kubernetes-validate); the Prometheus rules pass promtool and a
//! real Prometheus scrapes a node, answers a query and fires an alert, and
//! every query of the Grafana dashboard runs there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade_agent::AgentConfig;
use cascade_node::NodeConfig;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_cascade");

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn node_config(path: &Path, text: &str) -> NodeConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn port(address: &str) -> i64 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_configs_are_accepted_by_the_binary_s_config_types() {
    for name in ["root.toml", "site.toml"] {
        let path = deploy(&format!("config/{name}"));
        let config = node_config(&path, &read(&path));
        assert!(
            config.tls.cert.ends_with(format!("{}.crt", config.id)),
            "{name}: the certificate is the node's"
        );
        if let Some(e) = &config.enrollment {
            assert!(e.ca_cert.ends_with(format!("enroll-{}.crt", config.id)));
        }
    }
    let path = deploy("config/agent.toml");
    let agent: AgentConfig = toml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(agent.nodes.iter().all(|n| port(&n.address) == 7443));
}

#[test]
fn systemd_units_run_commands_the_binary_has() {
    for (unit, args) in [
        ("systemd/cascade-node.service", vec!["node", "run"]),
        ("systemd/cascade-agent.service", vec!["agent", "run"]),
    ] {
        let text = read(&deploy(unit));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(words[0], "/usr/local/bin/cascade", "{unit}");
        assert_eq!(&words[1..3], args.as_slice(), "{unit}");
        // The same flags, with a config that does not exist: the binary
        // accepts the flags and names the missing file.
        let mut flags: Vec<String> = words[3..].iter().map(|w| w.to_string()).collect();
        let at = flags.iter().position(|f| f == "--config").unwrap() + 1;
        flags[at] = "/nonexistent/cascade.toml".into();
        let out = std::process::Command::new(BIN)
            .args(&args)
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("/nonexistent/cascade.toml"),
            "{unit}: {stderr}"
        );
        assert!(!stderr.contains("unexpected argument"), "{unit}: {stderr}");
    }
}

#[test]
fn the_compose_hierarchy_agrees_with_its_configs() {
    let compose = &yaml(&deploy("docker/docker-compose.yml"))[0];
    let services = compose["services"].as_hash().unwrap();
    let mut nodes: BTreeMap<String, NodeConfig> = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let Some(volumes) = service["volumes"].as_vec() else {
            continue;
        };
        let Some(config) = volumes
            .iter()
            .filter_map(|v| v.as_str())
            .find(|v| v.ends_with(":/etc/cascade/node.toml:ro"))
        else {
            continue;
        };
        let file = config.split(':').next().unwrap().trim_start_matches("./");
        let path = deploy(&format!("docker/{file}"));
        let node = node_config(&path, &read(&path));
        assert_eq!(node.id, name, "the service is named after its node");
        assert_eq!(
            service["command"].as_vec().unwrap()[3].as_str(),
            Some("/etc/cascade/node.toml")
        );
        nodes.insert(name.to_owned(), node);
    }
    assert_eq!(nodes.len(), 3, "a 3-site hierarchy");
    let pki = read(&deploy("docker/docker-compose.yml"));
    for (name, node) in &nodes {
        assert!(
            pki.contains(&format!("issue node --id {name} --host {name}")),
            "{name} gets a certificate"
        );
        if let Some(parent) = &node.parent {
            let (host, p) = parent.address.rsplit_once(':').unwrap();
            let parent_node = &nodes[host];
            assert_eq!(
                p.parse::<i64>().unwrap(),
                port(&parent_node.listen),
                "{name}'s parent port"
            );
        }
    }
    let published: Vec<&str> = services[&Yaml::String("root".into())]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let root = &nodes["root"];
    assert!(published.contains(&format!("{0}:{0}", port(&root.listen)).as_str()));
    assert!(published.contains(&format!("{0}:{0}", port(root.api_listen.as_deref().unwrap())).as_str()));
}

#[test]
fn kubernetes_manifests_agree_with_their_configs() {
    let mut listens: BTreeMap<String, i64> = BTreeMap::new();
    let mut parents: Vec<(String, String)> = Vec::new();
    for file in ["root.yaml", "site-a.yaml"] {
        let docs = yaml(&deploy(&format!("kubernetes/{file}")));
        let kind = |k: &str| {
            docs.iter()
                .find(|d| d["kind"].as_str() == Some(k))
                .unwrap_or_else(|| panic!("{file}: no {k}"))
        };
        let text = kind("ConfigMap")["data"]["node.toml"].as_str().unwrap();
        let node = node_config(&deploy(file), text);
        let id = node.id.clone();
        assert_eq!(
            kind("ConfigMap")["metadata"]["name"].as_str(),
            Some(format!("cascade-{id}").as_str())
        );
        let service = kind("Service");
        assert_eq!(service["spec"]["selector"]["cascade/node"].as_str(), Some(id.as_str()));
        let service_ports: Vec<i64> = service["spec"]["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| p["targetPort"].as_i64().unwrap())
            .collect();
        let wanted = [
            port(&node.listen),
            port(node.api_listen.as_deref().unwrap()),
            port(node.metrics_listen.as_deref().unwrap()),
        ];
        assert_eq!(
            service_ports, wanted,
            "{file}: the Service exposes the configured ports"
        );
        let set = kind("StatefulSet");
        let container = &set["spec"]["template"]["spec"]["containers"][0];
        let container_ports: Vec<i64> = container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_i64().unwrap())
            .collect();
        assert_eq!(
            container_ports, wanted,
            "{file}: the container listens where the config says"
        );
        assert_eq!(
            set["spec"]["template"]["metadata"]["labels"]["cascade/node"].as_str(),
            Some(id.as_str())
        );
        let mounts = container["volumeMounts"].as_vec().unwrap();
        let mount = |name: &str| {
            mounts
                .iter()
                .find(|m| m["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("{file}: no mount {name}"))["mountPath"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            Path::new(&mount("data")),
            node.data.as_path(),
            "{file}: the data volume is the node's data"
        );
        assert!(
            node.tls.cert.starts_with(mount("tls")),
            "{file}: certificates come from the Secret"
        );
        let secret = set["spec"]["template"]["spec"]["volumes"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some("tls"))
            .unwrap()["secret"]["secretName"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(secret, format!("cascade-{id}-tls"));
        assert!(
            read(&deploy("kubernetes/README.md")).contains(&secret),
            "the README makes {secret}"
        );
        assert!(set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str() == Some("data"));
        listens.insert(format!("cascade-{id}.cascade.svc"), port(&node.listen));
        if let Some(parent) = node.parent {
            parents.push((id, parent.address));
        }
    }
    for (id, address) in parents {
        let (host, p) = address.rsplit_once(':').unwrap();
        assert_eq!(
            listens.get(host),
            Some(&p.parse().unwrap()),
            "{id}'s parent is a Service with that port"
        );
    }
}

#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    let validate = |files: &[PathBuf]| {
        std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(files)
            .output()
            .expect("kubernetes-validate is not installed: pip install kubernetes-validate (scripts/test does)")
    };
    let manifests: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let out = validate(&manifests);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does refuse what the schemas do not allow.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n",
    )
    .unwrap();
    assert!(!validate(&[bad]).status.success());
}

/// A Prometheus process, stopped when dropped.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET on Prometheus' HTTP API with URL-encoded query parameters.
fn prometheus_api(base: &str, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-G"]);
    for (k, v) in params {
        cmd.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = cmd.arg(format!("{base}{path}")).output().expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn prometheus_checks_the_rules_scrapes_a_node_and_fires_an_alert() {
    use support::*;
    let rules = deploy("prometheus/cascade-rules.yml");
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .output()
            .expect("promtool is not installed: apt-get install prometheus (scripts/test does)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&["check", "config", deploy("prometheus/prometheus.yml").to_str().unwrap()]);

    // A site whose parent goes away: its link is down.
    let mut tree = Tree::new(&[("root", None), ("site", Some("root"))]);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tree.top.insert(
        "site".into(),
        format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    tree.start_all();
    wait_for("the site's link up", Duration::from_secs(30), || {
        tree.ctl("site", &["--json", "links"]).status.success()
            && String::from_utf8_lossy(&tree.ctl("site", &["--json", "links"]).stdout).contains("\"connected\":true")
    });
    tree.nodes.get_mut("root").unwrap().kill();

    // The shipped rules, evaluated every second and firing without waiting.
    let dir = tempfile::tempdir().unwrap();
    let shipped = read(&rules);
    let quick: String = shipped
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => l.replace(l.trim_start(), "for: 0s"),
            None if l.trim_start().starts_with("interval: ") => l.replace(l.trim_start(), "interval: 1s"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(quick, shipped);
    std::fs::write(dir.path().join("cascade-rules.yml"), quick).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - cascade-rules.yml\nscrape_configs:\n  - job_name: cascade\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n        labels:\n          node: site\n"
        ),
    )
    .unwrap();
    let web_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is not installed: apt-get install prometheus (scripts/test does)"),
    );
    let base = format!("http://127.0.0.1:{web_port}");
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // A scrape: the link's state, as the node exports it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = prometheus_api(
            &base,
            "/api/v1/query",
            &[("query", "cascade_link_connected{direction=\"down\"}")],
        );
        if found["data"]["result"][0]["value"][1] == "0" {
            assert_eq!(found["data"]["result"][0]["metric"]["node"], "site", "{found}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scrape: {found}\nup: {}\nlinks: {}\n{}",
            prometheus_api(&base, "/api/v1/query", &[("query", "up")]),
            prometheus_api(&base, "/api/v1/query", &[("query", "cascade_link_connected")]),
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The alert fires.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alerts = prometheus_api(&base, "/api/v1/alerts", &[]);
        let firing = alerts["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "CascadeLinkDown"
                    && x["state"] == "firing"
                    && x["labels"]["direction"] == "down"
            })
        });
        if firing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no firing alert: {alerts}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recording rules' series exist, and every query of the Grafana
    // dashboard runs.
    let recorded = prometheus_api(&base, "/api/v1/query", &[("query", "cascade:outbox_pending:deriv15m")]);
    assert_eq!(recorded["status"], "success", "{recorded}");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&deploy("grafana/cascade.json"))).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$job", ".*");
            let answer = prometheus_api(&base, "/api/v1/query", &[("query", &expr)]);
            assert_eq!(answer["status"], "success", "{}: {expr}: {answer}", panel["title"]);
        }
    }
}
