//! Content that one node cannot deliver (it refuses, breaks off or trickles
//! below the speed floor) comes from the agent's next node, resuming from
//! what arrived.

// Tests read the wall clock freely (clippy.toml keeps it to one place in
// the crates).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::pin::Pin;

use cascade_agent::cycle::{Agent, Credentials, Env};
use cascade_agent::install::Outcome;
use cascade_agent::journal::Journal;
use cascade_core::assignment::Step;
use cascade_core::inventory::Inventory;
use cascade_core::model::{ComputerId, NodeId};
use cascade_core::update::{Content, ExitMeaning};
use cascade_proto::v1::agents_server::{Agents, AgentsServer};
use cascade_proto::v1::*;
use cascade_trust::{Ca, Identity};
use sha2::Digest;
use tonic::{Request, Response, Status};

type Chunks = Pin<Box<dyn tokio_stream::Stream<Item = Result<ContentChunk, Status>> + Send>>;

/// A node that has the content (`data`) or refuses every transfer.
struct Node {
    data: Option<Vec<u8>>,
}

#[tonic::async_trait]
impl Agents for Node {
    async fn enroll(&self, _: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        Err(Status::unimplemented("test node"))
    }
    async fn check_in(&self, _: Request<CheckInRequest>) -> Result<Response<CheckInReply>, Status> {
        Err(Status::unimplemented("test node"))
    }
    async fn report(&self, _: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        Err(Status::unimplemented("test node"))
    }
    async fn renew(&self, _: Request<RenewRequest>) -> Result<Response<EnrollReply>, Status> {
        Err(Status::unimplemented("test node"))
    }
    type ContentStream = Chunks;
    async fn content(&self, request: Request<ContentRequest>) -> Result<Response<Chunks>, Status> {
        let Some(data) = self.data.clone() else {
            return Err(Status::unavailable("this node cannot serve it now"));
        };
        let offset = request.into_inner().offset as usize;
        let size = data.len() as u64;
        let chunks: Vec<Result<ContentChunk, Status>> = data[offset.min(data.len())..]
            .chunks(16 * 1024)
            .map(|c| {
                Ok(ContentChunk {
                    data: c.to_vec().into(),
                    size,
                    manifest: None,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

async fn serve(ca: &Ca, id: &str, node: Node) -> String {
    use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};
    let issued = ca
        .issue(&Identity::Node(NodeId::new(id).unwrap()), &[], now() - 60, 1)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tls = ServerTlsConfig::new()
        .identity(TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem))
        .client_ca_root(Certificate::from_pem(&ca.cert_pem));
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentsServer::new(node))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Computer;

impl Env for Computer {
    fn now(&self) -> i64 {
        now()
    }
    fn inventory(&self) -> Result<Inventory, String> {
        Err("not used".into())
    }
    fn boot_id(&self) -> Option<String> {
        None
    }
    fn fetches_content(&self) -> bool {
        true
    }
    async fn install(&self, _: &Step, _: &[PathBuf]) -> Outcome {
        Outcome {
            code: 0,
            meaning: ExitMeaning::Success,
            detail: String::new(),
        }
    }
    async fn restart(&self) -> Result<(), String> {
        Ok(())
    }
    async fn os_updater(&self) -> Option<Result<Vec<cascade_agent::os_updater::PackageResult>, String>> {
        None
    }
}

#[tokio::test]
async fn content_a_node_cannot_deliver_comes_from_the_next_node() {
    let ca = Ca::generate("Example", now() - 3600, 2).unwrap();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let broken = serve(&ca, "site-a", Node { data: None }).await;
    let good = serve(
        &ca,
        "site-b",
        Node {
            data: Some(data.clone()),
        },
    )
    .await;
    let agent_cert = ca
        .issue(&Identity::Agent(ComputerId::new("pc-1").unwrap()), &[], now() - 60, 1)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent {
        computer: ComputerId::new("pc-1").unwrap(),
        env: Computer,
        journal: Journal::memory(),
        nodes: [&broken, &good]
            .iter()
            .map(|a| cascade_agent::config::NodeEntry {
                address: a.to_string(),
                priority: 0,
            })
            .collect(),
        credentials: Credentials {
            ca_pem: ca.cert_pem.clone(),
            cert_pem: agent_cert.cert_pem,
            key_pem: agent_cert.key_pem,
            root: None,
            max_timestamp_age: 3600,
        },
        content_dir: dir.path().to_path_buf(),
        content_limit: 1 << 20,
        probe: false,
    };
    let content = Content {
        file_name: "update.bin".into(),
        sha256: sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect(),
        size: data.len() as u64,
        url: None,
    };
    let channel = cascade_agent::connect::channel(
        &broken,
        &agent.credentials.ca_pem,
        Some((&agent.credentials.cert_pem, &agent.credentials.key_pem)),
    )
    .await
    .unwrap();
    let mut client = cascade_proto::v1::agents_client::AgentsClient::new(channel);
    // Alone, the node in use cannot deliver it.
    let alone = cascade_content::fetch(&mut client, &content, dir.path(), 1 << 20).await;
    assert!(alone.is_err());
    let path = agent.fetch_with_failover(&mut client, &broken, &content).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}
