//! Windows `systeminfo` output and `wmic qfe` / `Get-HotFix` lists.
//!
//! `systeminfo` translates its labels but not its layout: fields come in a
//! fixed order, values start in one column, and some values (the version,
//! the system type, the hotfix ids) are written the same in every language.
//! The parser leans on those and uses the labels it knows only as a hint.

use std::collections::BTreeSet;

use super::ImportError;
use crate::ids::{UpdateId, kb_number};
use crate::inventory::{Installation, Inventory, OsFamily, OsInfo};
use crate::version::Version;
use crate::windows;

/// One `Label: value` field with its indented continuation lines.
#[derive(Debug)]
struct Field {
    label: String,
    value: String,
    items: Vec<String>,
}

/// Labels of the OS name field in the languages seen in the wild.
const OS_NAME_LABELS: &[&str] = &[
    "os name",
    "os 名称",
    "作業系統名稱",
    "os 名",
    "os 이름",
    "название ос",
    "název operačního systému",
    "operációs rendszer neve",
    "betriebssystemname",
    "nom du système d'exploitation",
    "nombre del sistema operativo",
    "nome so",
    "nome do sistema operacional",
    "naam van besturingssysteem",
    "nazwa systemu operacyjnego",
];
const OS_VERSION_LABELS: &[&str] = &[
    "os version",
    "os 版本",
    "作業系統版本",
    "os バージョン",
    "os 버전",
    "версия ос",
    "verze operačního systému",
    "operációs rendszer verziója",
    "betriebssystemversion",
    "version du système",
    "versión del sistema operativo",
    "versione so",
    "versão do sistema operacional",
    "versie van besturingssysteem",
    "wersja systemu operacyjnego",
];

/// Whether `text` looks like `systeminfo` output.
pub fn looks_like(text: &str) -> bool {
    let fields = fields(text);
    fields.len() >= 8 && os_version_field(&fields).is_some()
}

/// Parses `systeminfo` output into an inventory.
pub fn parse(source: &str, text: &str) -> Result<Inventory, ImportError> {
    let fields = fields(text);
    let version_at = os_version_field(&fields).ok_or_else(|| ImportError::Format {
        source_name: source.to_owned(),
        message:
            "no OS version line (\"OS Version: 10.0.19044 N/A Build 19044\" or its translation): not systeminfo output"
                .to_owned(),
    })?;
    let version_field = &fields[version_at];
    let version = Version::leading(&version_field.value).ok_or_else(|| ImportError::Format {
        source_name: source.to_owned(),
        message: format!("the OS version field {:?} has no version number", version_field.value),
    })?;
    let name_field = fields
        .iter()
        .find(|f| OS_NAME_LABELS.contains(&f.label.to_lowercase().as_str()))
        .or_else(|| version_at.checked_sub(1).map(|i| &fields[i]));
    let name = name_field.map(|f| windows::clean_os_name(&f.value)).unwrap_or_default();
    // "OS Configuration" follows the manufacturer; its words are translated,
    // but server products say "Server" in their name in every language.
    let configuration = fields
        .get(version_at + 2)
        .map(|f| f.value.to_lowercase())
        .unwrap_or_default();
    let server = name.to_lowercase().contains("server")
        || ["server", "serveur", "servidor", "domain controller", "controller"]
            .iter()
            .any(|w| configuration.contains(w));
    let arch = fields
        .iter()
        .find_map(|f| {
            let v = f.value.trim();
            v.to_ascii_lowercase()
                .ends_with("-based pc")
                .then(|| v.split('-').next().unwrap_or(v).to_owned())
        })
        .or_else(|| {
            name.to_ascii_lowercase()
                .contains("x64 edition")
                .then(|| "x64".to_owned())
        });
    let service_pack = service_pack_in(&version_field.value).or(Some(0));

    let mut installed = BTreeSet::new();
    if let Some(hotfixes) = fields.iter().find(|f| f.items.iter().any(|i| is_hotfix_item(i))) {
        for item in &hotfixes.items {
            if let Some(kb) = item.split_whitespace().next().and_then(kb_number) {
                installed.insert(UpdateId::kb(kb));
            }
        }
    }

    let mut inv = Inventory {
        computer: fields
            .first()
            .map(|f| f.value.trim().to_owned())
            .filter(|h| !h.is_empty() && h != "..."),
        os: OsInfo {
            family: OsFamily::Windows,
            name: name.clone(),
            version: Some(version),
            arch,
            installation: Some(if server {
                Installation::Server
            } else {
                Installation::Client
            }),
            service_pack,
            ..OsInfo::default()
        },
        installed_updates: installed,
        ..Inventory::default()
    };
    inv.normalize();
    Ok(inv)
}

fn service_pack_in(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("service pack")? + "service pack".len();
    lower[at..].split_whitespace().next()?.parse().ok()
}

fn is_hotfix_item(item: &str) -> bool {
    let first = item.split_whitespace().next().unwrap_or("");
    kb_number(first).is_some() && (first.starts_with(['K', 'k', 'Q', 'q'])) || item.trim().starts_with("File ")
}

fn os_version_field(fields: &[Field]) -> Option<usize> {
    fields
        .iter()
        .position(|f| {
            OS_VERSION_LABELS.contains(&f.label.to_lowercase().as_str()) && Version::leading(&f.value).is_some()
        })
        .or_else(|| {
            fields.iter().take(6).position(|f| {
                Version::leading(&f.value).is_some_and(|v| v.len() >= 3)
                    && f.value.chars().filter(|c| *c == '.').count() >= 2
            })
        })
}

/// The display width of a character in a console: East Asian wide
/// characters take two columns, as they take two bytes in the code pages
/// consoles pad `systeminfo`'s labels in.
fn width(c: char) -> usize {
    unicode_width::UnicodeWidthChar::width(c)
        .unwrap_or(0)
        .max(usize::from(!c.is_control()))
}

/// The index of the character at display column `column`, if a character
/// starts there.
fn at_column(line: &[char], column: usize) -> Option<usize> {
    let mut col = 0;
    for (i, c) in line.iter().enumerate() {
        if col == column {
            return Some(i);
        }
        if col > column {
            return None;
        }
        col += width(*c);
    }
    (col == column).then_some(line.len())
}

/// Splits the text into fields at the column where values start.
fn fields(text: &str) -> Vec<Field> {
    let lines: Vec<Vec<char>> = text
        .split(['\n', '\r', '\u{85}'])
        .map(|l| l.chars().collect())
        .filter(|l: &Vec<char>| l.iter().any(|c| !c.is_whitespace()))
        .collect();
    let column = value_column(&lines);
    let mut fields: Vec<Field> = Vec::new();
    for line in &lines {
        let indented = line.first().is_some_and(|c| c.is_whitespace());
        if indented {
            if let Some(last) = fields.last_mut() {
                let text: String = line.iter().collect();
                let text = text.trim();
                // "[01]: KB4100347" and "[01] : Intel64 ..." become the item text.
                if let Some(rest) = text.strip_prefix('[')
                    && let Some(close) = rest.find(']')
                {
                    last.items
                        .push(rest[close + 1..].trim_start_matches([' ', ':']).trim().to_owned());
                    continue;
                }
                last.items.push(text.to_owned());
            }
            continue;
        }
        let Some(split) = column.and_then(|c| at_column(line, c)) else {
            // A line shorter than the value column: a label with no value.
            let text: String = line.iter().collect();
            if let Some(colon) = text.rfind(':') {
                fields.push(Field {
                    label: text[..colon].trim().to_owned(),
                    value: String::new(),
                    items: Vec::new(),
                });
            }
            continue;
        };
        let label: String = line[..split].iter().collect();
        let value: String = line[split..].iter().collect();
        let label = label.trim_end();
        let Some(label) = label.strip_suffix(':').or_else(|| label.strip_suffix('：')) else {
            continue;
        };
        fields.push(Field {
            label: label.trim().to_owned(),
            value: value.trim().to_owned(),
            items: Vec::new(),
        });
    }
    fields
}

/// The most common display column at which text resumes after "label:   ".
fn value_column(lines: &[Vec<char>]) -> Option<usize> {
    let mut counts: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    for line in lines.iter().filter(|l| !l[0].is_whitespace()) {
        let mut col = 0;
        let mut i = 0;
        while i < line.len() {
            let c = line[i];
            col += width(c);
            if matches!(c, ':' | '：') && line.get(i + 1) == Some(&' ') {
                let mut j = i + 1;
                let mut value_col = col;
                while j < line.len() && line[j] == ' ' {
                    j += 1;
                    value_col += 1;
                }
                if j < line.len() {
                    *counts.entry(value_col).or_default() += 1;
                }
            }
            i += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(col, n)| (*n, std::cmp::Reverse(*col)))
        .map(|(col, _)| col)
}

/// Whether `text` is a hotfix list (`wmic qfe`, `Get-HotFix`).
pub fn looks_like_hotfix_list(text: &str) -> bool {
    text.lines()
        .take(5)
        .any(|l| l.to_ascii_lowercase().contains("hotfixid"))
}

/// The installed updates of a hotfix list: every `KB<number>` or `Q<number>`
/// token on its data lines.
pub fn parse_hotfix_list(source: &str, text: &str) -> Result<Inventory, ImportError> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.to_ascii_lowercase().contains("hotfixid"));
    if lines.next().is_none() {
        return Err(ImportError::Format {
            source_name: source.to_owned(),
            message: "no header line with a HotFixID column: not a wmic qfe or Get-HotFix list".to_owned(),
        });
    }
    let mut installed = BTreeSet::new();
    for line in lines {
        for token in line.split_whitespace() {
            if token.starts_with(['K', 'k', 'Q', 'q'])
                && let Some(kb) = kb_number(token)
            {
                installed.insert(UpdateId::kb(kb));
            }
        }
    }
    Ok(Inventory {
        installed_updates: installed,
        ..Inventory::default()
    })
}
