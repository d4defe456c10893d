//! What the build checks about the code itself: the crate graph is the one
//! ARCHITECTURE.md draws ("Crate graph"), core stays free of I/O crates,
//! sled stays in the store, cascade-core's modules name each other in one
//! direction only, and no source file passes 800 lines unless
//! ARCHITECTURE.md says why ("Long files").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LONGEST: usize = 800;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bullet lines of one `## ` section of ARCHITECTURE.md, each joined
/// with the lines that continue it.
fn section(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find(&format!("\n## {name}\n"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no section {name:?}"));
    let body = &text[start + name.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut items: Vec<String> = Vec::new();
    for line in body.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            items.push(item.to_owned());
        } else if line.starts_with("  ")
            && let Some(last) = items.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    items
}

/// Each crate's name and its `[dependencies]` (not dev-dependencies).
fn crates() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let name = doc["package"]["name"].as_str().unwrap().to_owned();
        let deps = doc
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        out.insert(name, deps);
    }
    out
}

#[test]
fn the_crate_graph_is_the_one_architecture_md_draws() {
    let crates = crates();
    let drawn: BTreeMap<String, BTreeSet<String>> = section("Crate graph")
        .iter()
        .map(|item| {
            let (name, deps) = item
                .split_once(':')
                .unwrap_or_else(|| panic!("{item:?} is not `crate: deps`"));
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect();
    let actual: BTreeMap<String, BTreeSet<String>> = crates
        .iter()
        .map(|(name, deps)| {
            let ours = deps.iter().filter(|d| d.starts_with("cascade")).cloned().collect();
            (name.clone(), ours)
        })
        .collect();
    assert_eq!(
        actual, drawn,
        "the crates' dependencies (left) are not the graph ARCHITECTURE.md draws (right)"
    );
    // cascade-core does no I/O; sled is the store's alone.
    for io in ["tokio", "tonic", "sled", "axum", "hyper", "rustls"] {
        assert!(!crates["cascade-core"].contains(io), "cascade-core depends on {io}");
    }
    for (name, deps) in &crates {
        assert!(
            name == "cascade-store" || !deps.contains("sled"),
            "{name} depends on sled, which belongs to cascade-store"
        );
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_passes_800_lines_without_a_listed_reason() {
    let root = root().canonicalize().unwrap();
    let listed: BTreeMap<String, String> = section("Long files")
        .iter()
        .map(|item| {
            let (path, reason) = item
                .split_once(':')
                .unwrap_or_else(|| panic!("{item:?} is not `path: reason`"));
            let path = path.trim().trim_matches('`').to_owned();
            assert!(reason.trim().len() > 10, "{path} is listed without a reason");
            (path, reason.trim().to_owned())
        })
        .collect();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    let mut long = BTreeMap::new();
    for file in files {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let name = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        if lines > LONGEST {
            long.insert(name, lines);
        }
    }
    let unlisted: Vec<String> = long
        .iter()
        .filter(|(name, _)| !listed.contains_key(*name))
        .map(|(name, lines)| format!("{name} ({lines} lines)"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "source files past {LONGEST} lines with no reason under \"Long files\" in ARCHITECTURE.md: split them, or say why not: {unlisted:?}"
    );
    let stale: Vec<&String> = listed.keys().filter(|name| !long.contains_key(*name)).collect();
    assert!(
        stale.is_empty(),
        "listed under \"Long files\" in ARCHITECTURE.md but not (or no longer) past {LONGEST} lines: {stale:?}"
    );
}

/// The first segment of every path that starts `crate::`, including each
/// of a group's (`crate::{a::X, b::{Y, Z}}` names `a` and `b`).
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        // The group's top-level items, up to its closing brace.
        let (mut depth, mut start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

#[test]
fn crate_paths_are_read_from_paths_and_groups() {
    let code = "use crate::rule::Truth;\nuse crate::{\n    inventory::Inventory,\n    software::{Software, SoftwareList},\n};\nlet x = crate::version::Version::parse(v);";
    assert_eq!(crate_paths(code), ["rule", "inventory", "software", "version"]);
}

/// The top-level modules of cascade-core and, for each, the other modules
/// its code (not its comments or tests) names as `crate::<module>`.
fn core_module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("crates/cascade-core/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let module_of = |file: &Path| -> String {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        first.trim_end_matches(".rs").to_owned()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).filter(|m| m != "lib").collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let module = module_of(file);
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Tests sit at the end of a file and may name anything.
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for name in crate_paths(&code) {
            if name != module && modules.contains(&name) {
                graph.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

#[test]
fn the_modules_of_cascade_core_name_each_other_in_one_direction_only() {
    let graph = core_module_graph();
    assert!(graph.len() > 15, "{graph:?}");
    // Depth-first search for a path back to where it started.
    fn back_to<'a>(
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        start: &'a str,
        at: &'a str,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        for next in &graph[at] {
            if next == start {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if back_to(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut path = vec![start.as_str()];
        if back_to(&graph, start, start, &mut path, &mut BTreeSet::new()) {
            cycles.push(path.join(" -> "));
        }
    }
    assert!(
        cycles.is_empty(),
        "cascade-core modules that name each other (move what both need into a leaf module): {cycles:?}"
    );
}
