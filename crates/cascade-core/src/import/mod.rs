//! Catalog and inventory importers. Each takes the bytes of one file and the
//! name to use in errors; the format is detected from the content.

use crate::inventory::Inventory;
use crate::update::Update;

pub mod cvrf;
pub mod linux;
pub mod msuc;
pub mod native;
pub mod systeminfo;
pub mod text;
pub mod wsus;
pub mod wsusscn2;
mod xml;

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
}

impl CatalogFormat {
    pub fn name(self) -> &'static str {
        match self {
            CatalogFormat::Cvrf => "MSRC CVRF",
            CatalogFormat::WsusUpdateXml => "WSUS update XML",
            CatalogFormat::WsusScn2Package => "wsusscn2 package.xml",
            CatalogFormat::UpdateCatalog => "Microsoft Update Catalog JSON",
            CatalogFormat::Native => "Cascade catalog JSON",
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
        message: "not a catalog Cascade reads (MSRC CVRF XML, WSUS update XML, wsusscn2 package.xml, Microsoft Update Catalog JSON, Cascade catalog JSON)".to_owned(),
    })?;
    let (updates, skipped) = match format {
        CatalogFormat::Cvrf => cvrf::parse(source, &decode_utf8(source, bytes)?)?,
        CatalogFormat::WsusUpdateXml => (wsus::parse(source, &decode_utf8(source, bytes)?)?, Vec::new()),
        CatalogFormat::WsusScn2Package => (wsusscn2::parse(source, bytes, fragments)?, Vec::new()),
        CatalogFormat::UpdateCatalog => (msuc::parse(source, &decode_utf8(source, bytes)?)?, Vec::new()),
        CatalogFormat::Native => (native::parse_catalog(source, &decode_utf8(source, bytes)?)?, Vec::new()),
    };
    Ok(CatalogImport {
        format,
        updates,
        skipped,
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

/// The inventory formats Cascade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InventoryFormat {
    Native,
    Systeminfo,
    HotfixList,
    OsRelease,
    DpkgStatus,
}

/// Imports an inventory file: Cascade's JSON, `systeminfo` output, or a
/// `wmic qfe` / `Get-HotFix` list, in any of the encodings Windows writes.
pub fn import_inventory(source: &str, bytes: &[u8]) -> Result<(InventoryFormat, Inventory), ImportError> {
    let text = text::decode(bytes);
    let trimmed = strip_bom(&text).trim_start();
    if trimmed.starts_with('{') {
        return Ok((InventoryFormat::Native, native::parse_inventory(source, trimmed)?));
    }
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
            "not an inventory Cascade reads (Cascade inventory JSON, systeminfo output, wmic qfe or Get-HotFix list)"
                .to_owned(),
    })
}
