//! Every conversion between the protobuf messages of `proto/cascade/v1` and
//! Cascade's domain types, in both directions: `From` where a domain value
//! always makes a message, `TryFrom` where a message from a peer may not be
//! what it claims ([`Invalid`] names the field). Nodes and agents convert
//! here and nowhere else; what a conversion cannot know (who the peer is,
//! whether a signature holds) the caller checks after it.

use cascade_core::exact::{Decode, Exact};
use cascade_core::model::NodeId;

/// A message that cannot be what it claims: the text names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

pub(crate) fn invalid(text: impl Into<String>) -> Invalid {
    Invalid(text.into())
}

/// The longest Merkle path of any report or batch (2^40 leaves).
pub(crate) const MAX_PROOF: usize = 40;

pub(crate) fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], Invalid> {
    <[u8; 32]>::try_from(bytes).map_err(|_| invalid(format!("{what} is not 32 bytes")))
}

pub(crate) fn scheme(code: u32, what: &str) -> Result<u16, Invalid> {
    u16::try_from(code).map_err(|_| invalid(format!("{what} is not a TLS scheme code")))
}

pub(crate) fn node_id(raw: &str, what: &str) -> Result<NodeId, Invalid> {
    NodeId::new(raw).map_err(|e| invalid(format!("{what} {raw:?}: {e}")))
}

/// Signed bytes as they came: UTF-8 JSON, kept exactly and decoded for
/// this release's use.
pub(crate) fn exact<T: Decode>(bytes: &[u8], what: &str) -> Result<Exact<T>, Invalid> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(format!("{what} is not UTF-8")))?;
    Exact::from_json(text).map_err(|e| invalid(format!("{what}: {e}")))
}

mod agent;
mod hierarchy;

pub use agent::{AgentReport, CheckIn, CheckInAnswer};
pub use hierarchy::{DeclaredSubtree, SignedOverride};
