//! Golden vectors of the signed format (docs/signed-format.md): changes
//! sealed in format 2 (the first signed release's struct-ordered JSON) and
//! format 3 (canonical JSON), single and batch-signed, an origin's last
//! change as a snapshot carries it, and an agent's attested report. They
//! were made once and are never made again: every later release must
//! verify them as they are. A later format adds vectors beside them.

#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::exact::Exact;
use cascade_core::model::{
    Approval, Change, ChangeOp, ComplianceRecord, ComputerId, NodeId, Object, ObjectId, ObjectKey, ObjectKind, Policy,
    Setting, SigningKey,
};
use cascade_core::seal::{self, Seal, Signer, StateHash, Tip};
use cascade_store::Store;
use cascade_trust::sign::KeySigner;
use cascade_trust::{Ca, Identity};
use serde::{Deserialize, Serialize};

const GOLDEN: &str = include_str!("golden/signed-formats.json");

#[derive(Serialize, Deserialize)]
struct Golden {
    about: String,
    ca: String,
    /// Signed format -> the root's log from its first change.
    changes: BTreeMap<u16, Vec<Change>>,
    /// Signed format -> the root's last change, as a snapshot carries it.
    tips: BTreeMap<u16, Tip>,
    agent_certificate: String,
    records: Vec<ComplianceRecord>,
}

fn golden() -> Golden {
    serde_json::from_str(GOLDEN).unwrap()
}

fn root() -> NodeId {
    NodeId::new("root").unwrap()
}

fn apply(golden: &Golden, changes: &[Change]) -> Result<Store, cascade_store::StoreError> {
    let roots = cascade_trust::pem_certs(&golden.ca).unwrap();
    let store = Store::temporary(NodeId::new("site").unwrap()).unwrap();
    store.apply_verified(changes, &|change, keys, any_key| {
        cascade_trust::sign::check_change(&roots, change, keys, any_key)
    })?;
    Ok(store)
}

#[test]
fn changes_sealed_by_earlier_releases_verify() {
    let golden = golden();
    assert_eq!(golden.changes.keys().copied().collect::<Vec<_>>(), [2, 3]);
    for (format, changes) in &golden.changes {
        assert!(changes.iter().all(|c| c.seal.as_ref().unwrap().format == *format));
        let store = apply(&golden, changes).unwrap_or_else(|e| panic!("format {format}: {e}"));
        let head = changes.last().unwrap();
        assert_eq!(store.applied_seq(&root()).unwrap(), head.seq);
        // Stored as signed: the bytes read back are the vectors' bytes.
        for change in changes {
            if let Some(object) = change.op.upserted().unwrap()
                && let Some(stored) = store.object(&object.key().unwrap()).unwrap()
                && stored.seq == change.seq
            {
                assert_eq!(stored.object.raw(), object.raw(), "format {format}");
            }
        }
        // The last change as a snapshot carries it, with the published key.
        let keys = match changes[0].op.value() {
            ChangeOp::Upsert(Object::SigningKey(k)) => k.clone(),
            other => panic!("{other:?}"),
        };
        let tip = &golden.tips[format];
        cascade_trust::sign::check_tip(&root(), tip, Some(&keys)).unwrap();
        assert_eq!(tip.digest(&root()), head.digest());
    }
    // Format 3's batch: one signature over several changes.
    assert!(
        golden.changes[&3]
            .iter()
            .filter(|c| c.seal.as_ref().unwrap().batch.is_some())
            .count()
            >= 3
    );
}

#[test]
fn a_byte_changed_in_a_golden_change_is_refused() {
    let golden = golden();
    for (format, changes) in &golden.changes {
        let mut altered = changes.clone();
        let target = &mut altered[1];
        let text = target.op.raw().replacen("1800", "1801", 1);
        assert_ne!(text, target.op.raw(), "format {format}: the vector holds 1800");
        target.op = Exact::from_json(&text).unwrap();
        let refused = apply(&golden, &altered).err().unwrap().to_string();
        assert!(
            refused.contains("bad-signature") || refused.contains("bad signature"),
            "{refused}"
        );
        // A seal relabelled as another format does not verify either.
        let mut relabelled = changes.clone();
        let seal = relabelled[1].seal.as_mut().unwrap();
        seal.format = if *format == 2 { 3 } else { 2 };
        assert!(apply(&golden, &relabelled).is_err(), "format {format}");
    }
}

#[test]
fn an_agents_golden_report_verifies() {
    let golden = golden();
    let roots = cascade_trust::pem_certs(&golden.ca).unwrap();
    let der = cascade_trust::pem_certs(&golden.agent_certificate).unwrap().remove(0);
    let computer = match cascade_trust::sign::verify_issued(&der, &[], &roots).unwrap() {
        Identity::Agent(c) => c,
        other => panic!("{other}"),
    };
    assert_eq!(golden.records.len(), 3);
    for record in &golden.records {
        assert_eq!(record.computer, computer);
        let a = record.attestation.as_ref().unwrap();
        let root = seal::merkle_root_from(seal::record_leaf(record), a.index, a.count, &a.proof).unwrap();
        let message = seal::report_message(&computer, record.counter, &root);
        cascade_trust::sign::verify_signature(&der, a.scheme, &message, &a.sig).unwrap();
        let mut other = record.clone();
        other.observed_at += 1;
        let root = seal::merkle_root_from(seal::record_leaf(&other), a.index, a.count, &a.proof).unwrap();
        let message = seal::report_message(&computer, record.counter, &root);
        assert!(cascade_trust::sign::verify_signature(&der, a.scheme, &message, &a.sig).is_err());
    }
}

/// Makes the vectors. Run once, when a format is added:
/// `cargo test -p cascade-node --test golden -- --ignored write_golden_vectors`;
/// never to replace vectors already committed.
#[test]
#[ignore]
fn write_golden_vectors() {
    let now = 1_796_083_200; // 2026-12-01
    let ca = Ca::generate("Cascade golden vectors", now, 36_500).unwrap();
    let issued = ca.issue(&Identity::Node(root()), &[], now, 36_500).unwrap();
    let signer = KeySigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let der = cascade_trust::pem_certs(&issued.cert_pem).unwrap().remove(0);
    use base64::Engine;
    let keys = Object::SigningKey(SigningKey {
        node: root(),
        certificates: vec![base64::engine::general_purpose::STANDARD.encode(&der)],
    });
    let setting = |id: &str, value: i64| {
        Object::Setting(Setting {
            id: ObjectId::new(id).unwrap(),
            value: value.into(),
            overridable: true,
        })
    };
    let mut policy = Policy::new(ObjectId::new("servers").unwrap(), "Servers");
    policy.enabled = true;
    policy.overridable = ["enabled".to_owned()].into();
    let approval = Object::Approval(Approval {
        id: ObjectId::new("servers-kb5034441").unwrap(),
        policy: ObjectId::new("servers").unwrap(),
        update: cascade_core::UpdateId::new("KB5034441"),
        deadline: Some(now + 7 * 86_400),
    });

    // Format 3, as this release's store seals its own changes.
    let store = Store::temporary(root()).unwrap();
    store.set_signer(Arc::new(
        KeySigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap(),
    ));
    store.append_local(ChangeOp::Upsert(keys.clone())).unwrap();
    store
        .append_local(ChangeOp::Upsert(setting("scan-interval", 1800)))
        .unwrap();
    store
        .append_local_many(vec![
            ChangeOp::Upsert(Object::Policy(Box::new(policy.clone()))),
            ChangeOp::Upsert(approval.clone()),
            ChangeOp::Upsert(setting("report-interval", 900)),
        ])
        .unwrap();
    store
        .append_local(ChangeOp::Delete(ObjectKey {
            kind: ObjectKind::Setting,
            id: ObjectId::new("report-interval").unwrap(),
        }))
        .unwrap();
    let format3 = store.changes_since(&root(), 0, 100).unwrap().unwrap();
    let tip3 = store.snapshot(&[root()]).unwrap().tips[&root()].clone();

    // Format 2: the first signed release's bytes (fields in declaration
    // order) and seals, one signature per change.
    let mut state = StateHash::default();
    let mut prev = String::new();
    let mut format2 = Vec::new();
    for (seq, op) in [
        ChangeOp::Upsert(keys),
        ChangeOp::Upsert(setting("scan-interval", 1800)),
        ChangeOp::Upsert(Object::Policy(Box::new(policy))),
    ]
    .into_iter()
    .enumerate()
    {
        let seq = seq as u64 + 1;
        let op: Exact<ChangeOp> = Exact::from_json(&serde_json::to_string(&op).unwrap()).unwrap();
        state.add(&seal::element(&root(), seq, &op));
        let message = seal::change_message(2, &root(), seq, &prev, &state.digest(), &seal::op_digest(&op));
        let (scheme, sig) = signer.sign(&message).unwrap();
        let change = Change {
            origin: root(),
            seq,
            op,
            seal: Some(Seal {
                format: 2,
                prev: prev.clone(),
                state: state.digest(),
                key: signer.key().to_owned(),
                scheme,
                sig: base64::engine::general_purpose::STANDARD.encode(sig),
                batch: None,
            }),
        };
        prev = change.digest();
        format2.push(change);
    }
    let tip2 = format2.last().unwrap().tip().unwrap();

    // An agent's report of three records.
    let computer = ComputerId::new("pc-golden").unwrap();
    let agent = ca.issue(&Identity::Agent(computer.clone()), &[], now, 36_500).unwrap();
    let agent_signer = KeySigner::from_pem(&agent.cert_pem, &agent.key_pem).unwrap();
    let mut records: Vec<ComplianceRecord> = [
        ("KB5034441", cascade_core::ComplianceState::Installed),
        ("KB5034439", cascade_core::ComplianceState::Required),
        ("KB890830", cascade_core::ComplianceState::Failed { code: 0x80070643 }),
    ]
    .into_iter()
    .map(|(update, state)| ComplianceRecord {
        computer: computer.clone(),
        update: cascade_core::UpdateId::new(update),
        site: root(),
        state,
        severity: cascade_core::Severity::Important,
        counter: 7,
        observed_at: now,
        attestation: None,
    })
    .collect();
    let (scheme, sig) = seal::sign_report(&agent_signer, &computer, 7, &records).unwrap();
    seal::attest(&mut records, scheme, &sig);

    let golden = Golden {
        about: "Signed-format golden vectors (docs/signed-format.md). Made once; every later release must verify them unchanged.".into(),
        ca: ca.cert_pem.clone(),
        changes: BTreeMap::from([(2, format2), (3, format3)]),
        tips: BTreeMap::from([(2, tip2), (3, tip3)]),
        agent_certificate: agent.cert_pem,
        records,
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/signed-formats.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
}
