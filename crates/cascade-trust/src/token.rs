//! Enrollment tokens: one-time secrets with which an agent asks a node for
//! its certificate. A token also carries the organisation CA's certificate,
//! so that `cascade agent enroll --token T --node URL` can verify the node
//! it talks to without any other file.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cascade_core::model::NodeId;
use sha2::Digest;

use crate::{TrustError, pem_certs};

const PREFIX: &str = "cascade-enroll1";

/// A decoded enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// The site whose node redeems it.
    pub site: NodeId,
    secret: [u8; 32],
    /// The organisation CA, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("site", &self.site)
            .field("secret", &"(secret)")
            .finish()
    }
}

fn token_error(detail: impl std::fmt::Display) -> TrustError {
    TrustError::Token(detail.to_string())
}

impl EnrollmentToken {
    /// A new token with a random secret.
    pub fn generate(site: NodeId, ca_pem: &str) -> EnrollmentToken {
        EnrollmentToken {
            site,
            secret: rand::random(),
            ca_pem: ca_pem.to_owned(),
        }
    }

    /// What the node keeps: the secret's SHA-256 (hex), never the secret.
    pub fn secret_hash(&self) -> String {
        hex(&sha2::Sha256::digest(self.secret))
    }

    pub fn encode(&self) -> Result<String, TrustError> {
        let ca = pem_certs(&self.ca_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| token_error("the CA file holds no certificate"))?;
        Ok(format!(
            "{PREFIX}.{}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.site.as_str()),
            URL_SAFE_NO_PAD.encode(self.secret),
            URL_SAFE_NO_PAD.encode(ca)
        ))
    }

    pub fn decode(text: &str) -> Result<EnrollmentToken, TrustError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [prefix, site, secret, ca] = parts[..] else {
            return Err(token_error(
                "not an enrollment token (expected four parts separated by dots)",
            ));
        };
        if prefix != PREFIX {
            return Err(token_error(format!("not an enrollment token (it starts {prefix:?})")));
        }
        let bytes = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|e| token_error(format!("its {what} is not base64url: {e}")))
        };
        let site = String::from_utf8(bytes(site, "site")?).map_err(|_| token_error("its site is not text"))?;
        let site = NodeId::new(&site).map_err(token_error)?;
        let secret: [u8; 32] = bytes(secret, "secret")?
            .try_into()
            .map_err(|_| token_error("its secret is not 32 bytes"))?;
        let der = bytes(ca, "CA certificate")?;
        x509_parser::parse_x509_certificate(&der).map_err(|e| token_error(format!("its CA certificate: {e}")))?;
        let body = STANDARD.encode(&der);
        let mut ca_pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            ca_pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            ca_pem.push('\n');
        }
        ca_pem.push_str("-----END CERTIFICATE-----\n");
        Ok(EnrollmentToken { site, secret, ca_pem })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let ca = Ca::generate("Example", 1_780_000_000, 10).unwrap();
        let token = EnrollmentToken::generate(NodeId::new("site-a").unwrap(), &ca.cert_pem);
        let text = token.encode().unwrap();
        let back = EnrollmentToken::decode(&text).unwrap();
        assert_eq!(back, token);
        assert_eq!(pem_certs(&back.ca_pem).unwrap(), pem_certs(&ca.cert_pem).unwrap());
        assert_eq!(back.secret_hash().len(), 64);
        let other = EnrollmentToken::generate(NodeId::new("site-a").unwrap(), &ca.cert_pem);
        assert_ne!(other.secret_hash(), token.secret_hash());
        for (bad, why) in [
            ("hello", "four parts"),
            ("x.a.b.c", "starts \"x\""),
            (
                &text.replace("cascade-enroll1.", "cascade-enroll1.%%"),
                "site is not base64url",
            ),
        ] {
            let e = EnrollmentToken::decode(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
