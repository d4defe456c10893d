//! Certificates and identities.
//!
//! An organisation CA issues every certificate. Who a peer is comes from the
//! URI subject alternative name of its verified certificate, never from a
//! request field: `cascade://node/<id>`, `cascade://agent/<id>`,
//! `cascade://admin/<name>?role=<role>`. Only the ring crypto provider is used.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use cascade_core::model::{ComputerId, NodeId};

pub mod sign;
mod token;
pub use token::EnrollmentToken;

/// An admin's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    SiteOperator,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::SiteOperator => "site-operator",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "site-operator" | "operator" => Some(Role::SiteOperator),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Node(NodeId),
    Agent(ComputerId),
    /// An administrator; a site operator is bound to the site whose
    /// subtree it operates.
    Admin {
        name: String,
        role: Role,
        site: Option<NodeId>,
    },
}

impl Identity {
    pub fn uri(&self) -> String {
        match self {
            Identity::Node(id) => format!("cascade://node/{id}"),
            Identity::Agent(id) => format!("cascade://agent/{id}"),
            Identity::Admin { name, role, site: None } => format!("cascade://admin/{name}?role={}", role.as_str()),
            Identity::Admin {
                name,
                role,
                site: Some(site),
            } => format!("cascade://admin/{name}?role={}&site={site}", role.as_str()),
        }
    }

    /// Parses a `cascade://` URI.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("cascade://")?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "node" => NodeId::new(rest).ok().map(Identity::Node),
            "agent" => ComputerId::new(rest).ok().map(Identity::Agent),
            "admin" => {
                let (name, query) = rest.split_once("?role=")?;
                let (role, site) = match query.split_once("&site=") {
                    Some((role, site)) => (role, Some(NodeId::new(site).ok()?)),
                    None => (query, None),
                };
                let role = Role::parse(role)?;
                // A site operator without a site would operate nowhere.
                if role == Role::SiteOperator && site.is_none() {
                    return None;
                }
                (!name.is_empty()).then(|| Identity::Admin {
                    name: name.to_owned(),
                    role,
                    site,
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("the certificate carries no cascade:// identity")]
    NoIdentity,
    #[error("enrollment token: {0}")]
    Token(String),
    #[error("the certificate is not valid now (valid {not_before} to {not_after})")]
    Expired { not_before: i64, not_after: i64 },
}

fn file_error(path: &Path, detail: impl fmt::Display) -> TrustError {
    TrustError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn cert_error(e: impl fmt::Display) -> TrustError {
    TrustError::Certificate(e.to_string())
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"(secret)")
            .finish()
    }
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` (the key readable by its owner only).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TrustError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).map_err(|e| file_error(&cert, e))?;
        write_secret(&key, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

fn write_secret(path: &Path, data: &[u8]) -> Result<(), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    f.write_all(data).map_err(|e| file_error(path, e))
}

fn time_at(unix: i64) -> Result<time::OffsetDateTime, TrustError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(cert_error)
}

/// The organisation CA.
#[derive(Debug)]
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
}

impl Ca {
    /// The CA's own DER certificate.
    pub fn cert_der(&self) -> Vec<u8> {
        pem_certs(&self.cert_pem)
            .ok()
            .and_then(|mut c| c.pop())
            .unwrap_or_default()
    }

    /// A new CA valid from `now` for `days`.
    pub fn generate(name: &str, now: i64, days: i64) -> Result<Ca, TrustError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} Cascade CA"));
        dn.push(DnType::OrganizationName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = time_at(now - 60)?;
        params.not_after = time_at(now + days * 86_400)?;
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Writes `ca.crt` and `ca.key` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TrustError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let cert = dir.join("ca.crt");
        if cert.exists() {
            return Err(file_error(&cert, "a CA exists here already; refusing to replace it"));
        }
        std::fs::write(&cert, &self.cert_pem).map_err(|e| file_error(&cert, e))?;
        write_secret(&dir.join("ca.key"), self.key.serialize_pem().as_bytes())
    }

    /// Reads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, TrustError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| file_error(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| file_error(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| file_error(&key_path, format!("not a private key: {e}")))?;
        Issuer::from_ca_cert_pem(&cert_pem, &key)
            .map_err(|e| file_error(&cert_path, format!("not a CA certificate: {e}")))?;
        Ok(Ca { cert_pem, key })
    }

    /// Reads a CA (the organisation CA or a site's enrollment CA) from its
    /// certificate and key files.
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Ca, TrustError> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(|e| file_error(cert_path, e))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(|e| file_error(key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| file_error(key_path, format!("not a private key: {e}")))?;
        Issuer::from_ca_cert_pem(&cert_pem, &key)
            .map_err(|e| file_error(cert_path, format!("not a CA certificate: {e}")))?;
        Ok(Ca { cert_pem, key })
    }

    /// Issues a certificate for `identity`, valid from `now` for `days`.
    /// Node certificates also name `localhost` and 127.0.0.1 plus `hosts`,
    /// so that they serve TLS as well as authenticate as clients.
    pub fn issue(&self, identity: &Identity, hosts: &[String], now: i64, days: i64) -> Result<Issued, TrustError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_error)?;
        let key = KeyPair::generate().map_err(cert_error)?;
        let params = leaf_params(identity, hosts, now, days)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a site's enrollment CA: a sub-CA that the site's node uses to
    /// sign its agents' certificate requests, so that no site holds the
    /// organisation CA's key. It may not issue further CAs.
    pub fn issue_enrollment_ca(&self, site: &NodeId, now: i64, days: i64) -> Result<Issued, TrustError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_error)?;
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Cascade agent enrollment CA of {site}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = time_at(now - 60)?;
        params.not_after = time_at(now + days * 86_400)?;
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a certificate request for `identity`. Only the request's public
    /// key is used: the names, usages and dates are this CA's choice, so a
    /// request cannot ask for another identity. Returns the certificate
    /// followed by this CA's certificate (the chain a client presents).
    pub fn sign_request(&self, csr_pem: &str, identity: &Identity, now: i64, days: i64) -> Result<String, TrustError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_error)?;
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TrustError::Certificate(format!("not a certificate request: {e}")))?;
        let request = rcgen::CertificateSigningRequestParams {
            params: leaf_params(identity, &[], now, days)?,
            public_key: request.public_key,
        };
        let cert = request.signed_by(&issuer).map_err(cert_error)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// The certificate parameters of a node, agent or admin certificate.
fn leaf_params(identity: &Identity, hosts: &[String], now: i64, days: i64) -> Result<CertificateParams, TrustError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.uri());
    params.distinguished_name = dn;
    let uri = identity.uri().try_into().map_err(cert_error)?;
    params.subject_alt_names.push(SanType::URI(uri));
    let mut usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if let Identity::Node(_) = identity {
        usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        params
            .subject_alt_names
            .push(SanType::DnsName("localhost".try_into().map_err(cert_error)?));
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        for host in hosts {
            match host.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params
                    .subject_alt_names
                    .push(SanType::DnsName(host.clone().try_into().map_err(cert_error)?)),
            }
        }
    }
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.not_before = time_at(now - 60)?;
    params.not_after = time_at(now + days * 86_400)?;
    Ok(params)
}

/// A new key and a certificate request for `identity` (PEM request, PEM
/// key). The key never leaves the requester.
pub fn certificate_request(identity: &Identity) -> Result<(String, String), TrustError> {
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.uri());
    params.distinguished_name = dn;
    params
        .subject_alt_names
        .push(SanType::URI(identity.uri().try_into().map_err(cert_error)?));
    let request = params.serialize_request(&key).map_err(cert_error)?;
    Ok((request.pem().map_err(cert_error)?, key.serialize_pem()))
}

/// The identity in a DER certificate (the first `cascade://` URI SAN).
pub fn identity_of(der: &[u8]) -> Result<Identity, TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(cert_error)?;
    let san = cert
        .subject_alternative_name()
        .map_err(cert_error)?
        .ok_or(TrustError::NoIdentity)?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => Identity::from_uri(uri),
            _ => None,
        })
        .ok_or(TrustError::NoIdentity)
}

/// The validity window of a DER certificate, as Unix seconds.
pub fn validity_of(der: &[u8]) -> Result<(i64, i64), TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(cert_error)?;
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// The DER certificates of a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()).map_err(cert_error))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn identities_round_trip() {
        for id in [
            Identity::Node(NodeId::new("site-a").unwrap()),
            Identity::Agent(ComputerId::new("pc-1").unwrap()),
            Identity::Admin {
                name: "alice".into(),
                role: Role::Auditor,
                site: None,
            },
            Identity::Admin {
                name: "bob".into(),
                role: Role::SiteOperator,
                site: Some(NodeId::new("site-a").unwrap()),
            },
        ] {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        assert_eq!(Identity::from_uri("cascade://admin/bob?role=site-operator"), None);
        assert_eq!(Identity::from_uri("https://node/x"), None);
        assert_eq!(Identity::from_uri("cascade://admin/bob?role=king"), None);
    }

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = Ca::generate("Example", NOW, 3650).unwrap();
        let node = Identity::Node(NodeId::new("site-a").unwrap());
        let issued = ca.issue(&node, &["node-a.example".into()], NOW, 30).unwrap();
        let der = pem_certs(&issued.cert_pem).unwrap().remove(0);
        assert_eq!(identity_of(&der).unwrap(), node);
        let (from, to) = validity_of(&der).unwrap();
        assert!(from <= NOW && to == NOW + 30 * 86_400);
        let dir = tempfile::tempdir().unwrap();
        ca.write(dir.path()).unwrap();
        assert!(ca.write(dir.path()).is_err(), "an existing CA is never replaced");
        let again = Ca::load(dir.path()).unwrap();
        let admin = Identity::Admin {
            name: "alice".into(),
            role: Role::Admin,
            site: None,
        };
        let der = pem_certs(&again.issue(&admin, &[], NOW, 1).unwrap().cert_pem)
            .unwrap()
            .remove(0);
        assert_eq!(identity_of(&der).unwrap(), admin);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn an_enrollment_ca_signs_requests_with_the_identity_it_chooses() {
        let ca = Ca::generate("Example", NOW, 3650).unwrap();
        let site = NodeId::new("site-a").unwrap();
        let sub = ca.issue_enrollment_ca(&site, NOW, 365).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = sub.write(dir.path(), "enroll").unwrap();
        let sub = Ca::load_files(&cert, &key).unwrap();
        let asked = Identity::Admin {
            name: "mallory".into(),
            role: Role::Admin,
            site: None,
        };
        let (csr, _key) = certificate_request(&asked).unwrap();
        let agent = Identity::Agent(ComputerId::new("pc-1").unwrap());
        let chain = sub.sign_request(&csr, &agent, NOW, 30).unwrap();
        let ders = pem_certs(&chain).unwrap();
        assert_eq!(ders.len(), 2, "the certificate and the enrollment CA");
        assert_eq!(
            identity_of(&ders[0]).unwrap(),
            agent,
            "the request's own names are ignored"
        );
        assert!(
            sub.sign_request(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &agent,
                NOW,
                1
            )
            .is_err()
        );
    }
}
