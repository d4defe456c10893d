//! Downloads from a node that cuts transfers: resumed from what arrived,
//! verified before use, bounded in size.

// Tests read the wall clock freely (clippy.toml keeps it to one place in
// the crates).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cascade_content::{ContentError, fetch};
use cascade_core::update::Content;
use cascade_proto::v1::agents_client::AgentsClient;
use cascade_proto::v1::agents_server::{Agents, AgentsServer};
use cascade_proto::v1::*;
use sha2::Digest;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Serves one file; cuts each transfer after `cut` bytes while cuts remain.
#[derive(Clone)]
struct Flaky {
    data: Arc<Vec<u8>>,
    cuts: Arc<Mutex<Vec<usize>>>,
    offsets: Arc<Mutex<Vec<u64>>>,
    /// Pause between chunks: a source that trickles.
    pause: Option<std::time::Duration>,
    /// Sent in the first message of every transfer.
    manifest: Option<ContentManifest>,
    /// Empty messages ("still fetching it") before the data.
    keepalives: usize,
}

impl Flaky {
    /// Serves `data` whole, at once.
    fn serving(data: &[u8]) -> Flaky {
        Flaky {
            data: Arc::new(data.to_vec()),
            cuts: Arc::default(),
            offsets: Arc::default(),
            pause: None,
            manifest: None,
            keepalives: 0,
        }
    }
}

type Chunks = Pin<Box<dyn Stream<Item = Result<ContentChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agents for Flaky {
    async fn enroll(&self, _: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn check_in(&self, _: Request<CheckInRequest>) -> Result<Response<CheckInReply>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn report(&self, _: Request<ReportRequest>) -> Result<Response<ReportReply>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn renew(&self, _: Request<RenewRequest>) -> Result<Response<EnrollReply>, Status> {
        Err(Status::unimplemented("test server"))
    }
    type ContentStream = Chunks;
    async fn content(&self, request: Request<ContentRequest>) -> Result<Response<Chunks>, Status> {
        let offset = request.get_ref().offset;
        self.offsets.lock().unwrap().push(offset);
        let cut = {
            let mut cuts = self.cuts.lock().unwrap();
            if cuts.is_empty() { None } else { Some(cuts.remove(0)) }
        };
        let size = self.data.len() as u64;
        let mut items: Vec<Result<ContentChunk, Status>> = (0..self.keepalives)
            .map(|_| {
                Ok(ContentChunk {
                    data: Default::default(),
                    size,
                    manifest: None,
                })
            })
            .collect();
        let mut at = offset as usize;
        let mut manifest = self.manifest.clone();
        let end = cut.map_or(self.data.len(), |c| (offset as usize + c).min(self.data.len()));
        while at < end {
            let next = (at + 1000).min(end);
            items.push(Ok(ContentChunk {
                data: self.data[at..next].to_vec().into(),
                size,
                manifest: manifest.take(),
            }));
            at = next;
        }
        if cut.is_some() {
            items.push(Err(Status::unavailable("connection reset")));
        }
        let Some(pause) = self.pause else {
            return Ok(Response::new(Box::pin(tokio_stream::iter(items))));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for item in items {
                tokio::time::sleep(pause).await;
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

async fn serve(server: Flaky) -> AgentsClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentsServer::new(server))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentsClient::new(channel)
}

/// Four seeded cut points below `max`, the seed printed so that a failure
/// can be repeated (`CASCADE_SEED`).
fn cut_points(max: usize) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("CASCADE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..4).map(|_| rng.random_range(1..max)).collect()
}

/// 300,000 bytes that do not repeat in any short period.
fn payload(shift: u32) -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> shift) as u8)
        .collect()
}

/// The catalog's entry for `data` under `file_name`.
fn content_of(file_name: &str, data: &[u8]) -> Content {
    Content {
        file_name: file_name.into(),
        sha256: hex(data),
        size: data.len() as u64,
        url: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_cut_transfer_resumes_and_ends_with_the_right_hash() {
    let data = payload(13);
    let cuts = cut_points(60_000);
    let server = Flaky {
        cuts: Arc::new(Mutex::new(cuts.clone())),
        ..Flaky::serving(&data)
    };
    let mut client = serve(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let content = content_of("update.msu", &data);
    let mut attempts = 0;
    let path = loop {
        attempts += 1;
        assert!(attempts <= 10, "did not finish in 10 attempts");
        match fetch(&mut client, &content, dir.path(), 1 << 30).await {
            Ok(path) => break path,
            Err(ContentError::Transfer { detail, .. }) => assert!(detail.contains("cut after"), "{detail}"),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(attempts, 5, "four cuts, then the rest");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(
        path.file_name().unwrap(),
        "update.msu",
        "the installer sees the vendor's name"
    );
    // Each attempt asked for what was missing, never from the start again.
    let offsets = server.offsets.lock().unwrap().clone();
    let mut expected = vec![0u64];
    for c in &cuts {
        expected.push(expected.last().unwrap() + *c as u64);
    }
    assert_eq!(offsets, expected);
    // A second fetch uses the verified file without a transfer.
    fetch(&mut client, &content, dir.path(), 1 << 30).await.unwrap();
    assert_eq!(server.offsets.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn wrong_hashes_are_discarded_and_limits_hold() {
    let data = b"real content".to_vec();
    let server = Flaky {
        ..Flaky::serving(&data)
    };
    let mut client = serve(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let lying = Content {
        file_name: "x.bin".into(),
        sha256: hex(b"what the catalog says"),
        size: data.len() as u64,
        url: None,
    };
    let e = fetch(&mut client, &lying, dir.path(), 1 << 20).await.unwrap_err();
    assert!(matches!(e, ContentError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("hash mismatch"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing of it is kept"
    );

    let too_big = Content {
        size: 10 << 20,
        ..lying.clone()
    };
    let e = fetch(&mut client, &too_big, dir.path(), 1 << 20).await.unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    assert_eq!(server.offsets.lock().unwrap().len(), 1, "refused before asking");

    // A "hash" that is a path names no file.
    let escape = Content {
        sha256: "../../escaped".into(),
        ..lying.clone()
    };
    let e = fetch(&mut client, &escape, dir.path(), 1 << 20).await.unwrap_err();
    assert!(e.to_string().contains("is not a sha256"), "{e}");
    assert!(!dir.path().join("../../escaped.part").exists());

    // The node sends more than the catalog's size: stopped, not stored.
    let short = Content {
        size: 4,
        sha256: hex(&data[..4]),
        ..lying
    };
    let e = fetch(&mut client, &short, dir.path(), 1 << 20).await.unwrap_err();
    assert!(matches!(e, ContentError::Overlong { .. }), "{e}");
}

#[tokio::test]
async fn a_source_that_trickles_is_stopped_and_what_arrived_is_kept() {
    use cascade_content::{Floor, download_with_floor};
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    // 1,000 bytes every 50 ms: 4 KB in 200 ms, under a floor of 8 KB.
    let slow = Flaky {
        pause: Some(std::time::Duration::from_millis(50)),
        ..Flaky::serving(&data)
    };
    let mut client = serve(slow.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let content = content_of("slow.bin", &data);
    let floor = Floor {
        bytes: 8_000,
        window: std::time::Duration::from_millis(200),
        first_byte: std::time::Duration::from_millis(200),
    };
    let e = download_with_floor(&mut client, &content, dir.path(), 1 << 20, None, floor)
        .await
        .unwrap_err();
    assert!(matches!(e, ContentError::Slow { .. }), "{e}");
    assert!(e.to_string().contains("slow retrieval"), "{e}");
    let kept = std::fs::metadata(dir.path().join(format!("{}.part", hex(&data))))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < data.len() as u64, "{kept} bytes kept to resume from");
    // A healthy source finishes it from there.
    let healthy = Flaky {
        ..Flaky::serving(&data)
    };
    let mut client = serve(healthy.clone()).await;
    let done = download_with_floor(&mut client, &content, dir.path(), 1 << 20, None, floor)
        .await
        .unwrap();
    assert_eq!(std::fs::read(done.path).unwrap(), data);
    assert_eq!(healthy.offsets.lock().unwrap().clone(), vec![kept]);
}

/// Takes manifests signed by "trusted" and notes what is verified.
#[derive(Default)]
struct Recorder {
    verified: Mutex<Vec<u64>>,
}

impl cascade_content::Chunks for Recorder {
    fn manifest(&self, manifest: &cascade_content::SignedManifest) -> Result<(), String> {
        (manifest.key == "trusted")
            .then_some(())
            .ok_or_else(|| format!("key {} is not trusted", manifest.key))
    }
    fn verified(&self, bytes: u64) {
        self.verified.lock().unwrap().push(bytes);
    }
}

fn manifest_of(data: &[u8], chunk_size: usize, key: &str) -> cascade_content::SignedManifest {
    cascade_content::SignedManifest {
        manifest: cascade_content::Manifest {
            sha256: hex(data),
            size: data.len() as u64,
            chunk_size: chunk_size as u64,
            chunks: data.chunks(chunk_size).map(|c| *blake3::hash(c).as_bytes()).collect(),
        },
        key: key.into(),
        scheme: 0,
        signature: Vec::new(),
    }
}

#[tokio::test]
async fn chunks_are_verified_as_they_arrive_and_a_cut_resumes_with_them() {
    use cascade_content::{Options, download_with};
    let data = payload(11);
    let cuts = cut_points(70_000);
    let chunk = 64 * 1024;
    let server = Flaky {
        cuts: Arc::new(Mutex::new(cuts.clone())),
        manifest: Some(manifest_of(&data, chunk, "trusted").to_proto()),
        ..Flaky::serving(&data)
    };
    let mut client = serve(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let content = content_of("update.msu", &data);
    let recorder = Recorder::default();
    let options = Options {
        limit: 1 << 30,
        floor: cascade_content::Floor::DEFAULT,
        progress: None,
        chunks: Some(&recorder),
    };
    let mut attempts = 0;
    let done = loop {
        attempts += 1;
        assert!(attempts <= 10, "did not finish in 10 attempts");
        match download_with(&mut client, &content, dir.path(), &options).await {
            Ok(done) => break done.path,
            Err(ContentError::Transfer { detail, .. }) => assert!(detail.contains("cut after"), "{detail}"),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(attempts, 5);
    assert_eq!(std::fs::read(&done).unwrap(), data);
    let verified = recorder.verified.lock().unwrap().clone();
    assert!(verified.windows(2).all(|w| w[0] <= w[1]), "{verified:?}");
    assert!(
        verified
            .iter()
            .all(|v| *v % chunk as u64 == 0 || *v == data.len() as u64),
        "only whole chunks: {verified:?}"
    );
    assert_eq!(verified.last(), Some(&(data.len() as u64)));
    // The manifest stays beside the file to serve it on with.
    let kept = cascade_content::SignedManifest::read(&cascade_content::manifest_path(dir.path(), &hex(&data))).unwrap();
    assert_eq!(kept, manifest_of(&data, chunk, "trusted"));

    // A manifest the caller does not trust, or of another file, stops
    // the transfer before a byte is written.
    for (manifest, why) in [
        (manifest_of(&data, chunk, "stranger"), "not trusted"),
        (manifest_of(&data[..100_000], chunk, "trusted"), "is for sha256"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Flaky {
            manifest: Some(manifest.to_proto()),
            ..Flaky::serving(&data)
        };
        let mut client = serve(server).await;
        let e = download_with(&mut client, &content, dir.path(), &options)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ContentError::Manifest { detail, .. } if detail.contains(why)),
            "{e}"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join(format!("{}.part", hex(&data))))
                .map(|m| m.len())
                .unwrap_or(0),
            0
        );
    }

    // An agent ignores manifests: the whole file's sha256 decides.
    let dir = tempfile::tempdir().unwrap();
    let server = Flaky {
        manifest: Some(manifest_of(&data, chunk, "stranger").to_proto()),
        ..Flaky::serving(&data)
    };
    let mut client = serve(server).await;
    let path = fetch(&mut client, &content, dir.path(), 1 << 30).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[tokio::test]
async fn a_node_still_fetching_holds_the_floor_off_for_a_while_only() {
    use cascade_content::{Floor, download_with_floor};
    let data = payload(9)[..5000].to_vec();
    let content = content_of("late.bin", &data);
    let floor = Floor {
        bytes: 1000,
        window: std::time::Duration::from_millis(200),
        first_byte: std::time::Duration::from_millis(1500),
    };
    for (keepalives, arrives) in [(6, true), (30, false)] {
        let server = Flaky {
            pause: Some(std::time::Duration::from_millis(100)),
            keepalives,
            ..Flaky::serving(&data)
        };
        let mut client = serve(server).await;
        let dir = tempfile::tempdir().unwrap();
        let result = download_with_floor(&mut client, &content, dir.path(), 1 << 20, None, floor).await;
        if arrives {
            // 600 ms of "still fetching", three windows without a byte.
            assert_eq!(std::fs::read(result.unwrap().path).unwrap(), data);
        } else {
            let e = result.unwrap_err();
            assert!(matches!(e, ContentError::Slow { .. }), "{e}");
        }
    }
}
