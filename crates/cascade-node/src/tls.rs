//! This node's certificate and key as they are now. A renewed certificate
//! written over the configured files is picked up while the node runs: new
//! connections (gRPC, the API, links to the parent) present it at once,
//! connections already open go on until they end, and the new key signs
//! this node's changes from a published key rotation on.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cascade_trust::sign::KeySigner;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate the servers present, swapped on renewal.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

#[derive(Debug, Clone)]
struct Material {
    cert_pem: String,
    key_pem: String,
    signer: Arc<KeySigner>,
}

/// This node's TLS identity and signing key.
#[derive(Debug)]
pub struct NodeTls {
    material: RwLock<Material>,
    current: Arc<Current>,
    /// Where the certificate and key are read again from (none for nodes
    /// configured in memory).
    files: Option<(PathBuf, PathBuf)>,
}

fn certified(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not belong to the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

impl NodeTls {
    pub fn new(
        cert_pem: &str,
        key_pem: &str,
        signer: Arc<KeySigner>,
        files: Option<(PathBuf, PathBuf)>,
    ) -> Result<NodeTls, String> {
        Ok(NodeTls {
            current: Arc::new(Current(RwLock::new(certified(cert_pem, key_pem)?))),
            material: RwLock::new(Material {
                cert_pem: cert_pem.to_owned(),
                key_pem: key_pem.to_owned(),
                signer,
            }),
            files,
        })
    }

    /// The certificate and key PEM for new outgoing connections.
    pub fn identity(&self) -> (String, String) {
        let m = self.material.read().unwrap_or_else(|e| e.into_inner());
        (m.cert_pem.clone(), m.key_pem.clone())
    }

    /// The key that seals this node's changes now.
    pub fn signer(&self) -> Arc<KeySigner> {
        self.material.read().unwrap_or_else(|e| e.into_inner()).signer.clone()
    }

    /// What servers present: always the current certificate.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.current.clone()
    }

    /// Reads the configured files again. Returns the new signer when they
    /// hold a different certificate that `check` accepts; nothing changes
    /// when they cannot be read or are refused (the error says why).
    pub fn reload(&self, check: impl FnOnce(&[u8]) -> Result<(), String>) -> Result<Option<Arc<KeySigner>>, String> {
        let Some((cert_path, key_path)) = &self.files else {
            return Ok(None);
        };
        let cert_pem = std::fs::read_to_string(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        if cert_pem == self.material.read().unwrap_or_else(|e| e.into_inner()).cert_pem {
            return Ok(None);
        }
        let key_pem = std::fs::read_to_string(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let certified = certified(&cert_pem, &key_pem).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        check(certified.cert[0].as_ref()).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let signer =
            Arc::new(KeySigner::from_pem(&cert_pem, &key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?);
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = certified;
        *self.material.write().unwrap_or_else(|e| e.into_inner()) = Material {
            cert_pem,
            key_pem,
            signer: signer.clone(),
        };
        Ok(Some(signer))
    }
}
