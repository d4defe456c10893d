//! Crash safety: a child process writes (changes, compliance batches, outbox
//! acknowledgements) and is killed with SIGKILL at seeded random points; after
//! every reopen each acknowledged write is present, no change is half
//! applied, and the aggregates equal a recount from the raw records. Also:
//! a full disk fails the write with an error and loses nothing acknowledged.
//!
//! The child is this test binary run again with `CASCADE_CRASH_CHILD` set.

// Tests read the wall clock freely (clippy.toml keeps it to one place in
// the crates).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cascade_core::compliance::ComplianceState;
use cascade_core::model::{ChangeOp, ComplianceRecord, NodeId, Object, ObjectId, ObjectKey, ObjectKind};
use cascade_store::Store;
use common::{node, record, setting};

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The records of batch `seq`: a pure function of it, so the parent can
/// check them.
fn batch(seq: u64) -> Vec<ComplianceRecord> {
    let mut rng = Rng(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let states = [
        ComplianceState::Installed,
        ComplianceState::Required,
        ComplianceState::Failed { code: 1603 },
        ComplianceState::NotApplicable,
    ];
    (0..100)
        .map(|_| {
            let computer = rng.below(300);
            let site = if computer < 150 { "site-a" } else { "site-b" };
            record(
                &format!("pc-{computer}"),
                &format!("KB{}", rng.below(40)),
                site,
                states[rng.below(4) as usize].clone(),
                seq,
            )
        })
        .collect()
}

fn root_op(seq: u64) -> ChangeOp {
    if seq.is_multiple_of(7) {
        ChangeOp::Delete(ObjectKey {
            kind: ObjectKind::Setting,
            id: ObjectId::new(&format!("s{}", (seq / 7) % 20)).unwrap(),
        })
    } else {
        ChangeOp::Upsert(setting(&format!("s{}", seq % 20), serde_json::json!(seq), false))
    }
}

/// The writer. Prints one line per acknowledged (durable) write.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("CASCADE_CRASH_CHILD") else {
        return;
    };
    let seed: u64 = std::env::var("CASCADE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let settings = cascade_store::Settings {
        compress: std::env::var("CASCADE_CRASH_COMPRESS").is_ok_and(|v| v == "1"),
        ..Default::default()
    };
    let store = match Store::open_configured(Path::new(&dir), node("leaf"), settings) {
        Ok(s) => s,
        Err(e) => {
            println!("error {e}");
            return;
        }
    };
    let mut rng = Rng(seed | 1);
    let stop = Instant::now() + Duration::from_secs(60);
    while Instant::now() < stop {
        let result = match rng.below(10) {
            0..=3 => {
                let seq = store.applied_seq(&node("root")).unwrap() + 1;
                let change = cascade_core::model::Change {
                    origin: node("root"),
                    seq,
                    op: root_op(seq).into(),
                    seal: None,
                };
                store.apply_change(&change).map(|_| format!("change {seq}"))
            }
            4..=7 => {
                let seq = store.inbox_mark("agents").unwrap() + 1;
                store
                    .ingest("agents", seq, &batch(seq), true)
                    .map(|_| format!("batch {seq}"))
            }
            8 => {
                let state = store.outbox_state().unwrap();
                let upto = state.acked + (state.last - state.acked) / 2;
                store.outbox_ack(upto).map(|_| format!("outbox {upto}"))
            }
            _ => {
                let n = rng.below(10);
                store
                    .append_local(ChangeOp::Upsert(setting(
                        &format!("local-{n}"),
                        serde_json::json!(n),
                        false,
                    )))
                    .map(|c| format!("local {}", c.seq))
            }
        };
        match result {
            Ok(line) => println!("ack {line}"),
            Err(e) => {
                println!("error {e}");
                return;
            }
        }
    }
}

fn spawn_child(dir: &Path, seed: u64, file_size_limit: Option<u64>, compress: bool) -> Child {
    let exe = std::env::current_exe().unwrap();
    let args = ["crash_writer_child", "--exact", "--nocapture", "--test-threads=1"];
    let mut command = match file_size_limit {
        None => {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
        // Ignoring SIGXFSZ is inherited across exec: the write then fails
        // with EFBIG, as on a full disk, instead of killing the process.
        Some(limit) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("trap '' XFSZ; exec prlimit --fsize={limit} -- \"$0\" \"$@\""))
                .arg(exe)
                .args(args);
            c
        }
    };
    command
        .env("CASCADE_CRASH_CHILD", dir)
        .env("CASCADE_CRASH_SEED", seed.to_string())
        .env("CASCADE_CRASH_COMPRESS", if compress { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(if file_size_limit.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn the writer")
}

#[derive(Debug, Default)]
struct Acked {
    change: u64,
    batch: u64,
    outbox: u64,
    local: u64,
}

impl Acked {
    fn note(&mut self, line: &str) -> bool {
        // libtest may print its own "test ... " prefix on the same line.
        let Some(at) = line.find("ack ") else { return false };
        let mut words = line[at..].split_whitespace();
        if words.next() != Some("ack") {
            return false;
        }
        let (what, n) = (
            words.next().unwrap_or(""),
            words.next().and_then(|n| n.parse().ok()).unwrap_or(0),
        );
        let slot = match what {
            "change" => &mut self.change,
            "batch" => &mut self.batch,
            "outbox" => &mut self.outbox,
            "local" => &mut self.local,
            _ => return false,
        };
        *slot = (*slot).max(n);
        true
    }
}

fn verify(dir: &Path, acked: &Acked, round: usize, seed: u64) {
    let ctx = format!("round {round}, seed {seed}");
    let store = Store::open(dir, node("leaf")).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    // Every acknowledged write is there.
    assert!(
        store.applied_seq(&node("root")).unwrap() >= acked.change,
        "{ctx}: change {} lost",
        acked.change
    );
    assert!(
        store.applied_seq(&node("leaf")).unwrap() >= acked.local,
        "{ctx}: local change {} lost",
        acked.local
    );
    assert!(
        store.inbox_mark("agents").unwrap() >= acked.batch,
        "{ctx}: batch {} lost",
        acked.batch
    );
    assert!(
        store.outbox_state().unwrap().acked >= acked.outbox,
        "{ctx}: outbox ack {} lost",
        acked.outbox
    );
    if acked.batch > 0 {
        for r in batch(acked.batch) {
            let stored = store
                .record(&r.computer, &r.update)
                .unwrap()
                .unwrap_or_else(|| panic!("{ctx}: record of batch {} lost", acked.batch));
            assert!(stored.counter >= r.counter, "{ctx}: record went back in time");
        }
    }
    // No change is half applied: replaying the logs gives the objects.
    for origin in ["root", "leaf"] {
        let origin: NodeId = node(origin);
        let applied = store.applied_seq(&origin).unwrap();
        let log = store.changes_since(&origin, 0, usize::MAX).unwrap().unwrap();
        assert_eq!(log.len() as u64, applied, "{ctx}: log of {origin} has holes");
        let mut replay: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for (n, change) in log.iter().enumerate() {
            assert_eq!(change.seq, n as u64 + 1, "{ctx}");
            match change.op.value() {
                ChangeOp::Upsert(Object::Setting(s)) => {
                    replay.insert(s.id.to_string(), s.value.clone());
                }
                ChangeOp::Delete(key) => {
                    replay.remove(key.id.as_str());
                }
                other => panic!("{ctx}: unexpected {other:?}"),
            }
        }
        let stored: BTreeMap<String, serde_json::Value> = store
            .objects(ObjectKind::Setting)
            .unwrap()
            .into_iter()
            .filter(|o| o.origin == origin)
            .map(|o| match o.object.into_value() {
                Object::Setting(s) => (s.id.to_string(), s.value),
                other => panic!("{ctx}: {other:?}"),
            })
            .collect();
        assert_eq!(stored, replay, "{ctx}: objects of {origin} differ from their log");
    }
    // Aggregates equal a recount.
    let (by_update, by_site) = store.recount().unwrap();
    assert_eq!(
        store.summary_by_update().unwrap(),
        by_update,
        "{ctx}: update aggregates"
    );
    assert_eq!(store.summary_by_site().unwrap(), by_site, "{ctx}: site aggregates");
}

#[test]
fn survives_sigkill_at_random_points() {
    sigkill_at_random_points(false, 50);
}

/// sled's compressed log, reopened after every kill without asking for
/// compression (the store is opened as it was made).
#[test]
fn a_compressed_store_survives_sigkill_at_random_points() {
    sigkill_at_random_points(true, 25);
}

fn sigkill_at_random_points(compress: bool, rounds: usize) {
    let seed: u64 = std::env::var("CASCADE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    println!("crash test seed {seed} (set CASCADE_CRASH_SEED to repeat)");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed | 1);
    let mut acked = Acked::default();
    for round in 0..rounds {
        let mut child = spawn_child(dir.path(), rng.next(), None, compress);
        let wanted = 1 + rng.below(30);
        let mut got = 0;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < wanted && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    assert!(
                        !line.starts_with("error"),
                        "round {round}, seed {seed}: writer failed: {line}"
                    );
                    if acked.note(&line) {
                        got += 1;
                    }
                }
                _ => break,
            }
        }
        // Kill mid-write: sometimes at once, sometimes a little later.
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().expect("SIGKILL the writer");
        // Whatever it acknowledged before dying counts too.
        for line in lines.map_while(Result::ok) {
            acked.note(&line);
        }
        child.wait().unwrap();
        verify(dir.path(), &acked, round, seed);
    }
    assert!(
        acked.change > 0 && acked.batch > 0,
        "the writer made progress: {acked:?}"
    );
    // Reopened with the default setting after every kill, it is still
    // what it was made.
    assert_eq!(Store::open_existing(dir.path()).unwrap().compressed(), compress);
    println!("after {rounds} kills: {acked:?}");
}

#[test]
fn full_disk_fails_the_write_and_keeps_what_was_acknowledged() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let dir = tempfile::tempdir().unwrap();
    // First fill some data without a limit.
    let mut acked = Acked::default();
    let mut child = spawn_child(dir.path(), 11, None, false);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..40 {
        if let Some(Ok(line)) = lines.next() {
            acked.note(&line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    verify(dir.path(), &acked, 0, 11);
    // Then write with files capped just above their current size.
    let largest = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let mut child = spawn_child(dir.path(), 12, Some(largest), false);
    let mut error = None;
    let mut other = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        other.push(line.clone());
        if let Some(at) = line.find("error ") {
            error = Some(line[at..].to_owned());
            break;
        }
        acked.note(&line);
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let error = error.unwrap_or_else(|| {
        panic!("the writer stopped without an error line: {status:?}, acknowledged {acked:?}, said {other:?}")
    });
    println!("writer stopped with: {error}");
    assert!(
        error.contains("the disk is full; the write was not acknowledged"),
        "{error}"
    );
    assert!(
        error.contains(&dir.path().display().to_string()),
        "the error names the store: {error}"
    );
    verify(dir.path(), &acked, 1, 12);
}
