//! The Hierarchy service as a parent serves it to its children.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cascade_core::model::{ComplianceRecord, NodeId, Upward};
use cascade_proto::v1::{self, DownMessage, SubscribeRequest, UpAck, UpBatch, down_message};
use cascade_store::Snapshot;
use cascade_trust::Identity;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::Node;

#[derive(Debug)]
pub struct HierarchyService {
    pub node: Arc<Node>,
}

type Down = Pin<Box<dyn Stream<Item = Result<DownMessage, Status>> + Send>>;
type Up = Pin<Box<dyn Stream<Item = Result<UpAck, Status>> + Send>>;

/// The caller's own certificate (DER), for revocation checks later on.
fn leaf_certificate<T>(request: &Request<T>) -> Vec<u8> {
    request
        .peer_certs()
        .and_then(|c| c.first().map(|c| c.to_vec()))
        .unwrap_or_default()
}

/// A child node registered here, from its certificate.
fn child_of<T>(node: &Node, request: &Request<T>) -> Result<NodeId, Status> {
    match node.peer_identity(request)? {
        Identity::Node(id)
            if node
                .is_child(&id)
                .map_err(|e| Status::unavailable(format!("cannot read this node's sites: {e}")))? =>
        {
            Ok(id)
        }
        Identity::Node(id) => Err(Status::permission_denied(format!(
            "node {id} is not registered as a child of {}",
            node.id
        ))),
        other => Err(Status::permission_denied(format!("{other} is not a node"))),
    }
}

fn store_status(e: cascade_store::StoreError) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl v1::hierarchy_server::Hierarchy for HierarchyService {
    type SubscribeStream = Down;
    type ReportStream = Up;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Down>, Status> {
        let child = child_of(&self.node, &request)?;
        let leaf = leaf_certificate(&request);
        let protocol = cascade_proto::protocol_of(request.metadata());
        self.node
            .set_link(child.as_str(), "child-down", |l| l.protocol = protocol);
        let mut cursor: BTreeMap<NodeId, u64> = BTreeMap::new();
        for (origin, seq) in request.into_inner().cursor {
            let origin = NodeId::new(&origin).map_err(|e| Status::invalid_argument(e.to_string()))?;
            cursor.insert(origin, seq);
        }
        info!(%child, "child subscribed");
        let (tx, rx) = mpsc::channel(256);
        let node = self.node.clone();
        tokio::spawn(async move {
            let result = stream_down(&node, &child, &leaf, cursor, &tx).await;
            node.set_link(child.as_str(), "child-down", |l| l.connected = false);
            if let Err(e) = result {
                warn!(%child, error = %e, "down stream ended");
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn report(&self, request: Request<Streaming<UpBatch>>) -> Result<Response<Up>, Status> {
        let child = child_of(&self.node, &request)?;
        let leaf = leaf_certificate(&request);
        let protocol = cascade_proto::protocol_of(request.metadata());
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let node = self.node.clone();
        tokio::spawn(async move {
            node.set_link(child.as_str(), "child-up", |l| {
                l.connected = true;
                l.last_contact = node.now();
                l.protocol = protocol;
            });
            loop {
                let batch = match incoming.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        node.set_link(child.as_str(), "child-up", |l| l.last_error = e.to_string());
                        // The child learns why (a batch over the limit, say).
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                // A certificate revoked while connected is refused at once.
                let result = match node.revocation_of(&leaf) {
                    Some(why) => Err(Status::permission_denied(why)),
                    None => receive(&node, &child, batch).await,
                };
                match result {
                    Ok(ack) => {
                        node.set_link(child.as_str(), "child-up", |l| l.last_contact = node.now());
                        if tx.send(Ok(UpAck { seq: ack })).await.is_err() {
                            break;
                        }
                    }
                    Err(status) => {
                        warn!(%child, error = %status.message(), "refused a batch");
                        node.set_link(child.as_str(), "child-up", |l| {
                            l.last_error = status.message().to_owned()
                        });
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            node.set_link(child.as_str(), "child-up", |l| l.connected = false);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Sends what the child lacks, then the live tail, until it goes away.
async fn stream_down(
    node: &Arc<Node>,
    child: &NodeId,
    leaf: &[u8],
    mut cursor: BTreeMap<NodeId, u64>,
    tx: &mpsc::Sender<Result<DownMessage, Status>>,
) -> Result<(), Status> {
    let mut changes = node.subscribe_changes();
    let heartbeat = Duration::from_secs(node.config.heartbeat_seconds);
    node.set_link(child.as_str(), "child-down", |l| {
        l.connected = true;
        l.last_contact = node.now();
        l.last_error.clear();
    });
    // The child has applied what it says it has: compaction may drop that,
    // and nothing after it. A new child (an empty cursor) holds every log
    // from its start, so that its initial sync is never cut short by a
    // compaction that would turn it into a snapshot.
    {
        let (store, child, cursor) = (node.db.clone(), child.clone(), cursor.clone());
        store
            .run(move |store| {
                let mut all = cursor;
                for origin in store.cursor()?.into_keys() {
                    all.entry(origin).or_insert(0);
                }
                store.set_subscriber_cursors(&child, &all)
            })
            .await
            .map_err(store_status)?;
    }
    loop {
        // A certificate revoked while connected: the stream ends with the
        // change that revoked it.
        if let Some(why) = node.revocation_of(leaf) {
            let _ = tx.send(Err(Status::permission_denied(why.clone()))).await;
            return Err(Status::permission_denied(why));
        }
        let sent = send_missing(node, &mut cursor, tx).await?;
        node.set_link(child.as_str(), "child-down", |l| l.last_contact = node.now());
        if sent {
            continue;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(heartbeat) => {
                let beat = DownMessage { body: Some(down_message::Body::Heartbeat(v1::Heartbeat { at: node.now() })) };
                if tx.send(Ok(beat)).await.is_err() {
                    return Ok(());
                }
                // What the child lacks, by what it last said it applied.
                let subscriber = child.clone();
                if let Ok(lag) = node.db.run(move |store| store.subscriber_lag(&subscriber)).await {
                    node.set_link(child.as_str(), "child-down", |l| l.seq_lag = lag);
                }
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Sends a snapshot where the log was compacted past the cursor, then up to
/// a page of changes of each origin. Returns whether anything was sent.
async fn send_missing(
    node: &Arc<Node>,
    cursor: &mut BTreeMap<NodeId, u64>,
    tx: &mpsc::Sender<Result<DownMessage, Status>>,
) -> Result<bool, Status> {
    let store = node.db.clone();
    let known = cursor.clone();
    let (snapshot, changes) = store
        .run(
            move |store| -> Result<(Option<Snapshot>, Vec<cascade_core::model::Change>), cascade_store::StoreError> {
                let origins = store.cursor()?;
                // Origins the child has and this node does not (it moved here
                // from another branch): a snapshot with them at zero clears them.
                let mut need: Vec<NodeId> = known.keys().filter(|o| !origins.contains_key(*o)).cloned().collect();
                let mut changes = Vec::new();
                for (origin, applied) in &origins {
                    let have = known.get(origin).copied().unwrap_or(0);
                    if have >= *applied {
                        continue;
                    }
                    match store.changes_since(origin, have, 500)? {
                        Ok(list) => changes.extend(list),
                        Err(_) => need.push(origin.clone()),
                    }
                }
                let snapshot = if need.is_empty() {
                    None
                } else {
                    Some(store.snapshot(&need)?)
                };
                Ok((snapshot, changes))
            },
        )
        .await
        .map_err(store_status)?;
    let mut sent = false;
    let send = async |body: down_message::Body| {
        tx.send(Ok(DownMessage { body: Some(body) }))
            .await
            .map_err(|_| Status::cancelled("child went away"))
    };
    if let Some(snapshot) = snapshot {
        // In parts, so that no message is large whatever the catalog.
        for part in crate::wire::snapshot_parts(&snapshot, SNAPSHOT_PART) {
            send(down_message::Body::SnapshotPart(part)).await?;
        }
        for (o, s) in &snapshot.cursor {
            if *s == 0 {
                cursor.remove(o);
            } else {
                cursor.insert(o.clone(), *s);
            }
        }
        sent = true;
    }
    // Consecutive changes go together, a bounded number to a message.
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for change in changes {
        let have = cursor.get(&change.origin).copied().unwrap_or(0);
        if change.seq <= have {
            continue;
        }
        bytes += change.op.raw().len();
        batch.push(v1::Change::from(&change));
        cursor.insert(change.origin.clone(), change.seq);
        if batch.len() >= CHANGES_PER_MESSAGE || bytes >= 1 << 20 {
            send(down_message::Body::Changes(v1::Changes {
                changes: std::mem::take(&mut batch),
            }))
            .await?;
            bytes = 0;
        }
        sent = true;
    }
    if !batch.is_empty() {
        send(down_message::Body::Changes(v1::Changes { changes: batch })).await?;
    }
    Ok(sent)
}

/// Objects (and overrides) in one part of a snapshot.
const SNAPSHOT_PART: usize = 2_000;

/// Changes in one message down.
const CHANGES_PER_MESSAGE: usize = 500;

/// Stores one batch from a child durably and returns the sequence to ack.
async fn receive(node: &Arc<Node>, child: &NodeId, batch: UpBatch) -> Result<u64, Status> {
    let items: Vec<Upward> = if batch.items.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&batch.items)
            .map_err(|e| Status::invalid_argument(format!("batch {}: {e}", batch.seq)))?
    };
    // Declarations first: a child's own health says which sites lie below it.
    let mut records: Vec<ComplianceRecord> = Vec::with_capacity(batch.records.len());
    let mut other = Vec::new();
    let mut certificates = std::collections::HashMap::new();
    if let Some(subtree) = batch.subtree {
        let declared = cascade_proto::convert::DeclaredSubtree::try_from(subtree)
            .map_err(|e| Status::invalid_argument(format!("batch {}: {e}", batch.seq)))?;
        node.declare_subtree(child, declared.sites);
        node.declare_parents(child, declared.parents);
    }
    if !batch.applied.is_empty() {
        advance_cursor(node, child, batch.seq, batch.applied).await?;
    }
    for item in items {
        match item {
            Upward::Health(h) => other.push(Upward::Health(h)),
            Upward::Audit(a) => other.push(Upward::Audit(a)),
            Upward::Rollout(t) => {
                check_site(node, child, &t.node)?;
                other.push(Upward::Rollout(t));
            }
            Upward::Computer(c) => {
                check_site(node, child, &c.site)?;
                c.check()
                    .map_err(|e| Status::invalid_argument(format!("{child} sent a summary of {}: {e}", c.computer)))?;
                other.push(Upward::Computer(c));
            }
            Upward::Compliance(r) => records.push(r),
            Upward::Certificate(c) => match node.check_agent_certificate(&c) {
                Ok(der) => {
                    certificates.insert(c.computer.clone(), der);
                    other.push(Upward::Certificate(c));
                }
                Err(r) => {
                    node.note_refusal(&format!("child {child}"), &r);
                }
            },
        }
    }
    for wire in batch.records {
        let r = ComplianceRecord::try_from(wire)
            .map_err(|e| Status::invalid_argument(format!("batch {}: invalid {e}", batch.seq)))?;
        records.push(r);
    }
    let mut reports = Vec::with_capacity(batch.reports.len());
    for wire in batch.reports {
        let report = cascade_core::report::Report::try_from(wire)
            .map_err(|e| Status::invalid_argument(format!("batch {}: {e}", batch.seq)))?;
        for (_, r) in &report.records {
            check_site(node, child, &r.site)?;
        }
        reports.push(report);
    }
    for r in &records {
        check_site(node, child, &r.site)?;
    }
    // Only what the agents signed goes in: a node on the way cannot forge
    // or alter a record. A report's signature is checked once for all its
    // records.
    let records = {
        let from = format!("child {child}");
        node.run(move |checker| {
            let mut kept = checker.check_records(&from, records, &certificates)?;
            for report in reports {
                kept.extend(checker.check_report(&from, report, &certificates)?);
            }
            Ok::<_, cascade_store::StoreError>(kept)
        })
        .await
        .map_err(store_status)?
    };
    let forward = node.config.parent.is_some();
    metrics::counter!("cascade_compliance_ingested_total").increment(records.len() as u64);
    let store = node.db.clone();
    let source = child.to_string();
    let seq = batch.seq;
    let snapshot = batch.snapshot;
    let (tallies, replayed) = store
        .run(
            move |store| -> Result<(Vec<cascade_core::model::RolloutTally>, usize), cascade_store::StoreError> {
                let mut tallies = Vec::new();
                // A batch seen before changes nothing (a resend after a lost ack).
                let repeat = !snapshot && seq > 0 && seq <= store.inbox_mark(&source)?;
                if repeat {
                    return Ok((tallies, 0));
                }
                // Sequence 0 is a child's declaration of its subtree, sent on every
                // connection: this node's own declaration covers it further up.
                if seq > 0 || snapshot {
                    // The subtree's audit entries join this node's audit log (and go
                    // on up); health goes on up. Written before the batch's mark: a
                    // crash in between repeats them rather than losing them.
                    let mut health = Vec::new();
                    let mut certificates = Vec::new();
                    let mut computers = Vec::new();
                    for item in other {
                        match item {
                            Upward::Audit(entry) => {
                                store.audit(&entry, forward)?;
                            }
                            Upward::Certificate(cert) => certificates.push(cert),
                            Upward::Computer(summary) => computers.push(summary),
                            Upward::Rollout(tally) => {
                                tallies.push(tally.clone());
                                health.push(Upward::Rollout(tally));
                            }
                            other => health.push(other),
                        }
                    }
                    // Before the records they check, in one commit.
                    store.put_agent_certificates(&certificates, forward)?;
                    store.put_summaries(&computers, forward)?;
                    if forward && !health.is_empty() {
                        store.push_upward(health)?;
                    }
                }
                let mut replayed = 0;
                if snapshot {
                    store.ingest_snapshot(&records, forward)?;
                } else if seq > 0 {
                    replayed = store.ingest(&source, seq, &records, forward)?.stale;
                }
                Ok((tallies, replayed))
            },
        )
        .await
        .map_err(store_status)?;
    if replayed > 0 {
        // A new batch whose signed records are no newer than what is held:
        // an old report sent again.
        node.note_refusal(
            &format!("child {child}"),
            &cascade_core::seal::Refused::new(
                cascade_core::seal::Attack::Rollback,
                format!("{replayed} record(s) in batch {} are not newer than the ones held here (their agents' counters went backwards)", batch.seq),
            ),
        );
    }
    for tally in tallies {
        node.note_tally(tally);
    }
    if forward {
        node.signals.outbox_ready.notify_one();
    }
    Ok(batch.seq)
}

/// Origins a child's cursor may name: far more than any tree is deep.
const MAX_APPLIED: usize = 1024;

/// Records how far a connected child has applied each origin's changes (it
/// says so as it goes), so that compaction need not wait for it to
/// subscribe again. The store moves only this child's own cursors, only up
/// and never past this node's own.
async fn advance_cursor(
    node: &Arc<Node>,
    child: &NodeId,
    seq: u64,
    applied: std::collections::HashMap<String, u64>,
) -> Result<(), Status> {
    if applied.len() > MAX_APPLIED {
        return Err(Status::invalid_argument(format!(
            "batch {seq}: its cursor names {} origins, more than {MAX_APPLIED}",
            applied.len()
        )));
    }
    let mut claimed = BTreeMap::new();
    for (origin, at) in applied {
        let origin = NodeId::new(&origin)
            .map_err(|e| Status::invalid_argument(format!("batch {seq}: its cursor names {origin:?}: {e}")))?;
        claimed.insert(origin, at);
    }
    let (store, subscriber) = (node.db.clone(), child.clone());
    let lag = store
        .run(move |store| {
            store.advance_subscriber_cursors(&subscriber, &claimed)?;
            store.subscriber_lag(&subscriber)
        })
        .await
        .map_err(store_status)?;
    node.set_link(child.as_str(), "child-down", |l| l.seq_lag = lag);
    Ok(())
}

/// A child reports only for its own subtree, as it declared it.
fn check_site(node: &Node, child: &NodeId, site: &NodeId) -> Result<(), Status> {
    if node.in_subtree_of(child, site) {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{child} may not report for site {site}, outside its subtree"
    )))
}
