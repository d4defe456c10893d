//! WSUS update XML: full `<upd:Update>` documents as servers exchange them,
//! and the core / extended / localized fragments clients receive (the same
//! elements without namespaces, base rules written `b.WindowsVersion`).

use std::collections::BTreeMap;

use base64::Engine;
use roxmltree::Node;

use super::ImportError;
use super::xml::{self, child, children, element_error, local, text};
use crate::ids::{UpdateId, is_guid};
use crate::rule::{Cmp, MAX_RULE_DEPTH, Rule};
use crate::update::{
    Classification, Content, ExitCode, ExitMeaning, InstallCommand, Prerequisite, RestartBehavior, Severity, Update,
};

/// The update classification categories Microsoft publishes, by GUID.
pub const CLASSIFICATIONS: &[(&str, Classification)] = &[
    ("0fa1201d-4330-4fa8-8ae9-b877473b6441", Classification::SecurityUpdate),
    ("e6cf1350-c01b-414d-a61f-263d14d133b4", Classification::CriticalUpdate),
    ("68c5b0a3-d1a6-4553-ae49-01d3a7827828", Classification::ServicePack),
    ("28bc880e-0592-4cbf-8f95-c79b17911d5f", Classification::UpdateRollup),
    ("cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83", Classification::Update),
    ("e0789628-ce08-4437-be74-2495b842f43b", Classification::DefinitionUpdate),
    ("b54e7d24-7add-428f-8b75-90a396fa584f", Classification::FeaturePack),
    ("ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0", Classification::Driver),
    ("b4832bd8-e735-4761-8daf-37f882276dab", Classification::Tool),
    ("3689bdc8-b205-4af4-8d4a-a63924c5e9d5", Classification::Upgrade),
];

pub fn classification_of(guid: &str) -> Option<Classification> {
    CLASSIFICATIONS
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(guid))
        .map(|(_, c)| *c)
}

/// One update being put together from a document or from fragments.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub id: Option<UpdateId>,
    pub revision: Option<u64>,
    pub update_type: String,
    pub title: String,
    pub kb: Option<u64>,
    pub severity: Option<Severity>,
    pub restart: Option<RestartBehavior>,
    pub classification: Option<Classification>,
    pub installed_when: Option<Rule>,
    pub applicable_when: Option<Rule>,
    pub prerequisites: Vec<Prerequisite>,
    pub bundled: Vec<UpdateId>,
    pub supersedes: Vec<UpdateId>,
    pub superseded_by: Vec<UpdateId>,
    pub install: Option<InstallCommand>,
    pub content: Vec<Content>,
    pub cbs_package: Option<String>,
    pub release_date: Option<jiff::civil::Date>,
    pub line: u32,
}

/// Parses WSUS update XML into updates.
pub fn parse(source: &str, text_in: &str) -> Result<Vec<Update>, ImportError> {
    let mut records = Vec::new();
    parse_into(source, text_in, &mut records, true)?;
    records.into_iter().map(|r| r.into_update(source)).collect()
}

/// Reads `text_in` (a document or a run of fragments) into records. With
/// `split` each top-level `UpdateIdentity` starts a new record; without it
/// everything goes into the last record (a wsusscn2 fragment of one revision).
pub fn parse_into(source: &str, text_in: &str, records: &mut Vec<Record>, split: bool) -> Result<(), ImportError> {
    let body = strip_declaration(text_in);
    // Fragments have no single root; wrap them without adding a line.
    let wrapped = format!("<cascade-fragments>{body}</cascade-fragments>");
    let doc = xml::parse(source, &wrapped)?;
    let lines = xml::Lines::new(&wrapped);
    for node in doc.root_element().children().filter(|n| n.is_element()) {
        match local(node) {
            "Update" => {
                records.push(Record {
                    line: lines.of(node),
                    ..Record::default()
                });
                for part in node.children().filter(|n| n.is_element()) {
                    apply(source, records, part)?;
                }
            }
            "Updates" | "OfflineSyncPackage" => {
                return Err(element_error(
                    source,
                    node,
                    "a wsusscn2 package.xml is read by its own importer",
                ));
            }
            "UpdateIdentity" if split || records.is_empty() => {
                records.push(Record {
                    line: lines.of(node),
                    ..Record::default()
                });
                apply(source, records, node)?;
            }
            _ => {
                if records.is_empty() {
                    records.push(Record {
                        line: lines.of(node),
                        ..Record::default()
                    });
                }
                apply(source, records, node)?;
            }
        }
    }
    Ok(())
}

fn strip_declaration(text: &str) -> &str {
    let t = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = t.trim_start();
    if let Some(rest) = trimmed.strip_prefix("<?xml")
        && let Some(end) = rest.find("?>")
    {
        return &rest[end + 2..];
    }
    t
}

fn attr_guid(source: &str, node: Node<'_, '_>, name: &str) -> Result<UpdateId, ImportError> {
    let raw = node
        .attribute(name)
        .ok_or_else(|| element_error(source, node, format!("missing {name} attribute")))?;
    if !is_guid(raw) {
        return Err(element_error(source, node, format!("{name}={raw:?} is not a GUID")));
    }
    Ok(UpdateId::new(raw))
}

fn ids_in(source: &str, node: Node<'_, '_>) -> Result<Vec<UpdateId>, ImportError> {
    children(node, "UpdateIdentity")
        .map(|n| attr_guid(source, n, "UpdateID"))
        .collect()
}

fn apply(source: &str, records: &mut [Record], node: Node<'_, '_>) -> Result<(), ImportError> {
    let Some(rec) = records.last_mut() else {
        return Ok(());
    };
    match local(node) {
        "UpdateIdentity" => {
            rec.id = Some(attr_guid(source, node, "UpdateID")?);
            rec.revision = node.attribute("RevisionNumber").and_then(|r| r.parse().ok());
        }
        "Properties" | "ExtendedProperties" => {
            if let Some(t) = node.attribute("UpdateType") {
                rec.update_type = t.to_owned();
            }
            if let Some(s) = node.attribute("MsrcSeverity").and_then(Severity::parse) {
                rec.severity = Some(s);
            }
            if let Some(date) = node
                .attribute("CreationDate")
                .and_then(|d| d.get(..10))
                .and_then(|d| d.parse().ok())
            {
                rec.release_date = Some(date);
            }
            if let Some(b) = child(node, "InstallationBehavior") {
                let behavior = b.attribute("RebootBehavior").unwrap_or("NeverReboots");
                rec.restart = Some(
                    RestartBehavior::parse(behavior)
                        .ok_or_else(|| element_error(source, b, format!("unknown RebootBehavior {behavior:?}")))?,
                );
            }
            if let Some(kb) = child(node, "KBArticleID") {
                rec.kb = Some(
                    text(Some(kb))
                        .parse()
                        .map_err(|_| element_error(source, kb, "KBArticleID is not a number"))?,
                );
            }
        }
        "LocalizedPropertiesCollection" => {
            let preferred = children(node, "LocalizedProperties")
                .find(|p| text(child(*p, "Language")) == "en")
                .or_else(|| child(node, "LocalizedProperties"));
            if let Some(p) = preferred {
                apply(source, records, p)?;
            }
        }
        "LocalizedProperties" => {
            let title = text(child(node, "Title"));
            if !title.is_empty() {
                rec.title = title.to_owned();
            }
            if rec.kb.is_none() {
                let url = text(child(node, "MoreInfoUrl"));
                rec.kb = url.rsplit('/').next().and_then(|n| n.parse().ok());
            }
        }
        "Relationships" => {
            for rel in node.children().filter(|n| n.is_element()) {
                match local(rel) {
                    "Prerequisites" => {
                        let mut all_of = Vec::new();
                        for p in rel.children().filter(|n| n.is_element()) {
                            match local(p) {
                                "UpdateIdentity" => all_of.push(attr_guid(source, p, "UpdateID")?),
                                "AtLeastOne" => rec.prerequisites.push(Prerequisite {
                                    all_of: Vec::new(),
                                    any_of: ids_in(source, p)?,
                                    category: p.attribute("IsCategory") == Some("true"),
                                }),
                                other => {
                                    return Err(element_error(
                                        source,
                                        p,
                                        format!("unexpected <{other}> in Prerequisites"),
                                    ));
                                }
                            }
                        }
                        if !all_of.is_empty() {
                            rec.prerequisites.push(Prerequisite {
                                all_of,
                                any_of: Vec::new(),
                                category: false,
                            });
                        }
                    }
                    "BundledUpdates" => {
                        for b in rel.children().filter(|n| n.is_element()) {
                            match local(b) {
                                "UpdateIdentity" => rec.bundled.push(attr_guid(source, b, "UpdateID")?),
                                "AtLeastOne" => rec.bundled.extend(ids_in(source, b)?),
                                other => {
                                    return Err(element_error(
                                        source,
                                        b,
                                        format!("unexpected <{other}> in BundledUpdates"),
                                    ));
                                }
                            }
                        }
                    }
                    "SupersededUpdates" => rec.supersedes.extend(ids_in(source, rel)?),
                    _ => {}
                }
            }
        }
        "ApplicabilityRules" => {
            for part in node.children().filter(|n| n.is_element()) {
                match local(part) {
                    "IsInstalled" => rec.installed_when = single_rule(source, part)?,
                    "IsInstallable" => rec.applicable_when = single_rule(source, part)?,
                    "Metadata" => {
                        if let Some(identity) = xml::descendant(part, "assemblyIdentity") {
                            let a = |n: &str| identity.attribute(n).unwrap_or("");
                            let language = if a("language") == "neutral" { "" } else { a("language") };
                            rec.cbs_package = Some(format!(
                                "{}~{}~{}~{}~{}",
                                a("name"),
                                a("publicKeyToken"),
                                a("processorArchitecture"),
                                language,
                                a("version")
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        "Files" => {
            for f in children(node, "File") {
                let sha256 = children(f, "AdditionalDigest")
                    .find(|d| d.attribute("Algorithm") == Some("SHA256"))
                    .map(|d| {
                        base64::engine::general_purpose::STANDARD
                            .decode(text(Some(d)))
                            .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
                            .map_err(|e| element_error(source, d, format!("SHA256 digest is not base64: {e}")))
                    })
                    .transpose()?;
                let Some(sha256) = sha256 else { continue };
                let size = f.attribute("Size").unwrap_or("0");
                rec.content.push(Content {
                    file_name: f.attribute("FileName").unwrap_or("").to_owned(),
                    sha256,
                    size: size
                        .parse()
                        .map_err(|_| element_error(source, f, format!("Size={size:?} is not a number")))?,
                    url: None,
                });
            }
        }
        "HandlerSpecificData" => {
            if let Some(cmd) = child(node, "InstallCommand") {
                let program = cmd.attribute("Program").unwrap_or("").to_owned();
                let arguments = cmd
                    .attribute("Arguments")
                    .map(|a| a.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default();
                let mut exit_codes = Vec::new();
                for rc in children(cmd, "ReturnCode") {
                    let code = rc
                        .attribute("Code")
                        .and_then(|c| c.parse().ok())
                        .ok_or_else(|| element_error(source, rc, "ReturnCode without a numeric Code"))?;
                    let reboot = rc.attribute("IsRebootRequired") == Some("true");
                    let meaning = match (rc.attribute("Result"), reboot) {
                        (Some("Succeeded"), true) => ExitMeaning::SuccessRestartRequired,
                        (Some("Succeeded"), false) => ExitMeaning::Success,
                        _ => ExitMeaning::Failure,
                    };
                    exit_codes.push(ExitCode { code, meaning });
                }
                rec.install = Some(InstallCommand {
                    program,
                    arguments,
                    exit_codes,
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// The rule an `IsInstalled` or `IsInstallable` element holds: the
/// conjunction of its children.
fn single_rule(source: &str, parent: Node<'_, '_>) -> Result<Option<Rule>, ImportError> {
    let mut elements = parent.children().filter(|n| n.is_element());
    let Some(first) = elements.next() else {
        return Ok(None);
    };
    // The element itself is the first level: it becomes a conjunction when
    // it has more than one child, and for IsInstallable the conjunction with
    // `os.family = windows` that `into_update` adds. Counting it keeps every
    // rule an import makes within MAX_RULE_DEPTH.
    let mut rules = vec![rule_at(source, first, 2)?];
    for more in elements {
        rules.push(rule_at(source, more, 2)?);
    }
    Ok(Some(Rule::and(rules)))
}

/// Converts a WSUS rule element: `lar:And/Or/Not/True/False`, anything else
/// is a detection expression kept with its attributes.
pub fn rule(source: &str, node: Node<'_, '_>) -> Result<Rule, ImportError> {
    rule_at(source, node, 1)
}

/// [`rule`] for an element at nesting level `depth`, refusing to go deeper
/// than [`MAX_RULE_DEPTH`]: the conversion recurses once per level.
fn rule_at(source: &str, node: Node<'_, '_>, depth: usize) -> Result<Rule, ImportError> {
    if depth > MAX_RULE_DEPTH {
        return Err(ImportError::Element {
            source_name: source.to_owned(),
            line: xml::line(node),
            element: xml::qualified_name(node),
            message: format!("rule nesting deeper than {MAX_RULE_DEPTH} levels"),
        });
    }
    let elements = || node.children().filter(|n| n.is_element());
    let inner = |n| rule_at(source, n, depth + 1);
    Ok(match local(node) {
        "And" => Rule::and(elements().map(inner).collect::<Result<_, _>>()?),
        "Or" => {
            let rules: Vec<Rule> = elements().map(inner).collect::<Result<_, _>>()?;
            if rules.is_empty() {
                Rule::Never
            } else {
                Rule::Any(rules)
            }
        }
        "Not" => {
            let negated = elements()
                .next()
                .ok_or_else(|| element_error(source, node, "Not with nothing to negate"))?;
            Rule::Not(Box::new(inner(negated)?))
        }
        "True" => Rule::Always,
        "False" => Rule::Never,
        kind => {
            let attrs: BTreeMap<String, String> = node
                .attributes()
                .filter(|a| a.namespace().is_none() || !a.name().starts_with("xmlns"))
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect();
            if let Some(c) = attrs.get("Comparison")
                && crate::rule::detect::comparison(c).is_none()
            {
                return Err(element_error(source, node, format!("unknown Comparison {c:?}")));
            }
            Rule::Check {
                kind: kind.to_owned(),
                attrs,
            }
        }
    })
}

fn attach_package(rule: &mut Rule, package: &str) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => rules.iter_mut().for_each(|r| attach_package(r, package)),
        Rule::Not(inner) => attach_package(inner, package),
        Rule::Check { kind, attrs } if kind.starts_with("CbsPackage") => {
            attrs.entry("Package".to_owned()).or_insert_with(|| package.to_owned());
        }
        _ => {}
    }
}

impl Record {
    pub fn into_update(mut self, source: &str) -> Result<Update, ImportError> {
        let id = self.id.take().ok_or_else(|| ImportError::Element {
            source_name: source.to_owned(),
            line: self.line,
            element: "Update".to_owned(),
            message: "no UpdateIdentity".to_owned(),
        })?;
        // Prerequisites on classification categories say what the update is;
        // they are not something to install or detect.
        let mut classification = self.classification;
        self.prerequisites.retain(|p| {
            let ids: Vec<&UpdateId> = p.all_of.iter().chain(&p.any_of).collect();
            if !ids.is_empty() && ids.iter().all(|i| classification_of(i.as_str()).is_some()) {
                classification = classification.or_else(|| classification_of(ids[0].as_str()));
                false
            } else {
                true
            }
        });
        let classification = match self.update_type.as_str() {
            "Category" | "Detectoid" => Classification::Detectoid,
            "Driver" => Classification::Driver,
            _ => classification.unwrap_or(Classification::Update),
        };
        let title = if self.title.is_empty() {
            id.to_string()
        } else {
            self.title
        };
        let servicing = crate::update::Servicing::from_title(&title);
        let mut update = Update::new(id, title, classification);
        update.servicing = servicing;
        update.product = "Windows".to_owned();
        update.severity = self.severity.unwrap_or_default();
        update.release_date = self.release_date;
        if let Some(package) = &self.cbs_package {
            for r in [&mut self.installed_when, &mut self.applicable_when]
                .into_iter()
                .flatten()
            {
                attach_package(r, package);
            }
        }
        update.installed_when = self.installed_when;
        // Everything WSUS publishes is for Windows.
        update.applicable_when = Some(Rule::and(vec![
            Rule::fact("os.family", Cmp::Eq, "windows"),
            self.applicable_when.unwrap_or(Rule::Always),
        ]));
        update.prerequisites = self.prerequisites;
        update.bundled = self.bundled;
        update.supersedes = self.supersedes;
        update.superseded_by = self.superseded_by;
        update.restart = self.restart.unwrap_or(RestartBehavior::Never);
        update.install = self.install;
        update.content = self.content;
        if let Some(kb) = self.kb {
            update.aliases.push(UpdateId::kb(kb));
        }
        Ok(update)
    }
}
