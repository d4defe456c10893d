//! The link to the parent: changes down, reports up. Each direction
//! reconnects by itself with jittered exponential backoff; "replicate now"
//! cuts the wait short. While the parent is away the node keeps working and
//! its outbox grows.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use cascade_core::model::{Change, ChangeOp, NodeId, Override, Upward};
use cascade_proto::v1::{self, SubscribeRequest, UpBatch, down_message};
use cascade_store::{Snapshot, StoredObject};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{Node, blocking, now};

/// Runs both directions of the parent link until the task is dropped. The
/// parent is `node.parent_address()`; after a move the link follows it.
pub async fn run(node: Arc<Node>) {
    let down = tokio::spawn(forever(node.clone(), "down"));
    let up = tokio::spawn(forever(node, "up"));
    let _ = tokio::join!(down, up);
}

/// Records the parent in the store; a new one gets a snapshot first.
async fn note_parent(node: &Arc<Node>, parent: &str) {
    let store = node.store.clone();
    let address = parent.to_owned();
    match blocking(move || store.note_parent(&address)).await {
        Ok(true) => info!(parent = %parent, "the parent changed: the new one gets a snapshot first"),
        Ok(false) => {}
        Err(e) => warn!(error = %e, "cannot record the parent"),
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .build()
}

async fn forever(node: Arc<Node>, direction: &'static str) {
    let mut delays = backoff();
    let mut moves = node.parent.subscribe();
    loop {
        let Some(parent) = moves.borrow_and_update().clone() else {
            return;
        };
        note_parent(&node, &parent).await;
        let started = std::time::Instant::now();
        let attempt = async {
            match direction {
                "down" => down(&node, &parent).await,
                _ => up(&node, &parent).await,
            }
        };
        // A move ends the link to the old parent at once.
        let result = tokio::select! {
            r = attempt => r,
            _ = moves.changed() => Err("reconnecting now, as asked: this node moved to another parent".to_owned()),
        };
        node.set_link(&parent, direction, |l| {
            l.connected = false;
            if let Err(e) = &result {
                l.last_error = e.clone();
            }
        });
        if let Err(e) = &result {
            warn!(parent = %parent, direction, error = %e, "parent link lost");
        }
        // A link that stayed up a while starts its backoff afresh.
        if started.elapsed() > Duration::from_secs(30) {
            delays = backoff();
        }
        let asked = matches!(&result, Err(e) if e.starts_with("reconnecting now"));
        let wait = if asked {
            Duration::ZERO
        } else {
            delays.next().unwrap_or(Duration::from_secs(10))
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = node.wake.notified() => {}
        }
    }
}

async fn connect(node: &Node, parent: &str) -> Result<tonic::transport::Channel, String> {
    let (cert_pem, key_pem) = node.config.tls.identity();
    let Some(expect) = node.parent_id() else {
        return Err(format!(
            "will not connect to {parent}: the parent's id is not known ([parent] id, or sites.move's parent_id)"
        ));
    };
    crate::channel(parent, Some(&expect), &node.config.ca_pem, &cert_pem, &key_pem)
        .await
        .map_err(|e| format!("cannot connect to {parent}: {e}"))
}

fn status_text(s: tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// Applies what the parent sends, each change with its cursor advance.
async fn down(node: &Arc<Node>, parent: &str) -> Result<(), String> {
    let channel = connect(node, parent).await?;
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let store = node.store.clone();
    let cursor = blocking(move || store.cursor()).await.map_err(|e| e.to_string())?;
    let own = node.id.clone();
    let request = SubscribeRequest {
        cursor: cursor
            .into_iter()
            .filter(|(o, _)| *o != own)
            .map(|(o, s)| (o.to_string(), s))
            .collect(),
    };
    let mut stream = client.subscribe(request).await.map_err(status_text)?.into_inner();
    node.set_link(parent, "down", |l| {
        l.connected = true;
        l.last_contact = now();
        l.last_error.clear();
    });
    info!(parent, "subscribed to the parent");
    let heartbeat = Duration::from_secs(node.config.heartbeat_seconds * 3 + 5);
    let mut next: Option<v1::DownMessage> = None;
    let quiet = Duration::from_secs(node.config.heartbeat_seconds + 1);
    let mut last_message = std::time::Instant::now();
    loop {
        let message = match next.take() {
            Some(m) => m,
            None => {
                let received = tokio::select! {
                    received = tokio::time::timeout(heartbeat, stream.message()) => received,
                    // "Replicate now" on a link that has been quiet longer than
                    // a heartbeat: it may be stalled, so connect afresh.
                    () = node.wake.notified(), if last_message.elapsed() > quiet => {
                        return Err("reconnecting now, as asked".to_owned());
                    }
                };
                match received {
                    Err(_) => return Err("the parent went quiet (no heartbeat)".to_owned()),
                    Ok(Err(status)) => return Err(status_text(status)),
                    Ok(Ok(None)) => return Err("the parent closed the stream".to_owned()),
                    Ok(Ok(Some(m))) => m,
                }
            }
        };
        last_message = std::time::Instant::now();
        node.set_link(parent, "down", |l| l.last_contact = now());
        match message.body {
            Some(down_message::Body::Change(c)) => {
                // Apply what has already arrived together: one durable batch
                // for a run of changes (an initial sync is many thousands).
                let mut run = vec![decode_change(c)?];
                while run.len() < 2000 {
                    match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                        Ok(Ok(Some(v1::DownMessage {
                            body: Some(down_message::Body::Change(c)),
                        }))) => run.push(decode_change(c)?),
                        Ok(Ok(Some(other))) => {
                            next = Some(other);
                            break;
                        }
                        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
                    }
                }
                let store = node.store.clone();
                let checker = node.clone();
                let result =
                    blocking(move || store.apply_verified(&run, &|c, k, any| checker.check_change(c, k, any))).await;
                let applied = match result {
                    Ok(applied) => applied,
                    Err(e) => {
                        // What checked out before the refused change is kept.
                        node.changed();
                        return Err(node.refused(parent, e));
                    }
                };
                metrics::counter!("cascade_changes_applied_total").increment(applied as u64);
                node.changed();
            }
            Some(down_message::Body::Snapshot(s)) => {
                let (objects, overrides, tips): SnapshotState =
                    serde_json::from_slice(&s.state).map_err(|e| format!("snapshot: {e}"))?;
                let mut cursor = std::collections::BTreeMap::new();
                for (o, seq) in s.cursor {
                    cursor.insert(NodeId::new(&o).map_err(|e| format!("snapshot: {e}"))?, seq);
                }
                let snapshot = Snapshot {
                    cursor,
                    objects,
                    overrides,
                    tips,
                };
                // The root's part never goes: a parent that says it has
                // nothing of the root is hiding it.
                if let Some(root) = node.root()
                    && root != node.id
                    && snapshot.cursor.get(&root) == Some(&0)
                {
                    let refusal = cascade_core::seal::Refused::new(
                        cascade_core::seal::Attack::Rollback,
                        format!("a snapshot that removes everything of the root {root}"),
                    );
                    return Err(node.note_refusal(parent, &refusal));
                }
                let store = node.store.clone();
                let checker = node.clone();
                blocking(move || {
                    store.apply_snapshot_verified(
                        &snapshot,
                        &|c, k, any| checker.check_change(c, k, any),
                        &|origin, tip, k| cascade_trust::sign::check_tip(origin, tip, k),
                    )
                })
                .await
                .map_err(|e| node.refused(parent, e))?;
                node.changed();
            }
            Some(down_message::Body::Heartbeat(_)) | None => {}
        }
    }
}

/// The batch (sequence 0) that declares this node's subtree to its parent.
fn declaration(node: &Node, subtree: &std::collections::BTreeSet<NodeId>) -> Result<UpBatch, String> {
    let list: Vec<String> = subtree.iter().map(ToString::to_string).collect();
    let health = cascade_core::model::NodeHealth {
        node: node.id.clone(),
        at: now(),
        agents: 0,
        detail: std::collections::BTreeMap::from([("subtree".to_owned(), list.join(","))]),
    };
    up_batch(0, &[Upward::Health(health)], false)
}

/// One batch for the parent: compliance as protobuf records, anything else
/// as JSON items.
fn up_batch(seq: u64, items: &[Upward], snapshot: bool) -> Result<UpBatch, String> {
    let mut records = Vec::new();
    let mut other = Vec::new();
    for item in items {
        match item {
            Upward::Compliance(r) => records.push(crate::wire::record_to_wire(r)),
            other_item => other.push(other_item),
        }
    }
    let items = if other.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&other).map_err(|e| e.to_string())?
    };
    Ok(UpBatch {
        seq,
        items,
        snapshot,
        records,
    })
}

/// A snapshot's objects, overrides (each with its seal) and each origin's
/// last change.
pub(crate) type SnapshotState = (
    Vec<StoredObject>,
    Vec<(NodeId, u64, Override, Option<cascade_core::seal::Seal>)>,
    std::collections::BTreeMap<NodeId, cascade_core::seal::Tip>,
);

fn decode_change(c: v1::Change) -> Result<Change, String> {
    let origin = NodeId::new(&c.origin).map_err(|e| format!("change from a bad origin: {e}"))?;
    let op: ChangeOp = serde_json::from_slice(&c.op).map_err(|e| format!("change {origin}/{}: {e}", c.seq))?;
    let seal = c
        .seal
        .map(crate::wire::seal_from_wire)
        .transpose()
        .map_err(|e| format!("change {origin}/{}: {e}", c.seq))?;
    Ok(Change {
        origin,
        seq: c.seq,
        op,
        seal,
    })
}

/// Sends the outbox (or a snapshot of the whole state when the outbox lost
/// entries) and trims it by the parent's acknowledgements.
async fn up(node: &Arc<Node>, parent: &str) -> Result<(), String> {
    let channel = connect(node, parent).await?;
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<UpBatch>(16);
    let mut acks = client
        .report(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_text)?
        .into_inner();
    node.set_link(parent, "up", |l| {
        l.connected = true;
        l.last_contact = now();
        l.last_error.clear();
    });
    let store = node.store.clone();
    let state = blocking(move || store.outbox_state())
        .await
        .map_err(|e| e.to_string())?;
    // Which sites lie below this node, before anything from them.
    let mut declared = node.subtree();
    tx.send(declaration(node, &declared)?)
        .await
        .map_err(|_| "the report stream closed".to_owned())?;
    acks.message()
        .await
        .map_err(status_text)?
        .ok_or("the parent closed the report stream")?;
    if state.snapshot_required {
        send_snapshot(node, &tx, &mut acks, state.last).await?;
    }
    let mut sent = {
        let store = node.store.clone();
        blocking(move || store.outbox_state())
            .await
            .map_err(|e| e.to_string())?
            .acked
    };
    let mut in_flight = 0usize;
    loop {
        // Tell the parent which sites lie below this node before anything
        // from them: first on every connection, again whenever it changes.
        let subtree = node.subtree();
        if subtree != declared {
            tx.send(declaration(node, &subtree)?)
                .await
                .map_err(|_| "the report stream closed".to_owned())?;
            declared = subtree;
            in_flight += 1;
        }
        if in_flight < 8 {
            let store = node.store.clone();
            let after = sent;
            let entries = blocking(move || store.outbox(after, 64))
                .await
                .map_err(|e| e.to_string())?;
            // Consecutive outbox entries go as one batch (up to the batch
            // size) under the sequence of the last: the parent stores the
            // batch at once and deduplicates by that sequence.
            let limit = node.config.report_batch.max(1);
            let mut items = Vec::new();
            let mut last = None;
            for entry in entries {
                if last.is_some() && items.len() + entry.items.len() > limit {
                    break;
                }
                items.extend(entry.items);
                last = Some(entry.seq);
            }
            if let Some(seq) = last {
                tx.send(up_batch(seq, &items, false)?)
                    .await
                    .map_err(|_| "the report stream closed".to_owned())?;
                sent = seq;
                in_flight += 1;
                continue;
            }
        }
        tokio::select! {
            ack = acks.message() => {
                let ack = ack.map_err(status_text)?.ok_or("the parent closed the report stream")?;
                let store = node.store.clone();
                let lag = blocking(move || -> Result<u64, cascade_store::StoreError> {
                    store.outbox_ack(ack.seq)?;
                    let s = store.outbox_state()?;
                    Ok(s.last.saturating_sub(s.acked))
                }).await.map_err(|e| e.to_string())?;
                in_flight = in_flight.saturating_sub(1);
                node.set_link(parent, "up", |l| {
                    l.last_contact = now();
                    l.seq_lag = lag;
                });
            }
            () = node.outbox_ready.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn send_snapshot(
    node: &Arc<Node>,
    tx: &mpsc::Sender<UpBatch>,
    acks: &mut tonic::Streaming<v1::UpAck>,
    upto: u64,
) -> Result<(), String> {
    let store = node.store.clone();
    let records: Vec<Upward> = blocking(move || -> Result<Vec<Upward>, cascade_store::StoreError> {
        // The agents' certificates first: they check the records' signatures.
        let mut all: Vec<Upward> = store
            .agent_certificates()?
            .into_iter()
            .map(Upward::Certificate)
            .collect();
        for doc in store.all_records() {
            all.extend(doc?.into_iter().map(Upward::Compliance));
        }
        Ok(all)
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut batches = 0;
    for chunk in records.chunks(node.config.report_batch.max(1)) {
        tx.send(up_batch(upto, chunk, true)?)
            .await
            .map_err(|_| "the report stream closed".to_owned())?;
        batches += 1;
    }
    for _ in 0..batches {
        acks.message()
            .await
            .map_err(status_text)?
            .ok_or("the parent closed the report stream")?;
    }
    let store = node.store.clone();
    blocking(move || store.outbox_snapshot_sent(upto))
        .await
        .map_err(|e| e.to_string())?;
    info!(records = records.len(), "sent a snapshot to the parent");
    Ok(())
}
