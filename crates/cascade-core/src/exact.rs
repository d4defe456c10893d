//! Signed values kept as the exact bytes their signer produced.
//!
//! A node never encodes again what another node signed: it keeps the bytes
//! it received, checks signatures over them, stores and forwards them
//! unchanged, and decodes them only for its own use. So an object written
//! by a later release, with fields this release does not know, still
//! verifies here and reaches the nodes below exactly as signed; this node
//! decodes what it knows and names the rest ([`Exact::unknown`]), and
//! targeting leaves such an object alone.
//!
//! What this release writes is canonical JSON (docs/signed-format.md):
//! object keys sorted by their bytes, no whitespace, integers as integers,
//! strings escaped as `serde_json` escapes them.

use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The signed format this release writes: the version in its seals.
pub const FORMAT: u16 = 3;

/// The oldest signed format this release verifies (format 2 is the
/// struct-ordered JSON of the first signed release; its bytes are kept as
/// received, so they verify as they did).
pub const OLDEST_FORMAT: u16 = 2;

/// How many unknown fields one value may carry and still be decoded.
const MAX_UNKNOWN: usize = 32;

/// A value with the exact JSON bytes its signer produced.
#[derive(Clone)]
pub struct Exact<T> {
    raw: Arc<RawValue>,
    value: T,
    /// Fields in the bytes that this release does not know, left out of
    /// `value` (by their path).
    unknown: Arc<[String]>,
}

/// The canonical JSON of a value: what this release signs.
pub fn canonical<T: Serialize>(value: &T) -> Result<String, String> {
    // serde_json's map is ordered by key unless its `preserve_order`
    // feature is on; `canonical_keys_are_sorted` checks it stays off.
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

impl<T: Serialize> Exact<T> {
    /// A value of this node's own, in canonical JSON.
    pub fn new(value: T) -> Exact<T> {
        // These types serialize without fail (string map keys only); an
        // empty object stands in if one ever did not, and cannot verify.
        let text = canonical(&value).unwrap_or_else(|_| "{}".to_owned());
        let raw = RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Exact {
            raw: Arc::from(raw),
            value,
            unknown: Arc::from(Vec::new()),
        }
    }
}

impl<T: Serialize> From<T> for Exact<T> {
    fn from(value: T) -> Exact<T> {
        Exact::new(value)
    }
}

/// A type signed values decode to: what this release makes of a value of
/// a kind it does not know, which a later release wrote.
pub trait Decode: DeserializeOwned {
    /// The value standing for `tree` when its kind is unknown here, and
    /// what was unknown (`None`: not a kind this type can stand in for).
    fn of_unknown_kind(_tree: &Value) -> Option<(Self, String)> {
        None
    }
}

impl<T: Decode> Exact<T> {
    /// Decodes bytes another node signed, keeping them. Fields this release
    /// does not know are left out of the value and named by
    /// [`Exact::unknown`]; anything else that does not decode is an error.
    pub fn from_json(text: &str) -> Result<Exact<T>, String> {
        let raw = RawValue::from_string(text.to_owned()).map_err(|e| e.to_string())?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Result<Exact<T>, String> {
        let (value, unknown) = decode::<T>(raw.get())?;
        Ok(Exact {
            raw: Arc::from(raw),
            value,
            unknown: Arc::from(unknown),
        })
    }
}

impl<T> Exact<T> {
    /// The bytes as signed.
    pub fn raw(&self) -> &str {
        self.raw.get()
    }

    /// SHA-256 of the bytes as signed.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.raw.get().as_bytes()).into()
    }

    /// What this node makes of the bytes.
    pub fn value(&self) -> &T {
        &self.value
    }

    pub fn into_value(self) -> T {
        self.value
    }

    /// What of the bytes this release does not know: fields (by path), left
    /// out of [`Exact::value`], or a kind. Empty for everything this release
    /// wrote.
    pub fn unknown(&self) -> &[String] {
        &self.unknown
    }

    /// Why this node must not act on the value, when it carries what this
    /// node does not know (an unknown field may narrow what it means).
    pub fn unknown_reason(&self) -> Option<String> {
        (!self.unknown.is_empty()).then(|| {
            format!(
                "written by a later release: {} unknown to this node",
                self.unknown.join(", ")
            )
        })
    }
}

impl<T> std::ops::Deref for Exact<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> PartialEq for Exact<T> {
    fn eq(&self, other: &Exact<T>) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl<T: fmt::Debug> fmt::Debug for Exact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unknown.is_empty() {
            self.value.fmt(f)
        } else {
            f.debug_struct("Exact")
                .field("value", &self.value)
                .field("unknown", &self.unknown)
                .finish()
        }
    }
}

impl<T> Serialize for Exact<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de, T: Decode> Deserialize<'de> for Exact<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Exact<T>, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Exact::from_raw(raw).map_err(D::Error::custom)
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Exact<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// Decodes strictly, then, while the only fault is a field this release
/// does not know, without that field.
fn decode<T: Decode>(text: &str) -> Result<(T, Vec<String>), String> {
    // The common case at full speed; the path is tracked only to find
    // what did not decode.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok((value, Vec::new()));
    }
    let first = match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text)) {
        Ok(value) => return Ok((value, Vec::new())),
        Err(e) => e,
    };
    let mut tree: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    let mut error = first;
    for _ in 0..MAX_UNKNOWN {
        let message = error.inner().to_string();
        let Some(field) = unknown_field(&message) else {
            if let Some((value, what)) = T::of_unknown_kind(&tree) {
                unknown.push(what);
                return Ok((value, unknown));
            }
            return Err(describe(&error));
        };
        let path: Vec<Step> = error
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Step::Index(*index),
                serde_path_to_error::Segment::Map { key } => Step::Key(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Step::Key(variant.clone()),
                serde_path_to_error::Segment::Unknown => Step::Key(String::new()),
            })
            .collect();
        let Some(removed) = remove_unknown(&mut tree, &path, field) else {
            return Err(describe(&error));
        };
        unknown.push(format!("field `{removed}`"));
        match serde_path_to_error::deserialize::<_, T>(&tree) {
            Ok(value) => return Ok((value, unknown)),
            Err(e) => error = e,
        }
    }
    Err(format!("more than {MAX_UNKNOWN} unknown fields: {}", describe(&error)))
}

fn describe<E: fmt::Display>(error: &serde_path_to_error::Error<E>) -> String {
    let path = error.path().to_string();
    if path == "." || path.is_empty() {
        error.inner().to_string()
    } else {
        format!("{path}: {}", error.inner())
    }
}

/// The field a serde "unknown field" error names.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// One step of a path into a JSON value.
enum Step {
    Key(String),
    Index(usize),
}

/// Removes the unknown `field` the error's path leads to; when the path
/// stops short of it (a tagged enum's content is read from a buffer, which
/// loses the path), every `field` under where it stops. Returns the path
/// removed, or `None` when there is no such field (then it was not a field
/// of a map and the value is not ours to decode).
fn remove_unknown(tree: &mut Value, path: &[Step], field: &str) -> Option<String> {
    let (parents, at_field) = match path.split_last() {
        Some((Step::Key(last), parents)) if last == field => (parents, true),
        _ => (path, false),
    };
    let mut node = &mut *tree;
    let mut shown = Vec::new();
    for step in parents {
        node = match (node, step) {
            (Value::Object(map), Step::Key(key)) => {
                shown.push(key.clone());
                map.get_mut(key.as_str())?
            }
            (Value::Array(items), Step::Index(i)) => {
                shown.push(i.to_string());
                items.get_mut(*i)?
            }
            _ => return None,
        };
    }
    shown.push(field.to_owned());
    let removed = if at_field {
        match node {
            Value::Object(map) => map.remove(field).is_some(),
            _ => false,
        }
    } else {
        remove_everywhere(node, field) > 0
    };
    removed.then(|| shown.join("."))
}

fn remove_everywhere(node: &mut Value, field: &str) -> usize {
    match node {
        Value::Object(map) => {
            let here = usize::from(map.remove(field).is_some());
            here + map.values_mut().map(|v| remove_everywhere(v, field)).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(|v| remove_everywhere(v, field)).sum(),
        _ => 0,
    }
}

/// The one entry of an externally tagged operation, `{"<op>":<inner>}`,
/// with the inner value's exact bytes; `None` when the bytes are not
/// framed that way exactly (so the inner bytes would not rebuild them).
pub fn framed(text: &str) -> Option<(&str, &str)> {
    let map: std::collections::BTreeMap<&str, &RawValue> = serde_json::from_str(text).ok()?;
    let mut entries = map.into_iter();
    let (tag, inner) = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    (frame(tag, inner.get()) == text).then_some((tag, inner.get()))
}

/// `{"<tag>":<inner>}`, the framing of an operation.
pub fn frame(tag: &str, inner: &str) -> String {
    let mut out = String::with_capacity(tag.len() + inner.len() + 5);
    out.push_str("{\"");
    out.push_str(tag);
    out.push_str("\":");
    out.push_str(inner);
    out.push('}');
    out
}

/// Wraps bytes already checked to be one JSON value.
pub(crate) fn raw_from(text: String) -> Result<Box<RawValue>, String> {
    RawValue::from_string(text).map_err(|e| e.to_string())
}

impl<T> Exact<T> {
    /// Builds from bytes and a value decoded from them elsewhere.
    pub(crate) fn assemble(raw: Box<RawValue>, value: T, unknown: Vec<String>) -> Exact<T> {
        Exact {
            raw: Arc::from(raw),
            value,
            unknown: Arc::from(unknown),
        }
    }

    pub(crate) fn unknown_list(&self) -> Vec<String> {
        self.unknown.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Leaf {
        name: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        b: u32,
        a: u32,
        #[serde(default)]
        list: Vec<Leaf>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", tag = "kind", content = "object")]
    enum Obj {
        Thing(Inner),
    }

    impl Decode for Inner {}
    impl Decode for Obj {}

    #[test]
    fn canonical_keys_are_sorted() {
        let e = Exact::new(Inner {
            b: 1,
            a: 2,
            list: vec![],
        });
        assert_eq!(e.raw(), r#"{"a":2,"b":1,"list":[]}"#);
    }

    #[test]
    fn bytes_are_kept_as_received() {
        let text = r#"{"b":1, "a":2}"#;
        let e: Exact<Inner> = serde_json::from_str(text).unwrap();
        assert_eq!(e.raw(), text);
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
        assert!(e.unknown().is_empty());
    }

    #[test]
    fn unknown_fields_are_named_and_left_out_of_the_value() {
        let text = r#"{"kind":"thing","object":{"a":1,"b":2,"zz":3,"list":[{"name":"x","extra":{"q":1}}]}}"#;
        let e: Exact<Obj> = Exact::from_json(text).unwrap();
        assert_eq!(e.raw(), text);
        assert_eq!(
            *e,
            Obj::Thing(Inner {
                b: 2,
                a: 1,
                list: vec![Leaf { name: "x".into() }]
            })
        );
        assert_eq!(e.unknown().len(), 2, "{:?}", e.unknown());
        assert!(e.unknown_reason().unwrap().contains("zz"));
        // Content read before its tag loses the path: still decoded.
        let text = r#"{"object":{"a":1,"b":2,"list":[{"name":"x","extra":1}]},"kind":"thing"}"#;
        let e: Exact<Obj> = Exact::from_json(text).unwrap();
        assert_eq!(e.unknown(), ["field `extra`"]);
    }

    #[test]
    fn what_is_not_an_unknown_field_is_an_error() {
        let unknown_kind = Exact::<Obj>::from_json(r#"{"kind":"widget","object":{}}"#).unwrap_err();
        assert!(unknown_kind.contains("widget"), "{unknown_kind}");
        let wrong_type = Exact::<Inner>::from_json(r#"{"a":"x","b":1}"#).unwrap_err();
        assert!(wrong_type.starts_with("a:"), "{wrong_type}");
        let missing = Exact::<Inner>::from_json(r#"{"a":1,"zz":1}"#).unwrap_err();
        assert!(missing.contains("missing field `b`"), "{missing}");
    }

    #[test]
    fn framing_is_exact() {
        assert_eq!(framed(r#"{"upsert":{"a":1}}"#), Some(("upsert", r#"{"a":1}"#)));
        assert_eq!(framed(r#"{ "upsert":{"a":1}}"#), None);
        assert_eq!(framed(r#"{"upsert":{"a":1},"x":1}"#), None);
        assert_eq!(frame("upsert", "1"), r#"{"upsert":1}"#);
    }
}
