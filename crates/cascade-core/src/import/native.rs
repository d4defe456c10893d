//! Cascade's own JSON formats: the catalog (docs/catalog.schema.json) and
//! the inventory (docs/inventory.schema.json).

use serde::{Deserialize, Serialize};

use super::ImportError;
use crate::inventory::Inventory;
use crate::update::Update;

/// The newest catalog format version this build reads and writes.
pub const CATALOG_VERSION: u32 = 1;

/// A catalog in Cascade's JSON form.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NativeCatalog {
    /// Always `"cascade-catalog"`.
    pub format: String,
    /// Format version; this build reads 1.
    pub version: u32,
    pub updates: Vec<Update>,
}

impl NativeCatalog {
    pub fn new(updates: Vec<Update>) -> Self {
        NativeCatalog {
            format: "cascade-catalog".to_owned(),
            version: CATALOG_VERSION,
            updates,
        }
    }
}

pub fn parse_catalog(source: &str, text: &str) -> Result<Vec<Update>, ImportError> {
    super::check_json(source, text)?;
    let catalog: NativeCatalog = serde_json::from_str(text).map_err(|e| super::json_error(source, e))?;
    let fail = |message: String| ImportError::Format {
        source_name: source.to_owned(),
        message,
    };
    if catalog.format != "cascade-catalog" {
        return Err(fail(format!(
            "format is {:?}, expected \"cascade-catalog\"",
            catalog.format
        )));
    }
    if catalog.version != CATALOG_VERSION {
        return Err(fail(format!(
            "catalog format version {} is not one this build reads (it reads {CATALOG_VERSION})",
            catalog.version
        )));
    }
    for (n, u) in catalog.updates.iter().enumerate() {
        for c in &u.content {
            if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail(format!(
                    "updates[{n}] ({}): content {:?} has a malformed sha256",
                    u.id, c.file_name
                )));
            }
        }
    }
    Ok(catalog.updates)
}

pub fn parse_inventory(source: &str, text: &str) -> Result<Inventory, ImportError> {
    super::check_json(source, text)?;
    let mut inv: Inventory = serde_json::from_str(text).map_err(|e| super::json_error(source, e))?;
    inv.normalize();
    Ok(inv)
}

/// The JSON Schema of the catalog format.
pub fn catalog_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(NativeCatalog)).unwrap_or_default()
}

/// The JSON Schema of the inventory format.
pub fn inventory_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Inventory)).unwrap_or_default()
}
