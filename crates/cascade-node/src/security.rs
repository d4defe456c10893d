//! What keeps a compromised node from lying to the nodes and agents below
//! it: this node's signing key published as a signed change, seals checked
//! on everything that arrives, the root's signed timestamps and the
//! freshness they prove, and the refusals that name the attack.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cascade_core::model::{
    AgentCertificate, Change, ChangeOp, ComplianceRecord, ComputerId, NodeId, Object, ObjectId, ObjectKey, ObjectKind,
    SigningKey, Timestamp,
};
use cascade_core::seal::{self, Attack, Refused};
use cascade_store::StoreError;
use serde::Serialize;

use crate::Node;

/// How many refusals a node remembers for its status.
const REFUSALS_KEPT: usize = 100;

/// A node's trust service: the organisation CA it checks chains against,
/// what it has checked already (report signatures, agent certificates,
/// batch signatures, enrollment CAs), the revocations in force, and the
/// changes, reports and timestamps it refused lately.
#[derive(Debug)]
pub struct Trust {
    /// The organisation CA certificate(s), DER, for client chain checks.
    pub(crate) ca_ders: Vec<Vec<u8>>,
    /// Changes, reports and timestamps refused lately, with the attack.
    pub refusals: Refusals,
    /// Agent report signatures checked here already.
    pub(crate) attested: Attested,
    /// Agent certificates checked here already.
    pub(crate) agent_keys: AgentKeys,
    /// Agent certificate chains checked here already, many more of them.
    pub(crate) chains_checked: ChainsChecked,
    /// Revoked certificates, from the replicated revocations.
    pub(crate) revoked: Revoked,
    /// Batch signatures checked already.
    pub(crate) verified: cascade_trust::sign::Verified,
    /// Agent certificates found issued by an enrollment CA this node serves.
    pub(crate) agent_sites: crate::gate::AgentSites,
}

impl Trust {
    pub fn new(ca_ders: Vec<Vec<u8>>) -> Trust {
        Trust {
            ca_ders,
            refusals: Refusals::default(),
            attested: Attested::default(),
            agent_keys: AgentKeys::default(),
            chains_checked: ChainsChecked::default(),
            revoked: Revoked::default(),
            verified: cascade_trust::sign::Verified::default(),
            agent_sites: crate::gate::AgentSites::default(),
        }
    }
}

/// One refused change, report or timestamp.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Refusal {
    /// Unix seconds.
    pub at: i64,
    /// Where it came from (the parent's address, a child, an agent).
    pub from: String,
    /// `rollback`, `freeze`, `bad signature`, `mix-and-match` or `too large`.
    pub attack: String,
    pub detail: String,
}

/// The refusals this node made lately, newest last.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<VecDeque<Refusal>>);

impl Refusals {
    pub fn list(&self) -> Vec<Refusal> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, r: Refusal) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() == REFUSALS_KEPT {
            list.pop_front();
        }
        list.push_back(r);
    }
}

/// How fresh this node's view of the root is.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Freshness {
    /// The root of the tree as this node knows it.
    pub root: Option<NodeId>,
    /// Unix seconds of the root's newest signed timestamp here.
    pub timestamp: Option<i64>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
    pub max_age_seconds: u64,
    /// The view may be frozen: no timestamp, or one older than the limit.
    pub stale: bool,
}

/// Report signatures already checked here: (computer, counter, root)
/// digests, so that the records of one report cost one signature check.
#[derive(Debug, Default)]
pub struct Attested(Mutex<std::collections::HashSet<[u8; 32]>>);

/// Agent certificates whose chains were checked here: computer -> leaf DER.
#[derive(Debug, Default)]
pub struct AgentKeys(Mutex<std::collections::HashMap<ComputerId, KnownCertificate>>);

/// A checked agent certificate: the digest of its base64 form and its DER.
type KnownCertificate = ([u8; 32], Arc<[u8]>);

/// Agent certificate chains found issued to the computer they name: digests
/// of (computer, chain), 32 bytes each where [`AgentKeys`] keeps a whole
/// certificate. The CA set is fixed for a node's life, so a chain checked
/// once stays good: a certificate that left `AgentKeys` is read, not checked.
#[derive(Debug, Default)]
pub struct ChainsChecked(Mutex<std::collections::HashSet<[u8; 32]>>);

/// Most chains remembered before the set starts again: as many as 2^21
/// places of 33 bytes hold (about 70 MB).
const CHAINS_KEPT: usize = 1_800_000;

impl ChainsChecked {
    fn key(cert: &AgentCertificate) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(cert.computer.as_str().as_bytes());
        for c in &cert.chain {
            h.update([0u8]);
            h.update(c.as_bytes());
        }
        h.finalize().into()
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
    }
    fn insert(&self, key: [u8; 32]) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= CHAINS_KEPT {
            set.clear();
        }
        set.insert(key);
    }
}

/// The digest a checked certificate is remembered by (of its base64 form,
/// as it travels): a fleet's worth of them takes 32 bytes each, not the
/// certificate again.
fn leaf_digest(b64: &str) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(b64.as_bytes()).into()
}

/// The revocations in force here, rebuilt when the objects change.
#[derive(Debug, Default)]
pub struct Revoked(Mutex<Option<RevokedSet>>);

#[derive(Debug)]
struct RevokedSet {
    /// The change counter it was built at.
    version: u64,
    /// Serial or identity -> reason.
    entries: std::collections::HashMap<String, String>,
}

/// Most report digests remembered before the set starts again.
const ATTESTED_KEPT: usize = 200_000;

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl Node {
    /// Why a DER certificate is revoked here (by its serial number or its
    /// identity), or `None` when it is not.
    pub fn revocation_of(&self, der: &[u8]) -> Option<String> {
        let version = self.store.generation(&[ObjectKind::Revocation]);
        let mut cache = self.trust.revoked.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|c| c.version != version) {
            let mut entries = std::collections::HashMap::new();
            // A revocation list that cannot be read refuses everyone: a
            // security decision that cannot be made is not an allow.
            let revocations = match self.store.objects(ObjectKind::Revocation) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the revocations: refusing certificates until they can be read");
                    return Some(format!(
                        "the revocations cannot be read here ({e}): refused until they can"
                    ));
                }
            };
            for stored in revocations {
                if let Object::Revocation(r) = stored.object.into_value() {
                    let why = format!("revoked by {} at {}: {}", stored.origin, r.at, r.reason);
                    if let Some(serial) = r.serial {
                        entries.insert(serial.to_ascii_lowercase(), why.clone());
                    }
                    if let Some(identity) = r.identity {
                        entries.insert(identity, why);
                    }
                }
            }
            *cache = Some(RevokedSet { version, entries });
        }
        let entries = &cache.as_ref()?.entries;
        if entries.is_empty() {
            return None;
        }
        let serial = cascade_trust::sign::serial_of(der).ok()?;
        if let Some(why) = entries.get(&serial) {
            return Some(format!("certificate {serial} is {why}"));
        }
        let identity = cascade_trust::identity_of(der).ok()?.uri();
        entries.get(&identity).map(|why| format!("{identity} is {why}"))
    }

    /// Checks a content manifest from the parent: signed by a key the root
    /// published (its current or an earlier certificate's) that is not
    /// revoked. The root signs only manifests of files whose sha256 it
    /// verified, so chunks that match it are the catalog's bytes.
    pub fn check_manifest(&self, signed: &cascade_content::SignedManifest) -> Result<(), String> {
        let root = self
            .root()
            .map_err(|e| e.to_string())?
            .ok_or("this node does not know the root yet")?;
        let key = ObjectKey {
            kind: ObjectKind::SigningKey,
            id: ObjectId::new(root.as_str()).map_err(|e| e.to_string())?,
        };
        let certificates = match self
            .store
            .object(&key)
            .map_err(|e| e.to_string())?
            .map(|s| s.object.into_value())
        {
            Some(Object::SigningKey(k)) => k.certificates,
            _ => return Err(format!("the root {root} has published no signing key here")),
        };
        for der in certificates.iter().filter_map(|c| unb64(c)) {
            if cascade_trust::sign::fingerprint(&der) != signed.key {
                continue;
            }
            if let Some(why) = self.revocation_of(&der) {
                return Err(format!("the root's key {} is revoked: {why}", signed.key));
            }
            return cascade_trust::sign::verify_signature(
                &der,
                signed.scheme,
                &signed.manifest.message(),
                &signed.signature,
            )
            .map_err(|e| format!("bad signature: {e}"));
        }
        Err(format!(
            "bad signature: key {} is not one the root {root} published",
            signed.key
        ))
    }

    /// Checks an agent's certificate chain: issued (through its site's
    /// enrollment CA) under the organisation CA, for that computer.
    pub fn check_agent_certificate(&self, cert: &AgentCertificate) -> Result<Vec<u8>, Refused> {
        let leaf = leaf_digest(cert.chain.first().map(String::as_str).unwrap_or_default());
        let known = (self.trust.agent_keys.0.lock().unwrap_or_else(|e| e.into_inner()))
            .get(&cert.computer)
            .filter(|(digest, _)| *digest == leaf)
            .map(|(_, der)| der.to_vec());
        let was_known = known.is_some();
        let der = match known {
            Some(der) => der,
            None => {
                let checked = ChainsChecked::key(cert);
                match cert.chain.first().and_then(|leaf| unb64(leaf)) {
                    Some(der) if self.trust.chains_checked.contains(&checked) => der,
                    _ => {
                        let der = self.check_agent_chain(cert)?;
                        self.trust.chains_checked.insert(checked);
                        der
                    }
                }
            }
        };
        // Revocation is asked every time: it can come after the chain check.
        if let Some(why) = self.revocation_of(&der) {
            return Err(Refused::new(
                Attack::BadSignature,
                format!("certificate of agent {}: {why}", cert.computer),
            ));
        }
        if was_known {
            return Ok(der);
        }
        let mut keys = self.trust.agent_keys.0.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= ATTESTED_KEPT {
            keys.clear();
        }
        keys.insert(cert.computer.clone(), (leaf, Arc::from(der.as_slice())));
        Ok(der)
    }

    fn check_agent_chain(&self, cert: &AgentCertificate) -> Result<Vec<u8>, Refused> {
        let bad = |d: String| {
            Refused::new(
                Attack::BadSignature,
                format!("certificate of agent {}: {d}", cert.computer),
            )
        };
        if cert.chain.len() > 4 {
            return Err(Refused::new(
                Attack::TooLarge,
                format!(
                    "certificate chain of agent {} has {} certificates",
                    cert.computer,
                    cert.chain.len()
                ),
            ));
        }
        let ders: Vec<Vec<u8>> = cert
            .chain
            .iter()
            .map(|c| unb64(c).ok_or_else(|| bad("not base64".into())))
            .collect::<Result<_, _>>()?;
        let leaf = ders.first().ok_or_else(|| bad("empty chain".into()))?;
        match cascade_trust::sign::verify_issued(leaf, &ders[1..], &self.trust.ca_ders) {
            Ok(cascade_trust::Identity::Agent(id)) if id == cert.computer => Ok(leaf.clone()),
            Ok(other) => Err(bad(format!("it is for {other}"))),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Checks an agent's signature over its report and gives every record
    /// its attestation, so that the nodes above can check it too.
    pub fn attest_report(
        &self,
        computer: &ComputerId,
        counter: u64,
        certificate: &[u8],
        scheme: u16,
        signature: &[u8],
        records: &mut [ComplianceRecord],
    ) -> Result<(), Refused> {
        let name = format!("report {counter} of {computer}");
        if signature.is_empty() {
            return Err(Refused::new(Attack::BadSignature, format!("{name} is unsigned")));
        }
        let leaves: Vec<[u8; 32]> = records.iter().map(seal::record_leaf).collect();
        let message = seal::report_message(computer, counter, &seal::merkle(&leaves).0);
        cascade_trust::sign::verify_signature(certificate, scheme, &message, signature)
            .map_err(|e| Refused::new(Attack::BadSignature, format!("{name}: {e}")))?;
        seal::attest(records, scheme, signature);
        Ok(())
    }

    /// Keeps the records from a child whose agent signatures check out and
    /// refuses (naming the attack) the ones that do not. An error when an
    /// agent's certificate cannot be read here (the batch is not taken).
    pub fn check_records(
        &self,
        from: &str,
        records: Vec<ComplianceRecord>,
        certificates: &std::collections::HashMap<ComputerId, Vec<u8>>,
    ) -> Result<Vec<ComplianceRecord>, StoreError> {
        let mut kept = Vec::with_capacity(records.len());
        let mut known: std::collections::HashMap<ComputerId, Option<Vec<u8>>> = std::collections::HashMap::new();
        for record in records {
            let certificate = match certificates.get(&record.computer) {
                Some(c) => Some(c.clone()),
                None => match known.get(&record.computer) {
                    Some(c) => c.clone(),
                    None => {
                        let c = self.known_certificate(&record.computer)?;
                        known.insert(record.computer.clone(), c.clone());
                        c
                    }
                },
            };
            match self.check_record(&record, certificate.as_deref()) {
                Ok(()) => kept.push(record),
                Err(r) => {
                    self.note_refusal(from, &r);
                }
            }
        }
        Ok(kept)
    }

    fn check_record(&self, record: &ComplianceRecord, certificate: Option<&[u8]>) -> Result<(), Refused> {
        // The record's name is made only for a refusal: this runs for every
        // record that goes up.
        let bad = |d: &str| {
            Refused::new(
                Attack::BadSignature,
                format!(
                    "record {} of {} (counter {}): {d}",
                    record.update, record.computer, record.counter
                ),
            )
        };
        let a = record.attestation.as_ref().ok_or_else(|| bad("it is unsigned"))?;
        let root = seal::merkle_root_from(seal::record_leaf(record), a.index, a.count, &a.proof)
            .ok_or_else(|| bad("its proof does not fit its report"))?;
        self.check_root(&record.computer, record.counter, &root, a.scheme, &a.sig, certificate)
            .map_err(|d| bad(&d))
    }

    /// Checks an agent's signature over a report's root (once per report:
    /// what was checked is remembered).
    fn check_root(
        &self,
        computer: &ComputerId,
        counter: u64,
        root: &[u8; 32],
        scheme: u16,
        sig: &[u8],
        certificate: Option<&[u8]>,
    ) -> Result<(), String> {
        let certificate = certificate.ok_or("no certificate of the agent is known here")?;
        let message = seal::report_message(computer, counter, root);
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&message).into();
        if self
            .trust
            .attested
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&digest)
        {
            return Ok(());
        }
        cascade_trust::sign::verify_signature(certificate, scheme, &message, sig)?;
        let mut seen = self.trust.attested.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= ATTESTED_KEPT {
            seen.clear();
        }
        seen.insert(digest);
        Ok(())
    }

    /// Checks a report from a child: its records and tree nodes must make
    /// one tree, whose root its agent signed (checked once for all its
    /// records). Returns its records, each with its attestation, or none
    /// (the refusal is recorded); an error when the agent's certificate
    /// cannot be read here.
    pub fn check_report(
        &self,
        from: &str,
        report: cascade_core::report::Report,
        certificates: &std::collections::HashMap<ComputerId, Vec<u8>>,
    ) -> Result<Vec<ComplianceRecord>, StoreError> {
        let (computer, counter, scheme) = (report.computer.clone(), report.counter, report.scheme);
        let sig = report.sig.clone();
        let refuse = |d: String| {
            self.note_refusal(
                from,
                &Refused::new(Attack::BadSignature, format!("report {counter} of {computer}: {d}")),
            );
            Vec::new()
        };
        let Some((root, records)) = report.attested() else {
            return Ok(refuse("its records and tree nodes do not make one report".to_owned()));
        };
        let certificate = match certificates.get(&computer) {
            Some(c) => Some(c.clone()),
            None => self.known_certificate(&computer)?,
        };
        Ok(
            match self.check_root(&computer, counter, &root, scheme, &sig, certificate.as_deref()) {
                Ok(()) => records,
                Err(d) => refuse(d),
            },
        )
    }

    /// An agent's certificate as this node knows it (checked), if it does.
    fn known_certificate(&self, computer: &ComputerId) -> Result<Option<Vec<u8>>, StoreError> {
        let known = (self.trust.agent_keys.0.lock().unwrap_or_else(|e| e.into_inner()))
            .get(computer)
            .map(|(_, der)| der.to_vec());
        if let Some(der) = known {
            // Checked before; revoked since, it is known no more.
            return Ok(self.revocation_of(&der).is_none().then_some(der));
        }
        let Some(stored) = self.store.agent_certificate(computer)? else {
            return Ok(None);
        };
        Ok(self.check_agent_certificate(&stored).ok())
    }

    /// Checks a change (or a snapshot's object) against its origin's seal,
    /// and that the key that signed it is not revoked.
    pub fn check_change(&self, change: &Change, keys: Option<&SigningKey>, any_key: bool) -> Result<(), Refused> {
        cascade_trust::sign::check_change_with(&self.trust.ca_ders, change, keys, any_key, Some(&self.trust.verified))?;
        let (Some(seal), Some(keys)) = (&change.seal, keys) else {
            return Ok(());
        };
        let signing = keys
            .certificates
            .iter()
            .filter_map(|c| unb64(c))
            .find(|der| cascade_trust::sign::fingerprint(der) == seal.key);
        if let Some(why) = signing.and_then(|der| self.revocation_of(&der)) {
            return Err(Refused::new(
                Attack::BadSignature,
                format!(
                    "change {}/{} is signed with a revoked key: {why}",
                    change.origin, change.seq
                ),
            ));
        }
        Ok(())
    }

    /// Records and logs a refusal; returns the text for the link status.
    pub(crate) fn refused(&self, from: &str, e: StoreError) -> String {
        match e {
            StoreError::Refused(r) => self.note_refusal(from, &r),
            other => other.to_string(),
        }
    }

    /// Records and logs a refusal that names an attack.
    pub fn note_refusal(&self, from: &str, r: &Refused) -> String {
        tracing::warn!(attack = %r.attack, from, detail = %r.detail, "refused: {r}");
        metrics::counter!("cascade_refused_total", "attack" => r.attack.to_string()).increment(1);
        self.trust.refusals.push(Refusal {
            at: self.now(),
            from: from.to_owned(),
            attack: r.attack.to_string(),
            detail: r.detail.clone(),
        });
        r.to_string()
    }

    /// Seals this node's changes with its certificate's key, and publishes
    /// the key (a rotation when the certificate changed) as a signed change.
    pub(crate) fn publish_signing_key(&self) -> Result<(), StoreError> {
        use base64::Engine;
        let signer = self.config.tls.signer();
        self.store.set_signer(signer.clone());
        let mine = base64::engine::general_purpose::STANDARD.encode(signer.certificate());
        let key = ObjectKey {
            kind: ObjectKind::SigningKey,
            id: ObjectId::new(self.id.as_str()).map_err(|e| StoreError::Invalid(e.to_string()))?,
        };
        let mut certificates = match self.store.object(&key)?.map(|s| s.object.into_value()) {
            Some(Object::SigningKey(k)) => k.certificates,
            _ => Vec::new(),
        };
        if certificates.last() == Some(&mine) {
            return Ok(());
        }
        let rotation = !certificates.is_empty();
        certificates.push(mine);
        self.store
            .append_local(ChangeOp::Upsert(Object::SigningKey(SigningKey {
                node: self.id.clone(),
                certificates,
            })))?;
        if rotation {
            tracing::info!("published the new certificate's key: this node's changes are signed with it from now on");
        }
        Ok(())
    }

    /// The root as this node knows it: the one origin here that no site
    /// record places under a parent.
    pub fn root(&self) -> Result<Option<NodeId>, StoreError> {
        if self.parent_address().is_none() {
            return Ok(Some(self.id.clone()));
        }
        let sites = self.store.objects(ObjectKind::Site)?;
        let cursor = self.store.cursor()?;
        let mut roots = cursor.keys().filter(|origin| **origin != self.id).filter(|origin| {
            !sites
                .iter()
                .any(|s| matches!(s.object.value(), Object::Site(site) if site.id.as_str() == origin.as_str() && site.parent.is_some()))
        });
        let Some(root) = roots.next().cloned() else {
            return Ok(None);
        };
        Ok(roots.next().is_none().then_some(root))
    }

    /// The root's newest signed timestamp here, sealed as it came.
    pub fn root_timestamp(&self) -> Result<Option<cascade_store::StoredObject>, StoreError> {
        let Some(root) = self.root()? else {
            return Ok(None);
        };
        let Ok(id) = ObjectId::new(root.as_str()) else {
            return Ok(None);
        };
        let key = ObjectKey {
            kind: ObjectKind::Timestamp,
            id,
        };
        Ok(self.store.object(&key)?.filter(|s| s.origin == root))
    }

    pub fn freshness(&self) -> Result<Freshness, StoreError> {
        let root = self.root()?;
        let at = self.root_timestamp()?.and_then(|s| match s.object.into_value() {
            Object::Timestamp(t) => Some(t.at),
            _ => None,
        });
        let max = self.config.security.max_timestamp_age_seconds;
        let age = at.map(|at| self.now() - at);
        Ok(Freshness {
            root,
            timestamp: at,
            age_seconds: age,
            max_age_seconds: max,
            stale: age.is_none_or(|a| a > max as i64),
        })
    }

    /// The signed objects an assignment rests on, for the agent to check:
    /// the update of every step, the approvals and policies that approve
    /// it (with their signed overrides), the root's newest timestamp, and
    /// the signing keys of their origins.
    pub fn evidence(&self, assignment: &cascade_core::assignment::Assignment) -> Result<seal::Evidence, StoreError> {
        let mut evidence = seal::Evidence::default();
        let add = |evidence: &mut seal::Evidence, kind: ObjectKind, id: &str| -> Result<(), StoreError> {
            let Ok(id) = ObjectId::new(id) else {
                return Ok(());
            };
            if let Some(stored) = self.store.object(&ObjectKey { kind, id })? {
                evidence.objects.push(stored);
            }
            Ok(())
        };
        for step in &assignment.steps {
            add(&mut evidence, ObjectKind::Update, step.update.as_str())?;
        }
        // Overrides in the order the node applies them (the farthest
        // origin's first), so that the agent's check comes to the same.
        let rank: std::collections::HashMap<NodeId, usize> =
            self.sites_up()?.into_iter().enumerate().map(|(i, s)| (s, i)).collect();
        for policy in &assignment.policies {
            add(&mut evidence, ObjectKind::Policy, policy.as_str())?;
            let key = ObjectKey {
                kind: ObjectKind::Policy,
                id: policy.clone(),
            };
            let mut overrides = self.store.override_changes(&key)?;
            overrides.sort_by_key(|c| std::cmp::Reverse(rank.get(&c.origin).copied().unwrap_or(usize::MAX)));
            evidence.overrides.extend(overrides);
        }
        let steps: std::collections::BTreeSet<&cascade_core::UpdateId> =
            assignment.steps.iter().map(|s| &s.update).collect();
        for stored in self.store.objects(ObjectKind::Approval)? {
            if let Object::Approval(a) = stored.object.value()
                && steps.contains(&a.update)
                && assignment.policies.contains(&a.policy)
            {
                evidence.objects.push(stored);
            }
        }
        if let Some(t) = self.root_timestamp()? {
            evidence.objects.push(t);
        }
        let origins: std::collections::BTreeSet<NodeId> = evidence
            .objects
            .iter()
            .map(|o| o.origin.clone())
            .chain(evidence.overrides.iter().map(|o| o.origin.clone()))
            .collect();
        for origin in origins {
            add(&mut evidence, ObjectKind::SigningKey, origin.as_str())?;
        }
        Ok(evidence)
    }

    /// Picks up a renewed certificate written over the configured files:
    /// it must be the organisation CA's for this node. The new key signs
    /// from its published rotation on.
    pub fn reload_certificate(&self) -> Result<bool, String> {
        let roots = self.trust.ca_ders.clone();
        let id = self.id.clone();
        let renewed = self
            .config
            .tls
            .reload(|der| match cascade_trust::sign::verify_issued(der, &[], &roots) {
                Ok(cascade_trust::Identity::Node(n)) if n == id => Ok(()),
                Ok(other) => Err(format!("the certificate is for {other}, not node {id}")),
                Err(e) => Err(e.to_string()),
            })?;
        if renewed.is_none() {
            return Ok(false);
        }
        self.publish_signing_key().map_err(|e| e.to_string())?;
        self.changed();
        tracing::info!("picked up the renewed certificate");
        Ok(true)
    }

    /// The root's signed timestamp, made now.
    pub fn publish_timestamp(&self) -> Result<(), StoreError> {
        self.store.append_local(ChangeOp::Upsert(Object::Timestamp(Timestamp {
            node: self.id.clone(),
            at: self.now(),
        })))?;
        self.changed();
        Ok(())
    }
}

/// The root publishes a signed timestamp on its schedule; every node warns
/// when its newest one from the root is too old, and picks up a renewed
/// certificate.
pub async fn timestamps(node: std::sync::Arc<Node>) {
    let every = std::time::Duration::from_secs(node.config.security.timestamp_seconds);
    let mut warned = false;
    let mut reload_error = String::new();
    let mut last_stamp: Option<std::time::Instant> = None;
    loop {
        let n = node.clone();
        match n.run(move |n| n.reload_certificate()).await {
            Ok(_) => reload_error.clear(),
            Err(e) if e != reload_error => {
                tracing::error!(error = %e, "the certificate files were changed but cannot be used; the current certificate stays");
                reload_error = e;
            }
            Err(_) => {}
        }
        if node.parent_address().is_none() {
            if last_stamp.is_none_or(|at| at.elapsed() >= every) {
                let n = node.clone();
                match n.run(move |n| n.publish_timestamp()).await {
                    Ok(()) => last_stamp = Some(std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "cannot publish the signed timestamp"),
                }
            }
        } else {
            let fresh = match node.run(|n| n.freshness()).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the root's timestamp");
                    continue;
                }
            };
            if fresh.stale && fresh.timestamp.is_some() && !warned {
                let r = Refused::new(
                    Attack::Freeze,
                    format!(
                        "the root's newest signed timestamp here is {} s old (limit {} s): this node's view may be frozen",
                        fresh.age_seconds.unwrap_or_default(),
                        fresh.max_age_seconds
                    ),
                );
                node.note_refusal("parent", &r);
            }
            warned = fresh.stale;
        }
        // Every node looks at its certificate files at least once a minute.
        tokio::time::sleep(every.min(std::time::Duration::from_secs(60))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(computer: &str, chain: &[&str]) -> AgentCertificate {
        AgentCertificate {
            computer: ComputerId::new(computer).unwrap(),
            chain: chain.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn a_chain_checked_once_is_remembered_for_its_own_computer_only() {
        let checked = ChainsChecked::default();
        let a = cert("pc-a", &["bGVhZg==", "aW50ZXI="]);
        checked.insert(ChainsChecked::key(&a));
        assert!(checked.contains(&ChainsChecked::key(&a)));
        // Another computer, the leaf alone, another intermediate, the parts run together.
        for other in [
            cert("pc-b", &["bGVhZg==", "aW50ZXI="]),
            cert("pc-a", &["bGVhZg=="]),
            cert("pc-a", &["bGVhZg==", "b3RoZXI="]),
            cert("pc-a", &["bGVhZg==aW50ZXI="]),
            cert("pc-abGVhZg==", &["aW50ZXI="]),
        ] {
            assert!(!checked.contains(&ChainsChecked::key(&other)), "{other:?}");
        }
    }
}
