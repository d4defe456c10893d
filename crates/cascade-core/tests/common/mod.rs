//! Shared helpers: the fixtures copied from real vendor data live in the
//! repository's tests/fixtures.

#![allow(dead_code)]

use std::path::PathBuf;

use cascade_core::import::{self, NoFragments};
use cascade_core::{Catalog, Inventory, Update};

pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixture_path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn updates(rel: &str) -> Vec<Update> {
    import::import_catalog(rel, &fixture(rel), &NoFragments)
        .unwrap_or_else(|e| panic!("{e}"))
        .updates
}

pub fn inventory(rel: &str) -> Inventory {
    import::import_inventory(rel, &fixture(rel))
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

pub fn december_2022() -> Catalog {
    Catalog::new(updates("cvrf/cvrfDocument-2022-Dec.trimmed.xml"))
}

/// A Windows computer from inventory JSON written in the test.
pub fn windows(json: serde_json::Value) -> Inventory {
    import::native::parse_inventory("test", &json.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// Every Update Catalog entry of the fixtures.
pub fn update_catalog_updates() -> Vec<Update> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_path("update-catalog"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| updates(&format!("update-catalog/{n}")))
        .collect()
}
