//! Catalog and inventory importers. Each takes the bytes of one file and the
//! name to use in errors; the format is detected from the content.

use crate::inventory::Inventory;
use crate::rule::Rule;
use crate::update::Update;

pub mod cvrf;
pub mod linux;
pub mod msuc;
pub mod native;
pub mod product_names;
pub mod regedit;
pub mod systeminfo;
pub mod text;
pub mod winget;
pub mod wsus;
pub mod wsusscn2;
mod xml;

/// The longest single value an importer takes from a file, in bytes: an XML
/// text or attribute value, a JSON string, a line of a text inventory. Real
/// titles, ids, product names and detection attributes are a few hundred
/// bytes at most and the longest text in the real CVRF documents at hand
/// (a note) is 16 KiB; anything longer is refused rather than carried into
/// the catalog, the store and every message that names it.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// The deepest element nesting an XML importer accepts. Real catalogs nest
/// fewer than 20 deep; rules are bounded tighter by [`MAX_RULE_DEPTH`].
pub const MAX_XML_DEPTH: usize = 256;

/// The deepest nesting a JSON importer accepts: well inside serde_json's
/// own limit of 128, and above the 70 levels a native catalog takes for a
/// rule of [`MAX_RULE_DEPTH`] (in a target of an update in the list).
pub const MAX_JSON_DEPTH: usize = 100;

/// The deepest applicability rule an importer makes (see
/// [`crate::rule::MAX_RULE_DEPTH`]): a WSUS rule nested deeper is refused.
pub use crate::rule::MAX_RULE_DEPTH;

/// Why a file could not be imported. Every variant names the file; the
/// ones about a place in it name the line and the element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: line {line}, column {column}: not well-formed XML: {message}")]
    Xml {
        source_name: String,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("{source_name}: line {line}: <{element}>: {message}")]
    Element {
        source_name: String,
        line: u32,
        element: String,
        message: String,
    },
    #[error("{source_name}: line {line}, column {column}: {message}")]
    Json {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Format { source_name: String, message: String },
}

/// The catalog formats Cascade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogFormat {
    /// MSRC CVRF 1.1 monthly document.
    Cvrf,
    /// WSUS update XML: `<upd:Update>` blobs or core/extended fragments.
    WsusUpdateXml,
    /// The `package.xml` of a wsusscn2.cab offline scan catalogue.
    WsusScn2Package,
    /// Microsoft Update Catalog entries as JSON.
    UpdateCatalog,
    /// Cascade's own JSON catalog (docs/catalog.schema.json).
    Native,
    /// Windows Package Manager (winget) manifests.
    Winget,
}

impl CatalogFormat {
    pub fn name(self) -> &'static str {
        match self {
            CatalogFormat::Cvrf => "MSRC CVRF",
            CatalogFormat::WsusUpdateXml => "WSUS update XML",
            CatalogFormat::WsusScn2Package => "wsusscn2 package.xml",
            CatalogFormat::UpdateCatalog => "Microsoft Update Catalog JSON",
            CatalogFormat::Native => "Cascade catalog JSON",
            CatalogFormat::Winget => "winget manifest",
        }
    }
}

/// Supplies the per-revision fragments of a wsusscn2 catalogue (`c/`, `x/`,
/// `l/en/` files), where the caller has them.
pub trait Fragments {
    /// `kind` is `"c"` (core), `"x"` (extended) or `"l/en"` (English text).
    fn fragment(&self, kind: &str, revision_id: u64) -> Option<Vec<u8>>;
}

/// No fragments.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFragments;

impl Fragments for NoFragments {
    fn fragment(&self, _: &str, _: u64) -> Option<Vec<u8>> {
        None
    }
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct CatalogImport {
    pub format: CatalogFormat,
    pub updates: Vec<Update>,
    /// Records passed over, each with why (a fix that is not a KB, ...).
    pub skipped: Vec<String>,
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The name of the first element of an XML text, without its prefix.
fn first_element(text: &str) -> Option<&str> {
    let mut rest = strip_bom(text).trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->")? + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = &r[r.find('>')? + 1..];
        } else if let Some(r) = rest.strip_prefix('<') {
            let end = r.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
            let name = &r[..end];
            return Some(name.rsplit(':').next().unwrap_or(name));
        } else {
            return None;
        }
        rest = rest.trim_start();
    }
}

/// Detects the catalog format of `bytes`.
pub fn detect_catalog(bytes: &[u8]) -> Option<CatalogFormat> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64 * 1024)]);
    let head = strip_bom(&head).trim_start();
    if head.starts_with('{') || head.starts_with('[') {
        if head.contains("\"cascade-catalog\"") {
            return Some(CatalogFormat::Native);
        }
        if head.contains("\"update_id\"") {
            return Some(CatalogFormat::UpdateCatalog);
        }
        return None;
    }
    if winget::looks_like(head) {
        return Some(CatalogFormat::Winget);
    }
    match first_element(head)? {
        "cvrfdoc" => Some(CatalogFormat::Cvrf),
        "OfflineSyncPackage" => Some(CatalogFormat::WsusScn2Package),
        "Update" | "UpdateIdentity" | "Updates" | "Properties" | "ExtendedProperties" | "Files" => {
            Some(CatalogFormat::WsusUpdateXml)
        }
        _ => None,
    }
}

/// Imports a catalog file.
pub fn import_catalog(source: &str, bytes: &[u8], fragments: &dyn Fragments) -> Result<CatalogImport, ImportError> {
    let format = detect_catalog(bytes).ok_or_else(|| ImportError::Format {
        source_name: source.to_owned(),
        message: "not a catalog Cascade reads (MSRC CVRF XML, WSUS update XML, wsusscn2 package.xml, Microsoft Update Catalog JSON, Cascade catalog JSON, winget manifest)".to_owned(),
    })?;
    if format == CatalogFormat::Winget {
        let text = decode_utf8(source, bytes)?;
        return import_winget(&[(source.to_owned(), text)], &[]);
    }
    let (updates, skipped) = match format {
        CatalogFormat::Cvrf => cvrf::parse(source, &decode_utf8(source, bytes)?)?,
        CatalogFormat::WsusUpdateXml => (wsus::parse(source, &decode_utf8(source, bytes)?)?, Vec::new()),
        CatalogFormat::WsusScn2Package => (wsusscn2::parse(source, bytes, fragments)?, Vec::new()),
        CatalogFormat::UpdateCatalog => (msuc::parse(source, &decode_utf8(source, bytes)?)?, Vec::new()),
        CatalogFormat::Native => (native::parse_catalog(source, &decode_utf8(source, bytes)?)?, Vec::new()),
        CatalogFormat::Winget => (Vec::new(), Vec::new()),
    };
    // Whatever an importer made of a file, no rule deeper than a node can
    // read back is handed on: refused here, naming the update, rather than
    // stored and then refused when read.
    for update in &updates {
        let rules = update
            .applicable_when
            .iter()
            .chain(&update.installed_when)
            .chain(update.targets.iter().map(|t| &t.rule));
        if let Some(deep) = rules.map(Rule::depth).find(|d| *d > MAX_RULE_DEPTH) {
            return Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!(
                    "update {}: a rule nested {deep} levels, deeper than {MAX_RULE_DEPTH}",
                    update.id
                ),
            });
        }
    }
    Ok(CatalogImport {
        format,
        updates,
        skipped,
    })
}

/// Imports winget manifest files together (`(name, text)`: the version,
/// installer and locale files of a version folder, or a repository read in
/// its layout), keeping only the packages `include` names when it names any.
pub fn import_winget(files: &[(String, String)], include: &[String]) -> Result<CatalogImport, ImportError> {
    for (name, text) in files {
        check_lines(name, text)?;
    }
    let imported = winget::import(files, include)?;
    Ok(CatalogImport {
        format: CatalogFormat::Winget,
        updates: imported.updates,
        skipped: imported.skipped,
    })
}

fn decode_utf8(source: &str, bytes: &[u8]) -> Result<String, ImportError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(strip_bom(s).to_owned()),
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
            Err(ImportError::Format {
                source_name: source.to_owned(),
                message: format!("line {line}: not valid UTF-8 (byte offset {})", e.valid_up_to()),
            })
        }
    }
}

fn json_error(source: &str, e: serde_json::Error) -> ImportError {
    ImportError::Json {
        source_name: source.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

/// Refuses a JSON text nested deeper than [`MAX_JSON_DEPTH`] or with a
/// string longer than [`MAX_FIELD_BYTES`], naming where. Runs before
/// decoding, so nothing that large is built and the error names the limit
/// (serde_json's own "recursion limit exceeded" does not); a string left
/// open is the decoder's to report.
fn check_json(source: &str, text: &str) -> Result<(), ImportError> {
    let bytes = text.as_bytes();
    let (mut line, mut line_start) = (1, 0);
    let mut depth = 0;
    let error = |line: usize, line_start: usize, at: usize, message: String| ImportError::Json {
        source_name: source.to_owned(),
        line,
        column: text[line_start..at].chars().count() + 1,
        message,
    };
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\n' => {
                line += 1;
                line_start = at + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(error(
                        line,
                        line_start,
                        at,
                        format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = at;
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    // An escape is two bytes; the second may be a quote.
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                let length = at.min(bytes.len()) - start - 1;
                if at < bytes.len() && length > MAX_FIELD_BYTES {
                    return Err(error(
                        line,
                        line_start,
                        start,
                        format!("a string of {length} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes"),
                    ));
                }
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// Refuses a text inventory with a line longer than [`MAX_FIELD_BYTES`]:
/// every value in one is a line or part of one.
fn check_lines(source: &str, text: &str) -> Result<(), ImportError> {
    match text.split('\n').enumerate().find(|(_, l)| l.len() > MAX_FIELD_BYTES) {
        Some((n, l)) => Err(ImportError::Format {
            source_name: source.to_owned(),
            message: format!(
                "line {}: {} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
                n + 1,
                l.len()
            ),
        }),
        None => Ok(()),
    }
}

/// The inventory formats Cascade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryFormat {
    Native,
    Systeminfo,
    HotfixList,
    OsRelease,
    DpkgStatus,
    /// A `regedit` / `reg export` file of the keys installed software is
    /// registered under.
    RegistryExport,
}

/// Imports an inventory file: Cascade's JSON, `systeminfo` output, a
/// `wmic qfe` / `Get-HotFix` list, or a `reg export` of the keys installed
/// software is registered under, in any of the encodings Windows writes.
pub fn import_inventory(source: &str, bytes: &[u8]) -> Result<(InventoryFormat, Inventory), ImportError> {
    let text = text::decode(bytes);
    let trimmed = strip_bom(&text).trim_start();
    if trimmed.starts_with('{') {
        return Ok((InventoryFormat::Native, native::parse_inventory(source, trimmed)?));
    }
    if regedit::looks_like(trimmed) {
        let export = regedit::parse(source, trimmed)?;
        let collected = regedit::software(&export);
        let mut inv = Inventory {
            software: Some(regedit::software_list(&collected)),
            installed_updates: collected.installed_updates,
            ..Inventory::default()
        };
        inv.normalize();
        return Ok((InventoryFormat::RegistryExport, inv));
    }
    check_lines(source, trimmed)?;
    if systeminfo::looks_like_hotfix_list(trimmed) {
        return Ok((
            InventoryFormat::HotfixList,
            systeminfo::parse_hotfix_list(source, trimmed)?,
        ));
    }
    if linux::looks_like_dpkg_status(trimmed) {
        return Ok((InventoryFormat::DpkgStatus, linux::parse_dpkg_status(source, trimmed)?));
    }
    if linux::looks_like_os_release(trimmed) {
        return Ok((InventoryFormat::OsRelease, linux::parse_os_release(source, trimmed)?));
    }
    if systeminfo::looks_like(trimmed) {
        return Ok((InventoryFormat::Systeminfo, systeminfo::parse(source, trimmed)?));
    }
    Err(ImportError::Format {
        source_name: source.to_owned(),
        message:
            "not an inventory Cascade reads (Cascade inventory JSON, systeminfo output, wmic qfe or Get-HotFix list, reg export of installed software)"
                .to_owned(),
    })
}
