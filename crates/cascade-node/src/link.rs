//! The link to the parent: changes down, reports up. Each direction
//! reconnects by itself with jittered exponential backoff; "replicate now"
//! cuts the wait short. While the parent is away the node keeps working and
//! its outbox grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use cascade_core::model::{NodeId, Upward};
use cascade_proto::v1::{self, SubscribeRequest, UpBatch, down_message};
use cascade_store::Snapshot;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::Node;

/// Runs both directions of the parent link until the task is dropped. The
/// parent is `node.parent_address()`; after a move the link follows it.
pub async fn run(node: Arc<Node>) {
    // Each direction is a task of its own; dropping (or aborting) this one
    // aborts both, where a dropped join handle would leave them running.
    let mut down = crate::AbortOnDrop(tokio::spawn(forever(node.clone(), "down")));
    let mut up = crate::AbortOnDrop(tokio::spawn(forever(node, "up")));
    let _ = tokio::join!(&mut down.0, &mut up.0);
}

/// Records the parent in the store; a new one gets a snapshot first.
async fn note_parent(node: &Arc<Node>, parent: &str) {
    let store = node.db.clone();
    let address = parent.to_owned();
    match store.run(move |store| store.note_parent(&address)).await {
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

/// When a link last moved forward: something applied or acknowledged, or
/// the other side said there is nothing more.
pub(crate) struct Progress {
    base: Instant,
    at_ms: AtomicU64,
    stalled: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            base: Instant::now(),
            at_ms: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        }
    }

    fn mark(&self, node: &Node, parent: &str, direction: &'static str) {
        self.at_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        if self.stalled.swap(false, Ordering::Relaxed) {
            info!(parent, direction, "the parent link moves again");
            node.set_link(parent, direction, |l| l.stalled = false);
        }
    }

    fn idle(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.at_ms.load(Ordering::Relaxed)))
    }
}

/// Returns when the link has gone `limit` without progress.
async fn watchdog(progress: &Progress, limit: Duration) -> Duration {
    let tick = (limit / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let idle = progress.idle();
        if idle >= limit {
            return idle;
        }
    }
}

async fn forever(node: Arc<Node>, direction: &'static str) {
    let mut delays = backoff();
    let mut moves = node.topology.watch_parent();
    let progress = Progress::new();
    let limit = Duration::from_secs(node.config.stall_seconds);
    loop {
        let Some(parent) = moves.borrow_and_update().clone() else {
            return;
        };
        note_parent(&node, &parent).await;
        let started = std::time::Instant::now();
        // A new connection has its own allowance.
        progress
            .at_ms
            .store(progress.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        let attempt = async {
            match direction {
                "down" => down(&node, &parent, &progress).await,
                _ => up(&node, &parent, &progress).await,
            }
        };
        // A move ends the link to the old parent at once; so does a link
        // that makes no progress (whatever holds it up: a peer, the network
        // or this node), which is said in the link status, the metrics and
        // the log, and connected afresh.
        let result = tokio::select! {
            r = attempt => r,
            _ = moves.changed() => Err("reconnecting now, as asked: this node moved to another parent".to_owned()),
            idle = watchdog(&progress, limit) => {
                progress.stalled.store(true, Ordering::Relaxed);
                node.set_link(&parent, direction, |l| {
                    l.stalled = true;
                    l.stalls += 1;
                });
                warn!(parent = %parent, direction, idle_seconds = idle.as_secs(), "the parent link made no progress: connecting afresh");
                Err(format!("no progress for {} s (stall_seconds {}): connected afresh", idle.as_secs(), limit.as_secs()))
            }
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
            () = node.signals.wake.notified() => {}
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

/// The parent's protocol from its reply, with a warning when the tree is
/// being upgraded in the wrong order.
fn parent_protocol(parent: &str, metadata: &tonic::metadata::MetadataMap) -> u32 {
    let protocol = cascade_proto::protocol_of(metadata);
    if protocol < cascade_proto::PROTOCOL {
        warn!(
            parent,
            protocol,
            "the parent speaks an older protocol than this node ({}): upgrade parents before children; what this node sends up that the parent does not know is refused there",
            cascade_proto::PROTOCOL
        );
    }
    protocol
}

fn status_text(s: tonic::Status) -> String {
    format!("{}: {}", s.code(), s.message())
}

/// Applies what the parent sends, each change with its cursor advance.
async fn down(node: &Arc<Node>, parent: &str, progress: &Progress) -> Result<(), String> {
    let channel = connect(node, parent).await?;
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let store = node.db.clone();
    let cursor = store
        .run(move |store| store.cursor())
        .await
        .map_err(|e| e.to_string())?;
    let own = node.id.clone();
    let request = SubscribeRequest {
        cursor: cursor
            .into_iter()
            .filter(|(o, _)| *o != own)
            .map(|(o, s)| (o.to_string(), s))
            .collect(),
    };
    let response = client
        .subscribe(cascade_proto::with_protocol(request))
        .await
        .map_err(status_text)?;
    let protocol = parent_protocol(parent, response.metadata());
    let mut stream = response.into_inner();
    node.set_link(parent, "down", |l| {
        l.connected = true;
        l.last_contact = node.now();
        l.last_error.clear();
        l.protocol = protocol;
    });
    info!(parent, "subscribed to the parent");
    let heartbeat = Duration::from_secs(node.config.heartbeat_seconds * 3 + 5);
    let mut next: Option<v1::DownMessage> = None;
    // A snapshot that comes in parts, and the bytes of it so far.
    let mut partial: Option<Snapshot> = None;
    let mut snapshot_bytes = 0usize;
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
                    () = node.signals.wake.notified(), if last_message.elapsed() > quiet => {
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
        node.set_link(parent, "down", |l| l.last_contact = node.now());
        let mut run = Vec::new();
        match message.body {
            Some(down_message::Body::Change(c)) => run.push(change_from_wire(c)?),
            Some(down_message::Body::Changes(list)) => {
                for c in list.changes {
                    run.push(change_from_wire(c)?);
                }
            }
            Some(down_message::Body::SnapshotPart(mut part)) => {
                let last = part.last;
                snapshot_bytes = snapshot_bytes.saturating_add(prost::Message::encoded_len(&part));
                if snapshot_bytes > SNAPSHOT_MAX_BYTES {
                    return Err(format!(
                        "the parent's snapshot passed {} MiB: refused",
                        SNAPSHOT_MAX_BYTES >> 20
                    ));
                }
                let mut snapshot = match (part.first, partial.take()) {
                    (true, None) => Snapshot {
                        cursor: snapshot_cursor(std::mem::take(&mut part.cursor))?,
                        ..Snapshot::default()
                    },
                    (false, Some(s)) => s,
                    (true, Some(_)) => return Err("the parent began a snapshot in the middle of another".to_owned()),
                    (false, None) => return Err("the parent sent part of a snapshot it had not begun".to_owned()),
                };
                crate::wire::add_snapshot_part(&mut snapshot, part)?;
                progress.mark(node, parent, "down");
                if last {
                    snapshot_bytes = 0;
                    apply_snapshot(node, parent, snapshot).await?;
                    progress.mark(node, parent, "down");
                } else {
                    partial = Some(snapshot);
                }
            }
            // The parent sends heartbeats when it has nothing more.
            Some(down_message::Body::Heartbeat(_)) => progress.mark(node, parent, "down"),
            None => {}
        }
        if run.is_empty() {
            continue;
        }
        if partial.is_some() {
            return Err("the parent sent changes in the middle of a snapshot".to_owned());
        }
        // Apply what has already arrived together: one durable batch for a
        // run of changes (an initial sync is many thousands).
        while run.len() < 4000 {
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(Ok(Some(v1::DownMessage {
                    body: Some(down_message::Body::Change(c)),
                }))) => run.push(change_from_wire(c)?),
                Ok(Ok(Some(v1::DownMessage {
                    body: Some(down_message::Body::Changes(list)),
                }))) => {
                    for c in list.changes {
                        run.push(change_from_wire(c)?);
                    }
                }
                Ok(Ok(Some(other))) => {
                    next = Some(other);
                    break;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
        let store = node.db.clone();
        let checker = node.clone();
        let result = store
            .run(move |store| store.apply_verified(&run, &|c, k, any| checker.check_change(c, k, any)))
            .await;
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                // What checked out before the refused change is kept.
                node.changed();
                return Err(node.refused(parent, e));
            }
        };
        metrics::counter!("cascade_changes_applied_total").increment(applied as u64);
        progress.mark(node, parent, "down");
        node.changed();
    }
}

/// The most a snapshot from the parent may take on the wire, in all its
/// parts (a catalog of a million updates fits).
const SNAPSHOT_MAX_BYTES: usize = 4 << 30;

fn snapshot_cursor(
    cursor: std::collections::HashMap<String, u64>,
) -> Result<std::collections::BTreeMap<NodeId, u64>, String> {
    let mut out = std::collections::BTreeMap::new();
    for (o, seq) in cursor {
        out.insert(NodeId::new(&o).map_err(|e| format!("snapshot: {e}"))?, seq);
    }
    Ok(out)
}

/// Checks a snapshot from the parent and applies it.
async fn apply_snapshot(node: &Arc<Node>, parent: &str, snapshot: Snapshot) -> Result<(), String> {
    // The root's part never goes: a parent that says it has nothing of the
    // root is hiding it.
    if let Some(root) = node
        .run(|n| n.root())
        .await
        .map_err(|e| format!("cannot read this node's sites: {e}"))?
        && root != node.id
        && snapshot.cursor.get(&root) == Some(&0)
    {
        let refusal = cascade_core::seal::Refused::new(
            cascade_core::seal::Attack::Rollback,
            format!("a snapshot that removes everything of the root {root}"),
        );
        return Err(node.note_refusal(parent, &refusal));
    }
    let checker = node.clone();
    node.db
        .run(move |store| {
            store.apply_snapshot_verified(
                &snapshot,
                &|c, k, any| checker.check_change(c, k, any),
                &|origin, tip, k| cascade_trust::sign::check_tip(origin, tip, k),
            )
        })
        .await
        .map_err(|e| node.refused(parent, e))?;
    node.changed();
    Ok(())
}

/// A change from the parent; what a later release wrote into it that this
/// one does not know is logged (it is kept and forwarded as signed).
fn change_from_wire(c: v1::Change) -> Result<cascade_core::model::Change, String> {
    let change = cascade_core::model::Change::try_from(c).map_err(|e| e.to_string())?;
    if let Some(why) = change.op.unknown_reason() {
        info!(origin = %change.origin, seq = change.seq, "kept and forwarded as signed, not acted on here: {why}");
    }
    Ok(change)
}

/// The batch (sequence 0) that declares this node's subtree to its parent,
/// each site with its parent, so that the nodes above can tell a region's
/// sites from another's.
async fn declaration(node: &Arc<Node>, subtree: &std::collections::BTreeSet<NodeId>) -> Result<UpBatch, String> {
    let mut batch = up_batch(0, &[], Vec::new(), false)?;
    let parents = node
        .run(|n| n.site_parents())
        .await
        .map_err(|e| format!("cannot read this node's sites: {e}"))?;
    batch.subtree = Some(v1::Subtree::from(&cascade_proto::convert::DeclaredSubtree {
        sites: subtree.clone(),
        parents,
    }));
    Ok(batch)
}

/// One batch for the parent: compliance by agent report (each report's
/// signature once), anything else as JSON items.
fn up_batch(
    seq: u64,
    items: &[Upward],
    mut reports: Vec<cascade_core::report::Report>,
    snapshot: bool,
) -> Result<UpBatch, String> {
    let mut compliance = Vec::new();
    let mut other = Vec::new();
    for item in items {
        match item {
            Upward::Compliance(r) => compliance.push(r.clone()),
            other_item => other.push(other_item),
        }
    }
    let (grouped, loose) = cascade_core::report::group(compliance);
    reports.extend(grouped);
    let items = if other.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&other).map_err(|e| e.to_string())?
    };
    Ok(UpBatch {
        seq,
        items,
        snapshot,
        records: loose.iter().map(v1::ComplianceRecord::from).collect(),
        reports: reports.iter().map(v1::Report::from).collect(),
        subtree: None,
        applied: Default::default(),
    })
}

/// A batch of sequence 0 telling the parent how far this node has applied
/// each origin's changes, so that the parent's compaction need not wait
/// for this node to subscribe again.
async fn applied_batch(
    node: &Arc<Node>,
    told: &mut std::collections::BTreeMap<NodeId, u64>,
) -> Result<Option<UpBatch>, String> {
    let cursor = node
        .db
        .run(|store| store.cursor())
        .await
        .map_err(|e| format!("cannot read this node's cursor: {e}"))?;
    if cursor == *told {
        return Ok(None);
    }
    let mut batch = up_batch(0, &[], Vec::new(), false)?;
    batch.applied = cursor.iter().map(|(origin, seq)| (origin.to_string(), *seq)).collect();
    *told = cursor;
    Ok(Some(batch))
}

/// Sends the outbox (or a snapshot of the whole state when the outbox lost
/// entries) and trims it by the parent's acknowledgements.
/// Batches sent up and not yet acknowledged, at most.
const UP_IN_FLIGHT: usize = 2;

async fn up(node: &Arc<Node>, parent: &str, progress: &Progress) -> Result<(), String> {
    let channel = connect(node, parent).await?;
    let mut client = v1::hierarchy_client::HierarchyClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<UpBatch>(16);
    let response = client
        .report(cascade_proto::with_protocol(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .map_err(status_text)?;
    let protocol = parent_protocol(parent, response.metadata());
    let mut acks = response.into_inner();
    node.set_link(parent, "up", |l| {
        l.connected = true;
        l.last_contact = node.now();
        l.last_error.clear();
        l.protocol = protocol;
    });
    let store = node.db.clone();
    let state = store
        .run(move |store| store.outbox_state())
        .await
        .map_err(|e| e.to_string())?;
    // Which sites lie below this node, before anything from them.
    let mut declared = node
        .run(|n| n.subtree())
        .await
        .map_err(|e| format!("cannot read this node's sites: {e}"))?;
    tx.send(declaration(node, &declared).await?)
        .await
        .map_err(|_| "the report stream closed".to_owned())?;
    acks.message()
        .await
        .map_err(status_text)?
        .ok_or("the parent closed the report stream")?;
    progress.mark(node, parent, "up");
    if state.snapshot_required {
        send_snapshot(node, parent, progress, &tx, &mut acks, state.last).await?;
    }
    let mut sent = {
        let store = node.db.clone();
        store
            .run(move |store| store.outbox_state())
            .await
            .map_err(|e| e.to_string())?
            .acked
    };
    let mut in_flight = 0usize;
    // What the parent was told of this node's cursor, and when it was last
    // looked at: once a heartbeat interval, and told when it moved.
    let mut told = std::collections::BTreeMap::new();
    let every = Duration::from_secs(node.config.heartbeat_seconds);
    let mut cursor_looked = Instant::now();
    loop {
        // Tell the parent which sites lie below this node before anything
        // from them: first on every connection, again whenever it changes.
        let subtree = node
            .run(|n| n.subtree())
            .await
            .map_err(|e| format!("cannot read this node's sites: {e}"))?;
        if subtree != declared {
            tx.send(declaration(node, &subtree).await?)
                .await
                .map_err(|_| "the report stream closed".to_owned())?;
            declared = subtree;
            in_flight += 1;
        }
        if cursor_looked.elapsed() >= every {
            cursor_looked = Instant::now();
            if let Some(batch) = applied_batch(node, &mut told).await? {
                tx.send(batch)
                    .await
                    .map_err(|_| "the report stream closed".to_owned())?;
                in_flight += 1;
            }
        }
        // Two batches in flight: one being stored by the parent, the next
        // on its way. What comes meanwhile waits here, where consecutive
        // outbox entries merge into one batch; a longer queue of small
        // batches at the parent costs it a commit each (measured: first
        // reports over three hops about a tenth faster than with eight).
        if in_flight < UP_IN_FLIGHT {
            let store = node.db.clone();
            let after = sent;
            let limit = node.config.report_batch.max(1);
            let entries = store
                .run(move |store| store.outbox_items(after, 64, limit))
                .await
                .map_err(|e| e.to_string())?;
            // Consecutive outbox entries go as one batch (up to the batch
            // size) under the sequence of the last: the parent stores the
            // batch at once and deduplicates by that sequence.
            let mut items = Vec::new();
            let mut reports = Vec::new();
            let mut size = 0;
            let mut last = None;
            for entry in entries {
                let more = entry.items.len() + entry.reports.iter().map(|r| r.records.len()).sum::<usize>();
                if last.is_some() && size + more > limit {
                    break;
                }
                size += more;
                items.extend(entry.items);
                reports.extend(entry.reports);
                last = Some(entry.seq);
            }
            if let Some(seq) = last {
                tx.send(up_batch(seq, &items, reports, false)?)
                    .await
                    .map_err(|_| "the report stream closed".to_owned())?;
                sent = seq;
                in_flight += 1;
                continue;
            }
            if in_flight == 0 {
                // Nothing to send and nothing waiting: all is up.
                progress.mark(node, parent, "up");
            }
        }
        tokio::select! {
            ack = acks.message() => {
                let ack = ack.map_err(status_text)?.ok_or("the parent closed the report stream")?;
                let lag = node.db.run(move |store| -> Result<u64, cascade_store::StoreError> {
                    store.outbox_ack(ack.seq)?;
                    let s = store.outbox_state()?;
                    Ok(s.last.saturating_sub(s.acked))
                }).await.map_err(|e| e.to_string())?;
                in_flight = in_flight.saturating_sub(1);
                progress.mark(node, parent, "up");
                node.set_link(parent, "up", |l| {
                    l.last_contact = node.now();
                    l.seq_lag = lag;
                });
            }
            () = node.signals.outbox_ready.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn send_snapshot(
    node: &Arc<Node>,
    parent: &str,
    progress: &Progress,
    tx: &mpsc::Sender<UpBatch>,
    acks: &mut tonic::Streaming<v1::UpAck>,
    last: u64,
) -> Result<(), String> {
    use cascade_store::SnapshotProgress;
    // Read and sent in pages, with the parent's acknowledgements taken as
    // they come: a subtree of millions of records is never in memory at
    // once, and neither side waits on a full stream. How far the parent has
    // acknowledged is kept, so that a snapshot broken off goes on from there.
    let store = node.db.clone();
    let Some(mut at) = store
        .run(move |store| store.outbox_snapshot_progress())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let upto = at.upto().unwrap_or(last);
    let limit = node.config.report_batch.max(1);
    // Batches sent and acknowledged, and the progress each sent batch ends.
    let (mut sent_batches, mut acked_batches) = (0u64, 0u64);
    let mut marks: std::collections::VecDeque<(u64, SnapshotProgress)> = std::collections::VecDeque::new();
    let mut records_sent = 0usize;
    let mut take_ack = async |acked_batches: &mut u64,
                              marks: &mut std::collections::VecDeque<(u64, SnapshotProgress)>,
                              at: &mut SnapshotProgress|
           -> Result<(), String> {
        acks.message()
            .await
            .map_err(status_text)?
            .ok_or("the parent closed the report stream")?;
        *acked_batches += 1;
        progress.mark(node, parent, "up");
        let mut reached = None;
        while marks.front().is_some_and(|(n, _)| *n <= *acked_batches) {
            reached = marks.pop_front().map(|(_, p)| p);
        }
        if let Some(to) = reached {
            let (store, from, next) = (node.db.clone(), at.clone(), to.clone());
            let recorded = store
                .run(move |store| store.outbox_snapshot_progressed(&from, &next))
                .await
                .map_err(|e| e.to_string())?;
            if !recorded {
                return Err("a new snapshot was asked for meanwhile: starting it afresh".to_owned());
            }
            *at = to;
        }
        Ok(())
    };
    // Each page: its batches (items, reports), and how far it takes the
    // snapshot once acknowledged.
    type Page = (Vec<(Vec<Upward>, Vec<cascade_core::report::Report>)>, SnapshotProgress);
    let mut pages: Vec<Page> = Vec::new();
    if matches!(at, SnapshotProgress::Start) {
        // The agents' certificates first: they check the records' signatures.
        let store = node.db.clone();
        let certificates = store
            .run(move |store| store.agent_certificates())
            .await
            .map_err(|e| e.to_string())?;
        let items: Vec<Upward> = certificates.into_iter().map(Upward::Certificate).collect();
        let mut batches: Vec<_> = items.chunks(limit).map(|c| (c.to_vec(), Vec::new())).collect();
        if batches.is_empty() {
            // Still one batch, so that the parent acknowledges this step.
            batches.push((Vec::new(), Vec::new()));
        }
        pages.push((batches, SnapshotProgress::Certificates { upto }));
    }
    // Then every computer's summary, then every computer's records, each
    // by computer from where an earlier attempt got to.
    enum Phase {
        Summaries(Option<cascade_core::model::ComputerId>),
        Records(Option<cascade_core::model::ComputerId>),
    }
    let mut phase = match &at {
        SnapshotProgress::Start | SnapshotProgress::Certificates { .. } => Phase::Summaries(None),
        SnapshotProgress::Computers { computer, .. } => Phase::Summaries(Some(computer.clone())),
        SnapshotProgress::Summarized { .. } => Phase::Records(None),
        SnapshotProgress::After { computer, .. } => Phase::Records(Some(computer.clone())),
    };
    loop {
        if pages.is_empty() {
            match &phase {
                Phase::Summaries(after) => {
                    let (store, from) = (node.db.clone(), after.clone());
                    let summaries = store
                        .run(move |store| store.summaries_after(from.as_ref(), limit))
                        .await
                        .map_err(|e| e.to_string())?;
                    let full = summaries.len() >= limit;
                    let last = summaries.last().map(|s| s.computer.clone());
                    let items: Vec<Upward> = summaries.into_iter().map(Upward::Computer).collect();
                    let batch = vec![(items, Vec::new())];
                    match last {
                        Some(computer) if full => {
                            pages.push((
                                batch,
                                SnapshotProgress::Computers {
                                    upto,
                                    computer: computer.clone(),
                                },
                            ));
                            phase = Phase::Summaries(Some(computer));
                        }
                        _ => {
                            pages.push((batch, SnapshotProgress::Summarized { upto }));
                            phase = Phase::Records(None);
                        }
                    }
                }
                Phase::Records(after) => {
                    let store = node.db.clone();
                    let from = after.clone();
                    let computers = (limit / 16).max(1);
                    // Read as the reports they came in: nothing is rebuilt to be sent.
                    let (reports, loose, last) = store
                        .run(move |store| store.records_after(from.as_ref(), computers))
                        .await
                        .map_err(|e| e.to_string())?;
                    let Some(last) = last else { break };
                    phase = Phase::Records(Some(last.clone()));
                    let mut batches: Vec<(Vec<Upward>, Vec<cascade_core::report::Report>)> = Vec::new();
                    let mut size = limit;
                    for report in reports {
                        records_sent += report.records.len();
                        if size >= limit {
                            batches.push((Vec::new(), Vec::new()));
                            size = 0;
                        }
                        size += report.records.len();
                        if let Some((_, batch)) = batches.last_mut() {
                            batch.push(report);
                        }
                    }
                    records_sent += loose.len();
                    let loose: Vec<Upward> = loose.into_iter().map(Upward::Compliance).collect();
                    batches.extend(loose.chunks(limit).map(|c| (c.to_vec(), Vec::new())));
                    pages.push((batches, SnapshotProgress::After { upto, computer: last }));
                }
            }
        }
        for (batches, mark) in std::mem::take(&mut pages) {
            for (items, reports) in batches {
                while sent_batches - acked_batches >= 8 {
                    take_ack(&mut acked_batches, &mut marks, &mut at).await?;
                }
                tx.send(up_batch(upto, &items, reports, true)?)
                    .await
                    .map_err(|_| "the report stream closed".to_owned())?;
                sent_batches += 1;
            }
            marks.push_back((sent_batches, mark));
        }
    }
    while acked_batches < sent_batches {
        take_ack(&mut acked_batches, &mut marks, &mut at).await?;
    }
    let store = node.db.clone();
    let finished = store
        .run(move |store| store.outbox_snapshot_finished(&at, upto))
        .await
        .map_err(|e| e.to_string())?;
    if !finished {
        return Err("a new snapshot was asked for meanwhile: starting it afresh".to_owned());
    }
    info!(records = records_sent, "sent a snapshot to the parent");
    Ok(())
}
