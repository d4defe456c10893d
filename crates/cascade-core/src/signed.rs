//! The data types of seals and attestations, how their hashes and
//! signatures are written in JSON, and the digest of a value's JSON. A
//! leaf: the model names these types, and `seal.rs` fixes the bytes they
//! sign.

use serde::{Deserialize, Serialize};

/// The origin's signature over a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// Version of the signed format (docs/signed-format.md); absent in the
    /// seals of format 2, the first signed release's.
    #[serde(rename = "v", default = "legacy_format", skip_serializing_if = "is_legacy_format")]
    pub format: u16,
    /// Hex digest of the origin's previous change ("" before its first).
    pub prev: String,
    /// Hex digest of everything the origin owns once this change is
    /// applied (see `seal::StateHash`): a snapshot or a history that lost,
    /// added or swapped an object does not match it.
    pub state: String,
    /// Hex SHA-256 of the certificate whose key signed.
    pub key: String,
    /// TLS signature scheme code of the signature.
    pub scheme: u16,
    /// Base64 signature over `seal::change_message`, or over `seal::batch_message`
    /// when the change was signed with others in one batch.
    pub sig: String,
    /// The change's place among a batch signed at once (an import): one
    /// signature over the Merkle root of their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchProof>,
}

fn legacy_format() -> u16 {
    2
}

fn is_legacy_format(format: &u16) -> bool {
    *format == 2
}

/// Where a change sits in a batch signed at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchProof {
    pub index: u32,
    pub count: u32,
    /// Hex sibling hashes from the change's digest up to the root.
    pub proof: Vec<String>,
}

/// The last change of an origin without its operation: enough to check
/// its seal, and so the state a snapshot must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tip {
    pub seq: u64,
    /// `seal::op_digest` of its operation.
    pub op: String,
    pub seal: Seal,
}

/// How one record of an agent's report proves it came from that report:
/// its place among the report's records, the Merkle path to their root,
/// and the agent's signature over the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub index: u32,
    pub count: u32,
    /// Sibling hashes from the leaf up (hex in JSON).
    #[serde(with = "serde_bytes::hashes")]
    #[schemars(with = "Vec<String>")]
    pub proof: Vec<[u8; 32]>,
    pub scheme: u16,
    /// Signature over `seal::report_message` (base64 in JSON).
    #[serde(with = "serde_bytes::base64")]
    #[schemars(with = "String")]
    pub sig: Vec<u8>,
}

/// The SHA-256 of `prefix` then `value`'s JSON, written straight into the
/// hash (no buffer: leaves and inventory hashes are made for every record
/// and every check-in).
pub(crate) fn json_digest(prefix: &[u8], value: &impl Serialize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    h.0.update(prefix);
    // Writing to a hash cannot fail, nor can the JSON of our own plain data.
    let _ = serde_json::to_writer(&mut h, value);
    h.0.finalize().into()
}

/// Parses a hex hash of a proof.
pub fn hash_from_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (digit(bytes[2 * i])? << 4) | digit(bytes[2 * i + 1])?;
    }
    Some(out)
}

/// Hex form of a hash.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Hashes as hex strings and signatures as base64 in JSON, raw in memory.
mod serde_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub mod hashes {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|h| super::super::hex(h)))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|h| super::super::hash_from_hex(h).ok_or_else(|| serde::de::Error::custom("not a hex hash")))
                .collect()
        }
    }

    pub mod base64 {
        use super::*;
        use ::base64::Engine;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&::base64::engine::general_purpose::STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            ::base64::engine::general_purpose::STANDARD
                .decode(String::deserialize(d)?)
                .map_err(|_| serde::de::Error::custom("not base64"))
        }
    }
}
