//! What only this node keeps: its agents, their inventories (stored once
//! per distinct content) and the audit log.

use cascade_core::inventory::Inventory;
use cascade_core::model::{Agent, AuditEntry, ComputerId, InstallEvent, NodeId, Upward};

use crate::{Pending, Result, Store, codec, keys};

impl Store {
    /// Keeps the node's link status (as JSON) across restarts.
    pub fn put_link_status(&self, status: &serde_json::Value) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::LINKS, codec::json(status));
        self.commit(batch)
    }

    /// The parent address a move chose, which wins over the configured one.
    /// Where a move sent this node: the new parent's address and id.
    pub fn put_moved_to(&self, address: &str, parent: &NodeId) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        let value = serde_json::json!({"address": address, "id": parent});
        batch.insert(keys::MOVED_TO, value.to_string().as_bytes());
        self.commit(batch)
    }

    /// The parent a move named: its address, and its id (absent when an
    /// older release recorded the move).
    pub fn moved_to(&self) -> Result<Option<(String, Option<NodeId>)>> {
        let Some(value) = self.get(keys::MOVED_TO)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&value).into_owned();
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.is_object() => {
                let address = v["address"].as_str().unwrap_or_default().to_owned();
                let id = v["id"].as_str().and_then(|id| NodeId::new(id).ok());
                Ok(Some((address, id)))
            }
            _ => Ok(Some((text, None))),
        }
    }

    pub fn link_status(&self) -> Result<Option<serde_json::Value>> {
        self.get(keys::LINKS)?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("link status: {d}"))))
            .transpose()
    }

    pub fn put_agent(&self, agent: &Agent) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::agent(&agent.id), codec::json(agent));
        self.commit(batch)
    }

    /// Stores many agents in one commit (the periodic write of last-seen times).
    /// Writes agents as this node last saw them, with their computers'
    /// summaries (sent on up when `forward` and changed).
    pub fn put_agents(&self, agents: &[Agent], forward: bool) -> Result<()> {
        if agents.is_empty() {
            return Ok(());
        }
        let _guard = self.lock();
        let mut pending = crate::Pending::default();
        for agent in agents {
            pending.insert(keys::agent(&agent.id), codec::json(agent));
        }
        let summaries: Vec<_> = agents.iter().map(Agent::summary).collect();
        let changed = self.stage_summaries(&mut pending, &summaries)?;
        if forward && !changed.is_empty() {
            let items = changed.into_iter().map(cascade_core::model::Upward::Computer).collect();
            self.queue_upward(&mut pending, &crate::outbox::Queued::Items(items))?;
        }
        self.commit_pending(pending)
    }

    /// Keeps an enrollment token by the hash of its secret.
    pub fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::token(secret_hash), codec::json(token));
        self.commit(batch)
    }

    /// Keeps an API bearer token by the hash of its secret.
    pub fn put_api_token(&self, secret_hash: &str, token: &ApiTokenRecord) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        batch.insert(keys::api_token(secret_hash), codec::json(token));
        self.commit(batch)
    }

    pub fn api_token(&self, secret_hash: &str) -> Result<Option<ApiTokenRecord>> {
        self.get(&keys::api_token(secret_hash))?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("API token: {d}"))))
            .transpose()
    }

    /// The API tokens (without their secrets).
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.scan(keys::API_TOKEN)
            .map(|item| {
                let (key, value) = item?;
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .collect()
    }

    /// Revokes the API tokens of a name; returns how many there were.
    pub fn revoke_api_tokens(&self, name: &str) -> Result<usize> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        let mut count = 0;
        for item in self.scan(keys::API_TOKEN) {
            let (key, value) = item?;
            let token: ApiTokenRecord =
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))?;
            if token.name == name {
                batch.remove(key);
                count += 1;
            }
        }
        if count > 0 {
            self.commit(batch)?;
        }
        Ok(count)
    }

    /// Redeems a token for `agent`: in one commit the token is gone and
    /// the agent enrolled. Refused (and nothing written but the removal of
    /// an expired token) when the token is unknown, used, expired or for
    /// another site, or the computer is enrolled already.
    pub fn redeem_token(&self, secret_hash: &str, agent: &Agent, now: i64) -> Result<Result<(), TokenRefusal>> {
        let _guard = self.lock();
        let key = keys::token(secret_hash);
        let Some(value) = self.get(&key)? else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let token: TokenRecord =
            codec::from_json(&value).map_err(|d| self.corrupt(format!("enrollment token: {d}")))?;
        if token.expires_at <= now {
            let mut batch = crate::Batch::default();
            batch.remove(key);
            self.commit(batch)?;
            return Ok(Err(TokenRefusal::Expired {
                expired_at: token.expires_at,
            }));
        }
        if token.site != agent.site {
            return Ok(Err(TokenRefusal::OtherSite { site: token.site }));
        }
        if self.get(&keys::agent(&agent.id))?.is_some() {
            return Ok(Err(TokenRefusal::Enrolled));
        }
        let mut batch = crate::Batch::default();
        batch.remove(key);
        batch.insert(keys::agent(&agent.id), codec::json(agent));
        self.commit(batch)?;
        Ok(Ok(()))
    }

    /// Stores a report's install events under the agent's counter; writing
    /// the same counter again replaces, so a repeated report adds nothing.
    /// Events older than the latest `keep` counters of the computer go.
    pub fn put_events(&self, computer: &ComputerId, counter: u64, events: &[InstallEvent], keep: u64) -> Result<()> {
        let _guard = self.lock();
        let mut batch = crate::Batch::default();
        for (index, event) in events.iter().enumerate() {
            batch.insert(keys::event(computer, counter, index as u32), codec::json(event));
        }
        let oldest = counter.saturating_sub(keep);
        for item in self.scan(&keys::events_of(computer)) {
            let (key, _) = item?;
            // The key ends with the counter, a separator and the index
            // (fixed widths that may themselves hold NUL bytes).
            let counter_at = key.len().saturating_sub(13);
            match key.get(counter_at..counter_at + 8).and_then(keys::seq_of) {
                Some(c) if c >= oldest => break,
                _ => batch.remove(key),
            }
        }
        self.commit(batch)
    }

    /// A computer's stored install events, oldest first.
    pub fn events(&self, computer: &ComputerId) -> Result<Vec<InstallEvent>> {
        self.scan(&keys::events_of(computer))
            .map(|item| {
                let (key, value) = item?;
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .collect()
    }

    /// Keeps an agent's certificate chain (checked by the caller), which
    /// checks the signatures on its records; sent on up when `forward`.
    pub fn put_agent_certificate(&self, cert: &cascade_core::model::AgentCertificate, forward: bool) -> Result<()> {
        self.put_agent_certificates(std::slice::from_ref(cert), forward)
    }

    /// [`Self::put_agent_certificate`] for many, in one commit.
    pub fn put_agent_certificates(&self, certs: &[cascade_core::model::AgentCertificate], forward: bool) -> Result<()> {
        if certs.is_empty() {
            return Ok(());
        }
        let _guard = self.lock();
        let mut pending = crate::Pending::default();
        if forward {
            let items = certs
                .iter()
                .cloned()
                .map(cascade_core::model::Upward::Certificate)
                .collect();
            self.queue_upward(&mut pending, &crate::outbox::Queued::Items(items))?;
        }
        for cert in certs {
            pending.insert(keys::agent_cert(&cert.computer), codec::json(cert));
        }
        self.commit_pending(pending)
    }

    /// Every agent certificate chain kept here.
    pub fn agent_certificates(&self) -> Result<Vec<cascade_core::model::AgentCertificate>> {
        self.scan(keys::AGENT_CERT)
            .map(|item| {
                let (key, value) = item?;
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .collect()
    }

    /// An agent's certificate chain as last received.
    pub fn agent_certificate(&self, id: &ComputerId) -> Result<Option<cascade_core::model::AgentCertificate>> {
        self.get(&keys::agent_cert(id))?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("agent certificate {id}: {d}"))))
            .transpose()
    }

    pub fn agent(&self, id: &ComputerId) -> Result<Option<Agent>> {
        self.get(&keys::agent(id))?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("agent {id}: {d}"))))
            .transpose()
    }

    pub fn agents(&self) -> Result<Vec<Agent>> {
        self.scan(keys::AGENT)
            .map(|item| {
                let (key, value) = item?;
                codec::from_json(&value).map_err(|d| self.corrupt(format!("{}: {d}", keys::show(&key))))
            })
            .collect()
    }

    /// Stores an inventory under its content hash unless an equal one is
    /// there already; returns the hash (hex).
    pub fn put_inventory(&self, inventory: &Inventory) -> Result<String> {
        let hash = inventory.content_hash().to_string();
        let key = keys::inventory(&hash);
        if self.get(&key)?.is_none() {
            let _guard = self.lock();
            let anonymous = Inventory {
                computer: None,
                ..inventory.clone()
            };
            let mut batch = crate::Batch::default();
            batch.insert(key, codec::json(&anonymous));
            self.commit(batch)?;
        }
        Ok(hash)
    }

    pub fn inventory(&self, hash: &str) -> Result<Option<Inventory>> {
        self.get(&keys::inventory(hash))?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("inventory {hash}: {d}"))))
            .transpose()
    }

    pub fn inventory_count(&self) -> usize {
        self.tree().scan_prefix(keys::INVENTORY).count()
    }

    /// Appends to the audit log; with `forward`, also queues it for the
    /// parent (the audit log replicates up). Returns its sequence number.
    pub fn audit(&self, entry: &AuditEntry, forward: bool) -> Result<u64> {
        let _guard = self.lock();
        let seq = self.get_u64(keys::AUDIT_NEXT)? + 1;
        let mut pending = Pending::default();
        pending.insert(keys::audit(seq), codec::json(entry));
        pending.insert(keys::AUDIT_NEXT.to_vec(), seq.to_be_bytes().to_vec());
        if forward {
            self.queue_upward(
                &mut pending,
                &crate::outbox::Queued::Items(vec![Upward::Audit(entry.clone())]),
            )?;
        }
        self.commit_pending(pending)?;
        Ok(seq)
    }

    /// Audit entries after `after`, oldest first.
    pub fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>> {
        self.sequenced(keys::AUDIT, after, limit)
    }
}

/// An enrollment token as its node keeps it (the secret only as a hash).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub site: NodeId,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the enrollment token is unknown or was used already")]
    Unknown,
    #[error("the enrollment token expired at {expired_at} (Unix seconds)")]
    Expired { expired_at: i64 },
    #[error("the enrollment token is for site {site}")]
    OtherSite { site: NodeId },
    #[error("a computer of this name is enrolled already; remove it first or enroll under another name")]
    Enrolled,
}

/// An API bearer token as its node keeps it (the secret only as a hash).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ApiTokenRecord {
    pub name: String,
    /// admin, site-operator or auditor.
    pub role: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}
