//! The `package.xml` of a wsusscn2.cab offline scan catalogue, read as a
//! stream (the real file is hundreds of megabytes), with the per-revision
//! core, extended and localized fragments added where the caller has them.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::wsus::{self, Record};
use super::{Fragments, ImportError, MAX_FIELD_BYTES, MAX_XML_DEPTH};
use crate::ids::{UpdateId, is_guid};
use crate::update::{Prerequisite, Update};

#[derive(Debug, Default)]
struct Raw {
    update_id: Option<UpdateId>,
    revision_id: u64,
    revision_number: Option<u64>,
    creation: Option<jiff::civil::Date>,
    superseded_by: Vec<u64>,
    bundled_by: Vec<u64>,
    prerequisites: Vec<UpdateId>,
    categories: Vec<(String, UpdateId)>,
    line: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    SupersededBy,
    BundledBy,
    Prerequisites,
    Categories,
}

fn line_at(bytes: &[u8], offset: u64) -> u32 {
    let end = (offset as usize).min(bytes.len());
    bytes[..end].iter().filter(|b| **b == b'\n').count() as u32 + 1
}

/// Line numbers for offsets met in order: counting from the start for each
/// `<Update>` made reading a real package (hundreds of megabytes, hundreds
/// of thousands of updates) quadratic.
struct Lines<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u32,
}

impl Lines<'_> {
    fn at(&mut self, offset: u64) -> u32 {
        let end = (offset as usize).min(self.bytes.len());
        if end < self.offset {
            return line_at(self.bytes, offset);
        }
        self.line += self.bytes[self.offset..end].iter().filter(|b| **b == b'\n').count() as u32;
        self.offset = end;
        self.line
    }
}

pub fn parse(source: &str, bytes: &[u8], fragments: &dyn Fragments) -> Result<Vec<Update>, ImportError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut raws: Vec<Raw> = Vec::new();
    let mut section = Section::None;
    let mut in_update = false;
    let mut lines = Lines {
        bytes,
        offset: 0,
        line: 1,
    };
    // The reader does not recurse, but bound the nesting like every other
    // XML importer: nothing real nests this deep.
    let mut depth = 0;
    let element_error = |offset: u64, element: &str, message: String| ImportError::Element {
        source_name: source.to_owned(),
        line: line_at(bytes, offset),
        element: element.to_owned(),
        message,
    };
    loop {
        let offset = reader.buffer_position();
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            let at = reader.error_position();
            ImportError::Xml {
                source_name: source.to_owned(),
                line: line_at(bytes, at),
                column: 0,
                message: e.to_string(),
            }
        })?;
        let (e, is_empty) = match &event {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    return Err(element_error(
                        offset,
                        &String::from_utf8_lossy(e.name().as_ref()),
                        format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
                    ));
                }
                (Some(e.clone()), false)
            }
            Event::Empty(e) => (Some(e.clone()), true),
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    b"Update" => in_update = false,
                    b"SupersededBy" | b"BundledBy" | b"Prerequisites" | b"Categories" => section = Section::None,
                    _ => {}
                }
                (None, false)
            }
            Event::Eof => break,
            _ => (None, false),
        };
        let Some(e) = e else {
            buf.clear();
            continue;
        };
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let attr = |key: &str| -> Result<Option<String>, ImportError> {
            attribute(&e, key).map_err(|m| element_error(offset, &name, m))
        };
        match name.as_str() {
            "Update" => {
                let id = attr("UpdateId")?.ok_or_else(|| element_error(offset, "Update", "missing UpdateId".into()))?;
                if !is_guid(&id) {
                    return Err(element_error(
                        offset,
                        "Update",
                        format!("UpdateId={id:?} is not a GUID"),
                    ));
                }
                let revision =
                    attr("RevisionId")?.ok_or_else(|| element_error(offset, "Update", "missing RevisionId".into()))?;
                raws.push(Raw {
                    update_id: Some(UpdateId::new(&id)),
                    revision_id: revision.parse().map_err(|_| {
                        element_error(offset, "Update", format!("RevisionId={revision:?} is not a number"))
                    })?,
                    revision_number: attr("RevisionNumber")?.and_then(|r| r.parse().ok()),
                    creation: attr("CreationDate")?.and_then(|d| d.get(..10).and_then(|d| d.parse().ok())),
                    line: lines.at(offset),
                    ..Raw::default()
                });
                in_update = !is_empty;
            }
            "SupersededBy" if in_update => section = Section::SupersededBy,
            "BundledBy" if in_update => section = Section::BundledBy,
            "Prerequisites" if in_update => section = Section::Prerequisites,
            "Categories" if in_update => section = Section::Categories,
            "Revision" if in_update => {
                let id = attr("Id")?
                    .and_then(|i| i.parse::<u64>().ok())
                    .ok_or_else(|| element_error(offset, "Revision", "missing or non-numeric Id".into()))?;
                if let Some(raw) = raws.last_mut() {
                    match section {
                        Section::SupersededBy => raw.superseded_by.push(id),
                        Section::BundledBy => raw.bundled_by.push(id),
                        _ => {}
                    }
                }
            }
            "UpdateId" if in_update && section == Section::Prerequisites => {
                let id = attr("Id")?
                    .filter(|i| is_guid(i))
                    .ok_or_else(|| element_error(offset, "UpdateId", "missing or malformed Id".into()))?;
                if let Some(raw) = raws.last_mut() {
                    raw.prerequisites.push(UpdateId::new(&id));
                }
            }
            "Category" if in_update && section == Section::Categories => {
                let kind = attr("Type")?.unwrap_or_default();
                let id = attr("Id")?
                    .filter(|i| is_guid(i))
                    .ok_or_else(|| element_error(offset, "Category", "missing or malformed Id".into()))?;
                if let Some(raw) = raws.last_mut() {
                    raw.categories.push((kind, UpdateId::new(&id)));
                }
            }
            _ => {}
        }
        buf.clear();
    }
    if raws.is_empty() {
        return Err(ImportError::Format {
            source_name: source.to_owned(),
            message: "no <Update> elements in the package".to_owned(),
        });
    }

    let by_revision: HashMap<u64, UpdateId> = raws
        .iter()
        .filter_map(|r| Some((r.revision_id, r.update_id.clone()?)))
        .collect();
    let resolve =
        |revisions: &[u64]| -> Vec<UpdateId> { revisions.iter().filter_map(|r| by_revision.get(r).cloned()).collect() };
    let mut bundles: HashMap<UpdateId, Vec<UpdateId>> = HashMap::new();
    for raw in &raws {
        for parent in resolve(&raw.bundled_by) {
            if let Some(child) = &raw.update_id {
                bundles.entry(parent).or_default().push(child.clone());
            }
        }
    }

    let mut updates = Vec::with_capacity(raws.len());
    for raw in raws {
        let id = raw.update_id.clone();
        let mut records = vec![Record {
            id: id.clone(),
            revision: raw.revision_number,
            release_date: raw.creation,
            line: raw.line,
            superseded_by: resolve(&raw.superseded_by),
            bundled: id.as_ref().and_then(|i| bundles.get(i)).cloned().unwrap_or_default(),
            ..Record::default()
        }];
        let classification_id = raw
            .categories
            .iter()
            .find(|(k, _)| k == "UpdateClassification")
            .map(|(_, i)| i.clone());
        if let Some(c) = classification_id
            .as_ref()
            .and_then(|c| wsus::classification_of(c.as_str()))
        {
            records[0].classification = Some(c);
        }
        let mut had_core = false;
        for kind in ["c", "x", "l/en"] {
            if let Some(fragment) = fragments.fragment(kind, raw.revision_id) {
                let name = format!("{source} ({kind}/{})", raw.revision_id);
                let text = super::text::decode(&fragment);
                wsus::parse_into(&name, &text, &mut records, false)?;
                had_core |= kind == "c";
            }
        }
        let record = records.swap_remove(0);
        let mut record = record;
        // The package flattens prerequisites; without the core fragment,
        // the ones that are also the update's categories are category
        // prerequisites.
        if !had_core {
            let categories: Vec<&UpdateId> = raw.categories.iter().map(|(_, i)| i).collect();
            let (category, plain): (Vec<UpdateId>, Vec<UpdateId>) =
                raw.prerequisites.into_iter().partition(|p| categories.contains(&p));
            for c in category {
                record.prerequisites.push(Prerequisite {
                    all_of: Vec::new(),
                    any_of: vec![c],
                    category: true,
                });
            }
            if !plain.is_empty() {
                record.prerequisites.push(Prerequisite {
                    all_of: plain,
                    any_of: Vec::new(),
                    category: false,
                });
            }
        }
        let mut update = record.into_update(source)?;
        if update.superseded_by.is_empty() {
            update.superseded_by = resolve(&raw.superseded_by);
        }
        updates.push(update);
    }
    Ok(updates)
}

fn attribute(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|err| format!("malformed attribute: {err}"))?;
        if a.key.local_name().as_ref() == key.as_bytes() {
            if a.value.len() > MAX_FIELD_BYTES {
                return Err(format!(
                    "attribute {key} is {} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
                    a.value.len()
                ));
            }
            return a
                .unescape_value()
                .map(|v| Some(v.into_owned()))
                .map_err(|err| format!("attribute {key}: {err}"));
        }
    }
    Ok(None)
}
