//! One agent run: finish what a restart completed, check in with the
//! nearest reachable node, report what changed, install what the
//! assignment says inside the maintenance windows (or past a deadline),
//! run the OS updater when the policy says so, restart once at the end,
//! and send the reports.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;

use cascade_core::UpdateId;
use cascade_core::assignment::{Assignment, Step};
use cascade_core::compliance::ComplianceState;
use cascade_core::inventory::Inventory;
use cascade_core::model::{ComplianceRecord, ComputerId, EventKind, InstallEvent, NodeId, PatchMethod, RestartPolicy};
use cascade_core::schedule::{Schedule, may_install};
use cascade_core::seal::{self, Evidence};
use cascade_core::update::{ExitMeaning, RestartBehavior, Severity};
use cascade_proto::convert::{AgentReport, CheckIn, CheckInAnswer};
use cascade_proto::v1::agents_client::AgentsClient;
use cascade_proto::v1::{CheckInRequest, ReportRequest};
use tonic::transport::Channel;

use crate::config::NodeEntry;
use crate::connect;
use crate::install::Outcome;
use crate::journal::{Journal, JournalError, PendingRestart};
use crate::os_updater::PackageResult;

/// Seconds after which a restart that was asked for but did not happen is
/// asked for again.
pub const RESTART_RETRY: i64 = 3600;

/// Exit code reported when an update's content could not be fetched or verified.
pub const CODE_CONTENT: i64 = cascade_core::compliance::CODE_CONTENT;

/// What the agent runs on: the real computer, or a simulated one.
pub trait Env: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> i64;
    fn inventory(&self) -> Result<Inventory, String>;
    /// Changes at every boot.
    fn boot_id(&self) -> Option<String>;
    /// Whether steps need their content fetched first.
    fn fetches_content(&self) -> bool;
    fn install(&self, step: &Step, files: &[PathBuf]) -> impl Future<Output = Outcome> + Send;
    /// Starts the restart (returns once it is started).
    fn restart(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The OS updater's security upgrades and their results; `None` where
    /// there is none.
    fn os_updater(&self) -> impl Future<Output = Option<Result<Vec<PackageResult>, String>>> + Send;
    /// Keeps a renewed certificate and its key (where the agent's files are).
    fn keep_credentials(&self, _cert_pem: &str, _key_pem: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A certificate is renewed once less than this share of its lifetime is left.
pub const RENEW_WHEN_LEFT: f64 = 1.0 / 3.0;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no node could be reached ({0})")]
    NoNode(String),
    #[error("the node refused: {0}")]
    Refused(String),
    #[error("inventory: {0}")]
    Inventory(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the node sent an assignment that cannot be read: {0}")]
    BadAssignment(String),
}

/// What a run did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    pub node: String,
    pub steps: usize,
    /// Installed in this run, including installs a restart finished.
    pub installed: usize,
    pub pending_restart: usize,
    pub failed: usize,
    /// Steps not installed now (outside the windows, waiting for a
    /// prerequisite, no install command).
    pub deferred: usize,
    pub os_packages: usize,
    pub restart_requested: bool,
    /// Reports acknowledged by the node in this run.
    pub reports_sent: usize,
    /// Reports still queued (the node was lost during the run).
    pub reports_queued: usize,
}

/// The credentials and nodes an agent uses.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The root node, the only origin whose timestamps count (any origin's
    /// when unknown).
    pub root: Option<NodeId>,
    /// Seconds a root timestamp stays fresh.
    pub max_timestamp_age: i64,
}

#[derive(Debug)]
pub struct Agent<E: Env> {
    pub computer: ComputerId,
    pub env: E,
    pub journal: Journal,
    pub nodes: Vec<NodeEntry>,
    pub credentials: Credentials,
    pub content_dir: PathBuf,
    pub content_limit: u64,
    /// Whether to probe latencies (off for the simulator's single node).
    pub probe: bool,
}

/// Whether the agent may act at `now` — install a step, run the operating
/// system's updater, restart — for something whose earliest deadline is
/// `deadline`: inside one of the assignment's windows, past the deadline,
/// or at any time when the assignment names no window. Windows named but
/// none readable: only a passed deadline opens. The one rule of the
/// cycle's three places.
pub fn may_act(assignment: &Assignment, schedules: &[Schedule], deadline: Option<i64>, now: i64) -> bool {
    let deadline = deadline.and_then(|d| jiff::Timestamp::from_second(d).ok());
    let at = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    if !assignment.maintenance_windows.is_empty() && schedules.is_empty() {
        // Windows were named but none could be read: only the deadline opens.
        return deadline.is_some_and(|d| at >= d);
    }
    may_install(at, schedules, deadline)
}

fn schedules(assignment: &Assignment) -> Vec<Schedule> {
    assignment
        .maintenance_windows
        .iter()
        .filter_map(|w| match Schedule::new(w) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(window = %w.id, error = %e, "maintenance window ignored");
                None
            }
        })
        .collect()
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown
    )
}

impl<E: Env> Agent<E> {
    fn record(
        &self,
        site: &NodeId,
        update: &UpdateId,
        severity: Severity,
        state: ComplianceState,
        now: i64,
    ) -> ComplianceRecord {
        ComplianceRecord {
            computer: self.computer.clone(),
            update: update.clone(),
            site: site.clone(),
            state,
            severity,
            counter: 0,
            observed_at: now,
            attestation: None,
        }
    }

    fn event(&self, update: &UpdateId, method: PatchMethod, kind: EventKind, detail: String, now: i64) -> InstallEvent {
        InstallEvent {
            at: now,
            update: update.clone(),
            method,
            kind,
            detail,
        }
    }

    /// Queues records and events durably; only records whose state changed
    /// since last queued are kept, unless `all`.
    fn queue(&mut self, records: Vec<ComplianceRecord>, events: Vec<InstallEvent>) -> Result<(), JournalError> {
        let reported = &self.journal.state().reported;
        let stale = self.journal.state().stale.clone();
        let records: Vec<ComplianceRecord> = records
            .into_iter()
            .map(|mut r| {
                // A frozen view proves nothing: no compliance is claimed on it.
                if let Some(reason) = &stale
                    && r.state.is_compliant()
                {
                    r.state = ComplianceState::Stale { reason: reason.clone() };
                }
                r
            })
            .filter(|r| reported.get(&r.update) != Some(&r.state))
            .collect();
        if records.is_empty() && events.is_empty() {
            return Ok(());
        }
        self.journal.enqueue(records, events)?;
        Ok(())
    }

    /// Connects to the first node that answers a check-in, in ranked order.
    async fn check_in(
        &self,
        inventory: &Inventory,
    ) -> Result<(AgentsClient<Channel>, String, Assignment, Evidence), AgentError> {
        let ranked = if self.probe && self.nodes.len() > 1 {
            connect::ranked(&self.nodes).await
        } else {
            self.nodes.clone()
        };
        let hash = inventory.content_hash().to_string();
        let with_body = CheckInRequest::try_from(&CheckIn {
            inventory_hash: hash.clone(),
            inventory: Some(inventory.clone()),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .map_err(|e| AgentError::Inventory(e.to_string()))?;
        let without_body = CheckInRequest {
            inventory: Vec::new(),
            ..with_body.clone()
        };
        let known = self.journal.state().inventory_hash.as_deref() == Some(hash.as_str());
        let mut errors = Vec::new();
        for node in ranked {
            let channel = match self.channel_to(&node.address).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{}: {e}", node.address));
                    continue;
                }
            };
            let mut client = AgentsClient::new(channel);
            // The inventory goes along when it changed; a node that lacks
            // an unchanged one asks for it.
            let mut send_body = !known;
            let reply = loop {
                let mut request = cascade_proto::with_protocol(if send_body {
                    with_body.clone()
                } else {
                    without_body.clone()
                });
                request.set_timeout(std::time::Duration::from_secs(60));
                match client.check_in(request).await {
                    Ok(r) => {
                        let protocol = cascade_proto::protocol_of(r.metadata());
                        if protocol < cascade_proto::PROTOCOL {
                            tracing::warn!(
                                node = %node.address,
                                protocol,
                                "the node speaks an older protocol than this agent ({}): upgrade nodes before agents",
                                cascade_proto::PROTOCOL
                            );
                        }
                        let r = r.into_inner();
                        if r.need_inventory && !send_body {
                            send_body = true;
                            continue;
                        }
                        break Ok(r);
                    }
                    Err(s) => break Err(s),
                }
            };
            match reply {
                // A node that sends what cannot be used is passed over.
                Ok(r) => match CheckInAnswer::try_from(r) {
                    Ok(CheckInAnswer::Assigned {
                        assignment, evidence, ..
                    }) if assignment.computer == self.computer => {
                        // Without evidence every step is refused as
                        // unverifiable, and reported so.
                        let evidence = evidence.unwrap_or_else(|e| {
                            tracing::warn!(node = %node.address, "the evidence sent cannot be read: {e}");
                            Box::default()
                        });
                        return Ok((client, node.address, *assignment, *evidence));
                    }
                    Ok(CheckInAnswer::Assigned { assignment, .. }) => errors.push(format!(
                        "{}: {}",
                        node.address,
                        AgentError::BadAssignment(format!("it is for {}, not {}", assignment.computer, self.computer))
                    )),
                    Ok(CheckInAnswer::NeedInventory { .. }) => {
                        return Err(AgentError::Refused(format!(
                            "{} keeps asking for the inventory",
                            node.address
                        )));
                    }
                    Err(e) => errors.push(format!(
                        "{}: {}",
                        node.address,
                        AgentError::BadAssignment(e.to_string())
                    )),
                },
                Err(s) if retryable(&s) => errors.push(format!("{}: {}", node.address, s.message())),
                Err(s) => {
                    errors.push(format!("{}: {}", node.address, s.message()));
                    // Another node may see it differently (a sibling that
                    // has the inventory, or a healthier one).
                    tracing::warn!(node = %node.address, code = ?s.code(), error = %s.message(), "check-in refused");
                }
            }
        }
        Err(AgentError::NoNode(errors.join("; ")))
    }

    /// Sends the queued reports in counter order; returns how many the node
    /// acknowledged. Stops at the first failure (they stay queued).
    async fn send_reports(&mut self, client: &mut AgentsClient<Channel>) -> Result<usize, AgentError> {
        let mut sent = 0;
        let mut renumbered = false;
        let signer = cascade_trust::sign::KeySigner::from_pem(&self.credentials.cert_pem, &self.credentials.key_pem)
            .map_err(|e| AgentError::Refused(format!("cannot sign reports with the agent key: {e}")))?;
        'again: loop {
            self.journal.coalesce()?;
            for batch in self.journal.queued() {
                // One signature over the records' Merkle root: each record can
                // then travel up on its own and still be checked at the root.
                let (scheme, signature) = seal::sign_report(&signer, &self.computer, batch.counter, &batch.records)
                    .map_err(|e| AgentError::Refused(format!("cannot sign report {}: {e}", batch.counter)))?;
                let report = ReportRequest::try_from(&AgentReport {
                    counter: batch.counter,
                    records: batch.records.clone(),
                    events: batch.events.clone(),
                    scheme,
                    signature,
                })
                .map_err(|e| AgentError::Inventory(e.to_string()))?;
                let mut request = tonic::Request::new(report);
                request.set_timeout(std::time::Duration::from_secs(60));
                let acked = match client.report(request).await {
                    Ok(r) => r.into_inner().acked,
                    Err(s) if retryable(&s) => return Ok(sent),
                    Err(s) => return Err(AgentError::Refused(s.message().to_owned())),
                };
                let highest_used = self.journal.state().next_counter.saturating_sub(1);
                if acked > highest_used && !renumbered {
                    // The node has seen counters this agent never used:
                    // its state was lost or restored. Continue after them.
                    tracing::warn!(
                        acked,
                        highest_used,
                        "the node is ahead of this agent's counter; renumbering"
                    );
                    self.journal.renumber_after(acked)?;
                    renumbered = true;
                    continue 'again;
                }
                if acked < batch.counter {
                    return Err(AgentError::Refused(format!(
                        "report {} was answered with acknowledgement {acked}",
                        batch.counter
                    )));
                }
                self.journal.acked(batch.counter)?;
                sent += 1;
            }
            return Ok(sent);
        }
    }

    /// Installs that waited for a restart are done once the boot id changed.
    /// Returns how many installs it finished.
    fn finish_restart(&mut self, now: i64) -> Result<usize, AgentError> {
        let Some(pending) = self.journal.state().pending_restart.clone() else {
            return Ok(0);
        };
        let Some(site) = self.journal.state().site.clone() else {
            return Ok(0);
        };
        let site = &site;
        let boot = self.env.boot_id();
        if boot.is_none() || boot == pending.boot_id {
            return Ok(0);
        }
        let mut records = Vec::new();
        let mut events = Vec::new();
        for (update, severity, method) in &pending.updates {
            records.push(self.record(site, update, *severity, ComplianceState::Installed, now));
            events.push(self.event(update, *method, EventKind::Restarted, String::new(), now));
            events.push(self.event(update, *method, EventKind::Installed, String::new(), now));
        }
        // The state is saved with the report so that a crash repeats neither.
        self.queue(records, events)?;
        let mut state = self.journal.state().clone();
        state.pending_restart = None;
        for (update, _, method) in &pending.updates {
            if *method == PatchMethod::VendorCatalog {
                state.installed.insert(update.clone());
            }
        }
        self.journal.save(state)?;
        Ok(pending.updates.len())
    }

    /// Renews the agent's certificate at a node once less than a third of
    /// its lifetime is left: a new key, the same identity, kept before it
    /// is used. Returns whether it renewed.
    pub async fn renew_if_due(&mut self) -> Result<bool, AgentError> {
        let refused = |e: String| AgentError::Refused(format!("certificate renewal: {e}"));
        let der = cascade_trust::pem_certs(&self.credentials.cert_pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| refused("the agent certificate cannot be read".into()))?;
        let (from, to) = cascade_trust::validity_of(&der).map_err(|e| refused(e.to_string()))?;
        let now = self.env.now();
        if (to - now) as f64 > (to - from) as f64 * RENEW_WHEN_LEFT {
            return Ok(false);
        }
        let identity = cascade_trust::Identity::Agent(self.computer.clone());
        let (csr_pem, key_pem) = cascade_trust::certificate_request(&identity).map_err(|e| refused(e.to_string()))?;
        let mut errors = Vec::new();
        for node in &self.nodes {
            let channel = match self.channel_to(&node.address).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{}: {e}", node.address));
                    continue;
                }
            };
            let reply = match AgentsClient::new(channel)
                .renew(cascade_proto::v1::RenewRequest {
                    csr_pem: csr_pem.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    errors.push(format!("{}: {}", node.address, s.message()));
                    continue;
                }
            };
            let first = cascade_trust::pem_certs(&reply.cert_pem)
                .ok()
                .and_then(|c| c.into_iter().next())
                .ok_or_else(|| refused("the node sent no certificate".into()))?;
            match cascade_trust::identity_of(&first) {
                Ok(got) if got == identity => {}
                Ok(got) => return Err(refused(format!("the node sent a certificate for {got}"))),
                Err(e) => return Err(refused(e.to_string())),
            }
            self.env.keep_credentials(&reply.cert_pem, &key_pem).map_err(refused)?;
            self.credentials.cert_pem = reply.cert_pem;
            self.credentials.key_pem = key_pem;
            tracing::info!(node = %node.address, "renewed the agent certificate");
            return Ok(true);
        }
        Err(refused(errors.join("; ")))
    }

    /// One run. Errors leave everything already learned queued.
    pub async fn run_once(&mut self) -> Result<RunSummary, AgentError> {
        let mut summary = RunSummary::default();
        // Installs a restart finished count before the inventory is taken.
        summary.installed += self.finish_restart(self.env.now())?;
        // A failed renewal is tried again next run; the certificate still works.
        if let Err(e) = self.renew_if_due().await {
            tracing::warn!("{e}");
        }
        let mut inventory = self.env.inventory().map_err(AgentError::Inventory)?;
        inventory.computer = Some(self.computer.to_string());
        inventory
            .installed_updates
            .extend(self.journal.state().installed.iter().cloned());
        inventory.normalize();
        let (mut client, address, mut assignment, evidence) = self.check_in(&inventory).await?;
        summary.node = address.clone();
        let site = assignment.site.clone();
        let now = self.env.now();
        let roots = cascade_trust::pem_certs(&self.credentials.ca_pem).unwrap_or_default();
        let verdict = crate::evidence::check(
            &roots,
            self.credentials.root.as_ref(),
            &evidence,
            &assignment,
            self.journal.state().newest_timestamp,
            now,
            self.credentials.max_timestamp_age,
        );
        if let Some(stale) = &verdict.stale {
            tracing::warn!("stale: {stale}");
        }
        let mut refused_records = Vec::new();
        for (update, refusal) in &verdict.refused {
            tracing::error!(%update, "not installed: {refusal}");
            let severity = assignment
                .steps
                .iter()
                .find(|s| s.update == *update)
                .map_or(Severity::Unspecified, |s| s.severity);
            refused_records.push(self.record(
                &site,
                update,
                severity,
                ComplianceState::Unknown {
                    reason: refusal.to_string(),
                },
                now,
            ));
        }
        assignment.steps.retain(|s| !verdict.refused.contains_key(&s.update));
        {
            let mut state = self.journal.state().clone();
            state.newest_timestamp = verdict.newest_timestamp;
            state.stale = verdict.stale.as_ref().map(ToString::to_string);
            state.site = Some(site.clone());
            state.inventory_hash = Some(assignment.inventory.clone());
            if state.last_node.as_deref() != Some(address.as_str()) {
                // A node this agent has not reported to lately gets its whole state.
                state.reported.clear();
            }
            state.last_node = Some(address);
            self.journal.save(state)?;
        }
        summary.reports_sent += self.send_reports_logged(&mut client).await;

        // What the node's evaluation says, for every approved update.
        let pending: BTreeSet<UpdateId> = self
            .journal
            .state()
            .pending_restart
            .iter()
            .flat_map(|p| p.updates.iter().map(|(u, _, _)| u.clone()))
            .collect();
        let failed_before: BTreeMap<UpdateId, ComplianceState> = self
            .journal
            .state()
            .reported
            .iter()
            .filter(|(_, s)| matches!(s, ComplianceState::Failed { .. }))
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect();
        let mut records = refused_records;
        for status in &assignment.statuses {
            records.push(self.record(&site, &status.update, status.severity, status.state.clone(), now));
        }
        for step in &assignment.steps {
            let state = if pending.contains(&step.update) {
                ComplianceState::PendingRestart
            } else if let Some(failed) = failed_before.get(&step.update) {
                // Still needed after a failure: it stays failed until it installs.
                failed.clone()
            } else {
                ComplianceState::Required
            };
            records.push(self.record(&site, &step.update, step.severity, state, now));
        }
        self.queue(records, Vec::new())?;
        summary.steps = assignment.steps.len();

        let schedules = schedules(&assignment);
        let mut restart_needed: Vec<(UpdateId, Severity, PatchMethod)> = Vec::new();
        let mut restart_started = false;
        let mut not_done: BTreeSet<UpdateId> = BTreeSet::new();
        if assignment.vendor_catalog {
            for step in &assignment.steps {
                if pending.contains(&step.update) {
                    // Installed but waiting for the restart: what needs it waits too.
                    not_done.insert(step.update.clone());
                    continue;
                }
                let now = self.env.now();
                if restart_started {
                    not_done.insert(step.update.clone());
                    summary.deferred += 1;
                    continue;
                }
                if !may_act(&assignment, &schedules, step.deadline, now) {
                    not_done.insert(step.update.clone());
                    summary.deferred += 1;
                    continue;
                }
                if let Some(before) = step.after.iter().find(|a| not_done.contains(*a)) {
                    tracing::info!(update = %step.update, waits_for = %before, "waits for a prerequisite");
                    not_done.insert(step.update.clone());
                    summary.deferred += 1;
                    continue;
                }
                let (state, events) = self.install_step(&mut client, &summary.node, step).await;
                match &state {
                    ComplianceState::Installed | ComplianceState::NotApplicable => summary.installed += 1,
                    ComplianceState::PendingRestart => {
                        summary.pending_restart += 1;
                        restart_needed.push((step.update.clone(), step.severity, PatchMethod::VendorCatalog));
                        if events.iter().any(|e| e.kind == EventKind::RestartStarted) {
                            restart_started = true;
                        }
                    }
                    ComplianceState::Failed { .. } => {
                        summary.failed += 1;
                        not_done.insert(step.update.clone());
                    }
                    _ => {
                        summary.deferred += 1;
                        not_done.insert(step.update.clone());
                    }
                }
                // A pending restart is noted before its result is queued: after
                // a crash in between, the restart still finishes the install.
                if state == ComplianceState::PendingRestart {
                    self.note_pending(&restart_needed, restart_started)?;
                    not_done.insert(step.update.clone());
                }
                let installed = matches!(state, ComplianceState::Installed | ComplianceState::NotApplicable);
                let record = self.record(&site, &step.update, step.severity, state, self.env.now());
                // The result is durable before the next installer runs.
                self.queue(vec![record], events)?;
                if installed {
                    let mut saved = self.journal.state().clone();
                    saved.installed.insert(step.update.clone());
                    self.journal.save(saved)?;
                }
            }
        }

        // The operating system's own updater, after the catalog.
        let any_window_open = may_act(&assignment, &schedules, None, self.env.now());
        if assignment.os_updater
            && any_window_open
            && !restart_started
            && let Some(result) = self.env.os_updater().await
        {
            let now = self.env.now();
            match result {
                Ok(packages) => {
                    let mut records = Vec::new();
                    let mut events = Vec::new();
                    for p in packages {
                        let update = p.package.update_id();
                        let (state, kind) = if p.installed {
                            (ComplianceState::Installed, EventKind::Installed)
                        } else {
                            (
                                ComplianceState::Failed { code: p.code },
                                EventKind::Failed { code: p.code },
                            )
                        };
                        records.push(self.record(&site, &update, Severity::Unspecified, state, now));
                        events.push(self.event(&update, PatchMethod::OsUpdater, kind, p.detail, now));
                        summary.os_packages += 1;
                    }
                    self.queue(records, events)?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the OS updater failed");
                    let update = UpdateId::new("os-updater");
                    let event = self.event(&update, PatchMethod::OsUpdater, EventKind::Failed { code: -1 }, e, now);
                    self.queue(Vec::new(), vec![event])?;
                }
            }
        }

        // One restart at the end, inside the window (or past a deadline).
        // A restart asked for an hour ago that did not happen (cancelled,
        // or the command did nothing) is asked for again.
        let asked_long_ago = |p: &PendingRestart| p.requested_at.is_some_and(|t| self.env.now() - t >= RESTART_RETRY);
        if !restart_started
            && let Some(pending) = self.journal.state().pending_restart.clone()
            && (!pending.started || asked_long_ago(&pending))
            && assignment.restart == RestartPolicy::AsVendorSays
        {
            let now = self.env.now();
            let deadline = assignment
                .steps
                .iter()
                .filter(|s| pending.updates.iter().any(|(u, _, _)| *u == s.update))
                .filter_map(|s| s.deadline)
                .min();
            if may_act(&assignment, &schedules, deadline, now) {
                let events = pending
                    .updates
                    .iter()
                    .map(|(u, _, m)| self.event(u, *m, EventKind::RestartRequested, String::new(), now))
                    .collect();
                self.queue(Vec::new(), events)?;
                // The node hears of it before the computer goes down (a
                // report that fails stays queued for after the restart).
                summary.reports_sent += self.send_reports_logged(&mut client).await;
                match self.env.restart().await {
                    Ok(()) => {
                        summary.restart_requested = true;
                        let mut state = self.journal.state().clone();
                        if let Some(p) = state.pending_restart.as_mut() {
                            p.started = true;
                            p.requested_at = Some(self.env.now());
                        }
                        self.journal.save(state)?;
                    }
                    Err(e) => tracing::error!(error = %e, "the restart command failed; it is tried again next run"),
                }
            }
        }
        summary.reports_sent += self.send_reports_logged(&mut client).await;
        summary.reports_queued = self.journal.queued().len();
        Ok(summary)
    }

    /// Sends the queue; a refusal is logged and the reports stay queued,
    /// so that patching goes on and they are offered again next run.
    async fn send_reports_logged(&mut self, client: &mut AgentsClient<Channel>) -> usize {
        match self.send_reports(client).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "reports stay queued");
                0
            }
        }
    }

    /// Adds installs to the pending restart, keeping the boot id of when
    /// the first was installed.
    fn note_pending(
        &mut self,
        updates: &[(UpdateId, Severity, PatchMethod)],
        started: bool,
    ) -> Result<(), JournalError> {
        let mut state = self.journal.state().clone();
        let boot_id = self.env.boot_id();
        let now = self.env.now();
        let pending = state.pending_restart.get_or_insert(PendingRestart {
            boot_id,
            since: now,
            updates: Vec::new(),
            started: false,
            requested_at: None,
        });
        for u in updates {
            if !pending.updates.iter().any(|(id, _, _)| *id == u.0) {
                pending.updates.push(u.clone());
            }
        }
        pending.started |= started;
        self.journal.save(state)
    }

    /// A channel to a node with this agent's certificate.
    async fn channel_to(&self, address: &str) -> Result<Channel, String> {
        connect::channel(
            address,
            &self.credentials.ca_pem,
            Some((&self.credentials.cert_pem, &self.credentials.key_pem)),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Fetches content from the node in use; a transfer that was too slow
    /// or broke goes on at the other configured nodes in turn, resuming
    /// from what arrived. A verified hash mismatch or a file over a limit
    /// is final.
    pub async fn fetch_with_failover(
        &self,
        client: &mut AgentsClient<Channel>,
        current: &str,
        content: &cascade_core::update::Content,
    ) -> Result<PathBuf, cascade_content::ContentError> {
        use cascade_content::ContentError;
        let first = cascade_content::fetch(client, content, &self.content_dir, self.content_limit).await;
        let mut last = match first {
            Err(e @ (ContentError::Slow { .. } | ContentError::Transfer { .. })) => e,
            other => return other,
        };
        for node in self.nodes.iter().filter(|n| n.address != current) {
            tracing::warn!(node = %node.address, error = %last, "content: trying another node");
            let Ok(channel) = self.channel_to(&node.address).await else {
                continue;
            };
            let mut other = AgentsClient::new(channel);
            match cascade_content::fetch(&mut other, content, &self.content_dir, self.content_limit).await {
                Err(e @ (ContentError::Slow { .. } | ContentError::Transfer { .. })) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Fetches and installs one step; its new state and events.
    async fn install_step(
        &self,
        client: &mut AgentsClient<Channel>,
        current: &str,
        step: &Step,
    ) -> (ComplianceState, Vec<InstallEvent>) {
        let method = PatchMethod::VendorCatalog;
        let mut events = Vec::new();
        let mut files = Vec::new();
        if self.env.fetches_content() {
            for content in &step.content {
                match self.fetch_with_failover(client, current, content).await {
                    Ok(path) => files.push(path),
                    Err(e) => {
                        let now = self.env.now();
                        tracing::warn!(update = %step.update, error = %e, "content not available");
                        events.push(self.event(
                            &step.update,
                            method,
                            EventKind::Failed { code: CODE_CONTENT },
                            e.to_string(),
                            now,
                        ));
                        return (ComplianceState::Failed { code: CODE_CONTENT }, events);
                    }
                }
            }
            if !step.content.is_empty() {
                events.push(self.event(
                    &step.update,
                    method,
                    EventKind::Downloaded,
                    String::new(),
                    self.env.now(),
                ));
            }
        }
        if step.install.is_none() && crate::install::default_command(&files).is_none() && self.env.fetches_content() {
            let reason = "the catalog gives no install command for it".to_owned();
            events.push(self.event(
                &step.update,
                method,
                EventKind::Deferred { reason },
                String::new(),
                self.env.now(),
            ));
            return (ComplianceState::Required, events);
        }
        let outcome = self.env.install(step, &files).await;
        let now = self.env.now();
        tracing::info!(update = %step.update, code = outcome.code, meaning = ?outcome.meaning, "installer finished");
        let state = match outcome.meaning {
            ExitMeaning::Success if step.restart == RestartBehavior::Always => {
                events.push(self.event(&step.update, method, EventKind::PendingRestart, outcome.detail, now));
                ComplianceState::PendingRestart
            }
            ExitMeaning::Success => {
                events.push(self.event(&step.update, method, EventKind::Installed, outcome.detail, now));
                ComplianceState::Installed
            }
            ExitMeaning::NotApplicable => {
                events.push(self.event(&step.update, method, EventKind::Installed, outcome.detail, now));
                ComplianceState::NotApplicable
            }
            ExitMeaning::SuccessRestartRequired => {
                events.push(self.event(&step.update, method, EventKind::PendingRestart, outcome.detail, now));
                ComplianceState::PendingRestart
            }
            ExitMeaning::RestartStarted => {
                events.push(self.event(&step.update, method, EventKind::RestartStarted, outcome.detail, now));
                ComplianceState::PendingRestart
            }
            ExitMeaning::InUse => {
                let reason = format!(
                    "the installer says the program is in use or another installation is running (exit code {}); tried again at the next run",
                    outcome.code
                );
                events.push(self.event(
                    &step.update,
                    method,
                    EventKind::Deferred { reason },
                    outcome.detail,
                    now,
                ));
                ComplianceState::Required
            }
            ExitMeaning::Failure => {
                events.push(self.event(
                    &step.update,
                    method,
                    EventKind::Failed { code: outcome.code },
                    outcome.detail,
                    now,
                ));
                ComplianceState::Failed { code: outcome.code }
            }
        };
        (state, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::model::{MaintenanceWindow, ObjectId};
    use cascade_core::update::Classification;

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    fn assignment(windows: Vec<MaintenanceWindow>) -> Assignment {
        Assignment {
            computer: ComputerId::new("pc-1").unwrap(),
            site: NodeId::new("site-a").unwrap(),
            inventory: String::new(),
            issued_at: 0,
            policies: vec![],
            steps: vec![],
            statuses: vec![],
            maintenance_windows: windows,
            restart: RestartPolicy::AsVendorSays,
            vendor_catalog: true,
            os_updater: false,
        }
    }

    fn window(zone: &str, start: &str, minutes: u32, days: &[&str]) -> MaintenanceWindow {
        MaintenanceWindow {
            id: ObjectId::new("w").unwrap(),
            name: "w".into(),
            time_zone: zone.into(),
            start: start.into(),
            duration_minutes: minutes,
            days: days.iter().map(|d| d.to_string()).collect(),
            overridable: Default::default(),
        }
    }

    fn step(deadline: Option<&str>) -> Step {
        Step {
            update: UpdateId::new("KB1"),
            title: "KB1".into(),
            severity: Severity::Critical,
            classification: Classification::SecurityUpdate,
            restart: RestartBehavior::May,
            install: None,
            content: vec![],
            deadline: deadline.map(at),
            after: vec![],
        }
    }

    #[test]
    fn steps_install_inside_their_windows_or_past_the_deadline() {
        // Saturday nights in Berlin, 22:00 for four hours: crosses midnight,
        // and on 2026-03-28/29 the clocks go forward inside it.
        let a = assignment(vec![window("Europe/Berlin", "22:00", 240, &["sat"])]);
        let opened = schedules(&a);
        let cases = [
            ("2026-03-28T20:59:00Z", None, false, "21:59 CET, before the window"),
            ("2026-03-28T21:00:00Z", None, true, "22:00 CET, it opens"),
            (
                "2026-03-28T23:30:00Z",
                None,
                true,
                "00:30 on Sunday, still the Saturday window",
            ),
            (
                "2026-03-29T00:59:00Z",
                None,
                true,
                "03:59 CEST: four hours after opening less a minute",
            ),
            (
                "2026-03-29T01:00:00Z",
                None,
                false,
                "closed four real hours after opening",
            ),
            ("2026-03-30T21:00:00Z", None, false, "a Monday"),
            (
                "2026-03-30T21:00:00Z",
                Some("2026-03-30T20:00:00Z"),
                true,
                "the deadline has passed",
            ),
            (
                "2026-03-30T21:00:00Z",
                Some("2026-04-01T00:00:00Z"),
                false,
                "the deadline is ahead",
            ),
            // Autumn: 2026-10-25 at 03:00 CEST the clocks go back to 02:00.
            ("2026-10-24T20:00:00Z", None, true, "22:00 CEST"),
            ("2026-10-24T23:59:00Z", None, true, "01:59 CEST, the fourth hour"),
            (
                "2026-10-25T00:00:00Z",
                None,
                false,
                "four real hours have passed (02:00 CEST)",
            ),
        ];
        for (now, deadline, want, why) in cases {
            assert_eq!(
                may_act(&a, &opened, step(deadline).deadline, at(now)),
                want,
                "{now}: {why}"
            );
        }
        // No windows: any time.
        let open = assignment(vec![]);
        assert!(may_act(&open, &[], None, at("2026-03-30T12:00:00Z")));
        // Windows named but unreadable: only a passed deadline opens.
        let broken = assignment(vec![window("Mars/Olympus_Mons", "22:00", 60, &[])]);
        let none = schedules(&broken);
        assert!(none.is_empty());
        assert!(!may_act(&broken, &none, None, at("2026-03-30T12:00:00Z")));
        assert!(may_act(
            &broken,
            &none,
            step(Some("2026-03-30T11:00:00Z")).deadline,
            at("2026-03-30T12:00:00Z")
        ));
    }
}
