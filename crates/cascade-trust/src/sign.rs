//! Signing with a certificate's key and checking such signatures: what
//! seals every change at its origin and every report at its agent. Any key
//! type rustls signs with (ECDSA, Ed25519, RSA-PSS) works; ring only.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use sha2::{Digest, Sha256};

use cascade_core::model::{Change, ChangeOp, NodeId, Object, SigningKey};
use cascade_core::seal::{Attack, Refused, Seal, Tip};

use crate::{Identity, TrustError, cert_error, identity_of, validity_of};

/// The schemes a seal may use, in the order a key's scheme is chosen.
const SCHEMES: [SignatureScheme; 5] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Hex SHA-256 of a DER certificate: how a seal names its key.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs with the key of a certificate.
pub struct KeySigner {
    key: String,
    certificate: Vec<u8>,
    signer: Box<dyn rustls::sign::Signer>,
}

impl std::fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySigner({})", self.key)
    }
}

impl KeySigner {
    /// The signer of a PEM certificate (its first) and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<KeySigner, TrustError> {
        let certificate = crate::pem_certs(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| TrustError::Certificate("no certificate in the PEM text".into()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(cert_error)?;
        let signing: Arc<dyn rustls::sign::SigningKey> =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(cert_error)?;
        let signer = signing
            .choose_scheme(&SCHEMES)
            .ok_or_else(|| TrustError::Certificate("the key cannot make any signature a seal may use".into()))?;
        Ok(KeySigner {
            key: fingerprint(&certificate),
            certificate,
            signer,
        })
    }

    /// The DER certificate whose key signs.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }
}

impl cascade_core::seal::Signer for KeySigner {
    fn key(&self) -> &str {
        &self.key
    }

    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let sig = self.signer.sign(message).map_err(|e| e.to_string())?;
        Ok((u16::from(self.signer.scheme()), sig))
    }
}

fn algorithm(scheme: u16) -> Option<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    Some(match SignatureScheme::from(scheme) {
        SignatureScheme::ED25519 => webpki::ring::ED25519,
        SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
        SignatureScheme::RSA_PSS_SHA256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        SignatureScheme::RSA_PSS_SHA512 => webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        _ => return None,
    })
}

/// Checks `sig` over `message` with the key of the DER certificate.
pub fn verify_signature(certificate: &[u8], scheme: u16, message: &[u8], sig: &[u8]) -> Result<(), String> {
    let alg = algorithm(scheme).ok_or_else(|| format!("signature scheme {scheme:#06x} is not one a seal may use"))?;
    let der = CertificateDer::from(certificate);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("the signing certificate: {e:?}"))?;
    cert.verify_signature(alg, message, sig)
        .map_err(|_| "the signature does not verify with the signing certificate's key".to_owned())
}

const CHAIN_ALGORITHMS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
];

/// Checks that a DER certificate (with `intermediates`) chains to one of
/// the DER `roots` for client authentication as of `at` (Unix seconds), and
/// returns its identity.
pub fn verify_chain(
    certificate: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    at: i64,
) -> Result<Identity, TrustError> {
    let root_ders: Vec<CertificateDer<'_>> = roots.iter().map(|r| CertificateDer::from(r.as_slice())).collect();
    let anchors = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Certificate(format!("organisation CA: {e:?}")))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let der = CertificateDer::from(certificate);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| TrustError::Certificate(format!("{e:?}")))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
    cert.verify_for_usage(
        CHAIN_ALGORITHMS,
        &anchors,
        &inter,
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| TrustError::Certificate(format!("the certificate does not chain to the organisation CA: {e:?}")))?;
    identity_of(certificate)
}

/// Checks that a DER certificate was issued under the organisation CA: its
/// chain verified as of now, or as of its last valid second when it has
/// expired since (what it signed while valid stays valid).
// The trust crate's one read of the clock: a chain is checked as of now.
#[allow(clippy::disallowed_methods)]
pub fn verify_issued(certificate: &[u8], intermediates: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<Identity, TrustError> {
    let (from, to) = validity_of(certificate)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    verify_chain(certificate, intermediates, roots, now.clamp(from, to.max(from)))
}

/// The lower-case hex serial number of a DER certificate.
pub fn serial_of(der: &[u8]) -> Result<String, TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(cert_error)?;
    Ok(cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// Most certificates an origin's key history may hold.
pub const MAX_KEY_HISTORY: usize = 64;

fn der_of(b64: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Checks a change's seal against its origin's published keys (`keys`, as
/// they stand before the change). A change that publishes the origin's
/// keys must add one organisation-CA certificate for that node to the
/// history it extends and be signed by that new certificate's key; any
/// other change must be signed by the origin's current key, or with
/// `any_key` (an object of a snapshot, evidence for an agent) by any key
/// the origin ever published.
pub fn check_change(
    roots: &[Vec<u8>],
    change: &Change,
    keys: Option<&SigningKey>,
    any_key: bool,
) -> Result<(), Refused> {
    check_change_with(roots, change, keys, any_key, None)
}

/// [`check_change`], skipping signatures found in `verified` (a batch's
/// signature is checked once) and remembering the ones it checks.
pub fn check_change_with(
    roots: &[Vec<u8>],
    change: &Change,
    keys: Option<&SigningKey>,
    any_key: bool,
    verified: Option<&Verified>,
) -> Result<(), Refused> {
    let name = format!("change {}/{}", change.origin, change.seq);
    let bad = |detail: String| Refused::new(Attack::BadSignature, format!("{name}: {detail}"));
    let Some(seal) = &change.seal else {
        return Err(bad("it is unsigned".into()));
    };
    if let Some(why) = cascade_core::seal::unverifiable_format(seal.format) {
        return Err(bad(why));
    }
    let certificate = match change.op.value() {
        ChangeOp::Upsert(Object::SigningKey(new)) => {
            if new.node != change.origin {
                return Err(bad(format!(
                    "{} may not publish the keys of {}",
                    change.origin, new.node
                )));
            }
            if new.certificates.len() > MAX_KEY_HISTORY {
                return Err(Refused::new(
                    Attack::TooLarge,
                    format!("{name}: {} certificates in a key history", new.certificates.len()),
                ));
            }
            if !any_key && let Some(current) = keys {
                let extends = new.certificates.len() == current.certificates.len() + 1
                    && new.certificates.starts_with(&current.certificates);
                if !extends {
                    return Err(bad(
                        "a key rotation must add one certificate to the published history".into()
                    ));
                }
            }
            let checked = if any_key {
                &new.certificates[..]
            } else {
                &new.certificates[new.certificates.len().saturating_sub(1)..]
            };
            for b64 in checked {
                let der = der_of(b64).ok_or_else(|| bad("a published certificate is not base64".into()))?;
                match verify_issued(&der, &[], roots) {
                    Ok(Identity::Node(n)) if n == change.origin => {}
                    Ok(other) => return Err(bad(format!("the published certificate is for {other}"))),
                    Err(e) => return Err(bad(e.to_string())),
                }
            }
            new.certificates
                .last()
                .and_then(|b| der_of(b))
                .ok_or_else(|| bad("no certificate published".into()))?
        }
        _ => {
            let keys = keys.ok_or_else(|| bad(format!("{} has published no signing key here", change.origin)))?;
            let candidates: Vec<&String> = if any_key {
                keys.certificates.iter().collect()
            } else {
                keys.certificates.last().into_iter().collect()
            };
            candidates
                .into_iter()
                .filter_map(|b| der_of(b))
                .find(|der| fingerprint(der) == seal.key)
                .ok_or_else(|| {
                    bad(format!(
                        "signed by key {}, which is not {}'s {}key",
                        &seal.key[..seal.key.len().min(12)],
                        change.origin,
                        if any_key { "" } else { "current " }
                    ))
                })?
        }
    };
    if fingerprint(&certificate) != seal.key {
        return Err(bad("the seal names another key than the one that must sign".into()));
    }
    verify_seal(&certificate, seal, change.message(), verified).map_err(bad)
}

/// Signatures checked already (of a batch signed at once): the digest of
/// key, signature and message.
#[derive(Debug, Default)]
pub struct Verified(std::sync::Mutex<std::collections::HashSet<[u8; 32]>>);

/// Most signatures remembered before the set starts again.
const VERIFIED_KEPT: usize = 10_000;

fn verify_seal(
    certificate: &[u8],
    seal: &Seal,
    change_message: Vec<u8>,
    verified: Option<&Verified>,
) -> Result<(), String> {
    use base64::Engine;
    let message = seal
        .signed_message(change_message)
        .ok_or_else(|| "its batch proof does not fit its batch".to_owned())?;
    let seen: Option<[u8; 32]> = verified.map(|_| {
        let mut h = Sha256::new();
        h.update(&seal.key);
        h.update(seal.scheme.to_be_bytes());
        h.update(&seal.sig);
        h.update(&message);
        h.finalize().into()
    });
    if let (Some(v), Some(d)) = (verified, &seen)
        && v.0.lock().unwrap_or_else(|e| e.into_inner()).contains(d)
    {
        return Ok(());
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&seal.sig)
        .map_err(|_| "the signature is not base64".to_owned())?;
    verify_signature(certificate, seal.scheme, &message, &sig)?;
    if let (Some(v), Some(d)) = (verified, seen) {
        let mut set = v.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= VERIFIED_KEPT {
            set.clear();
        }
        set.insert(d);
    }
    Ok(())
}

/// Checks the seal of an origin's last change as a snapshot carries it
/// (without its operation), with any key the origin published.
pub fn check_tip(origin: &NodeId, tip: &Tip, keys: Option<&SigningKey>) -> Result<(), Refused> {
    let bad = |detail: String| {
        Refused::new(
            Attack::BadSignature,
            format!("last change {origin}/{}: {detail}", tip.seq),
        )
    };
    if let Some(why) = cascade_core::seal::unverifiable_format(tip.seal.format) {
        return Err(bad(why));
    }
    let keys = keys.ok_or_else(|| bad(format!("{origin} has published no signing key here")))?;
    let certificate = keys
        .certificates
        .iter()
        .filter_map(|b| der_of(b))
        .find(|der| fingerprint(der) == tip.seal.key)
        .ok_or_else(|| bad(format!("signed by a key {origin} never published")))?;
    verify_seal(&certificate, &tip.seal, tip.message(origin), None).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, pem_certs};
    use cascade_core::seal::Signer;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn a_node_key_signs_and_only_its_certificate_verifies() {
        let ca = Ca::generate("Example", NOW, 3650).unwrap();
        let a = Identity::Node(NodeId::new("a").unwrap());
        let b = Identity::Node(NodeId::new("b").unwrap());
        let ia = ca.issue(&a, &[], NOW, 30).unwrap();
        let ib = ca.issue(&b, &[], NOW, 30).unwrap();
        let signer = KeySigner::from_pem(&ia.cert_pem, &ia.key_pem).unwrap();
        let (scheme, sig) = signer.sign(b"hello").unwrap();
        let der_a = pem_certs(&ia.cert_pem).unwrap().remove(0);
        let der_b = pem_certs(&ib.cert_pem).unwrap().remove(0);
        assert_eq!(signer.key(), fingerprint(&der_a));
        verify_signature(&der_a, scheme, b"hello", &sig).unwrap();
        assert!(verify_signature(&der_a, scheme, b"hellO", &sig).is_err());
        assert!(verify_signature(&der_b, scheme, b"hello", &sig).is_err());
        assert!(
            verify_signature(&der_a, 0x0401, b"hello", &sig).is_err(),
            "PKCS#1 is not a seal scheme"
        );
        assert_eq!(verify_chain(&der_a, &[], &[ca.cert_der()], NOW + 60).unwrap(), a);
        let other = Ca::generate("Other", NOW, 3650).unwrap();
        assert!(verify_chain(&der_a, &[], &[other.cert_der()], NOW + 60).is_err());
        assert!(
            verify_chain(&der_a, &[], &[ca.cert_der()], NOW + 31 * 86_400).is_err(),
            "expired"
        );
        assert!(!serial_of(&der_a).unwrap().is_empty());
        assert_ne!(serial_of(&der_a).unwrap(), serial_of(&der_b).unwrap());
    }

    fn b64(der: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    }

    fn sealed(origin: &str, seq: u64, prev: &str, op: ChangeOp, signer: &KeySigner) -> Change {
        let mut c = Change::new(NodeId::new(origin).unwrap(), seq, op);
        c.seal_with(prev.to_owned(), String::new(), signer).unwrap();
        c
    }

    fn setting(n: i64) -> ChangeOp {
        ChangeOp::Upsert(Object::Setting(cascade_core::model::Setting {
            id: cascade_core::model::ObjectId::new("s").unwrap(),
            value: n.into(),
            overridable: false,
        }))
    }

    #[test]
    fn keys_are_published_and_rotated_as_signed_changes() {
        let ca = Ca::generate("Example", NOW, 3650).unwrap();
        let roots = [ca.cert_der()];
        let root = Identity::Node(NodeId::new("root").unwrap());
        let first = ca.issue(&root, &[], NOW, 30).unwrap();
        let renewed = ca.issue(&root, &[], NOW + 86_400, 30).unwrap();
        let old = KeySigner::from_pem(&first.cert_pem, &first.key_pem).unwrap();
        let new = KeySigner::from_pem(&renewed.cert_pem, &renewed.key_pem).unwrap();
        let key1 = SigningKey {
            node: NodeId::new("root").unwrap(),
            certificates: vec![b64(old.certificate())],
        };
        let publish = sealed("root", 1, "", ChangeOp::Upsert(Object::SigningKey(key1.clone())), &old);
        check_change(&roots, &publish, None, false).unwrap();
        let change = sealed("root", 2, &publish.digest(), setting(1), &old);
        check_change(&roots, &change, Some(&key1), false).unwrap();
        // Unsigned, or altered after signing.
        let mut unsigned = change.clone();
        unsigned.seal = None;
        assert!(
            check_change(&roots, &unsigned, Some(&key1), false)
                .unwrap_err()
                .detail
                .contains("unsigned")
        );
        let mut altered = change.clone();
        altered.op = setting(2).into();
        assert_eq!(
            check_change(&roots, &altered, Some(&key1), false).unwrap_err().attack,
            Attack::BadSignature
        );
        // A rotation adds the renewed certificate and is signed by its key.
        let key2 = SigningKey {
            node: NodeId::new("root").unwrap(),
            certificates: vec![b64(old.certificate()), b64(new.certificate())],
        };
        let rotation = sealed(
            "root",
            3,
            &change.digest(),
            ChangeOp::Upsert(Object::SigningKey(key2.clone())),
            &new,
        );
        check_change(&roots, &rotation, Some(&key1), false).unwrap();
        let after = sealed("root", 4, &rotation.digest(), setting(3), &new);
        check_change(&roots, &after, Some(&key2), false).unwrap();
        // The old key no longer signs new changes, though what it signed
        // stays valid (a snapshot's objects, an agent's evidence).
        let stale_key = sealed("root", 4, &rotation.digest(), setting(3), &old);
        let e = check_change(&roots, &stale_key, Some(&key2), false).unwrap_err();
        assert!(e.detail.contains("not root's current key"), "{e}");
        check_change(&roots, &stale_key, Some(&key2), true).unwrap();
        // A rotation that rewrites the history, names another node, or
        // comes from another CA is refused.
        let rewritten = SigningKey {
            node: NodeId::new("root").unwrap(),
            certificates: vec![b64(new.certificate())],
        };
        let c = sealed(
            "root",
            3,
            &change.digest(),
            ChangeOp::Upsert(Object::SigningKey(rewritten)),
            &new,
        );
        assert!(check_change(&roots, &c, Some(&key1), false).is_err());
        let other = ca
            .issue(&Identity::Node(NodeId::new("mid").unwrap()), &[], NOW, 30)
            .unwrap();
        let mid = KeySigner::from_pem(&other.cert_pem, &other.key_pem).unwrap();
        let stolen = SigningKey {
            node: NodeId::new("root").unwrap(),
            certificates: vec![b64(old.certificate()), b64(mid.certificate())],
        };
        let c = sealed(
            "root",
            3,
            &change.digest(),
            ChangeOp::Upsert(Object::SigningKey(stolen)),
            &mid,
        );
        let e = check_change(&roots, &c, Some(&key1), false).unwrap_err();
        assert!(e.detail.contains("node/mid"), "{e}");
        let rogue_ca = Ca::generate("Rogue", NOW, 3650).unwrap();
        let rogue = rogue_ca.issue(&root, &[], NOW, 30).unwrap();
        let rogue = KeySigner::from_pem(&rogue.cert_pem, &rogue.key_pem).unwrap();
        let forged = SigningKey {
            node: NodeId::new("root").unwrap(),
            certificates: vec![b64(old.certificate()), b64(rogue.certificate())],
        };
        let c = sealed(
            "root",
            3,
            &change.digest(),
            ChangeOp::Upsert(Object::SigningKey(forged)),
            &rogue,
        );
        assert_eq!(
            check_change(&roots, &c, Some(&key1), false).unwrap_err().attack,
            Attack::BadSignature
        );
        // Changes signed in one batch: each checks on its own, once the
        // batch's signature was checked; a proof moved to another place
        // does not.
        let mut batch: Vec<Change> = (5..8)
            .map(|seq| {
                let mut c = Change {
                    origin: NodeId::new("root").unwrap(),
                    seq,
                    op: setting(seq as i64).into(),
                    seal: None,
                };
                c.unsigned_seal(String::new(), String::new());
                c
            })
            .collect();
        cascade_core::seal::seal_batch(&mut batch, &new).unwrap();
        let verified = Verified::default();
        for c in &batch {
            check_change_with(&roots, c, Some(&key2), false, Some(&verified)).unwrap();
            check_change(&roots, c, Some(&key2), false).unwrap();
        }
        let mut moved = batch[0].clone();
        moved.seal.as_mut().unwrap().batch.as_mut().unwrap().index = 1;
        assert!(check_change_with(&roots, &moved, Some(&key2), false, Some(&verified)).is_err());
        let mut other = batch[1].clone();
        other.op = setting(42).into();
        assert!(check_change_with(&roots, &other, Some(&key2), false, Some(&verified)).is_err());

        // Another node cannot publish the root's keys.
        let c = sealed("mid", 1, "", ChangeOp::Upsert(Object::SigningKey(key1)), &mid);
        assert!(check_change(&roots, &c, None, false).is_err());
    }
}
