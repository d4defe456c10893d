//! Key layout of the single tree. Parts are separated by NUL, which ids may
//! not contain; sequence numbers are big-endian so keys sort by them.

use cascade_core::UpdateId;
use cascade_core::model::{ComputerId, NodeId, ObjectKey, ObjectKind};

pub const FORMAT: &[u8] = b"m/format";
pub const COMMITS: &[u8] = b"m/commits";
pub const NODE: &[u8] = b"m/node";
pub const PARENT: &[u8] = b"m/parent";
pub const MOVED_TO: &[u8] = b"m/moved-to";
pub const LINKS: &[u8] = b"m/links";
pub const OUTBOX_NEXT: &[u8] = b"m/outbox-next";
pub const OUTBOX_ACKED: &[u8] = b"m/outbox-acked";
pub const OUTBOX_SNAPSHOT: &[u8] = b"m/outbox-snapshot";
pub const AUDIT_NEXT: &[u8] = b"m/audit-next";

pub const LOG: &[u8] = b"l/";
pub const OBJECT: &[u8] = b"o/";
pub const OVERRIDE: &[u8] = b"v/";
pub const APPLIED: &[u8] = b"a/";
pub const FLOOR: &[u8] = b"f/";
pub const HEAD: &[u8] = b"hd/";
pub const STATE: &[u8] = b"st/";
pub const TIP: &[u8] = b"tp/";
pub const SUBSCRIBER: &[u8] = b"s/";
pub const COMPLIANCE: &[u8] = b"c/";
/// Format 4's index of every computer with a record of an update: left
/// by older stores, removed when one is opened.
pub const BY_UPDATE_V4: &[u8] = b"cu/";
/// The computers whose record of an update is not compliant, by update,
/// state and site.
pub const NEEDS: &[u8] = b"cr/";
pub const BY_SITE: &[u8] = b"cs/";
pub const COUNT_UPDATE: &[u8] = b"gu/";
pub const COUNT_SITE: &[u8] = b"gs/";
pub const INBOX: &[u8] = b"h/";
pub const OUTBOX: &[u8] = b"q/";
pub const AGENT: &[u8] = b"ag/";
pub const AGENT_CERT: &[u8] = b"ak/";
pub const INVENTORY: &[u8] = b"in/";
pub const AUDIT: &[u8] = b"au/";
pub const TOKEN: &[u8] = b"tk/";
pub const EVENT: &[u8] = b"ev/";
pub const API_TOKEN: &[u8] = b"at/";
/// Computer summaries, by computer, and by site.
pub const SUMMARY: &[u8] = b"cm/";
pub const SUMMARY_SITE: &[u8] = b"cn/";
/// Failed records counted by update, installer code and site.
pub const COUNT_FAILURE: &[u8] = b"gf/";
/// How many computers have compliance here (one key).
pub const COUNT_COMPUTERS: &[u8] = b"gc";
/// Daily snapshots of the aggregates.
pub const HISTORY: &[u8] = b"hy/";

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    key.extend_from_slice(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(p);
    }
    key
}

/// The key with a trailing separator: every key under it.
pub fn under(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = join(prefix, parts);
    key.push(0);
    key
}

pub fn log(origin: &NodeId, seq: u64) -> Vec<u8> {
    join(LOG, &[origin.as_str().as_bytes(), &seq.to_be_bytes()])
}

pub fn object(key: &ObjectKey) -> Vec<u8> {
    join(OBJECT, &[key.kind.as_str().as_bytes(), key.id.as_str().as_bytes()])
}

pub fn objects_of(kind: ObjectKind) -> Vec<u8> {
    under(OBJECT, &[kind.as_str().as_bytes()])
}

pub fn override_of(key: &ObjectKey, origin: &NodeId) -> Vec<u8> {
    join(
        OVERRIDE,
        &[
            key.kind.as_str().as_bytes(),
            key.id.as_str().as_bytes(),
            origin.as_str().as_bytes(),
        ],
    )
}

pub fn overrides_of(key: &ObjectKey) -> Vec<u8> {
    under(OVERRIDE, &[key.kind.as_str().as_bytes(), key.id.as_str().as_bytes()])
}

pub fn applied(origin: &NodeId) -> Vec<u8> {
    join(APPLIED, &[origin.as_str().as_bytes()])
}

pub fn floor(origin: &NodeId) -> Vec<u8> {
    join(FLOOR, &[origin.as_str().as_bytes()])
}

pub fn head(origin: &NodeId) -> Vec<u8> {
    join(HEAD, &[origin.as_str().as_bytes()])
}

pub fn state(origin: &NodeId) -> Vec<u8> {
    join(STATE, &[origin.as_str().as_bytes()])
}

pub fn tip(origin: &NodeId) -> Vec<u8> {
    join(TIP, &[origin.as_str().as_bytes()])
}

pub fn subscriber(subscriber: &NodeId, origin: &NodeId) -> Vec<u8> {
    join(
        SUBSCRIBER,
        &[subscriber.as_str().as_bytes(), origin.as_str().as_bytes()],
    )
}

/// One computer's compliance records (format 2).
pub fn compliance(computer: &ComputerId) -> Vec<u8> {
    join(COMPLIANCE, &[computer.as_str().as_bytes()])
}

/// A computer whose record of `update` at `site` is in `state` (a tag of a
/// state that is not compliant, so never 0).
pub fn needs(update: &UpdateId, state: u8, site: &str, computer: &ComputerId) -> Vec<u8> {
    join(
        NEEDS,
        &[
            update.as_str().as_bytes(),
            &[state],
            site.as_bytes(),
            computer.as_str().as_bytes(),
        ],
    )
}

/// A computer with at least one record for a site.
pub fn by_site(site: &str, computer: &ComputerId) -> Vec<u8> {
    join(BY_SITE, &[site.as_bytes(), computer.as_str().as_bytes()])
}

pub fn count_update(update: &UpdateId, state: u8) -> Vec<u8> {
    join(COUNT_UPDATE, &[update.as_str().as_bytes(), &[state]])
}

pub fn count_site_raw(site: &str, severity: u8, state: u8) -> Vec<u8> {
    join(COUNT_SITE, &[site.as_bytes(), &[severity], &[state]])
}

pub fn summary(computer: &ComputerId) -> Vec<u8> {
    join(SUMMARY, &[computer.as_str().as_bytes()])
}

pub fn summary_site(site: &NodeId, computer: &ComputerId) -> Vec<u8> {
    join(SUMMARY_SITE, &[site.as_str().as_bytes(), computer.as_str().as_bytes()])
}

pub fn count_failure(update: &UpdateId, code: i64, site: &str) -> Vec<u8> {
    join(
        COUNT_FAILURE,
        &[update.as_str().as_bytes(), &code.to_be_bytes(), site.as_bytes()],
    )
}

/// One day's snapshot of one aggregate (`kind` b's' per site and
/// severity, b'u' per update), the day as days since 1970-01-01.
pub fn history(day: i64, kind: u8) -> Vec<u8> {
    join(HISTORY, &[&day.to_be_bytes(), &[kind]])
}

pub fn inbox(source: &str) -> Vec<u8> {
    join(INBOX, &[source.as_bytes()])
}

pub fn outbox(seq: u64) -> Vec<u8> {
    join(OUTBOX, &[&seq.to_be_bytes()])
}

pub fn agent(id: &ComputerId) -> Vec<u8> {
    join(AGENT, &[id.as_str().as_bytes()])
}

pub fn agent_cert(id: &ComputerId) -> Vec<u8> {
    join(AGENT_CERT, &[id.as_str().as_bytes()])
}

pub fn inventory(hash: &str) -> Vec<u8> {
    join(INVENTORY, &[hash.as_bytes()])
}

pub fn token(secret_hash: &str) -> Vec<u8> {
    join(TOKEN, &[secret_hash.as_bytes()])
}

pub fn api_token(secret_hash: &str) -> Vec<u8> {
    join(API_TOKEN, &[secret_hash.as_bytes()])
}

pub fn event(computer: &ComputerId, counter: u64, index: u32) -> Vec<u8> {
    join(
        EVENT,
        &[
            computer.as_str().as_bytes(),
            &counter.to_be_bytes(),
            &index.to_be_bytes(),
        ],
    )
}

pub fn events_of(computer: &ComputerId) -> Vec<u8> {
    under(EVENT, &[computer.as_str().as_bytes()])
}

pub fn audit(seq: u64) -> Vec<u8> {
    join(AUDIT, &[&seq.to_be_bytes()])
}

/// Splits the parts of a key after its prefix.
pub fn parts<'a>(key: &'a [u8], prefix: &[u8]) -> Vec<&'a [u8]> {
    key.get(prefix.len()..).unwrap_or_default().split(|b| *b == 0).collect()
}

/// A key for error messages.
pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace('\0', "/")
}

pub fn seq_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}
