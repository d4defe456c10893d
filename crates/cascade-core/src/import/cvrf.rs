//! MSRC CVRF 1.1 monthly documents: one update per knowledge-base article
//! named by a "Vendor Fix" remediation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use roxmltree::Node;

use super::ImportError;
use super::product_names::{self, OsTarget, ProductName};
use super::xml::{self, child, children, element_error, local, text};
use crate::ids::{UpdateId, kb_number};
use crate::rule::Rule;
use crate::update::{Classification, RestartBehavior, Servicing, Severity, Target, Update};
use crate::version::Version;

#[derive(Default)]
struct Fix {
    /// Product id -> highest severity of the CVEs this KB fixes there.
    products: BTreeMap<String, Severity>,
    fixed_build: BTreeMap<String, Version>,
    cves: BTreeSet<String>,
    supersedes: BTreeSet<UpdateId>,
    sub_type: String,
    restart: Option<RestartBehavior>,
    url: String,
}

/// Parses a CVRF document into updates, and notes what was passed over.
pub fn parse(source: &str, text_in: &str) -> Result<(Vec<Update>, Vec<String>), ImportError> {
    let doc = xml::parse(source, text_in)?;
    let lines = xml::Lines::new(text_in);
    let root = doc.root_element();
    if local(root) != "cvrfdoc" {
        return Err(element_error(source, root, "expected a CVRF document (cvrfdoc)"));
    }
    let document_id = child(root, "DocumentTracking")
        .and_then(|t| child(t, "Identification"))
        .map(|i| text(child(i, "ID")).to_owned())
        .unwrap_or_default();
    let release_date = child(root, "DocumentTracking")
        .and_then(|t| child(t, "InitialReleaseDate").or_else(|| child(t, "CurrentReleaseDate")))
        .map(|d| parse_date(source, d))
        .transpose()?;

    let mut names: HashMap<String, String> = HashMap::new();
    if let Some(tree) = child(root, "ProductTree") {
        for p in tree
            .descendants()
            .filter(|n| n.is_element() && local(*n) == "FullProductName")
        {
            let id = p
                .attribute("ProductID")
                .ok_or_else(|| element_error(source, p, "FullProductName without ProductID"))?;
            names.insert(id.to_owned(), text(Some(p)).to_owned());
        }
    }

    let mut fixes: BTreeMap<u64, Fix> = BTreeMap::new();
    let mut skipped = Vec::new();
    for vuln in children(root, "Vulnerability") {
        let cve = text(child(vuln, "CVE")).to_owned();
        let mut severity: HashMap<&str, Severity> = HashMap::new();
        if let Some(threats) = child(vuln, "Threats") {
            for threat in children(threats, "Threat").filter(|t| t.attribute("Type") == Some("Severity")) {
                let Some(s) = Severity::parse(text(child(threat, "Description"))) else {
                    continue;
                };
                for pid in children(threat, "ProductID") {
                    for id in text(Some(pid)).split_whitespace() {
                        let entry = severity.entry(id).or_default();
                        *entry = (*entry).max(s);
                    }
                }
            }
        }
        let Some(remediations) = child(vuln, "Remediations") else {
            continue;
        };
        for rem in children(remediations, "Remediation").filter(|r| r.attribute("Type") == Some("Vendor Fix")) {
            let description = text(child(rem, "Description"));
            let Some(kb) = kb_number(description).filter(|_| description.chars().any(|c| c.is_ascii_digit())) else {
                skipped.push(format!(
                    "line {}: {cve}: vendor fix {description:?} is not a knowledge-base article",
                    lines.of(rem)
                ));
                continue;
            };
            let fix = fixes.entry(kb).or_default();
            if !cve.is_empty() {
                fix.cves.insert(cve.clone());
            }
            let fixed_build = text(child(rem, "FixedBuild"))
                .parse::<Version>()
                .ok()
                .filter(|v| v.len() >= 3);
            for pid in children(rem, "ProductID") {
                for id in text(Some(pid)).split_whitespace() {
                    let s = severity.get(id).copied().unwrap_or_default();
                    let entry = fix.products.entry(id.to_owned()).or_default();
                    *entry = (*entry).max(s);
                    if let Some(v) = &fixed_build {
                        fix.fixed_build.entry(id.to_owned()).or_insert_with(|| v.clone());
                    }
                }
            }
            for superseded in text(child(rem, "Supercedence"))
                .split([',', ';', ' '])
                .filter(|s| !s.is_empty())
            {
                match kb_number(superseded) {
                    Some(n) if n != kb => {
                        fix.supersedes.insert(UpdateId::kb(n));
                    }
                    Some(_) => {}
                    None => skipped.push(format!(
                        "line {}: KB{kb}: supersedence {superseded:?} is not a KB number",
                        lines.of(rem)
                    )),
                }
            }
            let sub_type = text(child(rem, "SubType"));
            if fix.sub_type.is_empty() {
                fix.sub_type = sub_type.to_owned();
            }
            if let Some(r) = RestartBehavior::parse(text(child(rem, "RestartRequired"))) {
                fix.restart = Some(match (fix.restart, r) {
                    (Some(RestartBehavior::Always), _) | (_, RestartBehavior::Always) => RestartBehavior::Always,
                    (Some(RestartBehavior::May), _) | (_, RestartBehavior::May) => RestartBehavior::May,
                    _ => RestartBehavior::Never,
                });
            }
            if fix.url.is_empty() {
                fix.url = text(child(rem, "URL")).to_owned();
            }
        }
    }

    let updates = fixes
        .into_iter()
        .map(|(kb, fix)| build_update(kb, fix, &names, &document_id, release_date))
        .collect();
    Ok((updates, skipped))
}

fn parse_date(source: &str, node: Node<'_, '_>) -> Result<jiff::civil::Date, ImportError> {
    let raw = text(Some(node));
    raw.get(..10)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| element_error(source, node, format!("{raw:?} is not a date")))
}

/// The rule and index for product `id`: an OS, an application, or an
/// application on an OS (composite ids such as `11676-11931`).
fn product_rule(id: &str, names: &HashMap<String, String>) -> (String, Rule, Option<OsTarget>) {
    let name = names.get(id).cloned().unwrap_or_else(|| format!("product {id}"));
    if let ProductName::Os(target) = product_names::parse_product_name(&name) {
        return (name, target.rule(), Some(target));
    }
    // "Microsoft .NET Framework 4.8 on Windows 10 Version 21H2 for x64-based
    // Systems": the application on that OS. The OS is the part after the last
    // " on " that names one, or the product named by the id after the dash.
    let os_and_app = name.match_indices(" on ").find_map(|(at, sep)| {
        match product_names::parse_product_name(&name[at + sep.len()..]) {
            ProductName::Os(os) => Some((os, name[..at].trim().to_owned())),
            ProductName::Other(_) => None,
        }
    });
    let os_and_app = os_and_app.or_else(|| {
        let (app, os) = id.split_once('-')?;
        match product_names::parse_product_name(names.get(os)?) {
            ProductName::Os(target) => Some((target, names.get(app).cloned().unwrap_or_else(|| name.clone()))),
            ProductName::Other(_) => None,
        }
    });
    match os_and_app {
        Some((os, app)) => (name, Rule::and(vec![os.rule(), Rule::product(app)]), None),
        None => (name.clone(), Rule::product(name), None),
    }
}

fn build_update(
    kb: u64,
    fix: Fix,
    names: &HashMap<String, String>,
    document_id: &str,
    release_date: Option<jiff::civil::Date>,
) -> Update {
    let mut targets: Vec<Target> = Vec::new();
    let mut os_targets: Vec<(OsTarget, Severity, Option<Version>, String)> = Vec::new();
    for (pid, severity) in &fix.products {
        let (name, rule, os) = product_rule(pid, names);
        let fixed_build = fix.fixed_build.get(pid).cloned();
        match os {
            Some(os) => os_targets.push((os, *severity, fixed_build, name)),
            None => targets.push(Target {
                product: name,
                rule,
                severity: *severity,
                fixed_build,
            }),
        }
    }
    // A KB for both the full and the Server Core installation of a server
    // applies whatever the installation: say so, so that computers whose
    // installation type is unknown are not left undecided.
    let mut merged: Vec<(OsTarget, Severity, Option<Version>, String)> = Vec::new();
    for (os, severity, fixed, name) in os_targets {
        let mut key = os.clone();
        key.server_core = None;
        if let Some(existing) = merged.iter_mut().find(|(o, ..)| {
            let mut k = o.clone();
            k.server_core = None;
            k == key && o.server_core.is_some() && o.server_core != os.server_core
        }) {
            existing.0.server_core = None;
            existing.1 = existing.1.max(severity);
            existing.3 = existing.3.trim_end_matches(" (Server Core installation)").to_owned();
            if existing.2.is_none() {
                existing.2 = fixed;
            }
            continue;
        }
        merged.push((os, severity, fixed, name));
    }
    for (os, severity, fixed_build, name) in merged {
        targets.push(Target {
            product: name,
            rule: os.rule(),
            severity,
            fixed_build,
        });
    }

    let first = targets.first().map(|t| t.product.clone()).unwrap_or_default();
    let sub_type = if fix.sub_type.is_empty() {
        "Security Update".to_owned()
    } else {
        fix.sub_type.clone()
    };
    // Name the products, not every release and architecture of them:
    // "Windows 10", "Windows Server 2022", or the application.
    let mut families: Vec<String> = Vec::new();
    for t in &targets {
        let family = match product_names::parse_product_name(&t.product) {
            ProductName::Os(os) => os.product,
            ProductName::Other(name) => name.split(" on ").next().unwrap_or(&name).to_owned(),
        };
        if !families.contains(&family) {
            families.push(family);
        }
    }
    let named = families.iter().take(2).cloned().collect::<Vec<_>>().join(", ");
    let title = match families.len().saturating_sub(2) {
        0 => format!("{document_id} {sub_type} for {named} (KB{kb})"),
        n => format!("{document_id} {sub_type} for {named} and {n} more (KB{kb})"),
    };
    let mut update = Update::new(
        UpdateId::kb(kb),
        title.trim().to_owned(),
        Classification::SecurityUpdate,
    );
    update.product = if targets.iter().any(|t| {
        t.rule
            .index_key()
            .is_some_and(|k| matches!(k, crate::rule::IndexKey::Os(_)))
    }) {
        "Windows".to_owned()
    } else {
        first
    };
    update.severity = targets.iter().map(|t| t.severity).max().unwrap_or_default();
    update.release_date = release_date;
    update.targets = targets;
    update.supersedes = fix.supersedes.into_iter().collect();
    update.restart = fix.restart.unwrap_or(RestartBehavior::May);
    update.cves = fix.cves.into_iter().collect();
    update.hotpatch = sub_type.to_ascii_lowercase().contains("hotpatch");
    update.servicing = Servicing::from_sub_type(&sub_type).or_else(|| {
        // A Windows 10 or later "Security Update" with a fixed build for the
        // OS is that month's cumulative update, as is .NET's on those releases.
        let modern = |os: &str| {
            os.starts_with("Windows 10")
                || os.starts_with("Windows 11")
                || os.starts_with("Windows Server 2016")
                || os.starts_with("Windows Server 2019")
                || os.starts_with("Windows Server 2022")
                || os.starts_with("Windows Server 2025")
                || os.starts_with("Windows Server,")
        };
        let os_cumulative = update.targets.iter().any(|t| {
            t.fixed_build.is_some()
                && matches!(product_names::parse_product_name(&t.product), ProductName::Os(os) if modern(&os.product))
        });
        let dotnet_cumulative = !update.targets.is_empty()
            && update.targets.iter().all(|t| {
                t.product.contains(".NET Framework")
                && t.product.rsplit_once(" on ").is_some_and(
                    |(_, os)| matches!(product_names::parse_product_name(os), ProductName::Os(o) if modern(&o.product)),
                )
            });
        (sub_type.eq_ignore_ascii_case("Security Update") && (os_cumulative || dotnet_cumulative))
            .then_some(Servicing::Cumulative)
    });
    update
}
