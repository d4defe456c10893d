//! The replicated objects: what admins create and what flows down the tree
//! as each origin's change log, and what flows back up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::compliance::ComplianceState;
use crate::exact::Exact;
use crate::ids::UpdateId;
use crate::rule::Rule;
use crate::update::{Classification, Severity, Track, Update};

/// Text usable as an id: not empty, at most 256 bytes, no control characters
/// (the store uses NUL as a separator).
fn valid_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 256 && !raw.chars().any(char::is_control)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {value:?} is empty, longer than 256 bytes or has control characters")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(raw: &str) -> Result<Self, InvalidId> {
                if valid_id(raw) {
                    Ok($name(raw.into()))
                } else {
                    Err(InvalidId {
                        kind: $what,
                        value: raw.to_owned(),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                $name::new(s)
            }
        }
    };
}

id_type!(NodeId, "node");
id_type!(ComputerId, "computer");
id_type!(ObjectId, "object");

/// The kinds of replicated object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Update,
    Approval,
    Policy,
    MaintenanceWindow,
    CustomSeverity,
    Setting,
    Site,
    Rollout,
    SigningKey,
    Timestamp,
    Revocation,
    /// A kind a later release added, by its name: its objects are verified,
    /// stored and forwarded, never acted on. Made only from signed bytes
    /// ([`ObjectKind::unknown`]), never accepted from an API caller.
    #[serde(skip)]
    #[schemars(skip)]
    Unknown(&'static str),
}

impl Serialize for ObjectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Known kinds only: an unknown one is an error, as from any enum.
impl<'de> Deserialize<'de> for ObjectKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ObjectKind, D::Error> {
        const NAMES: [&str; ObjectKind::ALL.len()] = {
            let mut names = [""; ObjectKind::ALL.len()];
            let mut i = 0;
            while i < names.len() {
                names[i] = ObjectKind::ALL[i].as_str();
                i += 1;
            }
            names
        };
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        ObjectKind::parse(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, &NAMES))
    }
}

/// Most kinds unknown to this release that one process keeps names of.
const MAX_UNKNOWN_KINDS: usize = 64;

impl ObjectKind {
    /// The kind named `name`, which this release does not know: a
    /// snake_case name of at most 40 characters, one of at most 64 such
    /// names a process keeps. `None` for a known kind or a bad name.
    pub fn unknown(name: &str) -> Option<ObjectKind> {
        use std::collections::BTreeSet;
        use std::sync::Mutex;
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let valid = !name.is_empty()
            && name.len() <= 40
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid || ObjectKind::parse(name).is_some() {
            return None;
        }
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = names.get(name) {
            return Some(ObjectKind::Unknown(known));
        }
        if names.len() >= MAX_UNKNOWN_KINDS {
            return None;
        }
        // Kept for the life of the process, at most 64 short names.
        let kept: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(kept);
        Some(ObjectKind::Unknown(kept))
    }

    pub const ALL: [ObjectKind; 11] = [
        ObjectKind::Update,
        ObjectKind::Approval,
        ObjectKind::Policy,
        ObjectKind::MaintenanceWindow,
        ObjectKind::CustomSeverity,
        ObjectKind::Setting,
        ObjectKind::Site,
        ObjectKind::Rollout,
        ObjectKind::SigningKey,
        ObjectKind::Timestamp,
        ObjectKind::Revocation,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Update => "update",
            ObjectKind::Approval => "approval",
            ObjectKind::Policy => "policy",
            ObjectKind::MaintenanceWindow => "maintenance_window",
            ObjectKind::CustomSeverity => "custom_severity",
            ObjectKind::Setting => "setting",
            ObjectKind::Site => "site",
            ObjectKind::Rollout => "rollout",
            ObjectKind::SigningKey => "signing_key",
            ObjectKind::Timestamp => "timestamp",
            ObjectKind::Revocation => "revocation",
            ObjectKind::Unknown(name) => name,
        }
    }

    pub fn parse(s: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which object: its kind and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub id: ObjectId,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.id)
    }
}

/// An update approved for a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub id: ObjectId,
    pub policy: ObjectId,
    pub update: UpdateId,
    /// Unix seconds after which it installs even outside maintenance windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

/// Which updates a policy covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<UpdateId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_severities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<Classification>,
    /// Publishers ("Mozilla", "Microsoft"), any case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<String>,
    /// A package manager's package ids ("Mozilla.Firefox"), any case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Only updates released at least this many days ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_days: Option<u32>,
}

/// Which computers a policy targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetFilter {
    /// Sites (their subtrees); empty means every site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
}

/// What a policy does about restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// As the vendor says, inside the maintenance window.
    #[default]
    AsVendorSays,
    /// Never restart; the computer stays pending restart.
    Suppress,
}

/// A patch policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub id: ObjectId,
    pub name: String,
    #[serde(default)]
    pub updates: UpdateFilter,
    #[serde(default)]
    pub targets: TargetFilter,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<ObjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Install from the vendor catalog.
    #[serde(default = "yes")]
    pub vendor_catalog: bool,
    /// After the catalog, run the operating system's own updater.
    #[serde(default)]
    pub os_updater: bool,
    /// Windows 7 to 8.1 and their servers: monthly rollups (the default) or
    /// security-only updates. A computer that any of its policies puts on
    /// security-only updates is offered no rollup.
    #[serde(default, skip_serializing_if = "Track::is_default")]
    pub track: Track,
    #[serde(default)]
    pub enabled: bool,
    /// Fields a child site may override locally.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub overridable: BTreeSet<String>,
    /// Staged rollout: an approved update reaches the first ring at once,
    /// each next ring after the previous one soaked with failures under
    /// its threshold (or when an admin promotes it). Empty: everyone at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rings: Vec<Ring>,
}

impl Policy {
    /// An enabled policy of the vendor catalog that chooses nothing yet:
    /// no updates, every computer, any time, restarts as the vendor says.
    pub fn new(id: ObjectId, name: impl Into<String>) -> Policy {
        Policy {
            id,
            name: name.into(),
            updates: UpdateFilter::default(),
            targets: TargetFilter::default(),
            maintenance_windows: Vec::new(),
            deadline: None,
            restart: RestartPolicy::AsVendorSays,
            vendor_catalog: true,
            os_updater: false,
            track: Track::Rollup,
            enabled: true,
            overridable: BTreeSet::new(),
            rings: Vec::new(),
        }
    }
}

/// One ring of a staged rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub name: String,
    /// Which of the policy's computers are in this ring (a computer is in
    /// the first ring whose targets take it in; empty takes in everyone,
    /// and computers no ring takes in are in the last).
    #[serde(default)]
    pub targets: TargetFilter,
    /// Hours this ring keeps an update before the next ring gets it.
    #[serde(default)]
    pub soak_hours: u32,
    /// Share of failed installs in this ring, in percent, above which the
    /// rollout halts.
    #[serde(default = "default_failure_percent")]
    pub max_failure_percent: u32,
}

fn default_failure_percent() -> u32 {
    5
}

/// How far an approved update of a policy with rings has rolled out. Its
/// id is `<policy>/<update>`; the policy's origin writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub id: ObjectId,
    pub policy: ObjectId,
    pub update: UpdateId,
    /// Unix seconds each ring opened, in ring order; ring 0 opens with the
    /// approval, so a missing rollout means ring 0 only.
    #[serde(default)]
    pub opened: Vec<i64>,
    /// Why the rollout stopped, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

impl Rollout {
    /// How many rings have the update.
    pub fn open_rings(&self) -> usize {
        self.opened.len().max(1)
    }
}

fn yes() -> bool {
    true
}

/// The certificates whose keys sign an origin's changes, oldest first; the
/// last one signs from the change that published it on. Only the origin
/// writes it (a key rotation is itself a signed change), and each
/// certificate is the organisation CA's for that node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub node: NodeId,
    /// Base64 DER certificates, oldest first.
    pub certificates: Vec<String>,
}

/// The root's signed statement that its log was current at `at`; a node or
/// agent whose newest one is too old is looking at a frozen view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    pub node: NodeId,
    /// Unix seconds.
    pub at: i64,
}

/// A certificate that no node accepts any more, by serial number (one
/// certificate) or by identity (every certificate of a node, agent or admin).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub id: ObjectId,
    /// Lower-case hex serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `cascade://...` identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default)]
    pub reason: String,
    /// Unix seconds.
    pub at: i64,
}

/// A recurring maintenance window in a time zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub id: ObjectId,
    pub name: String,
    /// IANA time zone ("Europe/Berlin").
    pub time_zone: String,
    /// Local start time, "HH:MM".
    pub start: String,
    pub duration_minutes: u32,
    /// Days of the week it opens on ("mon".."sun"); empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub overridable: BTreeSet<String>,
}

/// A custom severity level admins can assign to updates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomSeverity {
    pub id: ObjectId,
    pub name: String,
    /// Higher is more urgent.
    pub rank: i32,
}

/// A setting, optionally overridable by child sites.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub id: ObjectId,
    pub value: serde_json::Value,
    #[serde(default)]
    pub overridable: bool,
}

/// A site (node) of the hierarchy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: ObjectId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<NodeId>,
}

/// A replicated object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "object")]
pub enum Object {
    Update(Box<Update>),
    Approval(Approval),
    Policy(Box<Policy>),
    MaintenanceWindow(Box<MaintenanceWindow>),
    CustomSeverity(CustomSeverity),
    Setting(Setting),
    Site(Site),
    Rollout(Rollout),
    SigningKey(SigningKey),
    Timestamp(Timestamp),
    Revocation(Revocation),
    /// An object of a kind a later release added: only where it lives.
    #[serde(skip)]
    #[schemars(skip)]
    Unknown(UnknownObject),
}

/// Where an object of a kind this release does not know lives.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownObject {
    pub kind: ObjectKind,
    pub id: ObjectId,
}

/// The key named by a kind this release does not know and an id, and what
/// was unknown.
fn unknown_key(kind: Option<&serde_json::Value>, id: Option<&serde_json::Value>) -> Option<(ObjectKey, String)> {
    let name = kind?.as_str()?;
    let kind = ObjectKind::unknown(name)?;
    let id = ObjectId::new(id?.as_str()?).ok()?;
    Some((ObjectKey { kind, id }, format!("kind `{name}`")))
}

/// The key of `tree` (`{"kind":…,"id":…}`) when its kind is unknown here.
fn key_of_unknown(tree: &serde_json::Value) -> Option<(ObjectKey, String)> {
    unknown_key(tree.get("kind"), tree.get("id"))
}

impl crate::exact::Decode for Object {
    /// `{"kind":<name>,"object":{"id":<id>,…}}`: every kind a later
    /// release adds names its objects by `id` (docs/signed-format.md).
    fn of_unknown_kind(tree: &serde_json::Value) -> Option<(Object, String)> {
        let (key, what) = unknown_key(tree.get("kind"), tree.get("object").and_then(|o| o.get("id")))?;
        Some((
            Object::Unknown(UnknownObject {
                kind: key.kind,
                id: key.id,
            }),
            what,
        ))
    }
}

impl crate::exact::Decode for Override {
    fn of_unknown_kind(tree: &serde_json::Value) -> Option<(Override, String)> {
        let (target, what) = key_of_unknown(tree.get("target")?)?;
        let fields = serde_json::from_value(tree.get("fields")?.clone()).ok()?;
        Some((Override { target, fields }, what))
    }
}

impl crate::exact::Decode for ChangeOp {
    fn of_unknown_kind(tree: &serde_json::Value) -> Option<(ChangeOp, String)> {
        let map = tree.as_object()?;
        if map.len() != 1 {
            return None;
        }
        let (tag, inner) = map.iter().next()?;
        match tag.as_str() {
            "upsert" => Object::of_unknown_kind(inner).map(|(o, what)| (ChangeOp::Upsert(o), what)),
            "delete" => key_of_unknown(inner).map(|(k, what)| (ChangeOp::Delete(k), what)),
            "clear_override" => key_of_unknown(inner).map(|(k, what)| (ChangeOp::ClearOverride(k), what)),
            "override" => Override::of_unknown_kind(inner).map(|(o, what)| (ChangeOp::Override(o), what)),
            _ => None,
        }
    }
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Update(_) => ObjectKind::Update,
            Object::Approval(_) => ObjectKind::Approval,
            Object::Policy(_) => ObjectKind::Policy,
            Object::MaintenanceWindow(_) => ObjectKind::MaintenanceWindow,
            Object::CustomSeverity(_) => ObjectKind::CustomSeverity,
            Object::Setting(_) => ObjectKind::Setting,
            Object::Site(_) => ObjectKind::Site,
            Object::Rollout(_) => ObjectKind::Rollout,
            Object::SigningKey(_) => ObjectKind::SigningKey,
            Object::Timestamp(_) => ObjectKind::Timestamp,
            Object::Revocation(_) => ObjectKind::Revocation,
            Object::Unknown(u) => u.kind,
        }
    }

    pub fn key(&self) -> Result<ObjectKey, InvalidId> {
        let id = match self {
            Object::Update(u) => ObjectId::new(u.id.as_str())?,
            Object::Approval(a) => a.id.clone(),
            Object::Policy(p) => p.id.clone(),
            Object::MaintenanceWindow(w) => w.id.clone(),
            Object::CustomSeverity(s) => s.id.clone(),
            Object::Setting(s) => s.id.clone(),
            Object::Site(s) => s.id.clone(),
            Object::Rollout(r) => r.id.clone(),
            Object::SigningKey(k) => ObjectId::new(k.node.as_str())?,
            Object::Timestamp(t) => ObjectId::new(t.node.as_str())?,
            Object::Revocation(r) => r.id.clone(),
            Object::Unknown(u) => u.id.clone(),
        };
        Ok(ObjectKey { kind: self.kind(), id })
    }

    /// The object as it applies where `overrides` are in force, applied in
    /// the order given (the farthest origin's first, the nearest's last):
    /// of each, only the fields the owner lets children override now (an
    /// override kept from before the owner locked a field changes nothing
    /// of it). An override whose fields do not fit the object is left out.
    /// Returns the object and, for each override or field left out, why.
    /// The one place overrides are applied: nodes' targeting, listings and
    /// agents' checks of their evidence all use it.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a NodeId, &'a Override)>,
    ) -> (Object, Vec<String>) {
        let allowed = self.overridable();
        let mut notes = Vec::new();
        let mut current = self.clone();
        for (origin, over) in overrides {
            let mut fields = BTreeMap::new();
            for (field, value) in &over.fields {
                if allowed.contains(field) {
                    fields.insert(field.clone(), value.clone());
                } else {
                    notes.push(format!(
                        "{origin}'s override of {field} is not applied: the owner no longer lets it be overridden"
                    ));
                }
            }
            if fields.is_empty() {
                continue;
            }
            match current.with_fields(&fields) {
                Ok(changed) => current = changed,
                Err(e) => notes.push(format!("{origin}'s override is not applied: {e}")),
            }
        }
        (current, notes)
    }

    /// The object with `fields` of its inner record replaced. A field that
    /// would make the object invalid is an error.
    fn with_fields(&self, fields: &BTreeMap<String, serde_json::Value>) -> Result<Object, String> {
        let mut value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let inner = value
            .get_mut("object")
            .and_then(|o| o.as_object_mut())
            .ok_or_else(|| "not an object record".to_owned())?;
        for (field, v) in fields {
            inner.insert(field.clone(), v.clone());
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Fields the owner lets child sites override.
    pub fn overridable(&self) -> BTreeSet<String> {
        match self {
            Object::Policy(p) => p.overridable.clone(),
            Object::MaintenanceWindow(w) => w.overridable.clone(),
            Object::Setting(s) if s.overridable => BTreeSet::from(["value".to_owned()]),
            _ => BTreeSet::new(),
        }
    }
}

/// A local override of fields of an inherited object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub target: ObjectKey,
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Upsert(Object),
    Delete(ObjectKey),
    /// Override fields of an object another origin owns.
    Override(Override),
    /// Withdraw this origin's override of an object.
    ClearOverride(ObjectKey),
}

/// One entry of an origin's change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub origin: NodeId,
    pub seq: u64,
    /// As its origin signed it.
    pub op: Exact<ChangeOp>,
    /// The origin's signature, chained to its previous change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<crate::signed::Seal>,
}

impl Change {
    /// A change of `origin`'s log, not yet sealed.
    pub fn new(origin: NodeId, seq: u64, op: ChangeOp) -> Change {
        Change {
            origin,
            seq,
            op: Exact::new(op),
            seal: None,
        }
    }
}

impl Exact<ChangeOp> {
    /// The operation that writes `object`, around its exact bytes.
    pub fn upsert(object: &Exact<Object>) -> Exact<ChangeOp> {
        Self::around("upsert", object, |o| ChangeOp::Upsert(o.clone()))
    }

    /// The operation that sets `over`, around its exact bytes.
    pub fn override_with(over: &Exact<Override>) -> Exact<ChangeOp> {
        Self::around("override", over, |o| ChangeOp::Override(o.clone()))
    }

    fn around<T>(tag: &str, inner: &Exact<T>, op: impl Fn(&T) -> ChangeOp) -> Exact<ChangeOp> {
        let text = crate::exact::frame(tag, inner.raw());
        match crate::exact::raw_from(text) {
            Ok(raw) => Exact::assemble(raw, op(inner.value()), inner.unknown_list()),
            // The inner bytes are one JSON value, so framed they are one too.
            Err(_) => Exact::new(op(inner.value())),
        }
    }

    /// The object an upsert writes, with its exact bytes (`None` for other
    /// operations). An error when the operation's bytes are not framed as
    /// the signed format says, since the object's bytes would not rebuild
    /// them.
    pub fn upserted(&self) -> Result<Option<Exact<Object>>, String> {
        match self.value() {
            ChangeOp::Upsert(object) => self.inner("upsert", object).map(Some),
            _ => Ok(None),
        }
    }

    /// The override an operation sets, with its exact bytes (`None` for
    /// other operations).
    pub fn overridden(&self) -> Result<Option<Exact<Override>>, String> {
        match self.value() {
            ChangeOp::Override(over) => self.inner("override", over).map(Some),
            _ => Ok(None),
        }
    }

    fn inner<T: Clone + crate::exact::Decode>(&self, tag: &str, value: &T) -> Result<Exact<T>, String> {
        let Some((found, inner)) = crate::exact::framed(self.raw()) else {
            return Err(format!(
                "its operation is not framed as signed format {} says",
                crate::exact::FORMAT
            ));
        };
        if found != tag {
            return Err(format!("its operation is framed as {found}, not {tag}"));
        }
        if self.unknown().is_empty() {
            let raw = crate::exact::raw_from(inner.to_owned())?;
            Ok(Exact::assemble(raw, value.clone(), Vec::new()))
        } else {
            Exact::from_json(inner)
        }
    }
}

/// One computer's latest state for one update, as its agent reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceRecord {
    pub computer: ComputerId,
    pub update: UpdateId,
    /// The site (node) that serves the computer.
    pub site: NodeId,
    pub state: ComplianceState,
    pub severity: Severity,
    /// The reporting agent's own counter: a record never replaces a newer one.
    pub counter: u64,
    /// Unix seconds when the agent observed it.
    pub observed_at: i64,
    /// The agent's signature over the report this record came in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::signed::Attestation>,
}

/// A node's health, reported up the tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHealth {
    pub node: NodeId,
    pub at: i64,
    pub agents: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// One audited admin action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: i64,
    /// Who: the identity from the admin's certificate or token.
    pub actor: String,
    /// The node where it happened.
    pub node: NodeId,
    pub action: String,
    #[serde(default)]
    pub detail: String,
}

/// How one ring of one node's computers did with one update of a policy
/// with rings: what the policy's origin decides the rollout on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutTally {
    /// The node whose computers these are.
    pub node: NodeId,
    pub policy: ObjectId,
    pub update: UpdateId,
    pub ring: u32,
    /// Computers of the ring (the policy targets them).
    pub computers: u64,
    /// Installed, or found not to need it.
    pub installed: u64,
    pub failed: u64,
    pub at: i64,
}

/// What flows up the tree: upserts keyed so that a newer one replaces an
/// older one with the same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Upward {
    Compliance(ComplianceRecord),
    Health(NodeHealth),
    Audit(AuditEntry),
    Rollout(RolloutTally),
    /// An agent's certificate chain, so that the nodes above can check the
    /// signatures on its records.
    Certificate(AgentCertificate),
    /// A computer as its site last saw it, so that every node above can
    /// list and filter the computers of its subtree.
    Computer(ComputerSummary),
}

/// A managed computer as every node from its site up sees it: small, so
/// that a root of a million computers keeps them all. The site writes it
/// from what the agent sent (its inventory's operating system, its
/// version, when it last scanned and reported); what is installed and
/// failed is in the agent's signed compliance records, not here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputerSummary {
    pub computer: ComputerId,
    /// The node that serves it.
    pub site: NodeId,
    /// The operating system as vendors name it ("Windows Server 2022"), or
    /// as the computer reports it when no product is known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Feature release ("21H2", "1809").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Full operating system version ("10.0.20348.1547").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Unix seconds of the last inventory (scan); 0 when never.
    #[serde(default)]
    pub last_scan: i64,
    /// Unix seconds of the last compliance report; 0 when never.
    #[serde(default)]
    pub last_report: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// An installed update waits for a restart.
    #[serde(default)]
    pub pending_restart: bool,
    /// Its latest install events (at most [`RECENT_EVENTS`], their detail
    /// shortened), so that the nodes above see what happened last; every
    /// event stays at its site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<InstallEvent>,
}

/// How many of a computer's latest install events its summary carries.
pub const RECENT_EVENTS: usize = 5;

/// How much of an event's detail a summary keeps.
pub const RECENT_DETAIL: usize = 200;

impl ComputerSummary {
    /// A summary holds no more events, nor longer details, than a site
    /// makes: the nodes above keep what their children send.
    pub fn check(&self) -> Result<(), String> {
        if self.recent_events.len() > RECENT_EVENTS {
            return Err(format!(
                "{} recent events, more than the {RECENT_EVENTS} a summary carries",
                self.recent_events.len()
            ));
        }
        // The detail is cut at a character boundary and marked with '…'.
        let longest = RECENT_DETAIL + '…'.len_utf8();
        if let Some(e) = self.recent_events.iter().find(|e| e.detail.len() > longest) {
            return Err(format!(
                "an event's detail of {} bytes, longer than the {longest} a summary keeps",
                e.detail.len()
            ));
        }
        Ok(())
    }

    /// When the site last heard from the computer: of two summaries of one
    /// computer (it moved between sites), the later one holds.
    pub fn heard(&self) -> i64 {
        self.last_scan.max(self.last_report)
    }
}

/// An agent's certificate and its enrollment CA's, base64 DER.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentCertificate {
    pub computer: ComputerId,
    pub chain: Vec<String>,
}

impl Upward {
    /// Entries with the same key replace each other; `None` never collapses.
    pub fn upsert_key(&self) -> Option<String> {
        match self {
            Upward::Compliance(r) => Some(format!("c\0{}\0{}", r.computer, r.update)),
            Upward::Health(h) => Some(format!("h\0{}", h.node)),
            Upward::Audit(_) => None,
            Upward::Rollout(t) => Some(format!("r\0{}\0{}\0{}\0{}", t.node, t.policy, t.update, t.ring)),
            Upward::Certificate(c) => Some(format!("k\0{}", c.computer)),
            Upward::Computer(c) => Some(format!("m\0{}", c.computer)),
        }
    }
}

/// A managed computer's agent, as its node knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: ComputerId,
    pub site: NodeId,
    pub enrolled_at: i64,
    #[serde(default)]
    pub last_seen: i64,
    /// Content hash of its latest inventory (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// The node's catalog revision its latest plan was made at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Its operating system, from its latest inventory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The agent's own version, as it said at its latest check-in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
    /// Unix seconds of its latest compliance report; 0 when never.
    #[serde(default)]
    pub last_report: i64,
    /// Its latest report left an update waiting for a restart.
    #[serde(default)]
    pub pending_restart: bool,
    /// Its latest install events, as its summary carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<InstallEvent>,
}

impl Agent {
    /// An agent enrolled at `site` at `at`, not yet heard from.
    pub fn new(id: ComputerId, site: NodeId, at: i64) -> Agent {
        Agent {
            id,
            site,
            enrolled_at: at,
            last_seen: at,
            inventory: None,
            revision: None,
            os: String::new(),
            release: None,
            version: None,
            agent_version: String::new(),
            last_report: 0,
            pending_restart: false,
            recent_events: Vec::new(),
        }
    }

    /// Notes a report's install events: the latest few are kept, their
    /// detail shortened.
    pub fn note_events(&mut self, events: &[InstallEvent]) {
        for event in events {
            let mut event = event.clone();
            if event.detail.len() > RECENT_DETAIL {
                let mut end = RECENT_DETAIL;
                while !event.detail.is_char_boundary(end) {
                    end -= 1;
                }
                event.detail.truncate(end);
                event.detail.push('…');
            }
            self.recent_events.push(event);
        }
        let excess = self.recent_events.len().saturating_sub(RECENT_EVENTS);
        self.recent_events.drain(..excess);
    }

    /// The agent's computer as the nodes above see it.
    pub fn summary(&self) -> ComputerSummary {
        ComputerSummary {
            computer: self.id.clone(),
            site: self.site.clone(),
            os: self.os.clone(),
            release: self.release.clone(),
            version: self.version.clone(),
            last_scan: if self.inventory.is_some() { self.last_seen } else { 0 },
            last_report: self.last_report,
            agent_version: self.agent_version.clone(),
            pending_restart: self.pending_restart,
            recent_events: self.recent_events.clone(),
        }
    }
}

/// How an update was installed: the patching methods a policy turns on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchMethod {
    /// The update's own installer from the vendor catalog.
    #[default]
    VendorCatalog,
    /// The operating system's own updater (apt on Debian).
    OsUpdater,
}

/// What happened to one update on one computer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    /// Content fetched and verified.
    Downloaded,
    Installed,
    /// Installed; the computer must restart to finish.
    PendingRestart,
    /// The installer began a restart itself (exit code 1641).
    RestartStarted,
    /// The agent ran the restart command.
    RestartRequested,
    /// The computer came back with a new boot id: pending installs finished.
    Restarted,
    Failed {
        code: i64,
    },
    /// Not installed now, and why (outside the windows, no install command).
    Deferred {
        reason: String,
    },
}

/// One install event, as an agent reports it. (Not `deny_unknown_fields`:
/// serde does not support it together with `flatten`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstallEvent {
    /// Unix seconds.
    pub at: i64,
    pub update: UpdateId,
    #[serde(default)]
    pub method: PatchMethod,
    #[serde(flatten)]
    pub kind: EventKind,
    /// What the installer printed last, or other detail; bounded by the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
