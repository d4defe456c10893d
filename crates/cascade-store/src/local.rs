//! What only this node keeps: its agents, their inventories (stored once
//! per distinct content) and the audit log.

use cascade_core::inventory::Inventory;
use cascade_core::model::{Agent, AuditEntry, ComputerId, Upward};

use crate::{Pending, Result, Store, codec, keys};

impl Store {
    /// Keeps the node's link status (as JSON) across restarts.
    pub fn put_link_status(&self, status: &serde_json::Value) -> Result<()> {
        let _guard = self.lock();
        let mut batch = sled::Batch::default();
        batch.insert(keys::LINKS, codec::json(status));
        self.commit(batch)
    }

    pub fn link_status(&self) -> Result<Option<serde_json::Value>> {
        self.get(keys::LINKS)?
            .map(|v| codec::from_json(&v).map_err(|d| self.corrupt(format!("link status: {d}"))))
            .transpose()
    }

    pub fn put_agent(&self, agent: &Agent) -> Result<()> {
        let _guard = self.lock();
        let mut batch = sled::Batch::default();
        batch.insert(keys::agent(&agent.id), codec::json(agent));
        self.commit(batch)
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
            let mut batch = sled::Batch::default();
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
        self.tree.scan_prefix(keys::INVENTORY).count()
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
        self.commit(pending.into_batch())?;
        Ok(seq)
    }

    /// Audit entries after `after`, oldest first.
    pub fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>> {
        self.sequenced(keys::AUDIT, after, limit)
    }
}
