//! `regedit` exports ("Windows Registry Editor Version 5.00", or
//! "REGEDIT4"): a portable parser of the format ([`parse`]), and what a
//! computer has installed read from one ([`software`]).
//!
//! The format, as `regedit /e` and `reg export` write it: a header line,
//! then `[HKEY_...\path]` key lines each followed by its values, one a line:
//! `"Name"="text"` (with `\\` and `\"` escaped), `@=` for the key's default
//! value, `dword:0000001a`, `hex:..` for REG_BINARY and `hex(n):..` for
//! every other type (bytes as written in the registry; REG_EXPAND_SZ and
//! REG_MULTI_SZ as NUL-terminated UTF-16LE, or in the ANSI code page under
//! a REGEDIT4 header). Long hex values go on over lines that end in `\`.
//! `[-key]` and `"Name"=-` delete a key or a value when the file is
//! imported; in an export they mean nothing and are passed over.
//!
//! The registry compares names without regard to case, and so does
//! [`RegistryExport::key`]; paths and names are kept as written.

use std::collections::{BTreeMap, BTreeSet};

use super::{ImportError, MAX_FIELD_BYTES};
use crate::ids::{UpdateId, is_guid, kb_numbers_in};
use crate::software::{Software, SoftwareList, SoftwareSource};

/// The data of a registry value, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegValue {
    /// REG_SZ: `"text"`, or `hex(1):` bytes.
    String(String),
    /// REG_EXPAND_SZ (`hex(2):`), not expanded: `%SystemRoot%\...`.
    ExpandString(String),
    /// REG_MULTI_SZ (`hex(7):`), up to the empty string that ends it.
    MultiString(Vec<String>),
    /// REG_DWORD: `dword:`, or four bytes of `hex(4):` (little endian) or
    /// `hex(5):` (big endian).
    Dword(u32),
    /// REG_QWORD: eight bytes of `hex(b):`, little endian.
    Qword(u64),
    /// REG_BINARY (`hex:`) and every other type (`hex(0):`, `hex(n):`),
    /// and a DWORD or QWORD whose byte count is wrong, as bytes.
    Binary(Vec<u8>),
}

impl RegValue {
    /// The value as text: strings as they are, a multi-string's strings one
    /// a line, numbers in decimal; `None` for bytes.
    pub fn text(&self) -> Option<String> {
        match self {
            RegValue::String(text) | RegValue::ExpandString(text) => Some(text.clone()),
            RegValue::MultiString(list) => Some(list.join("\n")),
            RegValue::Dword(n) => Some(n.to_string()),
            RegValue::Qword(n) => Some(n.to_string()),
            RegValue::Binary(_) => None,
        }
    }

    /// The value as a number: a DWORD or QWORD, or a string of decimal
    /// digits (installers write `"VersionMajor"="3"` as often as a DWORD).
    pub fn number(&self) -> Option<u64> {
        match self {
            RegValue::Dword(n) => Some(u64::from(*n)),
            RegValue::Qword(n) => Some(*n),
            RegValue::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    /// The size of the decoded data in bytes, to hold it to
    /// [`MAX_FIELD_BYTES`].
    fn size(&self) -> usize {
        match self {
            RegValue::String(text) | RegValue::ExpandString(text) => text.len(),
            RegValue::MultiString(list) => list.iter().map(|s| s.len() + 1).sum(),
            RegValue::Dword(_) => 4,
            RegValue::Qword(_) => 8,
            RegValue::Binary(bytes) => bytes.len(),
        }
    }
}

/// One key of an export and its values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegKey {
    /// As written, with the root in full (`HKEY_LOCAL_MACHINE`, not `HKLM`).
    path: String,
    /// Folded name → the name as written and the value; the default value
    /// has the empty name.
    values: BTreeMap<String, (String, RegValue)>,
}

impl RegKey {
    /// The full path, as written.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The last part of the path: an Uninstall entry's key name, a packed
    /// product code, an instance id.
    pub fn name(&self) -> &str {
        self.path.rsplit('\\').next().unwrap_or(&self.path)
    }

    /// The value called `name` (any case); `""` is the default value (`@`).
    pub fn value(&self, name: &str) -> Option<&RegValue> {
        self.values.get(&fold(name)).map(|(_, value)| value)
    }

    /// Every value, by name as written, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = (&str, &RegValue)> {
        self.values.values().map(|(name, value)| (name.as_str(), value))
    }

    /// The value's text, trimmed, when it has some.
    pub fn text(&self, name: &str) -> Option<String> {
        let text = self.value(name)?.text()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.value(name).and_then(RegValue::number)
    }
}

/// The keys of one or more regedit exports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryExport {
    /// Folded path → key.
    keys: BTreeMap<String, RegKey>,
}

impl RegistryExport {
    /// The key at `path`, compared without regard to case; the root may be
    /// abbreviated (`HKLM\SOFTWARE\...`).
    pub fn key(&self, path: &str) -> Option<&RegKey> {
        self.keys.get(&fold_path(path))
    }

    /// The keys directly under `path` that the export holds.
    pub fn subkeys<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a RegKey> + use<'a> {
        let prefix = format!("{}\\", fold_path(path));
        let depth = prefix.len();
        self.keys
            .range(prefix.clone()..)
            .take_while(move |(folded, _)| folded.starts_with(&prefix))
            .filter(move |(folded, _)| !folded[depth..].contains('\\'))
            .map(|(_, key)| key)
    }

    /// Whether the export holds `path` or any key under it.
    pub fn contains_tree(&self, path: &str) -> bool {
        let folded = fold_path(path);
        let prefix = format!("{folded}\\");
        self.keys.contains_key(&folded)
            || self
                .keys
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(key, _)| key.starts_with(&prefix))
    }

    /// Every key, ordered by folded path.
    pub fn keys(&self) -> impl Iterator<Item = &RegKey> {
        self.keys.values()
    }

    /// How many keys the export holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds the keys and values of `other`, as importing it after this one
    /// would: a value both hold takes `other`'s data.
    pub fn merge(&mut self, other: RegistryExport) {
        for (folded, key) in other.keys {
            let ours = self.keys.entry(folded).or_insert_with(|| RegKey {
                path: key.path.clone(),
                values: BTreeMap::new(),
            });
            ours.values.extend(key.values);
        }
    }

    fn entry(&mut self, path: &str) -> &mut RegKey {
        self.keys.entry(fold(path)).or_insert_with(|| RegKey {
            path: path.to_owned(),
            values: BTreeMap::new(),
        })
    }
}

/// The root keys, in full and abbreviated.
const ROOTS: &[(&str, Option<&str>)] = &[
    ("HKEY_LOCAL_MACHINE", Some("HKLM")),
    ("HKEY_CURRENT_USER", Some("HKCU")),
    ("HKEY_USERS", Some("HKU")),
    ("HKEY_CLASSES_ROOT", Some("HKCR")),
    ("HKEY_CURRENT_CONFIG", Some("HKCC")),
    ("HKEY_PERFORMANCE_DATA", None),
    ("HKEY_DYN_DATA", None),
];

/// `path` with its root written in full, or `None` when it starts with no
/// root key.
fn full_root(path: &str) -> Option<String> {
    let (root, rest) = match path.split_once('\\') {
        Some((root, rest)) => (root, Some(rest)),
        None => (path, None),
    };
    let (full, _) = ROOTS
        .iter()
        .find(|(full, short)| root.eq_ignore_ascii_case(full) || short.is_some_and(|s| root.eq_ignore_ascii_case(s)))?;
    Some(match rest {
        Some(rest) => format!("{full}\\{rest}"),
        None => (*full).to_owned(),
    })
}

/// A name as the registry compares it.
fn fold(name: &str) -> String {
    name.to_lowercase()
}

fn fold_path(path: &str) -> String {
    let path = path.trim().trim_end_matches('\\');
    fold(&full_root(path).unwrap_or_else(|| path.to_owned()))
}

const HEADER_5: &str = "Windows Registry Editor Version 5.00";
const HEADER_4: &str = "REGEDIT4";

/// Whether `text` is a regedit export: its first line is the header.
pub fn looks_like(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| header(l.trim()).is_some())
}

/// Whether `line` is an export's header, and if so whether the export
/// writes strings in hex as UTF-16 (version 5) rather than in the ANSI
/// code page (REGEDIT4).
fn header(line: &str) -> Option<bool> {
    if line.eq_ignore_ascii_case(HEADER_5) {
        Some(true)
    } else if line.eq_ignore_ascii_case(HEADER_4) {
        Some(false)
    } else {
        None
    }
}

/// The physical lines of a text, numbered from 1, without line ends or a
/// byte order mark (one is left in the middle when exports are
/// concatenated).
struct Lines<'a> {
    inner: std::iter::Enumerate<std::str::Split<'a, char>>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines {
            inner: text.split('\n').enumerate(),
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (index, line) = self.inner.next()?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        Some((u32::try_from(index + 1).unwrap_or(u32::MAX), line))
    }
}

/// At most 80 characters of `text`, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(77) {
        Some((cut, _)) if text.chars().count() > 80 => format!("{}...", &text[..cut]),
        _ => text.to_owned(),
    }
}

fn line_error(source: &str, line: u32, element: &str, message: impl Into<String>) -> ImportError {
    ImportError::Element {
        source_name: source.to_owned(),
        line,
        element: shorten(element),
        message: message.into(),
    }
}

fn too_long(size: usize) -> String {
    format!("{size} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes")
}

/// Parses the text of a regedit export (already decoded: regedit writes
/// UTF-16LE, which [`super::text::decode`] reads). Several exports written
/// one after the other are read as one. `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> Result<RegistryExport, ImportError> {
    let mut lines = Lines::new(text);
    let mut unicode = loop {
        let Some((_, line)) = lines.next() else {
            return Err(not_regedit(source, None));
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match header(line) {
            Some(unicode) => break unicode,
            None => return Err(not_regedit(source, Some(line))),
        }
    };
    let mut export = RegistryExport::default();
    // Where values go: the folded path of the current key; `None` before
    // the first key and after a `[-key]` line.
    let mut current: Option<String> = None;
    let mut deleted_key = false;
    while let Some((number, line)) = lines.next() {
        let line = line.trim_start();
        if line.trim_end().is_empty() || line.starts_with(';') {
            continue;
        }
        if let Some(next_unicode) = header(line.trim_end()) {
            // The next of several exports written one after the other.
            unicode = next_unicode;
            current = None;
            deleted_key = false;
            continue;
        }
        if line.starts_with('[') {
            let (path, deleted) = key_line(source, number, line.trim_end())?;
            deleted_key = deleted;
            current = (!deleted).then(|| {
                export.entry(&path);
                fold(&path)
            });
            continue;
        }
        if line.starts_with('"') || line.starts_with('@') {
            let (name, value) = value_line(source, number, line, &mut lines, unicode)?;
            match (&current, value) {
                (Some(folded), Some(value)) => {
                    if let Some(key) = export.keys.get_mut(folded) {
                        key.values.insert(fold(&name), (name, value));
                    }
                }
                // A deleted value, or a value of a deleted key.
                (Some(_), None) => {}
                (None, _) if deleted_key => {}
                (None, _) => {
                    return Err(line_error(
                        source,
                        number,
                        &display_name(&name),
                        "a value before the first [key] line",
                    ));
                }
            }
            continue;
        }
        return Err(line_error(
            source,
            number,
            line,
            "not a [key] line, a \"name\"=data value or a ; comment",
        ));
    }
    Ok(export)
}

fn not_regedit(source: &str, first_line: Option<&str>) -> ImportError {
    let message = match first_line {
        None => format!("not a regedit export: the text is empty, without a \"{HEADER_5}\" or \"{HEADER_4}\" line"),
        Some(line) if line.starts_with("HKEY_") => format!(
            "not a regedit export: it starts with {:?}, which looks like `reg query` output; export the key with \
             `reg export` or regedit instead",
            shorten(line)
        ),
        Some(line) => format!(
            "not a regedit export: the first line is {:?}, not \"{HEADER_5}\" or \"{HEADER_4}\"",
            shorten(line)
        ),
    };
    ImportError::Format {
        source_name: source.to_owned(),
        message,
    }
}

/// The path of a `[key]` or `[-key]` line with its root in full, and
/// whether it deletes the key.
fn key_line(source: &str, number: u32, line: &str) -> Result<(String, bool), ImportError> {
    let inner = line
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or_else(|| line_error(source, number, line, "a key line that does not end with ]"))?;
    let (inner, deleted) = match inner.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (inner, false),
    };
    let path = inner.trim().trim_end_matches('\\');
    if path.len() > MAX_FIELD_BYTES {
        return Err(line_error(source, number, path, too_long(path.len())));
    }
    let path = full_root(path).ok_or_else(|| {
        line_error(
            source,
            number,
            path,
            "the key does not start with a root key (HKEY_LOCAL_MACHINE, HKEY_CURRENT_USER, HKEY_USERS, \
             HKEY_CLASSES_ROOT or HKEY_CURRENT_CONFIG)",
        )
    })?;
    Ok((path, deleted))
}

/// How a value's name is shown in errors: `@` for the default value.
fn display_name(name: &str) -> String {
    if name.is_empty() {
        "@".to_owned()
    } else {
        name.to_owned()
    }
}

/// The text of a quoted string at the start of `text`, unescaped, and what
/// follows its closing quote; `None` when it is not closed.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let after = unquote_into(text.strip_prefix('"')?, &mut out)?;
    Some((out, after))
}

/// Unescapes the inside of a quoted string into `out` up to its closing
/// quote, and returns what follows that; `None` when the text ends first.
fn unquote_into<'a>(body: &'a str, out: &mut String) -> Option<&'a str> {
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some(&body[at + 1..]),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                // Wine's regedit writes these; Windows writes the characters.
                Some((_, 'n')) => out.push('\n'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, '0')) => {}
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    None
}

/// Parses a value line (and the lines it goes on over): the name as
/// written and the data, or `None` for a deleted value (`"Name"=-`).
fn value_line<'a>(
    source: &str,
    number: u32,
    line: &'a str,
    lines: &mut Lines<'a>,
    unicode: bool,
) -> Result<(String, Option<RegValue>), ImportError> {
    let (name, rest) = match line.strip_prefix('@') {
        Some(rest) => (String::new(), rest),
        None => quoted(line).ok_or_else(|| line_error(source, number, line, "the value name has no closing quote"))?,
    };
    let element = display_name(&name);
    let error = |message: String| line_error(source, number, &element, message);
    if name.len() > MAX_FIELD_BYTES {
        return Err(error(format!("a value name of {}", too_long(name.len()))));
    }
    let data = rest
        .trim_start()
        .strip_prefix('=')
        .ok_or_else(|| error("no = after the value name".to_owned()))?
        .trim_start();
    let value = if data.starts_with('"') {
        RegValue::String(string_data(data, lines).map_err(error)?)
    } else {
        let data = data.trim_end();
        if data == "-" {
            return Ok((name, None));
        }
        if let Some(digits) = strip_prefix_ignore_case(data, "dword:") {
            let digits = digits.trim();
            if digits.is_empty() || digits.len() > 8 {
                return Err(error(format!("dword:{digits} needs 1 to 8 hexadecimal digits")));
            }
            RegValue::Dword(
                u32::from_str_radix(digits, 16).map_err(|_| error(format!("dword:{digits} is not hexadecimal")))?,
            )
        } else if let Some((kind, hex)) = hex_kind(data) {
            let bytes = hex_data(hex, lines).map_err(error)?;
            decode_hex(kind, bytes, unicode)
        } else {
            return Err(error(format!(
                "unknown data {:?}: expected \"text\", dword:, hex:, hex(n): or -",
                shorten(data)
            )));
        }
    };
    if value.size() > MAX_FIELD_BYTES {
        return Err(error(too_long(value.size())));
    }
    Ok((name, Some(value)))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// The registry type of a `hex:` or `hex(n):` value (3, REG_BINARY, for
/// `hex:`) and the text after the colon.
fn hex_kind(data: &str) -> Option<(u32, &str)> {
    if let Some(rest) = strip_prefix_ignore_case(data, "hex:") {
        return Some((3, rest));
    }
    let rest = strip_prefix_ignore_case(data, "hex(")?;
    let (kind, rest) = rest.split_once("):")?;
    Some((u32::from_str_radix(kind.trim(), 16).ok()?, rest))
}

/// A quoted string's text. One that holds a line break goes on over the
/// next lines: regedit writes the break itself.
fn string_data(first: &str, lines: &mut Lines<'_>) -> Result<String, String> {
    let mut text = String::new();
    let mut rest = first.strip_prefix('"').unwrap_or(first);
    loop {
        if let Some(after) = unquote_into(rest, &mut text) {
            if !after.trim().is_empty() {
                return Err(format!("text after the closing quote: {:?}", shorten(after.trim())));
            }
            return Ok(text);
        }
        if text.len() > MAX_FIELD_BYTES {
            return Err(format!("a string of more than {}", too_long(text.len())));
        }
        let Some((_, next)) = lines.next() else {
            return Err("the string has no closing quote before the end of the file".to_owned());
        };
        text.push('\n');
        rest = next;
    }
}

/// The bytes of a hex value, following it over lines ending in `\`.
fn hex_data(first: &str, lines: &mut Lines<'_>) -> Result<Vec<u8>, String> {
    let mut text = first.trim().to_owned();
    while let Some(without) = text.strip_suffix('\\') {
        text.truncate(without.len());
        // Three characters a byte, and the indents and line ends between.
        if text.len() > 4 * MAX_FIELD_BYTES {
            return Err(format!("hex data of more than {}", too_long(text.len() / 3)));
        }
        let Some((_, next)) = lines.next() else {
            return Err("the hex data goes on (\\) past the end of the file".to_owned());
        };
        text.push_str(next.trim());
    }
    let pieces: Vec<&str> = text.split(',').map(str::trim).collect();
    let last = pieces.len() - 1;
    let mut bytes = Vec::with_capacity(pieces.len());
    for (at, piece) in pieces.iter().enumerate() {
        // Nothing at all, or a comma at the end.
        if piece.is_empty() && at == last {
            continue;
        }
        if piece.is_empty() || piece.len() > 2 {
            return Err(format!("{:?} is not a hexadecimal byte", shorten(piece)));
        }
        bytes.push(u8::from_str_radix(piece, 16).map_err(|_| format!("{piece:?} is not a hexadecimal byte"))?);
    }
    Ok(bytes)
}

/// The value of registry type `kind` stored as `bytes`.
fn decode_hex(kind: u32, bytes: Vec<u8>, unicode: bool) -> RegValue {
    const REG_SZ: u32 = 1;
    const REG_EXPAND_SZ: u32 = 2;
    const REG_DWORD: u32 = 4;
    const REG_DWORD_BIG_ENDIAN: u32 = 5;
    const REG_MULTI_SZ: u32 = 7;
    const REG_QWORD: u32 = 11;
    let strings = |bytes: &[u8]| -> Vec<String> {
        let text = if unicode {
            let units = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
        } else {
            // REGEDIT4 writes the ANSI code page, which the file does not
            // name: UTF-8 if it is that, else Latin-1.
            String::from_utf8(bytes.to_vec()).unwrap_or_else(|_| bytes.iter().map(|&b| char::from(b)).collect())
        };
        text.split('\0').map(str::to_owned).collect()
    };
    match kind {
        REG_SZ => RegValue::String(strings(&bytes).swap_remove(0)),
        REG_EXPAND_SZ => RegValue::ExpandString(strings(&bytes).swap_remove(0)),
        REG_MULTI_SZ => RegValue::MultiString(strings(&bytes).into_iter().take_while(|s| !s.is_empty()).collect()),
        REG_DWORD if bytes.len() == 4 => RegValue::Dword(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        REG_DWORD_BIG_ENDIAN if bytes.len() == 4 => {
            RegValue::Dword(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        }
        REG_QWORD if bytes.len() == 8 => {
            let mut le = [0; 8];
            le.copy_from_slice(&bytes);
            RegValue::Qword(u64::from_le_bytes(le))
        }
        _ => RegValue::Binary(bytes),
    }
}

/// The `{GUID}` a Windows Installer packed GUID stands for (as the
/// `Installer\Products` and `Installer\UpgradeCodes` keys name them): the
/// first three groups reversed, every later byte's two digits swapped.
/// Upper case, with braces.
pub fn unpack_guid(packed: &str) -> Option<String> {
    if packed.len() != 32 || !packed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let packed = packed.to_ascii_uppercase();
    let reversed = |range: std::ops::Range<usize>| packed[range].chars().rev().collect::<String>();
    let swapped = |range: std::ops::Range<usize>| {
        packed.as_bytes()[range]
            .chunks(2)
            .flat_map(|pair| [char::from(pair[1]), char::from(pair[0])])
            .collect::<String>()
    };
    Some(format!(
        "{{{}-{}-{}-{}-{}}}",
        reversed(0..8),
        reversed(8..12),
        reversed(12..16),
        swapped(16..20),
        swapped(20..32)
    ))
}

/// The packed form of a `{GUID}` (braces optional): the inverse of
/// [`unpack_guid`].
pub fn pack_guid(guid: &str) -> Option<String> {
    let guid = guid.trim();
    let bare = guid.strip_prefix('{').and_then(|g| g.strip_suffix('}')).unwrap_or(guid);
    if !is_guid(bare) {
        return None;
    }
    let hex: String = bare
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    // The transposition is its own inverse.
    unpack_guid(&hex).map(|g| g.replace(['{', '}', '-'], ""))
}

/// What a computer has installed, as an export shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Sorted, without duplicates.
    pub software: Vec<Software>,
    /// Updates installed as Add/Remove Programs entries (the hotfixes of
    /// Windows XP and Server 2003, Office and .NET Framework updates).
    pub installed_updates: BTreeSet<UpdateId>,
    /// The sources the export held in full, in [`SoftwareSource`] order: the
    /// key each is read from was in it. For [`SoftwareSource::Uninstall`],
    /// every machine-wide view: the native one, and on a 64-bit machine the
    /// 32-bit one (`Wow6432Node`) as well.
    pub sources: Vec<SoftwareSource>,
}

/// The list of a computer's software for the planner. It is `complete`
/// only when the export held both the machine-wide Uninstall keys (every
/// view, see [`Collected::sources`]) and the Windows Installer product
/// registrations (`HKLM\SOFTWARE\Classes\Installer\Products`, or the same
/// under `HKEY_CLASSES_ROOT\Installer`): between them
/// they list every program installed for all users, so a product missing
/// from both is not installed. The other sources only name products more
/// exactly. An export of the native view alone cannot show that the
/// machine is 64-bit and its 32-bit view missing, unless a path in its
/// Uninstall entries says `Program Files (x86)` or `SysWOW64`; then it is
/// not complete.
pub fn software_list(collected: &Collected) -> SoftwareList {
    SoftwareList {
        complete: collected.sources.contains(&SoftwareSource::Uninstall)
            && collected.sources.contains(&SoftwareSource::Msi),
        entries: collected.software.clone(),
    }
}

const NATIVE: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE";
const WOW64: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Wow6432Node";
const UNINSTALL: &str = "Microsoft\\Windows\\CurrentVersion\\Uninstall";

/// Reads the software a computer has installed from an export, wherever the
/// export has it: the Uninstall keys (machine-wide in both registry views,
/// and per user), Windows Installer products and upgrade codes, Office
/// Click-to-Run, the .NET Framework, .NET runtimes, SQL Server instances,
/// Exchange and SharePoint. Uninstall entries that are updates (XP-era
/// hotfixes with a ParentKeyName, `KB` keys) go to
/// [`Collected::installed_updates`] instead.
pub fn software(export: &RegistryExport) -> Collected {
    let mut found = Found {
        export,
        wow64: export.contains_tree(WOW64),
        software: Vec::new(),
        updates: BTreeSet::new(),
        sources: BTreeSet::new(),
    };
    found.uninstall();
    found.windows_installer();
    found.click_to_run();
    found.dotnet_framework();
    found.dotnet();
    found.sql_server();
    found.exchange();
    found.sharepoint();
    found.upgrade_codes();
    let mut software = found.software;
    software.sort();
    software.dedup();
    Collected {
        software,
        installed_updates: found.updates.into_iter().map(UpdateId::kb).collect(),
        sources: found.sources.into_iter().collect(),
    }
}

/// What [`software`] has found so far.
struct Found<'a> {
    export: &'a RegistryExport,
    /// The export has a 32-bit view: the machine is 64-bit.
    wow64: bool,
    software: Vec<Software>,
    updates: BTreeSet<u64>,
    sources: BTreeSet<SoftwareSource>,
}

/// Whether `parts` (a path split at `\`) matches `pattern`, without regard
/// to case; `*` matches any one part.
fn matches(parts: &[&str], pattern: &[&str]) -> bool {
    parts.len() == pattern.len()
        && parts
            .iter()
            .zip(pattern)
            .all(|(part, p)| *p == "*" || part.eq_ignore_ascii_case(p))
}

/// An Uninstall entry: a program, or an update with its KB number.
enum Entry {
    Program(Box<Software>),
    Update(u64),
}

impl Found<'_> {
    fn native_arch(&self) -> Option<String> {
        self.wow64.then(|| "x64".to_owned())
    }

    /// The machine is 64-bit: the export has a 32-bit view, or a path in a
    /// native Uninstall entry names the 32-bit program or system folder.
    fn machine_is_64bit(&self) -> bool {
        self.wow64
            || self.export.subkeys(&format!("{NATIVE}\\{UNINSTALL}")).any(|key| {
                key.values().any(|(_, value)| match value {
                    RegValue::String(text) | RegValue::ExpandString(text) => {
                        let text = text.to_lowercase();
                        text.contains("program files (x86)") || text.contains("\\syswow64")
                    }
                    _ => false,
                })
            })
    }

    fn uninstall(&mut self) {
        let native_arch = self.native_arch();
        for key in self.export.keys() {
            let parts: Vec<&str> = key.path().split('\\').collect();
            let (arch, user) = if matches(
                &parts,
                &[
                    "HKEY_LOCAL_MACHINE",
                    "SOFTWARE",
                    "Microsoft",
                    "Windows",
                    "CurrentVersion",
                    "Uninstall",
                    "*",
                ],
            ) {
                (native_arch.clone(), None)
            } else if matches(
                &parts,
                &[
                    "HKEY_LOCAL_MACHINE",
                    "SOFTWARE",
                    "Wow6432Node",
                    "Microsoft",
                    "Windows",
                    "CurrentVersion",
                    "Uninstall",
                    "*",
                ],
            ) {
                (Some("x86".to_owned()), None)
            } else if matches(
                &parts,
                &[
                    "HKEY_USERS",
                    "*",
                    "Software",
                    "Microsoft",
                    "Windows",
                    "CurrentVersion",
                    "Uninstall",
                    "*",
                ],
            ) {
                (None, Some(parts[1].to_owned()))
            } else if matches(
                &parts,
                &[
                    "HKEY_CURRENT_USER",
                    "Software",
                    "Microsoft",
                    "Windows",
                    "CurrentVersion",
                    "Uninstall",
                    "*",
                ],
            ) {
                (None, Some("current".to_owned()))
            } else {
                continue;
            };
            match uninstall_entry(key, arch, user) {
                Some(Entry::Program(software)) => self.software.push(*software),
                Some(Entry::Update(kb)) => {
                    self.updates.insert(kb);
                }
                None => {}
            }
        }
        let native = self.export.key(&format!("{NATIVE}\\{UNINSTALL}")).is_some();
        let wow64 = self.export.key(&format!("{WOW64}\\{UNINSTALL}")).is_some();
        if native && (wow64 || !self.machine_is_64bit()) {
            self.sources.insert(SoftwareSource::Uninstall);
        }
    }

    /// Products registered with Windows Installer for all users that no
    /// Uninstall entry already gave with their product code.
    fn windows_installer(&mut self) {
        let known: BTreeSet<String> = self.software.iter().filter_map(|s| s.product_code.clone()).collect();
        let mut added = BTreeSet::new();
        for root in INSTALLER_ROOTS {
            let products = format!("{root}\\Products");
            if self.export.key(&products).is_some() {
                self.sources.insert(SoftwareSource::Msi);
            }
            for key in self.export.subkeys(&products) {
                let (Some(product_code), Some(name)) = (unpack_guid(key.name()), key.text("ProductName")) else {
                    continue;
                };
                if known.contains(&product_code) || !added.insert(product_code.clone()) {
                    continue;
                }
                self.software.push(Software {
                    name,
                    version: key.value("Version").and_then(installer_version),
                    product_code: Some(product_code),
                    source: SoftwareSource::Msi,
                    ..Software::default()
                });
            }
        }
    }

    /// Sets the upgrade code of every product, from whatever source, whose
    /// product code an `Installer\UpgradeCodes` key lists.
    fn upgrade_codes(&mut self) {
        let mut upgrade_of: BTreeMap<String, String> = BTreeMap::new();
        for root in INSTALLER_ROOTS {
            for key in self.export.subkeys(&format!("{root}\\UpgradeCodes")) {
                let Some(upgrade_code) = unpack_guid(key.name()) else {
                    continue;
                };
                for (packed, _) in key.values() {
                    if let Some(product_code) = unpack_guid(packed) {
                        upgrade_of.entry(product_code).or_insert_with(|| upgrade_code.clone());
                    }
                }
            }
        }
        for software in &mut self.software {
            if let Some(code) = &software.product_code
                && let Some(upgrade_code) = upgrade_of.get(code)
            {
                software.upgrade_code = Some(upgrade_code.clone());
            }
        }
    }

    /// Office Click-to-Run: one entry a product release id.
    fn click_to_run(&mut self) {
        let Some(key) = self
            .export
            .key(&format!("{NATIVE}\\Microsoft\\Office\\ClickToRun\\Configuration"))
        else {
            return;
        };
        self.sources.insert(SoftwareSource::ClickToRun);
        let version = key.text("VersionToReport");
        let arch = key.text("Platform").map(|p| normalise_arch(&p));
        let channel = ["UpdateChannel", "CDNBaseUrl"]
            .iter()
            .find_map(|name| key.text(name).and_then(|value| click_to_run_channel(&value)));
        let ids = key.text("ProductReleaseIds").unwrap_or_default();
        for id in ids.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            self.software.push(Software {
                name: id.to_owned(),
                version: version.clone(),
                arch: arch.clone(),
                source: SoftwareSource::ClickToRun,
                channel: channel.clone(),
                ..Software::default()
            });
        }
    }

    /// The .NET Framework versions `NET Framework Setup\NDP` records, as
    /// Microsoft's "How to: Determine which .NET Framework versions are
    /// installed" reads them.
    fn dotnet_framework(&mut self) {
        let ndp = format!("{NATIVE}\\Microsoft\\NET Framework Setup\\NDP");
        if self.export.key(&ndp).is_some() {
            self.sources.insert(SoftwareSource::DotnetFramework);
        }
        let installed = |key: &RegKey, value: &str| key.number(value) == Some(1);
        let mut found: Vec<(String, Option<String>)> = Vec::new();
        if let Some(full) = self.export.key(&format!("{ndp}\\v4\\Full")) {
            match full.number("Release") {
                Some(release) => found.push((framework_4_name(release).to_owned(), full.text("Version"))),
                None if installed(full, "Install") => found.push(("4".to_owned(), full.text("Version"))),
                None => {}
            }
        } else if let Some(client) = self.export.key(&format!("{ndp}\\v4\\Client"))
            && installed(client, "Install")
        {
            found.push(("4 Client Profile".to_owned(), client.text("Version")));
        }
        for (subkey, name) in [
            ("v3.5", "3.5"),
            ("v3.0", "3.0"),
            ("v2.0.50727", "2.0"),
            ("v1.1.4322", "1.1"),
        ] {
            let key = self.export.key(&format!("{ndp}\\{subkey}"));
            // .NET 3.0 on its own records itself only in its Setup key.
            let setup = self.export.key(&format!("{ndp}\\{subkey}\\Setup"));
            if let Some(key) = key.filter(|k| installed(k, "Install")) {
                found.push((name.to_owned(), key.text("Version")));
            } else if let Some(setup) = setup.filter(|k| installed(k, "InstallSuccess")) {
                found.push((name.to_owned(), setup.text("Version")));
            }
        }
        for (name, version) in found {
            self.software.push(Software {
                name: format!("Microsoft .NET Framework {name}"),
                version,
                source: SoftwareSource::DotnetFramework,
                ..Software::default()
            });
        }
    }

    /// .NET (Core) shared runtimes. Their installers register them in the
    /// 32-bit view on a 64-bit machine (`Wow6432Node\dotnet\...\x64`), Arm64
    /// ones in the native view, so both are read; the architecture is the
    /// one in the path.
    fn dotnet(&mut self) {
        for view in [NATIVE, WOW64] {
            if self
                .export
                .key(&format!("{view}\\dotnet\\Setup\\InstalledVersions"))
                .is_some()
            {
                self.sources.insert(SoftwareSource::Dotnet);
            }
        }
        const NATIVE_RUNTIMES: [&str; 8] = [
            "HKEY_LOCAL_MACHINE",
            "SOFTWARE",
            "dotnet",
            "Setup",
            "InstalledVersions",
            "*",
            "sharedfx",
            "*",
        ];
        const WOW64_RUNTIMES: [&str; 9] = [
            "HKEY_LOCAL_MACHINE",
            "SOFTWARE",
            "Wow6432Node",
            "dotnet",
            "Setup",
            "InstalledVersions",
            "*",
            "sharedfx",
            "*",
        ];
        for key in self.export.keys() {
            let parts: Vec<&str> = key.path().split('\\').collect();
            if !matches(&parts, &NATIVE_RUNTIMES) && !matches(&parts, &WOW64_RUNTIMES) {
                continue;
            }
            let (arch, framework) = (parts[parts.len() - 3], parts[parts.len() - 1]);
            for (version, _) in key.values() {
                let version = version.trim();
                let Some(name) = runtime_name(framework, version) else {
                    continue;
                };
                self.software.push(Software {
                    name,
                    version: Some(version.to_owned()),
                    arch: Some(normalise_arch(arch)),
                    source: SoftwareSource::Dotnet,
                    ..Software::default()
                });
            }
        }
    }

    /// SQL Server database engine instances, in both registry views.
    fn sql_server(&mut self) {
        for (view, arch) in [(NATIVE, self.native_arch()), (WOW64, Some("x86".to_owned()))] {
            let base = format!("{view}\\Microsoft\\Microsoft SQL Server");
            if self.export.key(&base).is_some() {
                self.sources.insert(SoftwareSource::SqlServer);
            }
            let Some(instances) = self.export.key(&format!("{base}\\Instance Names\\SQL")) else {
                continue;
            };
            for (instance, id) in instances.values() {
                let Some(id) = id.text().map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()) else {
                    continue;
                };
                let setup = self.export.key(&format!("{base}\\{id}\\Setup"));
                let version = setup.and_then(|s| s.text("PatchLevel").or_else(|| s.text("Version")));
                self.software.push(Software {
                    name: sql_server_name(version.as_deref(), &id),
                    version,
                    arch: arch.clone(),
                    source: SoftwareSource::SqlServer,
                    channel: setup.and_then(|s| s.text("Edition")),
                    key: Some(instance.trim().to_owned()),
                    ..Software::default()
                });
            }
        }
    }

    /// Exchange Server 2010 (`v14`) and 2013 and later (`v15`).
    fn exchange(&mut self) {
        let base = format!("{NATIVE}\\Microsoft\\ExchangeServer");
        if self.export.key(&base).is_some() {
            self.sources.insert(SoftwareSource::Exchange);
        }
        for hive in ["v14", "v15"] {
            let Some(setup) = self.export.key(&format!("{base}\\{hive}\\Setup")) else {
                continue;
            };
            let part = |name: &str| setup.number(name);
            let (Some(major), Some(minor)) = (part("MsiProductMajor"), part("MsiProductMinor")) else {
                continue;
            };
            let (build, revision) = (part("MsiBuildMajor"), part("MsiBuildMinor"));
            let version = match (build, revision) {
                (Some(build), Some(revision)) => format!("{major}.{minor}.{build}.{revision}"),
                (Some(build), None) => format!("{major}.{minor}.{build}"),
                _ => format!("{major}.{minor}"),
            };
            let name = match (major, minor, build.unwrap_or(0)) {
                (14, ..) => "Microsoft Exchange Server 2010",
                (15, 0, _) => "Microsoft Exchange Server 2013",
                (15, 1, _) => "Microsoft Exchange Server 2016",
                // Exchange Server SE is 2019 CU15's code under a new name,
                // from build 15.2.2562.17 (July 2025) on.
                (15, 2, build) if build >= 2562 => "Microsoft Exchange Server Subscription Edition",
                (15, 2, _) => "Microsoft Exchange Server 2019",
                _ => "Microsoft Exchange Server",
            };
            self.software.push(Software {
                name: name.to_owned(),
                version: Some(version),
                arch: Some("x64".to_owned()),
                source: SoftwareSource::Exchange,
                ..Software::default()
            });
        }
    }

    /// SharePoint Server 2010 to Subscription Edition: a `Web Server
    /// Extensions\<hive>` key with a `WSS` subkey, which only a SharePoint
    /// server has.
    fn sharepoint(&mut self) {
        let base = format!("{NATIVE}\\Microsoft\\Shared Tools\\Web Server Extensions");
        if self.export.key(&base).is_some() {
            self.sources.insert(SoftwareSource::SharePoint);
        }
        for hive in ["14.0", "15.0", "16.0"] {
            let Some(key) = self.export.key(&format!("{base}\\{hive}")) else {
                continue;
            };
            if self.export.key(&format!("{base}\\{hive}\\WSS")).is_none() {
                continue;
            }
            let Some(version) = key.text("Version") else {
                continue;
            };
            self.software.push(Software {
                name: sharepoint_name(hive, &version).to_owned(),
                version: Some(version),
                arch: Some("x64".to_owned()),
                source: SoftwareSource::SharePoint,
                ..Software::default()
            });
        }
    }
}

/// Where Windows Installer registers per-machine products: the machine's
/// classes, which an export of HKEY_CLASSES_ROOT shows under that root.
const INSTALLER_ROOTS: [&str; 2] = [
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer",
    "HKEY_CLASSES_ROOT\\Installer",
];

/// Reads one Uninstall entry; `None` without a DisplayName.
fn uninstall_entry(key: &RegKey, arch: Option<String>, user: Option<String>) -> Option<Entry> {
    let name = key.text("DisplayName")?;
    let key_name = key.name();
    let named_kbs = kb_numbers_in(&name);
    // A key named for its update: "KB2079403", "KB2183461-IE8",
    // "KB2536276-v2", "KB917734_WMP10".
    let key_kb = strip_prefix_ignore_case(key_name, "KB")
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(|_| kb_numbers_in(key_name).first().copied());
    let release_type = key.text("ReleaseType").unwrap_or_default().to_lowercase();
    let update_release = ["update", "hotfix", "service pack"]
        .iter()
        .any(|word| release_type.contains(word));
    // Windows XP and Server 2003 register hotfixes, and Office and .NET
    // Framework their updates, as entries under a parent entry. A key named
    // for a KB is an update when it says so or names the KB again (Windows
    // Management Framework Core is KB968930 with ReleaseType "Software
    // Update"; "Update for Windows XP (KB943729)" says nothing).
    let is_update =
        key.text("ParentKeyName").is_some() || key_kb.is_some_and(|kb| update_release || named_kbs.contains(&kb));
    if is_update {
        // Office 2010 SP1 names its KB only in its help link.
        let kb = named_kbs
            .first()
            .copied()
            .or_else(|| kb_numbers_in(key_name).first().copied())
            .or_else(|| key.text("HelpLink").and_then(|link| kb_in_link(&link)));
        // An update-like entry without a KB number (XP's "Windows Media
        // Player 10", "Windows Imaging Component") stays a program: nothing
        // else would record that it is installed.
        if let Some(kb) = kb {
            return Some(Entry::Update(kb));
        }
    }
    let version = key
        .text("DisplayVersion")
        .or_else(|| key.value("Version").and_then(installer_version))
        .or_else(|| {
            let major = key.number("VersionMajor")?;
            Some(match key.number("VersionMinor") {
                Some(minor) => format!("{major}.{minor}"),
                None => major.to_string(),
            })
        });
    let product_code = (key.number("WindowsInstaller") == Some(1))
        .then(|| braced_guid(key_name))
        .flatten();
    Some(Entry::Program(Box::new(Software {
        name,
        version,
        publisher: key.text("Publisher"),
        arch,
        product_code,
        source: SoftwareSource::Uninstall,
        key: Some(key_name.to_owned()),
        user,
        ..Software::default()
    })))
}

/// The KB number in a support link: `...?kbid=2079403`, `.../kb/2460049`.
fn kb_in_link(link: &str) -> Option<u64> {
    let link = link.to_ascii_lowercase();
    let after = link
        .find("kbid=")
        .map(|at| &link[at + 5..])
        .or_else(|| link.find("/kb/").map(|at| &link[at + 4..]))?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|_| (1..=9).contains(&digits.len()))
}

/// `{GUID}` in upper case when `name` is one.
fn braced_guid(name: &str) -> Option<String> {
    let inner = name.strip_prefix('{')?.strip_suffix('}')?;
    is_guid(inner).then(|| format!("{{{}}}", inner.to_ascii_uppercase()))
}

/// A Windows Installer version: a DWORD packs major.minor.build as
/// `(v >> 24).(v >> 16 & 0xff).(v & 0xffff)`; a string is taken as written.
fn installer_version(value: &RegValue) -> Option<String> {
    match value {
        RegValue::Dword(v) => Some(format!("{}.{}.{}", v >> 24, (v >> 16) & 0xff, v & 0xffff)),
        RegValue::String(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// `x86`, `x64` or `arm64` as the registry writes them in any case.
fn normalise_arch(arch: &str) -> String {
    match arch.trim().to_ascii_lowercase().as_str() {
        "amd64" | "x86_64" => "x64".to_owned(),
        other => other.to_owned(),
    }
}

/// The .NET Framework 4.5 and later version a `Release` value stands for:
/// the highest whose minimum release it reaches, per Microsoft's table in
/// "How to: Determine which .NET Framework versions are installed".
fn framework_4_name(release: u64) -> &'static str {
    const MINIMUM_RELEASE: &[(u64, &str)] = &[
        (533_320, "4.8.1"),
        (528_040, "4.8"),
        (461_808, "4.7.2"),
        (461_308, "4.7.1"),
        (460_798, "4.7"),
        (394_802, "4.6.2"),
        (394_254, "4.6.1"),
        (393_295, "4.6"),
        (379_893, "4.5.2"),
        (378_675, "4.5.1"),
        (378_389, "4.5"),
    ];
    MINIMUM_RELEASE
        .iter()
        .find(|(minimum, _)| release >= *minimum)
        .map_or("4", |(_, version)| *version)
}

/// The Click-to-Run channel a CDN address or channel value names:
/// Microsoft's channel names (as the Office Deployment Tool spells them) for
/// the known CDN GUIDs and the older names; `None` for an address it does
/// not know.
fn click_to_run_channel(value: &str) -> Option<String> {
    const CDN_CHANNELS: &[(&str, &str)] = &[
        ("492350f6-3a01-4f97-b9c0-c7c6ddf67d60", "Current"),
        ("55336b82-a18d-4dd6-b5f6-9e5095c314a6", "MonthlyEnterprise"),
        ("7ffbc6bf-bc32-4f92-8982-f9dd17fd3114", "SemiAnnual"),
        ("b8f9b850-328d-4355-9145-c59439a0c4cf", "SemiAnnualPreview"),
        ("64256afe-f5d9-4f86-8936-8840a6a4f5be", "CurrentPreview"),
        ("5440fd1f-7ecb-4221-8110-145efaa6372f", "BetaChannel"),
        ("f2e724c1-748f-4b47-8fb8-8e0d210e9208", "PerpetualVL2019"),
        ("5030841d-c919-4594-8d2d-84ae4f96e58e", "PerpetualVL2021"),
        ("7983bac0-e531-40cf-be00-fd24fe66619c", "PerpetualVL2024"),
    ];
    const OLD_NAMES: &[(&str, &str)] = &[
        ("Monthly", "Current"),
        ("Targeted", "SemiAnnualPreview"),
        ("Broad", "SemiAnnual"),
        ("Deferred", "SemiAnnual"),
        ("FirstReleaseDeferred", "SemiAnnualPreview"),
        ("FirstReleaseCurrent", "CurrentPreview"),
        ("Insiders", "CurrentPreview"),
        ("InsiderFast", "BetaChannel"),
    ];
    let folded = value.trim().to_ascii_lowercase();
    if let Some((_, channel)) = CDN_CHANNELS.iter().find(|(guid, _)| folded.contains(guid)) {
        return Some((*channel).to_owned());
    }
    if folded.contains(['/', ':', '\\']) {
        return None;
    }
    let value = value.trim();
    Some(
        OLD_NAMES
            .iter()
            .find(|(old, _)| old.eq_ignore_ascii_case(value))
            .map_or(value, |(_, channel)| *channel)
            .to_owned(),
    )
}

/// The leading `major.minor` of a version.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The product a shared runtime belongs to, as Microsoft names it: ".NET
/// 6.0" (".NET Core 3.1" before 5), "ASP.NET Core 6.0", ".NET Desktop
/// Runtime 6.0"; `None` for another framework or a version without a
/// number.
fn runtime_name(framework: &str, version: &str) -> Option<String> {
    let (major, minor) = major_minor(version)?;
    let core = if major < 5 { " Core" } else { "" };
    let product = match framework.to_ascii_lowercase().as_str() {
        "microsoft.netcore.app" => format!(".NET{core}"),
        "microsoft.aspnetcore.app" => "ASP.NET Core".to_owned(),
        "microsoft.windowsdesktop.app" => format!(".NET{core} Desktop Runtime"),
        _ => return None,
    };
    Some(format!("{product} {major}.{minor}"))
}

/// "Microsoft SQL Server 2019" from the instance's version, or from its
/// instance id (`MSSQL15.MSSQLSERVER`, `MSSQL10_50.SQLEXPRESS`).
fn sql_server_name(version: Option<&str>, id: &str) -> String {
    let from_id = || {
        let rest = strip_prefix_ignore_case(id, "MSSQL")?;
        let number = rest.split('.').next()?;
        let (major, minor) = number.split_once('_').unwrap_or((number, "0"));
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    let year = match version.and_then(major_minor).or_else(from_id) {
        Some((9, _)) => "2005",
        Some((10, 50)) => "2008 R2",
        Some((10, _)) => "2008",
        Some((11, _)) => "2012",
        Some((12, _)) => "2014",
        Some((13, _)) => "2016",
        Some((14, _)) => "2017",
        Some((15, _)) => "2019",
        Some((16, _)) => "2022",
        Some((17, _)) => "2025",
        _ => return "Microsoft SQL Server".to_owned(),
    };
    format!("Microsoft SQL Server {year}")
}

/// The SharePoint Server release of a `Web Server Extensions` hive and its
/// `Version` ("16.0.0.10337": major.minor.0.build, as the
/// MicrosoftSharePointTeamServices header writes it; "16.0.10337.12109"
/// is read too). 2016, 2019 and Subscription Edition share hive 16.0 and
/// differ by build: 2016 from 16.0.4xxx, 2019 from 16.0.10337,
/// Subscription Edition from 16.0.14326.
fn sharepoint_name(hive: &str, version: &str) -> &'static str {
    match hive {
        "14.0" => "Microsoft SharePoint Server 2010",
        "15.0" => "Microsoft SharePoint Server 2013",
        _ => {
            let parts: Vec<u64> = version.trim().split('.').map_while(|p| p.parse().ok()).collect();
            let build = match parts.as_slice() {
                [_, _, 0, build, ..] => Some(*build),
                [_, _, build, ..] => Some(*build),
                _ => None,
            };
            match build {
                Some(build) if build >= 14_000 => "Microsoft SharePoint Server Subscription Edition",
                Some(build) if build >= 10_000 => "Microsoft SharePoint Server 2019",
                Some(_) => "Microsoft SharePoint Server 2016",
                None => "Microsoft SharePoint Server",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> RegistryExport {
        parse("test.reg", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> ImportError {
        parse("test.reg", text).expect_err("refused")
    }

    fn collected(text: &str) -> Collected {
        software(&parsed(text))
    }

    const KEY: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Test";

    #[test]
    fn strings_and_escapes() {
        let export = parsed(
            "Windows Registry Editor Version 5.00\r\n\r\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\r\n\
             @=\"default\"\r\n\
             \"Path\"=\"C:\\\\Program Files (x86)\\\\Crypto Pro\\\\CSP\\\\\"\r\n\
             \"Quoted\"=\"say \\\"hi\\\"\"\r\n\
             \"Name \\\"with\\\" quotes\"=\"\"\r\n\
             \"Spaced\" = \"x\"  \r\n",
        );
        let key = export.key(KEY).expect("key");
        assert_eq!(key.value(""), Some(&RegValue::String("default".into())));
        assert_eq!(
            key.value("path"),
            Some(&RegValue::String("C:\\Program Files (x86)\\Crypto Pro\\CSP\\".into()))
        );
        assert_eq!(key.value("Quoted"), Some(&RegValue::String("say \"hi\"".into())));
        assert_eq!(
            key.value("Name \"with\" quotes"),
            Some(&RegValue::String(String::new()))
        );
        assert_eq!(key.text("Spaced").as_deref(), Some("x"));
        assert_eq!(key.text("Name \"with\" quotes"), None);
    }

    #[test]
    fn a_string_with_a_line_break_goes_on_over_lines() {
        let export = parsed("REGEDIT4\n[HKEY_CURRENT_USER\\Test]\n\"Note\"=\"one\ntwo\"\n\"Next\"=dword:00000001\n");
        let key = export.key("HKCU\\Test").expect("key");
        assert_eq!(key.value("Note"), Some(&RegValue::String("one\ntwo".into())));
        assert_eq!(key.value("Next"), Some(&RegValue::Dword(1)));
    }

    #[test]
    fn numbers() {
        let export = parsed(
            "Windows Registry Editor Version 5.00\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\
             \"Version\"=dword:05002ee0\n\
             \"Small\"=dword:1a\n\
             \"Big\"=hex(b):00,10,a5,d4,e8,00,00,00\n\
             \"Four\"=hex(4):1a,00,00,00\n\
             \"FourBig\"=hex(5):00,00,00,1a\n\
             \"ShortQword\"=hex(b):01,02\n",
        );
        let key = export.key(KEY).expect("key");
        assert_eq!(key.value("Version"), Some(&RegValue::Dword(0x0500_2ee0)));
        assert_eq!(key.text("Version").as_deref(), Some("83898080"));
        assert_eq!(key.value("Small"), Some(&RegValue::Dword(26)));
        assert_eq!(key.value("Big"), Some(&RegValue::Qword(1_000_000_000_000)));
        assert_eq!(key.text("Big").as_deref(), Some("1000000000000"));
        assert_eq!(key.value("Four"), Some(&RegValue::Dword(26)));
        assert_eq!(key.value("FourBig"), Some(&RegValue::Dword(26)));
        assert_eq!(key.value("ShortQword"), Some(&RegValue::Binary(vec![1, 2])));
        assert_eq!(RegValue::String(" 3 ".into()).number(), Some(3));
    }

    #[test]
    fn hex_values_and_continuation_lines() {
        // The HelpLink of CryptoPro CSP in glpi-agent's 10_russian export,
        // and a REG_MULTI_SZ in the same layout regedit writes.
        let export = parsed(
            "Windows Registry Editor Version 5.00\r\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\r\n\
             \"HelpLink\"=hex(2):68,00,74,00,74,00,70,00,73,00,3a,00,2f,00,2f,00,73,00,75,00,\\\r\n\
             \x20 70,00,70,00,6f,00,72,00,74,00,2e,00,63,00,72,00,79,00,70,00,74,00,6f,00,70,\\\r\n\
             \x20 00,72,00,6f,00,2e,00,72,00,75,00,2f,00,00,00\r\n\
             \"List\"=hex(7):61,00,00,00,62,00,63,00,00,00,00,00\r\n\
             \"Bytes\"=hex:de,ad,BE,ef\r\n\
             \"None\"=hex(0):\r\n\
             \"Empty\"=hex(2):00,00\r\n\
             \"Sz\"=hex(1):0b,04,4b,04,00,00\r\n",
        );
        let key = export.key(KEY).expect("key");
        assert_eq!(
            key.value("HelpLink"),
            Some(&RegValue::ExpandString("https://support.cryptopro.ru/".into()))
        );
        assert_eq!(
            key.value("List"),
            Some(&RegValue::MultiString(vec!["a".into(), "bc".into()]))
        );
        assert_eq!(key.text("List").as_deref(), Some("a\nbc"));
        assert_eq!(
            key.value("Bytes"),
            Some(&RegValue::Binary(vec![0xde, 0xad, 0xbe, 0xef]))
        );
        assert_eq!(key.value("Bytes").and_then(RegValue::text), None);
        assert_eq!(key.value("None"), Some(&RegValue::Binary(Vec::new())));
        assert_eq!(key.value("Empty"), Some(&RegValue::ExpandString(String::new())));
        assert_eq!(key.value("Sz"), Some(&RegValue::String("Ћы".into())));
    }

    #[test]
    fn regedit4_writes_strings_in_hex_as_ansi() {
        let export =
            parsed("REGEDIT4\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\"Path\"=hex(2):25,77,69,6e,64,69,72,25,00\n");
        let key = export.key(KEY).expect("key");
        assert_eq!(key.value("Path"), Some(&RegValue::ExpandString("%windir%".into())));
    }

    #[test]
    fn deleted_keys_and_values_are_passed_over() {
        let export = parsed(
            "Windows Registry Editor Version 5.00\n\
             [-HKEY_LOCAL_MACHINE\\SOFTWARE\\Gone]\n\
             \"Stray\"=\"ignored\"\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\
             \"Kept\"=\"yes\"\n\
             \"Removed\"=-\n",
        );
        assert_eq!(export.len(), 1);
        assert!(export.key("HKEY_LOCAL_MACHINE\\SOFTWARE\\Gone").is_none());
        let key = export.key(KEY).expect("key");
        assert_eq!(key.values().count(), 1);
        assert!(key.value("Removed").is_none());
    }

    #[test]
    fn keys_are_found_in_any_case_and_kept_as_written() {
        let export = parsed(
            "Windows Registry Editor Version 5.00\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\1C Предприятие 7.7.27]\n\
             \"DisplayName\"=\"1C Предприятие 7.7\"\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\Other]\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\Other\\Deeper]\n",
        );
        let key = export
            .key("hklm\\software\\microsoft\\windows\\currentversion\\uninstall\\1c предприятие 7.7.27\\")
            .expect("key");
        assert_eq!(key.name(), "1C Предприятие 7.7.27");
        assert_eq!(key.text("displayname").as_deref(), Some("1C Предприятие 7.7"));
        let uninstall = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall";
        let names: Vec<&str> = export.subkeys(uninstall).map(RegKey::name).collect();
        assert_eq!(names, ["1C Предприятие 7.7.27", "Other"]);
        assert!(export.contains_tree(uninstall));
        assert!(export.key(uninstall).is_none());
        assert!(!export.contains_tree("HKLM\\SOFTWARE\\Wow6432Node"));
    }

    #[test]
    fn concatenated_exports_and_merge() {
        let first = "Windows Registry Editor Version 5.00\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\r\n\"A\"=\"1\"\r\n\"B\"=\"1\"\r\n";
        let second = "\u{feff}Windows Registry Editor Version 5.00\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\test]\r\n\"b\"=\"2\"\r\n[HKEY_USERS\\S-1-5-18]\r\n";
        let both = parsed(&format!("{first}{second}"));
        let mut merged = parsed(first);
        merged.merge(parsed(second));
        assert_eq!(both, merged);
        let key = merged.key(KEY).expect("key");
        assert_eq!(key.path(), KEY);
        assert_eq!(key.text("A").as_deref(), Some("1"));
        assert_eq!(key.text("B").as_deref(), Some("2"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn what_is_not_an_export_is_refused() {
        let message = |text: &str| error(text).to_string();
        assert_eq!(
            message("hello\n"),
            "test.reg: not a regedit export: the first line is \"hello\", not \"Windows Registry Editor Version \
             5.00\" or \"REGEDIT4\""
        );
        assert!(message("").contains("the text is empty"));
        assert!(
            message("\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Test\n    Name    REG_SZ    x\n").contains("`reg query` output")
        );
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line_and_the_value() {
        let header = "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\r\n";
        let cases: &[(&str, &str, &str)] = &[
            (
                "\"Count\"=dword:123456789\r\n",
                "Count",
                "dword:123456789 needs 1 to 8 hexadecimal digits",
            ),
            ("\"Count\"=dword:zz\r\n", "Count", "dword:zz is not hexadecimal"),
            ("\"Blob\"=hex:01,0g\r\n", "Blob", "\"0g\" is not a hexadecimal byte"),
            (
                "\"Blob\"=hex:01,\\",
                "Blob",
                "the hex data goes on (\\) past the end of the file",
            ),
            (
                "@=\"open\r\n",
                "@",
                "the string has no closing quote before the end of the file",
            ),
            ("\"Text\"=\"a\"b\r\n", "Text", "text after the closing quote: \"b\""),
            (
                "\"Text\"=sz:abc\r\n",
                "Text",
                "unknown data \"sz:abc\": expected \"text\", dword:, hex:, hex(n): or -",
            ),
            ("\"Text\"\r\n", "Text", "no = after the value name"),
            ("\"Text=\"x\"\r\n", "Text=", "no = after the value name"),
            ("\"Text=x\r\n", "\"Text=x", "the value name has no closing quote"),
            (
                "garbage\r\n",
                "garbage",
                "not a [key] line, a \"name\"=data value or a ; comment",
            ),
            (
                "[HKEY_LOCAL_MACHINE\\SOFTWARE\r\n",
                "[HKEY_LOCAL_MACHINE\\SOFTWARE",
                "a key line that does not end with ]",
            ),
        ];
        for (line, element, message) in cases {
            assert_eq!(
                error(&format!("{header}\"Fine\"=\"\"\r\n{line}")),
                ImportError::Element {
                    source_name: "test.reg".into(),
                    line: 5,
                    element: (*element).into(),
                    message: (*message).into(),
                },
                "{line}"
            );
        }
        let root = error("REGEDIT4\n[SOFTWARE\\Test]\n");
        assert!(
            matches!(&root, ImportError::Element { line: 2, element, message, .. }
                if element == "SOFTWARE\\Test" && message.starts_with("the key does not start with a root key")),
            "{root}"
        );
        let orphan = error("REGEDIT4\n\"A\"=\"b\"\n");
        assert!(
            matches!(&orphan, ImportError::Element { line: 2, element, message, .. }
                if element == "A" && message == "a value before the first [key] line"),
            "{orphan}"
        );
    }

    #[test]
    fn values_longer_than_the_limit_are_refused() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let text = format!("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\"Fine\"=\"\"\n\"Long\"=\"{long}\"\n");
        assert_eq!(
            error(&text),
            ImportError::Element {
                source_name: "test.reg".into(),
                line: 4,
                element: "Long".into(),
                message: format!(
                    "{} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
                    MAX_FIELD_BYTES + 1
                ),
            }
        );
        // 40,000 UTF-16 characters are 80,000 bytes of hex but 40,000 bytes
        // of text: within the limit once decoded.
        let units = "41,00,".repeat(40_000);
        let text = format!(
            "Windows Registry Editor Version 5.00\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\"Ok\"=hex(2):{units}00,00\n"
        );
        let export = parsed(&text);
        let value = export.key(KEY).and_then(|k| k.text("Ok")).expect("value");
        assert_eq!(value.len(), 40_000);
        // A string left open is followed over lines only up to the limit.
        let open = format!("{}\n", "y".repeat(999)).repeat(MAX_FIELD_BYTES / 1000 + 2);
        let text = format!("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\"Open\"=\"{open}");
        let unclosed = error(&text);
        assert!(
            matches!(&unclosed, ImportError::Element { line: 3, element, message, .. }
                if element == "Open" && message.starts_with("a string of more than")),
            "{unclosed}"
        );
        let lines = "00,\\\n  ".repeat(MAX_FIELD_BYTES);
        let text = format!("REGEDIT4\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Test]\n\"Huge\"=hex:{lines}00\n");
        let huge = error(&text);
        assert!(
            matches!(&huge, ImportError::Element { line: 3, element, message, .. }
                if element == "Huge" && message.contains("longer than the limit")),
            "{huge}"
        );
    }

    #[test]
    fn packed_guids() {
        // Office 2010 Professional Plus: its ProductCode and the name of its
        // Installer\Products key.
        let code = "{90140000-0011-0000-0000-0000000FF1CE}";
        let packed = "00004109110000000000000000F01FEC";
        assert_eq!(unpack_guid(packed).as_deref(), Some(code));
        assert_eq!(pack_guid(code).as_deref(), Some(packed));
        assert_eq!(
            pack_guid("90140000-0011-0000-0000-0000000ff1ce").as_deref(),
            Some(packed)
        );
        assert_eq!(unpack_guid(&packed.to_lowercase()).as_deref(), Some(code));
        assert_eq!(unpack_guid("0000410911000000000000000F01FEC"), None);
        assert_eq!(unpack_guid("00004109110000000000000000F01FEG"), None);
        assert_eq!(pack_guid("not a guid"), None);
    }

    /// An Uninstall key in the layout of glpi-agent's xp-Uninstall.reg.
    fn uninstall_key(view: &str, name: &str, values: &str) -> String {
        format!("[{view}\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{name}]\n{values}\n")
    }

    #[test]
    fn uninstall_entries() {
        let text = [
            "Windows Registry Editor Version 5.00\n".to_owned(),
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall]\n".to_owned(),
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall]\n".to_owned(),
            uninstall_key(
                NATIVE,
                "{26A24AE4-039D-4CA4-87B4-2F83216031FF}",
                "\"DisplayName\"=\" Java(TM) 6 Update 31 \"\n\"Publisher\"=\"Oracle\"\n\"WindowsInstaller\"=dword:00000001\n\
                 \"Version\"=dword:06000136",
            ),
            uninstall_key(WOW64, "7-Zip", "\"DisplayName\"=\"7-Zip 9.20\"\n\"VersionMajor\"=\"9\"\n\"VersionMinor\"=dword:14"),
            uninstall_key(WOW64, "NoName", "\"DisplayVersion\"=\"1.0\""),
            uninstall_key(WOW64, "EmptyName", "\"DisplayName\"=\"\""),
            uninstall_key(
                NATIVE,
                "{ABCDEF01-2345-6789-ABCD-EF0123456789}",
                "\"DisplayName\"=\"Hidden MSI\"\n\"SystemComponent\"=dword:00000001\n\"DisplayVersion\"=\"2.0\"",
            ),
            uninstall_key(
                NATIVE,
                "KB2079403",
                "\"DisplayName\"=\"Security Update for Windows XP (KB2079403)\"\n\"ParentKeyName\"=\"OperatingSystem\"\n\
                 \"ReleaseType\"=\"Security Update\"",
            ),
            uninstall_key(NATIVE, "KB943729", "\"DisplayName\"=\"Update for Windows XP (KB943729)\""),
            uninstall_key(
                NATIVE,
                "KB968930",
                "\"DisplayName\"=\"Windows Management Framework Core\"\n\"ReleaseType\"=\"Software Update\"",
            ),
            uninstall_key(
                NATIVE,
                "{90140000-0011-0000-0000-0000000FF1CE}_Office14.PROPLUS_{047B0968-E622-4FAA-9B4B-121FA109EDDE}",
                "\"DisplayName\"=\"Microsoft Office 2010 Service Pack 1 (SP1)\"\n\
                 \"HelpLink\"=\"http://support.microsoft.com/kb/2460049\"\n\"ParentKeyName\"=\"Office14.PROPLUS\"",
            ),
            uninstall_key(
                NATIVE,
                "Windows Media Player",
                "\"DisplayName\"=\"Windows Media Player 10\"\n\"ParentKeyName\"=\"OperatingSystem\"",
            ),
            uninstall_key(NATIVE, "KBTool", "\"DisplayName\"=\"KB Tool\"\n\"ReleaseType\"=\"Update\""),
            uninstall_key(
                "HKEY_USERS\\S-1-5-21-1-2-3-1001\\Software",
                "Spotify",
                "\"DisplayName\"=\"Spotify\"\n\"DisplayVersion\"=\"1.2.3\"",
            ),
            uninstall_key("HKEY_CURRENT_USER\\Software", "Tool", "\"DisplayName\"=\"Tool\""),
        ]
        .concat();
        let found = collected(&text);
        let program = |name: &str, version: &str, arch: Option<&str>| Software {
            name: name.into(),
            version: Some(version.into()),
            arch: arch.map(Into::into),
            source: SoftwareSource::Uninstall,
            ..Software::default()
        };
        let mut expected = vec![
            Software {
                publisher: Some("Oracle".into()),
                product_code: Some("{26A24AE4-039D-4CA4-87B4-2F83216031FF}".into()),
                key: Some("{26A24AE4-039D-4CA4-87B4-2F83216031FF}".into()),
                ..program("Java(TM) 6 Update 31", "6.0.310", Some("x64"))
            },
            Software {
                key: Some("7-Zip".into()),
                ..program("7-Zip 9.20", "9.20", Some("x86"))
            },
            // Not a Windows Installer entry: no product code.
            Software {
                key: Some("{ABCDEF01-2345-6789-ABCD-EF0123456789}".into()),
                ..program("Hidden MSI", "2.0", Some("x64"))
            },
            Software {
                version: None,
                key: Some("Windows Media Player".into()),
                ..program("Windows Media Player 10", "", Some("x64"))
            },
            Software {
                version: None,
                key: Some("KBTool".into()),
                ..program("KB Tool", "", Some("x64"))
            },
            Software {
                key: Some("Spotify".into()),
                user: Some("S-1-5-21-1-2-3-1001".into()),
                ..program("Spotify", "1.2.3", None)
            },
            Software {
                version: None,
                key: Some("Tool".into()),
                user: Some("current".into()),
                ..program("Tool", "", None)
            },
        ];
        expected.sort();
        assert_eq!(found.software, expected);
        assert_eq!(
            found.installed_updates,
            [2_079_403, 943_729, 968_930, 2_460_049]
                .into_iter()
                .map(UpdateId::kb)
                .collect()
        );
        assert_eq!(found.sources, [SoftwareSource::Uninstall]);
        assert!(!software_list(&found).complete);
    }

    #[test]
    fn a_64_bit_machine_without_its_32_bit_view_is_not_complete() {
        let installer = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products]\n";
        let native = uninstall_key(
            NATIVE,
            "CSP",
            "\"DisplayName\"=\"CSP\"\n\"InstallLocation\"=\"C:\\\\Program Files (x86)\\\\Crypto Pro\\\\CSP\\\\\"",
        );
        let uninstall = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall]\n";
        let header = "Windows Registry Editor Version 5.00\n";
        let one_view = collected(&format!("{header}{installer}{uninstall}{native}"));
        assert_eq!(one_view.sources, [SoftwareSource::Msi]);
        assert!(!software_list(&one_view).complete);
        let wow64 = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall]\n";
        let both = collected(&format!("{header}{installer}{uninstall}{wow64}{native}"));
        assert_eq!(both.sources, [SoftwareSource::Uninstall, SoftwareSource::Msi]);
        let list = software_list(&both);
        assert!(list.complete);
        assert_eq!(list.entries, both.software);
    }

    #[test]
    fn windows_installer_products_and_upgrade_codes() {
        // Layout of HKLM\SOFTWARE\Classes\Installer as Windows Installer
        // writes it: product keys named by packed product code with
        // ProductName and a DWORD Version; upgrade code keys whose value
        // names are packed product codes with empty data. The upgrade code
        // is made up.
        let text = "Windows Registry Editor Version 5.00\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products]\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products\\00004109110000000000000000F01FEC]\n\
            \"ProductName\"=\"Microsoft Office Professional Plus 2010\"\n\
            \"Version\"=dword:0e00178d\n\
            \"Language\"=dword:00000000\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products\\00004109110000000000000000F01FEC\\SourceList]\n\
            \"PackageName\"=\"ProPlusWW.msi\"\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products\\4EA42A62D9304AC4784BF238120613FF]\n\
            \"ProductName\"=\"Java(TM) 6 Update 31\"\n\
            \"Version\"=dword:06000136\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\Products\\NotPacked]\n\
            \"ProductName\"=\"Ignored\"\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes\\Installer\\UpgradeCodes\\10000000111122223333444455556666]\n\
            \"00004109110000000000000000F01FEC\"=\"\"\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{26A24AE4-039D-4CA4-87B4-2F83216031FF}]\n\
            \"DisplayName\"=\"Java(TM) 6 Update 31\"\n\
            \"DisplayVersion\"=\"6.0.310\"\n\
            \"WindowsInstaller\"=dword:00000001\n";
        let found = collected(text);
        assert_eq!(
            found.software,
            [
                Software {
                    name: "Java(TM) 6 Update 31".into(),
                    version: Some("6.0.310".into()),
                    product_code: Some("{26A24AE4-039D-4CA4-87B4-2F83216031FF}".into()),
                    key: Some("{26A24AE4-039D-4CA4-87B4-2F83216031FF}".into()),
                    ..Software::default()
                },
                Software {
                    name: "Microsoft Office Professional Plus 2010".into(),
                    version: Some("14.0.6029".into()),
                    product_code: Some("{90140000-0011-0000-0000-0000000FF1CE}".into()),
                    upgrade_code: Some("{00000001-1111-2222-3333-444455556666}".into()),
                    source: SoftwareSource::Msi,
                    ..Software::default()
                },
            ]
        );
        assert_eq!(found.sources, [SoftwareSource::Msi]);
    }

    #[test]
    fn office_click_to_run() {
        // HKLM\SOFTWARE\Microsoft\Office\ClickToRun\Configuration with the
        // values inventory scripts read (VersionToReport, Platform,
        // ProductReleaseIds, CDNBaseUrl, UpdateChannel), as in
        // MSEndpointMgr/Office Set-OPPUpdateChannel.ps1 and ConfigMgr's
        // Office365ProPlusConfigurations class.
        let text = "Windows Registry Editor Version 5.00\r\n\r\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Office\\ClickToRun\\Configuration]\r\n\
            \"Platform\"=\"x64\"\r\n\
            \"VersionToReport\"=\"16.0.17928.20156\"\r\n\
            \"ProductReleaseIds\"=\"O365ProPlusRetail,VisioProRetail\"\r\n\
            \"CDNBaseUrl\"=\"http://officecdn.microsoft.com/pr/492350f6-3a01-4f97-b9c0-c7c6ddf67d60\"\r\n\
            \"UpdateChannel\"=\"http://officecdn.microsoft.com/pr/55336b82-a18d-4dd6-b5f6-9e5095c314a6\"\r\n\
            \"UpdatesEnabled\"=\"True\"\r\n";
        let product = |name: &str| Software {
            name: name.into(),
            version: Some("16.0.17928.20156".into()),
            arch: Some("x64".into()),
            source: SoftwareSource::ClickToRun,
            channel: Some("MonthlyEnterprise".into()),
            ..Software::default()
        };
        let found = collected(text);
        assert_eq!(
            found.software,
            [product("O365ProPlusRetail"), product("VisioProRetail")]
        );
        assert_eq!(found.sources, [SoftwareSource::ClickToRun]);
        // Without UpdateChannel, the channel it was installed from.
        let found = collected(&text.replace("\"UpdateChannel\"", "\"Other\""));
        assert_eq!(found.software[0].channel.as_deref(), Some("Current"));
        for (value, channel) in [
            (
                "http://officecdn.microsoft.com/pr/7983BAC0-E531-40CF-BE00-FD24FE66619C",
                Some("PerpetualVL2024"),
            ),
            (
                "http://officecdn.microsoft.com/pr/00000000-0000-0000-0000-000000000000",
                None,
            ),
            ("Broad", Some("SemiAnnual")),
            ("MonthlyEnterprise", Some("MonthlyEnterprise")),
        ] {
            assert_eq!(click_to_run_channel(value).as_deref(), channel, "{value}");
        }
    }

    #[test]
    fn dotnet_framework_4_8() {
        // NDP\v4\Full as on a Windows 10 with .NET Framework 4.8 (values as
        // listed in jcurl/RJCP.DLL.Environment doc/NetVersion.md and
        // Microsoft's "How to: Determine which .NET Framework versions are
        // installed"), with 3.5 enabled.
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v2.0.50727]\n\
            \"CBS\"=dword:00000001\n\"Increment\"=\"4927\"\n\"Install\"=dword:00000001\n\"SP\"=dword:00000002\n\
            \"Version\"=\"2.0.50727.4927\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v3.0]\n\
            \"Install\"=dword:00000001\n\"SP\"=dword:00000002\n\"Version\"=\"3.0.30729.4926\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v3.5]\n\
            \"Install\"=dword:00000001\n\"InstallPath\"=\"C:\\\\Windows\\\\Microsoft.NET\\\\Framework64\\\\v3.5\\\\\"\n\
            \"SP\"=dword:00000001\n\"Version\"=\"3.5.30729.4926\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4\\Client]\n\
            \"Install\"=dword:00000001\n\"Release\"=dword:00080ff4\n\"Version\"=\"4.8.04084\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\NET Framework Setup\\NDP\\v4\\Full]\n\
            \"CBS\"=dword:00000001\n\"Install\"=dword:00000001\n\
            \"InstallPath\"=\"C:\\\\Windows\\\\Microsoft.NET\\\\Framework64\\\\v4.0.30319\\\\\"\n\
            \"Release\"=dword:00080ff4\n\"Servicing\"=dword:00000000\n\"TargetVersion\"=\"4.0.0\"\n\
            \"Version\"=\"4.8.04084\"\n";
        let framework = |name: &str, version: &str| Software {
            name: name.into(),
            version: Some(version.into()),
            source: SoftwareSource::DotnetFramework,
            ..Software::default()
        };
        let found = collected(text);
        assert_eq!(
            found.software,
            [
                framework("Microsoft .NET Framework 2.0", "2.0.50727.4927"),
                framework("Microsoft .NET Framework 3.0", "3.0.30729.4926"),
                framework("Microsoft .NET Framework 3.5", "3.5.30729.4926"),
                framework("Microsoft .NET Framework 4.8", "4.8.04084"),
            ]
        );
        assert_eq!(found.sources, [SoftwareSource::DotnetFramework]);
        for (release, version) in [
            (378_389, "4.5"),
            (378_758, "4.5.1"),
            (394_271, "4.6.1"),
            (461_814, "4.7.2"),
            (528_449, "4.8"),
            (533_325, "4.8.1"),
            (1_000, "4"),
        ] {
            assert_eq!(framework_4_name(release), version, "{release}");
        }
    }

    #[test]
    fn dotnet_6_runtime() {
        // The .NET installers register shared runtimes as value names (data
        // dword 1) under the 32-bit view on an x64 machine, where Visual
        // Studio's project system reads them
        // (SOFTWARE\WOW6432Node\dotnet\Setup\InstalledVersions\x64\sharedfx).
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64]\n\
            \"InstallLocation\"=\"C:\\\\Program Files\\\\dotnet\\\\\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64\\sharedfx]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64\\sharedfx\\Microsoft.AspNetCore.App]\n\
            \"6.0.25\"=dword:00000001\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64\\sharedfx\\Microsoft.NETCore.App]\n\
            \"3.1.32\"=dword:00000001\n\"6.0.25\"=dword:00000001\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64\\sharedfx\\Microsoft.WindowsDesktop.App]\n\
            \"6.0.25\"=dword:00000001\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\dotnet\\Setup\\InstalledVersions\\x64\\sharedhost]\n\
            \"Version\"=\"6.0.25\"\n";
        let runtime = |name: &str, version: &str| Software {
            name: name.into(),
            version: Some(version.into()),
            arch: Some("x64".into()),
            source: SoftwareSource::Dotnet,
            ..Software::default()
        };
        let found = collected(text);
        assert_eq!(
            found.software,
            [
                runtime(".NET 6.0", "6.0.25"),
                runtime(".NET Core 3.1", "3.1.32"),
                runtime(".NET Desktop Runtime 6.0", "6.0.25"),
                runtime("ASP.NET Core 6.0", "6.0.25"),
            ]
        );
        assert_eq!(found.sources, [SoftwareSource::Dotnet]);
        assert_eq!(
            runtime_name("Microsoft.NETCore.App", "8.0.0-rc.2.23479.6").as_deref(),
            Some(".NET 8.0")
        );
        assert_eq!(runtime_name("Microsoft.Other.App", "8.0.0"), None);
    }

    #[test]
    fn sql_server_2019() {
        // Instance Names\SQL maps instance names to instance ids, and
        // <id>\Setup holds Edition, Version and PatchLevel: what SQL Server
        // inventory scripts read with Get-ItemProperty.
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Microsoft SQL Server]\n\
            \"InstalledInstances\"=hex(7):4d,00,53,00,53,00,51,00,4c,00,53,00,45,00,52,00,56,00,45,00,52,00,00,00,\\\n\
            \x20 53,00,51,00,4c,00,45,00,58,00,50,00,52,00,45,00,53,00,53,00,00,00,00,00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Microsoft SQL Server\\Instance Names\\SQL]\n\
            \"MSSQLSERVER\"=\"MSSQL15.MSSQLSERVER\"\n\
            \"SQLEXPRESS\"=\"MSSQL10_50.SQLEXPRESS\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\Setup]\n\
            \"Collation\"=\"SQL_Latin1_General_CP1_CI_AS\"\n\
            \"Edition\"=\"Standard Edition\"\n\
            \"EditionType\"=\"Standard Edition\"\n\
            \"PatchLevel\"=\"15.0.4355.3\"\n\
            \"Version\"=\"15.0.2000.5\"\n\
            \"SqlProgramDir\"=\"C:\\\\Program Files\\\\Microsoft SQL Server\\\\\"\n";
        let found = collected(text);
        assert_eq!(
            found.software,
            [
                Software {
                    name: "Microsoft SQL Server 2008 R2".into(),
                    source: SoftwareSource::SqlServer,
                    key: Some("SQLEXPRESS".into()),
                    ..Software::default()
                },
                Software {
                    name: "Microsoft SQL Server 2019".into(),
                    version: Some("15.0.4355.3".into()),
                    source: SoftwareSource::SqlServer,
                    channel: Some("Standard Edition".into()),
                    key: Some("MSSQLSERVER".into()),
                    ..Software::default()
                },
            ]
        );
        assert_eq!(found.sources, [SoftwareSource::SqlServer]);
        assert_eq!(
            sql_server_name(Some("9.00.5000.00"), "MSSQL.1"),
            "Microsoft SQL Server 2005"
        );
        assert_eq!(sql_server_name(Some("16.0.1000.6"), ""), "Microsoft SQL Server 2022");
        assert_eq!(sql_server_name(None, "MSSQL.1"), "Microsoft SQL Server");
    }

    #[test]
    fn exchange_2019_cumulative_update() {
        // ExchangeServer\v15\Setup with the four DWORDs Exchange setup
        // writes, read by Exchange version scripts; 15.2.1118.7 is Exchange
        // 2019 CU12.
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\ExchangeServer]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\ExchangeServer\\v15\\Setup]\n\
            \"MsiInstallPath\"=\"C:\\\\Program Files\\\\Microsoft\\\\Exchange Server\\\\V15\\\\\"\n\
            \"MsiProductMajor\"=dword:0000000f\n\
            \"MsiProductMinor\"=dword:00000002\n\
            \"MsiBuildMajor\"=dword:0000045e\n\
            \"MsiBuildMinor\"=dword:00000007\n";
        let found = collected(text);
        assert_eq!(
            found.software,
            [Software {
                name: "Microsoft Exchange Server 2019".into(),
                version: Some("15.2.1118.7".into()),
                arch: Some("x64".into()),
                source: SoftwareSource::Exchange,
                ..Software::default()
            }]
        );
        assert_eq!(found.sources, [SoftwareSource::Exchange]);
        let se = text
            .replace("dword:0000045e", "dword:00000a02")
            .replace("MsiBuildMinor\"=dword:00000007", "MsiBuildMinor\"=dword:00000011");
        assert_eq!(
            collected(&se).software[0].name,
            "Microsoft Exchange Server Subscription Edition"
        );
        assert_eq!(collected(&se).software[0].version.as_deref(), Some("15.2.2562.17"));
    }

    #[test]
    fn sharepoint_2019() {
        // Web Server Extensions\16.0 with its Version in the
        // major.minor.0.build form (AutoSPInstaller writes "14.0.0.4762"
        // there for 2010) and the WSS subkey only a SharePoint server has.
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Shared Tools\\Web Server Extensions]\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Shared Tools\\Web Server Extensions\\15.0]\n\
            \"Version\"=\"15.0.0.4420\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Shared Tools\\Web Server Extensions\\16.0]\n\
            \"Location\"=\"C:\\\\Program Files\\\\Common Files\\\\Microsoft Shared\\\\Web Server Extensions\\\\16\\\\\"\n\
            \"Version\"=\"16.0.0.10337\"\n\n\
            [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Shared Tools\\Web Server Extensions\\16.0\\WSS]\n\
            \"SetupType\"=\"CLEAN_INSTALL\"\n\
            \"ServerRole\"=\"SINGLESERVERFARM\"\n";
        let found = collected(text);
        assert_eq!(
            found.software,
            [Software {
                name: "Microsoft SharePoint Server 2019".into(),
                version: Some("16.0.0.10337".into()),
                arch: Some("x64".into()),
                source: SoftwareSource::SharePoint,
                ..Software::default()
            }]
        );
        assert_eq!(found.sources, [SoftwareSource::SharePoint]);
        for (version, name) in [
            ("16.0.0.4351", "Microsoft SharePoint Server 2016"),
            ("16.0.10337.12109", "Microsoft SharePoint Server 2019"),
            ("16.0.0.14326", "Microsoft SharePoint Server Subscription Edition"),
            ("16.0.17928.20238", "Microsoft SharePoint Server Subscription Edition"),
            ("unknown", "Microsoft SharePoint Server"),
        ] {
            assert_eq!(sharepoint_name("16.0", version), name, "{version}");
        }
    }
}
