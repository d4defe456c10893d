//! deploy/: every file parses, and names and ports agree with the
//! configuration the binary accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
