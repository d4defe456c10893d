//! `cascade ctl`: administer a running node over its Admin service.

use std::path::PathBuf;
use std::process::ExitCode;

use cascade_core::UpdateId;
use cascade_core::model::{Approval, ChangeOp, Object, ObjectId};
use cascade_proto::v1::admin_client::AdminClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's address (host:port).
    #[arg(long, env = "CASCADE_NODE")]
    node: String,
    /// The node's id: the server's certificate must name it (without it,
    /// any node certificate of the organisation is taken).
    #[arg(long, env = "CASCADE_NODE_ID")]
    node_id: Option<String>,
    /// Directory with ca.crt and the admin's certificate and key.
    #[arg(long, env = "CASCADE_PKI")]
    pki: PathBuf,
    /// Which admin certificate to use: admin-<name>.crt in --pki.
    #[arg(long = "as", env = "CASCADE_ADMIN")]
    admin: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CtlCommand {
    /// Child sites.
    #[command(subcommand)]
    Site(SiteCommand),
    /// A summary of the node and its links.
    Status,
    /// Link status of the node, both directions.
    Links,
    /// Wake the node's parent link now.
    ReplicateNow,
    /// Approve an update for a policy.
    Approve {
        #[arg(long)]
        policy: String,
        #[arg(long)]
        update: String,
        /// Unix seconds after which it installs even outside maintenance windows.
        #[arg(long)]
        deadline: Option<i64>,
    },
    /// Record any change, given as its JSON operation.
    Change {
        #[arg(long)]
        op: String,
    },
    /// The objects of a kind this node has.
    Objects {
        #[arg(long)]
        kind: String,
    },
    /// Compliance counts of the node's subtree.
    Compliance,
    /// Enrollment tokens for agents.
    #[command(subcommand)]
    AgentToken(AgentTokenCommand),
    /// The agents this node serves and their latest install events.
    Agents,
    /// Call any workflow API operation (see /help on the node's API address).
    Call {
        operation: String,
        /// JSON object of parameters.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Every page of a report's rows as CSV (reading operations only).
        #[arg(long, conflicts_with = "jsonl")]
        csv: bool,
        /// Every page of a report's rows as JSON lines (reading operations only).
        #[arg(long)]
        jsonl: bool,
    },
    /// Update content at the node: its cache and transfers, adding files,
    /// pre-staging from the parent.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Bearer tokens for the workflow API and console.
    #[command(subcommand)]
    ApiToken(ApiTokenCommand),
    /// Import vendor catalog files (CVRF, WSUS XML, Update Catalog JSON,
    /// Cascade JSON, winget manifests); a directory is read whole, with its
    /// subdirectories (a winget repository in its layout; the manifests of
    /// each version folder go together). A progress bar shows on a
    /// terminal; a file that fails is named and the others go on.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// winget manifests: only these package identifiers (comma-separated,
        /// for example Mozilla.Firefox,7zip.7zip).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ContentCommand {
    /// What is cached, in flight, fetched and served; per approved update, what is missing.
    Status,
    /// Add files from a path on the node's own disk (a file or a directory).
    Add { path: String },
    /// Fetch the updates' content from the parent (or the vendor at the root) now.
    Ensure {
        #[arg(required = true)]
        updates: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ApiTokenCommand {
    /// A token for the API with a role (printed once).
    Create {
        #[arg(long)]
        name: String,
        /// admin, site-operator (of this node's subtree) or auditor.
        #[arg(long)]
        role: String,
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
    /// Revoke the tokens of a name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum AgentTokenCommand {
    /// A one-time token with which one agent enrolls at this node.
    Create {
        /// The site the agent joins: the node's own id.
        #[arg(long)]
        site: String,
        /// How long the token is valid: "1h", "30m", "90s", or seconds.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
    },
}

/// "1h", "45m", "1h 30m", "90s" or plain seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(seconds);
    }
    let duration: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 1h, 30m or 90s ({e})"))?;
    u64::try_from(duration.as_secs()).map_err(|_| format!("{text:?} is negative"))
}

#[derive(Debug, clap::Subcommand)]
enum SiteCommand {
    /// Register a child site with this node.
    Add {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Unregister a child site (before moving it to another parent).
    Remove {
        #[arg(long)]
        id: String,
    },
}

/// Exit codes: 1 the node refused, 3 it could not be reached.
const EXIT_REFUSED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<ExitCode> {
    let read = |name: &str| -> anyhow::Result<String> {
        let p = args.pki.join(name);
        std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let ca = read("ca.crt")?;
    let cert = read(&format!("admin-{}.crt", args.admin))?;
    let key = read(&format!("admin-{}.key", args.admin))?;
    let expect = args
        .node_id
        .as_deref()
        .map(cascade_core::model::NodeId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--node-id: {e}"))?;
    let channel = match cascade_node::channel(&args.node, expect.as_ref(), &ca, &cert, &key).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot reach {}: {e}", args.node);
            return Ok(ExitCode::from(EXIT_UNREACHABLE));
        }
    };
    let mut client = AdminClient::new(channel);
    let result = match args.command {
        CtlCommand::Site(SiteCommand::Add { id, name }) => {
            let mut params = serde_json::json!({"id": id});
            if !name.is_empty() {
                params["name"] = name.into();
            }
            invoke(&mut client, "sites.add", &params).await.map(|_| println!("registered child site {id}"))
        }
        CtlCommand::Site(SiteCommand::Remove { id }) => invoke(&mut client, "sites.remove", &serde_json::json!({"id": id}))
            .await
            .map(|_| println!("unregistered child site {id}")),
        CtlCommand::Links => invoke(&mut client, "links.list", &serde_json::json!({})).await.map(|v| {
            let rows: Vec<serde_json::Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    let s = &l["status"];
                    serde_json::json!({"peer": l["peer"], "direction": l["direction"], "connected": s["connected"], "last_contact": s["last_contact"], "seq_lag": s["seq_lag"], "stalled": s["stalled"], "stalls": s["stalls"], "protocol": s["protocol"], "last_error": s["last_error"]})
                })
                .collect();
            if args.json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<20} {:<11} {:<10} {:>8} {:>12} {:<8} {:>6} {:>8}  last error", "peer", "direction", "connected", "lag", "last contact", "stalled", "stalls", "protocol");
                for l in rows {
                    println!("{:<20} {:<11} {:<10} {:>8} {:>12} {:<8} {:>6} {:>8}  {}", l["peer"].as_str().unwrap_or(""), l["direction"].as_str().unwrap_or(""), l["connected"], l["seq_lag"], l["last_contact"], l["stalled"] == true, l["stalls"].as_u64().unwrap_or(0), l["protocol"].as_u64().unwrap_or(0), l["last_error"].as_str().unwrap_or(""));
                }
            }
        }),
        CtlCommand::ReplicateNow => invoke(&mut client, "links.replicate_now", &serde_json::json!({})).await.map(|_| println!("woke the parent link")),
        CtlCommand::Approve { policy, update, deadline } => {
            let policy = ObjectId::new(&policy).map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
            let update = UpdateId::new(&update);
            let id = ObjectId::new(&format!("{policy}/{update}")).map_err(|e| anyhow::anyhow!("{e}"))?;
            let op = ChangeOp::Upsert(Object::Approval(Approval { id, policy, update, deadline }));
            invoke(&mut client, "changes.record", &serde_json::json!({"op": op})).await.map(|r| {
                println!("approved as change {}/{}", r["origin"].as_str().unwrap_or(""), r["seq"]);
            })
        }
        CtlCommand::Change { op } => {
            let parsed: ChangeOp = serde_json::from_str(&op).map_err(|e| anyhow::anyhow!("--op: {e}"))?;
            invoke(&mut client, "changes.record", &serde_json::json!({"op": parsed})).await.map(|r| {
                println!("recorded change {}/{}", r["origin"].as_str().unwrap_or(""), r["seq"]);
            })
        }
        CtlCommand::Objects { kind } => invoke(&mut client, "objects.list", &serde_json::json!({"kind": kind}))
            .await
            .map(|v| println!("{v}")),
        CtlCommand::Compliance => invoke(&mut client, "compliance.by_update", &serde_json::json!({})).await.map(|value| {
            let records: u64 = value
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|counts| counts.as_object().into_iter().flat_map(|c| c.values()))
                .filter_map(|n| n.as_u64())
                .sum();
            if args.json {
                println!("{}", serde_json::json!({"records": records, "by_update": value}));
            } else {
                println!("{records} records");
                if let Some(map) = value.as_object() {
                    for (update, counts) in map {
                        println!("  {update:<14} {counts}");
                    }
                }
            }
        }),
        CtlCommand::AgentToken(AgentTokenCommand::Create { site, ttl }) => {
            invoke(&mut client, "agent_tokens.create", &serde_json::json!({"site": site, "ttl_seconds": ttl}))
                .await
                .map(|r| {
                    if args.json {
                        println!("{}", serde_json::json!({"token": r["token"], "expires_at": r["expires_at"]}));
                    } else {
                        println!("{}", r["token"].as_str().unwrap_or_default());
                    }
                })
        }
        CtlCommand::Content(command) => {
            let (op, params) = match command {
                ContentCommand::Status => ("content.status", serde_json::json!({})),
                ContentCommand::Add { path } => ("content.add", serde_json::json!({"path": path})),
                ContentCommand::Ensure { updates } => ("content.ensure", serde_json::json!({"updates": updates})),
            };
            invoke(&mut client, op, &params).await.map(|v| {
                if args.json || op != "content.status" {
                    print_value(&v, args.json);
                } else {
                    let c = &v["cache"];
                    println!(
                        "{} files, {} bytes (limit {}); fetched {} bytes in {} transfers; served {} bytes; {} evicted",
                        c["files"], c["bytes"], if c["limit_bytes"].is_null() { "none".to_owned() } else { c["limit_bytes"].to_string() },
                        c["fetched_bytes"], c["transfers"], c["served_bytes"], c["evicted"]
                    );
                    for f in c["in_flight"].as_array().into_iter().flatten() {
                        println!("in flight: {} {}/{} bytes", f["sha256"], f["received"], f["size"]);
                    }
                    print_value(&v["updates"], false);
                }
            })
        }
        CtlCommand::Status => invoke(&mut client, "node.status", &serde_json::json!({})).await.map(|v| {
            if args.json {
                println!("{v}");
                return;
            }
            let above: Vec<&str> = v["above"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
            let children: Vec<&str> = v["children"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
            println!("node {} (cascade {}), catalog revision {}", v["node"].as_str().unwrap_or(""), v["version"].as_str().unwrap_or(""), v["revision"]);
            println!("  above: {}", if above.is_empty() { "(root)".to_owned() } else { above.join(" → ") });
            println!("  children: {}", if children.is_empty() { "(none)".to_owned() } else { children.join(", ") });
            println!("  outbox: {} pending (last {}, acknowledged {})", v["outbox"]["pending"], v["outbox"]["last"], v["outbox"]["acked"]);
            println!("  agents: {}; computers in the subtree: {}; compliance records: {}", v["agents"], v["computers"], v["records"]);
            let c = &v["content"];
            println!("  content: {} files, {} bytes; fetched {} bytes; served {} bytes; {} in flight", c["files"], c["bytes"], c["fetched_bytes"], c["served_bytes"], c["in_flight"]);
            println!("  links:");
            for l in v["links"].as_array().into_iter().flatten() {
                let s = &l["status"];
                println!(
                    "    {:<24} {:<11} {:<12} lag {:>6}  {}",
                    l["peer"].as_str().unwrap_or(""),
                    l["direction"].as_str().unwrap_or(""),
                    match (s["connected"] == true, s["stalled"] == true) {
                        (_, true) => "stalled",
                        (true, false) => "connected",
                        (false, false) => "down",
                    },
                    s["seq_lag"],
                    s["last_error"].as_str().unwrap_or("")
                );
            }
        }),
        CtlCommand::Call {
            operation,
            params,
            csv,
            jsonl,
        } => {
            let parsed: serde_json::Value =
                serde_json::from_str(&params).map_err(|e| anyhow::anyhow!("--params: invalid JSON: {e}"))?;
            if csv || jsonl {
                export(&mut client, &operation, parsed, csv).await
            } else {
                invoke(&mut client, &operation, &parsed).await.map(|v| print_value(&v, args.json))
            }
        }
        CtlCommand::ApiToken(ApiTokenCommand::Create { name, role, ttl_hours }) => {
            let params = serde_json::json!({"name": name, "role": role, "ttl_hours": ttl_hours});
            invoke(&mut client, "tokens.create", &params).await.map(|v| {
                if args.json {
                    println!("{v}");
                } else {
                    println!("{}", v["token"].as_str().unwrap_or_default());
                }
            })
        }
        CtlCommand::ApiToken(ApiTokenCommand::Revoke { name }) => {
            invoke(&mut client, "tokens.revoke", &serde_json::json!({"name": name}))
                .await
                .map(|v| println!("revoked {} token(s)", v["revoked"]))
        }
        CtlCommand::Import { files, include } => return import(&mut client, &files, &include, args.json).await,
        CtlCommand::Agents => invoke(&mut client, "agents.list", &serde_json::json!({})).await.map(|value| {
            if args.json {
                println!("{value}");
            } else {
                println!("{:<24} {:<16} {:>12}  latest event", "computer", "site", "last seen");
                for row in value.as_array().into_iter().flatten() {
                    let agent = &row["agent"];
                    let last = row["events"].as_array().and_then(|e| e.last()).map(|e| format!("{} {}", e["update"].as_str().unwrap_or(""), e["event"].as_str().unwrap_or(""))).unwrap_or_default();
                    println!("{:<24} {:<16} {:>12}  {last}", agent["id"].as_str().unwrap_or(""), agent["site"].as_str().unwrap_or(""), agent["last_seen"], );
                }
            }
        }),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(status) => {
            eprintln!("error: {}: {}", status.code(), status.message());
            Ok(ExitCode::from(if status.code() == tonic::Code::Unavailable {
                EXIT_UNREACHABLE
            } else {
                EXIT_REFUSED
            }))
        }
    }
}

async fn invoke(
    client: &mut AdminClient<tonic::transport::Channel>,
    operation: &str,
    params: &serde_json::Value,
) -> Result<serde_json::Value, tonic::Status> {
    let reply = client
        .invoke(cascade_node::admin::invoke_request(operation, params))
        .await?
        .into_inner();
    serde_json::from_slice(&reply.result).map_err(|e| tonic::Status::internal(format!("the reply is not JSON: {e}")))
}

/// Every page of a reading operation's rows to stdout, as CSV or JSON
/// lines, as the pages come.
async fn export(
    client: &mut AdminClient<tonic::transport::Channel>,
    operation: &str,
    params: serde_json::Value,
    csv: bool,
) -> Result<(), tonic::Status> {
    use cascade_node::api::export;
    use std::io::Write;
    let op = cascade_node::api::find(operation)
        .ok_or_else(|| tonic::Status::not_found(format!("there is no operation {operation:?}")))?;
    if op.access != cascade_node::api::Access::Read {
        return Err(tonic::Status::invalid_argument(format!(
            "{operation} changes things: only reading operations export"
        )));
    }
    // Each page is a call over the network: large pages.
    let sized = export::first_page(&params, export::PAGE_ROWS);
    let mut params = if (op.check)(sized.clone()).is_ok() {
        sized
    } else {
        params
    };
    let mut table = export::Csv::default();
    let mut out = std::io::stdout().lock();
    for _ in 0..export::MAX_PAGES {
        let result = invoke(client, operation, &params).await?;
        let rows = export::rows(&result);
        let text = if csv {
            table.page(&rows)
        } else {
            export::json_lines(&rows)
        };
        out.write_all(text.as_bytes())
            .map_err(|e| tonic::Status::unavailable(format!("stdout: {e}")))?;
        match export::next_page(&params, &result).filter(|_| !rows.is_empty()) {
            Some(next) => params = next,
            None => return Ok(()),
        }
    }
    Err(tonic::Status::resource_exhausted(format!(
        "the export stopped after {} pages",
        export::MAX_PAGES
    )))
}

/// JSON for scripts; otherwise a table for a list of flat objects, and
/// indented JSON for anything else.
fn print_value(value: &serde_json::Value, json: bool) {
    if json {
        println!("{value}");
        return;
    }
    if let Some(rows) = value.as_array()
        && !rows.is_empty()
        && rows.iter().all(|r| r.is_object())
    {
        let mut columns: Vec<String> = Vec::new();
        for row in rows {
            for key in row.as_object().into_iter().flat_map(|o| o.keys()) {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
        let cell = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let widths: Vec<usize> = columns
            .iter()
            .map(|c| {
                rows.iter()
                    .map(|r| cell(&r[c]).len().min(60))
                    .max()
                    .unwrap_or(0)
                    .max(c.len())
            })
            .collect();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(60).collect();
                    format!("{c:<w$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(columns.clone()));
        for row in rows {
            println!("{}", line(columns.iter().map(|c| cell(&row[c])).collect()));
        }
        return;
    }
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// The files to import: each file given, and every file of a directory
/// given and of its subdirectories (sorted; licence and source notes passed
/// over).
fn catalog_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let all: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            let dirs: Vec<PathBuf> = all.iter().filter(|p| p.is_dir()).cloned().collect();
            let mut entries: Vec<PathBuf> = all
                .into_iter()
                .filter(|p| p.is_file())
                .filter(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_ascii_uppercase())
                        .unwrap_or_default();
                    !(name.starts_with("LICENSE") || name.starts_with("SOURCE") || name.starts_with("README"))
                })
                .collect();
            entries.sort();
            for p in entries {
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                out.push((p, size));
            }
            let mut dirs = dirs;
            dirs.sort();
            out.extend(catalog_files(&dirs)?);
        } else {
            out.push((path.clone(), meta.len()));
        }
    }
    Ok(out)
}

/// `catalog.import`'s parameters for a file: text as it is, anything
/// else (a cabinet, UTF-16 XML) as base64.
fn import_params(name: &str, data: Vec<u8>) -> serde_json::Value {
    use base64::Engine;
    match String::from_utf8(data) {
        Ok(text) => serde_json::json!({"name": name, "content": text}),
        Err(e) => {
            serde_json::json!({"name": name, "content_base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes())})
        }
    }
}

/// Imports files one by one with a progress bar over their bytes.
async fn import(
    client: &mut AdminClient<tonic::transport::Channel>,
    paths: &[PathBuf],
    include: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let files = catalog_files(paths)?;
    let total: u64 = files.iter().map(|(_, size)| size).sum();
    // winget manifests go by version folder, the folder's files together.
    let is_yaml = |p: &PathBuf| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
    };
    let mut folders: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = std::collections::BTreeMap::new();
    for (path, _) in files.iter().filter(|(p, _)| is_yaml(p)) {
        folders
            .entry(path.parent().map(PathBuf::from).unwrap_or_default())
            .or_default()
            .push(path.clone());
    }
    let files: Vec<(PathBuf, u64)> = files.into_iter().filter(|(p, _)| !is_yaml(p)).collect();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let (mut updates, mut failed, mut unreachable) = (0u64, 0usize, false);
    let mut requests: Vec<(String, u64, Result<serde_json::Value, String>)> = Vec::new();
    for (folder, members) in &folders {
        let mut list = Vec::new();
        let mut size = 0;
        let mut error = None;
        for m in members {
            match std::fs::read_to_string(m) {
                Ok(text) => {
                    size += text.len() as u64;
                    list.push(serde_json::json!({"name": m.display().to_string(), "content": text}));
                }
                Err(e) => error = Some(format!("{}: {e}", m.display())),
            }
        }
        let params = serde_json::json!({"name": folder.display().to_string(), "files": list, "include": include});
        requests.push((folder.display().to_string(), size, error.map_or(Ok(params), Err)));
    }
    for (path, size) in &files {
        let name = path.display().to_string();
        let params = std::fs::read(path)
            .map(|data| import_params(&name, data))
            .map_err(|e| format!("{name}: {e}"));
        requests.push((name, *size, params));
    }
    let count = requests.len();
    for (name, size, params) in requests {
        bar.set_message(name.clone());
        let result = match params {
            Err(e) => Err(e),
            Ok(params) => match invoke(client, "catalog.import", &params).await {
                Ok(r) => Ok(r),
                Err(status) => {
                    unreachable |= status.code() == tonic::Code::Unavailable;
                    Err(status.message().to_owned())
                }
            },
        };
        bar.inc(size);
        match result {
            Ok(r) => {
                updates += r["updates"].as_u64().unwrap_or(0);
                let skipped = r["skipped"].as_array().map_or(0, Vec::len);
                if !json {
                    bar.suspend(|| {
                        println!(
                            "{name}: {} updates ({}); {} entries passed over",
                            r["updates"],
                            r["format"].as_str().unwrap_or(""),
                            skipped
                        )
                    });
                }
                rows.push(serde_json::json!({"file": name, "format": r["format"], "updates": r["updates"], "skipped": skipped}));
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("error: {e}"));
                rows.push(serde_json::json!({"file": name, "error": e}));
            }
        }
    }
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("imported {updates} updates from {} of {count} files", count - failed);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else if unreachable {
        ExitCode::from(EXIT_UNREACHABLE)
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}
