//! Generated gRPC code for `proto/cascade/v1`, and the conversions between
//! its messages and the domain types (`convert`).

#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("cascade.v1");
}

pub mod convert;

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// The protocol this release speaks. Nodes send it when they subscribe or
/// report to their parent and agents when they check in; every reply
/// carries the serving node's (README, "Upgrading"). Protocol 1 is the
/// first to send one, and speaks signed format 3.
pub const PROTOCOL: u32 = 1;

/// The oldest protocol this release serves. A caller that sends none is of
/// a release before protocol 1, which cannot verify signed format 3.
pub const MIN_PROTOCOL: u32 = 1;

/// The gRPC metadata key of the protocol.
pub const PROTOCOL_HEADER: &str = "cascade-protocol";

/// The protocol a peer named in `value` (0 when it named none or garbage:
/// a release before protocol 1).
pub fn protocol_in(value: Option<&[u8]>) -> u32 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A request with this release's protocol in its metadata.
pub fn with_protocol<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(PROTOCOL_HEADER, tonic::metadata::MetadataValue::from(PROTOCOL));
    request
}

/// The protocol a reply's metadata names.
pub fn protocol_of(metadata: &tonic::metadata::MetadataMap) -> u32 {
    protocol_in(metadata.get(PROTOCOL_HEADER).map(|v| v.as_bytes()))
}
