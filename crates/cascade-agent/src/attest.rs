//! Signed records for computers that exist only on paper: what seeds a
//! node's store in tests and benchmarks exactly as real agents' reports
//! would arrive (each computer with its own certificate from the CA, each
//! report signed by it), so that the nodes above check them as they would
//! real ones.

use std::collections::{BTreeMap, HashMap};

use cascade_core::model::{AgentCertificate, ComplianceRecord, ComputerId};
use cascade_core::seal;
use cascade_trust::sign::KeySigner;
use cascade_trust::{Ca, Identity};

/// Agents made up on the spot, one certificate each.
pub struct PaperAgents {
    ca: Ca,
    now: i64,
    agents: HashMap<ComputerId, (KeySigner, AgentCertificate)>,
}

impl std::fmt::Debug for PaperAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PaperAgents({} agents)", self.agents.len())
    }
}

impl PaperAgents {
    /// Agents whose certificates `ca` issues (valid from `now`, for a day).
    pub fn new(ca: Ca, now: i64) -> PaperAgents {
        PaperAgents {
            ca,
            now,
            agents: HashMap::new(),
        }
    }

    /// Forgets the agents made so far (their keys and certificates): a
    /// benchmark of many computers keeps only those it still signs for.
    pub fn forget(&mut self) {
        self.agents.clear();
    }

    /// Signs `records` as one report per (computer, counter) and returns the
    /// certificates of the computers that had none yet (to keep beside them).
    pub fn sign(&mut self, records: &mut [ComplianceRecord]) -> Result<Vec<AgentCertificate>, String> {
        let mut reports: BTreeMap<(ComputerId, u64), Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            reports.entry((r.computer.clone(), r.counter)).or_default().push(i);
        }
        let mut new = Vec::new();
        for ((computer, counter), indices) in reports {
            if !self.agents.contains_key(&computer) {
                let issued = self
                    .ca
                    .issue(&Identity::Agent(computer.clone()), &[], self.now, 1)
                    .map_err(|e| e.to_string())?;
                let signer = KeySigner::from_pem(&issued.cert_pem, &issued.key_pem).map_err(|e| e.to_string())?;
                use base64::Engine;
                let certificate = AgentCertificate {
                    computer: computer.clone(),
                    chain: vec![base64::engine::general_purpose::STANDARD.encode(signer.certificate())],
                };
                new.push(certificate.clone());
                self.agents.insert(computer.clone(), (signer, certificate));
            }
            let (signer, _) = &self.agents[&computer];
            let mut report: Vec<ComplianceRecord> = indices.iter().map(|&i| records[i].clone()).collect();
            let (scheme, sig) = seal::sign_report(signer, &computer, counter, &report)?;
            seal::attest(&mut report, scheme, &sig);
            for (&i, r) in indices.iter().zip(report) {
                records[i] = r;
            }
        }
        Ok(new)
    }
}
