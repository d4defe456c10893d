//! Reading a wsusscn2.cab as Microsoft publishes it: an outer cabinet whose
//! `package.cab` holds package.xml and whose further cabinets hold the
//! per-revision fragments, each cabinet covering a range of revision ids
//! (index.xml). Inner cabinets are decompressed only when a fragment in
//! them is asked for, one at a time.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use cascade_core::import::Fragments;

type Inner = cab::Cabinet<Cursor<Vec<u8>>>;

/// Whether `bytes` start a cabinet file.
pub fn is_cabinet(bytes: &[u8]) -> bool {
    bytes.starts_with(b"MSCF")
}

fn read_member(cabinet: &mut cab::Cabinet<impl Read + std::io::Seek>, name: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    cabinet.read_file(name)?.read_to_end(&mut out)?;
    Ok(out)
}

fn open_inner(bytes: Vec<u8>) -> std::io::Result<Inner> {
    cab::Cabinet::new(Cursor::new(bytes))
}

/// The fragments of a wsusscn2.cab.
pub struct CabFragments {
    path: PathBuf,
    /// (first revision id, inner cabinet), sorted.
    ranges: Vec<(u64, String)>,
    /// The inner cabinet last opened, with its members by `kind/revision`.
    open: Mutex<Option<OpenCabinet>>,
}

/// An inner cabinet's name, the cabinet, and its members by lower-case
/// `kind/revision`.
type OpenCabinet = (String, Inner, HashMap<String, String>);

impl std::fmt::Debug for CabFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CabFragments")
            .field("path", &self.path)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

/// Opens a wsusscn2.cab: returns package.xml and the fragment source.
pub fn open(path: &Path) -> anyhow::Result<(Vec<u8>, CabFragments)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut outer = cab::Cabinet::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a readable cabinet", path.display()))?;
    let names: Vec<String> = outer
        .folder_entries()
        .flat_map(|f| f.file_entries().map(|e| e.name().to_owned()).collect::<Vec<_>>())
        .collect();
    if !names.iter().any(|n| n.eq_ignore_ascii_case("package.cab")) {
        bail!(
            "{}: a cabinet without package.cab is not a wsusscn2 catalogue (it has {})",
            path.display(),
            names.join(", ")
        );
    }
    let package_cab =
        read_member(&mut outer, "package.cab").with_context(|| format!("{}: package.cab", path.display()))?;
    let mut package = open_inner(package_cab)
        .with_context(|| format!("{}: package.cab is not a readable cabinet", path.display()))?;
    let package_xml = read_member(&mut package, "package.xml")
        .with_context(|| format!("{}: package.cab has no package.xml", path.display()))?;
    let mut ranges = Vec::new();
    if let Ok(index) = read_member(&mut outer, "index.xml") {
        let text = String::from_utf8_lossy(&index).into_owned();
        ranges = cab_ranges(&text);
    }
    ranges.sort();
    Ok((
        package_xml,
        CabFragments {
            path: path.to_path_buf(),
            ranges,
            open: Mutex::new(None),
        },
    ))
}

/// `<CAB NAME="package2.cab" RANGESTART="0" />` entries of index.xml.
fn cab_ranges(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for tag in text.split('<').filter(|t| t.starts_with("CAB ")) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            tag.find(&key)
                .and_then(|i| tag[i + key.len()..].split('"').next().map(str::to_owned))
        };
        if let (Some(name), Some(start)) = (attr("NAME"), attr("RANGESTART").and_then(|s| s.parse().ok())) {
            out.push((start, name));
        }
    }
    out
}

impl Fragments for CabFragments {
    fn fragment(&self, kind: &str, revision_id: u64) -> Option<Vec<u8>> {
        let (_, cab_name) = self.ranges.iter().rev().find(|(start, _)| *start <= revision_id)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.as_ref().is_none_or(|(name, _, _)| name != cab_name) {
            let file = std::fs::File::open(&self.path).ok()?;
            let mut outer = cab::Cabinet::new(std::io::BufReader::new(file)).ok()?;
            let bytes = read_member(&mut outer, cab_name).ok()?;
            let inner = open_inner(bytes).ok()?;
            // Cabinets store Windows paths: `c\123456`.
            let members = inner
                .folder_entries()
                .flat_map(|f| f.file_entries().map(|e| e.name().to_owned()).collect::<Vec<_>>())
                .map(|n| (n.replace('\\', "/").to_ascii_lowercase(), n))
                .collect();
            *open = Some((cab_name.clone(), inner, members));
        }
        let (_, inner, members) = open.as_mut()?;
        let stored = members
            .get(&format!("{kind}/{revision_id}").to_ascii_lowercase())?
            .clone();
        read_member(inner, &stored).ok()
    }
}
