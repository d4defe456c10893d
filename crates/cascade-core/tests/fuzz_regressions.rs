//! Replays every input the cargo-fuzz targets over cascade-core once
//! crashed on (fuzz/regressions/<target>/), through the same call as the
//! target, so CI keeps them fixed. An input that panics again fails here
//! with its file name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use cascade_core::Rule;
use cascade_core::import::{NoFragments, import_catalog, import_inventory};

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions");

/// The saved inputs of `target`, sorted; none when it never crashed.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    assert!(
        Path::new(REGRESSIONS).is_dir(),
        "{REGRESSIONS} is missing: the regression inputs moved?"
    );
    let dir = Path::new(REGRESSIONS).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `call` on every input of `target`, naming the one that panics.
fn replay(target: &str, call: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    for (path, bytes) in inputs(target) {
        if std::panic::catch_unwind(|| call(&bytes)).is_err() {
            panic!("fuzz/regressions/{target}/{} panics again", path.display());
        }
    }
}

/// fuzz/fuzz_targets/catalog.rs
#[test]
fn catalog_regressions() {
    replay("catalog", |data| {
        let _ = import_catalog("fuzz", data, &NoFragments);
    });
}

/// fuzz/fuzz_targets/inventory.rs
#[test]
fn inventory_regressions() {
    replay("inventory", |data| {
        if let Ok((_, inventory)) = import_inventory("fuzz", data) {
            let _ = inventory.content_hash();
        }
    });
}

/// fuzz/fuzz_targets/rule.rs
#[test]
fn rule_regressions() {
    replay("rule", |data| {
        let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
        let Ok(rule) = serde_json::from_slice::<Rule>(&data[..split]) else {
            return;
        };
        let inventory = import_inventory("fuzz", data.get(split + 1..).unwrap_or_default())
            .map(|(_, inventory)| inventory)
            .unwrap_or_default();
        let _ = rule.eval(&inventory);
    });
}
