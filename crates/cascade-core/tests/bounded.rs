//! Every importer is bounded: input nested deeper, or with a single value
//! larger, than the limits is refused with an error that names the limit and
//! where it was passed, and the process goes on (before the limits, 300,000
//! nested `<lar:Not>` overflowed the stack and aborted the test binary).
//! Rules at the limit import, and their JSON reads back inside the
//! envelopes that store and send them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cascade_core::import::{
    self, Fragments, ImportError, MAX_FIELD_BYTES, MAX_JSON_DEPTH, MAX_RULE_DEPTH, MAX_XML_DEPTH, NoFragments,
    import_catalog, import_inventory,
};
use cascade_core::model::{Change, ChangeOp, NodeId, Object};
use cascade_core::rule::{Cmp, Rule};
use cascade_core::{Classification, Update, UpdateId};

const HUGE: usize = 300_000;
const UPDATE_GUID: &str = "0a51549b-4e86-4a26-97d4-9e3567f24ea1";
const LEAF: &str =
    r#"<bar:RegDword Key="HKEY_LOCAL_MACHINE" Subkey="SOFTWARE\Cascade" Value="V" Comparison="EqualTo" Data="1"/>"#;

/// A WSUS update document whose IsInstallable holds `installable`, on line 4.
fn wsus_update(installable: &str, title: &str) -> String {
    format!(
        r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update" xmlns:lar="http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules" xmlns:bar="http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules">
<upd:UpdateIdentity UpdateID="{UPDATE_GUID}" RevisionNumber="1" />
<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>
<upd:ApplicabilityRules><upd:IsInstallable>{installable}</upd:IsInstallable></upd:ApplicabilityRules>
</upd:Update>"#
    )
}

fn nested(open: &str, close: &str, n: usize, leaf: &str) -> String {
    let mut s = String::with_capacity(n * (open.len() + close.len()) + leaf.len());
    for _ in 0..n {
        s.push_str(open);
    }
    s.push_str(leaf);
    for _ in 0..n {
        s.push_str(close);
    }
    s
}

fn nots(n: usize) -> String {
    nested("<lar:Not>", "</lar:Not>", n, LEAF)
}

fn refused(source: &str, bytes: &[u8]) -> String {
    match import_catalog(source, bytes, &NoFragments) {
        Ok(imported) => panic!("{source}: imported {} updates", imported.updates.len()),
        Err(e) => e.to_string(),
    }
}

fn refused_inventory(source: &str, bytes: &[u8]) -> String {
    match import_inventory(source, bytes) {
        Ok((format, _)) => panic!("{source}: imported as {format:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
}

fn big(n: usize) -> String {
    "x".repeat(n)
}

// --- WSUS rules -------------------------------------------------------------

#[test]
fn wsus_300000_nested_nots_are_refused() {
    let doc = wsus_update(&nots(HUGE), "Deep");
    assert!(doc.len() > 5_000_000);
    let message = refused("deep.xml", doc.as_bytes());
    assert_names(
        &message,
        &[
            "deep.xml: line 4: <lar:Not>: ",
            &format!("nested deeper than {MAX_XML_DEPTH} levels"),
        ],
    );
}

#[test]
fn wsus_rule_deeper_than_the_limit_is_refused_at_its_element() {
    // Below the XML limit, above the rule limit.
    let doc = wsus_update(&nots(200), "Deep");
    let message = refused("deep.xml", doc.as_bytes());
    assert_eq!(
        message,
        format!("deep.xml: line 4: <lar:Not>: rule nesting deeper than {MAX_RULE_DEPTH} levels")
    );
    let or = nested("<lar:Or>", "</lar:Or>", MAX_RULE_DEPTH, LEAF);
    let message = refused("or.xml", wsus_update(&or, "Deep").as_bytes());
    assert_names(&message, &["line 4: <lar:Or>: rule nesting deeper than 32 levels"]);
}

/// IsInstallable is the first level (it becomes the conjunction with
/// `os.family = windows`), so 30 Nots and their leaf make a rule of exactly
/// the limit, and one more Not is refused.
#[test]
fn wsus_rule_of_the_maximum_depth_imports_and_round_trips() {
    let doc = wsus_update(&nots(MAX_RULE_DEPTH - 2), "At the limit");
    let updates = import_catalog("max.xml", doc.as_bytes(), &NoFragments).unwrap().updates;
    let rule = updates[0].applicable_when.clone().unwrap();
    assert_eq!(rule.depth(), MAX_RULE_DEPTH);
    let json = serde_json::to_string(&rule).unwrap();
    assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
    assert_round_trips_where_it_is_kept(&updates[0]);

    let doc = wsus_update(&nots(MAX_RULE_DEPTH - 1), "One too deep");
    let message = refused("max.xml", doc.as_bytes());
    assert_names(
        &message,
        &["max.xml: line 4: <bar:RegDword>: rule nesting deeper than 32 levels"],
    );

    // IsInstalled counts the same way.
    let doc = wsus_update("", "Installed").replace(
        "<upd:IsInstallable></upd:IsInstallable>",
        &format!("<upd:IsInstalled>{}</upd:IsInstalled>", nots(MAX_RULE_DEPTH - 2)),
    );
    let updates = import_catalog("installed.xml", doc.as_bytes(), &NoFragments)
        .unwrap()
        .updates;
    assert_eq!(updates[0].installed_when.as_ref().unwrap().depth(), MAX_RULE_DEPTH - 1);
}

/// The JSON-deepest rule of the maximum depth (`all` over `all` down to a
/// check with attributes: two JSON levels each) inside an update, inside a
/// native catalog and inside a change in a list, reads back.
fn assert_round_trips_where_it_is_kept(update: &Update) {
    let json = serde_json::to_string(&import::native::NativeCatalog::new(vec![update.clone()])).unwrap();
    let back = import_catalog("catalog.json", json.as_bytes(), &NoFragments)
        .unwrap()
        .updates;
    assert_eq!(back, std::slice::from_ref(update));
    let changes = vec![Change {
        origin: NodeId::new("root").unwrap(),
        seq: 1,
        op: ChangeOp::Upsert(Object::Update(Box::new(update.clone()))).into(),
        seal: None,
    }];
    let json = serde_json::to_string(&vec![changes.clone()]).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Vec<Change>>>(&json).unwrap(), [changes]);
}

fn deepest_json_rule(depth: usize) -> Rule {
    let mut rule = Rule::Check {
        kind: "RegDword".into(),
        attrs: [("Key".to_owned(), "HKEY_LOCAL_MACHINE".to_owned())].into(),
    };
    for _ in 1..depth {
        rule = Rule::All(vec![rule, Rule::Never]);
    }
    rule
}

#[test]
fn the_json_deepest_rule_of_the_maximum_depth_round_trips() {
    let rule = deepest_json_rule(MAX_RULE_DEPTH);
    assert_eq!(rule.depth(), MAX_RULE_DEPTH);
    let mut update = Update::new(UpdateId::kb(1), "deep", Classification::Update);
    update.applicable_when = Some(rule);
    update.installed_when = Some(Rule::Not(Box::new(deepest_json_rule(MAX_RULE_DEPTH - 1))));
    assert_round_trips_where_it_is_kept(&update);
}

// --- Rule JSON --------------------------------------------------------------

#[test]
fn rule_json_deeper_than_the_limit_is_refused() {
    let at_limit = nested(r#"{"not":"#, "}", MAX_RULE_DEPTH - 1, r#""always""#);
    assert_eq!(serde_json::from_str::<Rule>(&at_limit).unwrap().depth(), MAX_RULE_DEPTH);
    let expected = format!("rule nesting deeper than {MAX_RULE_DEPTH} levels");
    for (what, text) in [
        ("not", nested(r#"{"not":"#, "}", MAX_RULE_DEPTH, r#""always""#)),
        ("all", nested(r#"{"all":["#, "]}", MAX_RULE_DEPTH, r#""never""#)),
        (
            "any",
            nested(r#"{"any":["always","#, "]}", MAX_RULE_DEPTH, r#""never""#),
        ),
        ("huge", nested(r#"{"not":"#, "}", HUGE, r#""always""#)),
    ] {
        let error = serde_json::from_str::<Rule>(&text).unwrap_err().to_string();
        assert!(error.starts_with(&expected), "{what}: {error}");
    }
    // A rule built too deep in code is written, but not read back.
    let too_deep = deepest_json_rule(MAX_RULE_DEPTH + 1);
    let json = serde_json::to_string(&too_deep).unwrap();
    let error = serde_json::from_str::<Rule>(&json).unwrap_err().to_string();
    assert!(error.starts_with(&expected), "{error}");
    // From a serde_json value too, the way the API decodes parameters.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(serde_json::from_value::<Rule>(value).is_err());
}

#[test]
fn rule_json_keeps_its_shape_and_its_errors() {
    for json in [
        r#""always""#,
        r#"{"all":[]}"#,
        r#"{"fact":{"name":"os.build","cmp":"ge","value":"19041"}}"#,
        r#"{"fact":{"name":"os.build","cmp":"exists"}}"#,
        r#"{"product":{"name":"Office","cmp":"ge","version":"16.0"}}"#,
        r#"{"installed":"KB5019959"}"#,
        r#"{"check":{"kind":"RegDword","attrs":{"Key":"HKLM"}}}"#,
    ] {
        let rule: Rule = serde_json::from_str(json).unwrap();
        let again: Rule = serde_json::from_str(&serde_json::to_string(&rule).unwrap()).unwrap();
        assert_eq!(again, rule, "{json}");
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::from_value::<Rule>(value).unwrap(), rule, "{json}");
    }
    for (json, error) in [
        (r#""sometimes""#, "unknown variant `sometimes`"),
        (r#"{"fact":{"name":"a","cmp":"eq","extra":1}}"#, "unknown field `extra`"),
        (r#"{"not":"always","all":[]}"#, ""),
        (r#"{"installed":""}"#, "may not be empty"),
        (r#"{"fact":{"name":"a"}}"#, "missing field `cmp`"),
    ] {
        let got = serde_json::from_str::<Rule>(json).unwrap_err().to_string();
        assert!(got.contains(error), "{json}: {got}");
    }
}

#[test]
fn a_native_catalog_with_a_too_deep_rule_is_refused() {
    let rule = nested(r#"{"not":"#, "}", MAX_RULE_DEPTH, r#""always""#);
    let catalog = format!(
        r#"{{"format":"cascade-catalog","version":1,"updates":[{{"id":"KB1","title":"t","classification":"update","applicable_when":{rule}}}]}}"#
    );
    let message = refused("catalog.json", catalog.as_bytes());
    assert_names(
        &message,
        &["catalog.json: line 1, column ", "rule nesting deeper than 32 levels"],
    );
}

#[test]
fn merging_many_records_of_one_update_does_not_deepen_its_rules() {
    let record = |n: usize| {
        let mut u = Update::new(UpdateId::new(UPDATE_GUID), "u", Classification::Update);
        u.installed_when = Some(Rule::fact("os.build", Cmp::Eq, n.to_string()));
        u.applicable_when = Some(Rule::Not(Box::new(Rule::Installed(UpdateId::kb(n as u64)))));
        u
    };
    let catalog = cascade_core::Catalog::new((0..2_000).map(record));
    let merged = catalog.get(&UpdateId::new(UPDATE_GUID)).unwrap();
    assert_eq!(merged.installed_when.as_ref().unwrap().depth(), 2);
    assert_eq!(merged.applicable_when.as_ref().unwrap().depth(), 3);
    let mut same = record(1);
    same.merge(record(1));
    assert_eq!(same, record(1));
}

// --- Oversized WSUS fields ----------------------------------------------------

#[test]
fn wsus_oversized_fields_are_refused() {
    let doc = wsus_update(LEAF, &big(MAX_FIELD_BYTES + 1));
    let message = refused("title.xml", doc.as_bytes());
    assert_eq!(
        message,
        format!(
            "title.xml: line 3: <upd:Title>: a text of {} bytes, longer than the limit of {MAX_FIELD_BYTES} bytes",
            MAX_FIELD_BYTES + 1
        )
    );
    let leaf = LEAF.replace(r#"Data="1""#, &format!(r#"Data="{}""#, big(1 << 20)));
    let message = refused("attr.xml", wsus_update(&leaf, "t").as_bytes());
    assert_names(
        &message,
        &["attr.xml: line 4: <bar:RegDword>: attribute Data is 1048576 bytes, longer than the limit of 65536 bytes"],
    );
    // At the limit is fine.
    let doc = wsus_update(LEAF, &big(MAX_FIELD_BYTES));
    let updates = import_catalog("title.xml", doc.as_bytes(), &NoFragments)
        .unwrap()
        .updates;
    assert_eq!(updates[0].title.len(), MAX_FIELD_BYTES);
}

// --- CVRF ---------------------------------------------------------------------

fn cvrf(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<cvrfdoc xmlns="http://www.icasi.org/CVRF/schema/cvrf/1.1" xmlns:prod="http://www.icasi.org/CVRF/schema/prod/1.1" xmlns:vuln="http://www.icasi.org/CVRF/schema/vuln/1.1">
<DocumentTitle>t</DocumentTitle>
{body}
</cvrfdoc>"#
    )
}

#[test]
fn cvrf_deep_nesting_is_refused() {
    let doc = cvrf(&nested("<vuln:Notes>", "</vuln:Notes>", HUGE, ""));
    let message = refused("deep.cvrf.xml", doc.as_bytes());
    assert_names(
        &message,
        &["deep.cvrf.xml: line 4: <vuln:Notes>: elements nested deeper than 256 levels"],
    );
    let doc = cvrf(&nested("<vuln:Notes>", "</vuln:Notes>", MAX_XML_DEPTH - 1, ""));
    assert!(import_catalog("ok.cvrf.xml", doc.as_bytes(), &NoFragments).is_ok());
}

#[test]
fn cvrf_oversized_fields_are_refused() {
    let doc = cvrf(&format!(
        r#"<prod:ProductTree><prod:FullProductName ProductID="1">{}</prod:FullProductName></prod:ProductTree>"#,
        big(10 << 20)
    ));
    let message = refused("big.cvrf.xml", doc.as_bytes());
    assert_names(
        &message,
        &[
            "big.cvrf.xml: line 4: <prod:FullProductName>: a text of 10485760 bytes, longer than the limit of 65536 bytes",
        ],
    );
    let doc = cvrf(&format!(
        r#"<prod:ProductTree><prod:FullProductName ProductID="{}">x</prod:FullProductName></prod:ProductTree>"#,
        big(MAX_FIELD_BYTES + 1)
    ));
    let message = refused("id.cvrf.xml", doc.as_bytes());
    assert_names(
        &message,
        &["<prod:FullProductName>: attribute ProductID is 65537 bytes"],
    );
}

// --- wsusscn2 -------------------------------------------------------------------

fn package(updates: &str) -> String {
    format!("<?xml version=\"1.0\"?>\n<OfflineSyncPackage>\n<Updates>\n{updates}\n</Updates>\n</OfflineSyncPackage>")
}

const PACKAGE_UPDATE: &str =
    r#"<Update UpdateId="0a51549b-4e86-4a26-97d4-9e3567f24ea1" RevisionNumber="1" RevisionId="7" />"#;

#[test]
fn wsusscn2_deep_nesting_is_refused() {
    let doc = package(&nested("<X>", "</X>", HUGE, PACKAGE_UPDATE));
    let message = refused("package.xml", doc.as_bytes());
    assert_names(
        &message,
        &["package.xml: line 4: <X>: elements nested deeper than 256 levels"],
    );
}

#[test]
fn wsusscn2_oversized_attributes_are_refused() {
    let doc = package(&PACKAGE_UPDATE.replace(r#"RevisionId="7""#, &format!(r#"RevisionId="{}""#, big(1 << 20))));
    let message = refused("package.xml", doc.as_bytes());
    assert_names(
        &message,
        &["<Update>: attribute RevisionId is 1048576 bytes, longer than the limit of 65536 bytes"],
    );
}

/// A core fragment with a rule nested too deep.
struct DeepFragment;

impl Fragments for DeepFragment {
    fn fragment(&self, kind: &str, _: u64) -> Option<Vec<u8>> {
        let rule = nested("<Not>", "</Not>", HUGE, "<b.RegDword/>");
        (kind == "c").then(|| {
            format!(r#"<UpdateIdentity UpdateID="{UPDATE_GUID}"/><ApplicabilityRules><IsInstalled>{rule}</IsInstalled></ApplicabilityRules>"#)
                .into_bytes()
        })
    }
}

#[test]
fn wsusscn2_fragments_nested_too_deep_are_refused() {
    let doc = package(PACKAGE_UPDATE);
    let message = match import_catalog("package.xml", doc.as_bytes(), &DeepFragment) {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    };
    assert_names(
        &message,
        &["package.xml (c/7): line 1: <Not>: elements nested deeper than 256 levels"],
    );
}

// --- JSON catalogs and inventories ------------------------------------------------

#[test]
fn update_catalog_json_is_bounded() {
    let deep = format!(
        r#"{{"update_id":"{UPDATE_GUID}","title":{}}}"#,
        nested("[", "]", HUGE, "")
    );
    let message = refused("deep.json", deep.as_bytes());
    assert_eq!(
        message,
        format!(
            "deep.json: line 1, column {}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            60 + MAX_JSON_DEPTH
        )
    );
    let long = format!(
        r#"{{"update_id":"{UPDATE_GUID}",
"title":"{} (KB5025239)"}}"#,
        big(MAX_FIELD_BYTES)
    );
    let message = refused("long.json", long.as_bytes());
    assert_eq!(
        message,
        "long.json: line 2, column 9: a string of 65548 bytes, longer than the limit of 65536 bytes"
    );
}

#[test]
fn native_catalog_json_is_bounded() {
    let deep = format!(
        r#"{{"format":"cascade-catalog","version":1,"updates":{}}}"#,
        nested("[", "]", HUGE, "")
    );
    let message = refused("deep.json", deep.as_bytes());
    assert_names(
        &message,
        &["deep.json: line 1, column ", "JSON nested deeper than 100 levels"],
    );
    let deep_rule = format!(
        r#"{{"format":"cascade-catalog","version":1,"updates":[{{"id":"KB1","title":"t","classification":"update","applicable_when":{}}}]}}"#,
        nested(r#"{"not":"#, "}", HUGE, r#""always""#)
    );
    let message = refused("rule.json", deep_rule.as_bytes());
    assert_names(
        &message,
        &["rule.json: line 1, column ", "JSON nested deeper than 100 levels"],
    );
    let long = format!(
        r#"{{"format":"cascade-catalog","version":1,"updates":[{{"id":"KB1","title":"{}","classification":"update"}}]}}"#,
        big(1 << 20)
    );
    let message = refused("long.json", long.as_bytes());
    assert_names(&message, &["long.json: line 1, column 72: a string of 1048576 bytes"]);
    // Escapes do not end a string early.
    let escaped = long.replacen("xxxx", r#"x\"\\"#, 1);
    assert!(matches!(
        import_catalog("escaped.json", escaped.as_bytes(), &NoFragments),
        Err(ImportError::Json {
            line: 1,
            column: 72,
            ..
        })
    ));
}

#[test]
fn native_inventory_json_is_bounded() {
    let deep = format!(r#"{{"os":{{}},"facts":{}}}"#, nested(r#"{"a":"#, "}", HUGE, "1"));
    let message = refused_inventory("deep.json", deep.as_bytes());
    assert_names(
        &message,
        &["deep.json: line 1, column ", "JSON nested deeper than 100 levels"],
    );
    let long = format!(r#"{{"computer":"{}","os":{{}}}}"#, big(MAX_FIELD_BYTES + 1));
    let message = refused_inventory("long.json", long.as_bytes());
    assert_names(&message, &["long.json: line 1, column 13: a string of 65537 bytes"]);
}

// --- Text inventories -------------------------------------------------------------

#[test]
fn text_inventories_with_an_oversized_line_are_refused() {
    let long = big(MAX_FIELD_BYTES + 1);
    let systeminfo = String::from_utf8(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/windows-inventory/10_1809_x64_education_es_systeminfo.txt"
        ))
        .unwrap(),
    )
    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    for (name, text) in [
        ("systeminfo.txt", format!("{systeminfo}\nHost Name: {long}\n")),
        ("qfe.txt", format!("HotFixID  InstalledOn\nKB1 {long}\n")),
        ("os-release", format!("ID=debian\nPRETTY_NAME={long}\n")),
        (
            "status",
            format!("Package: a\nStatus: install ok installed\nDescription: {long}\n"),
        ),
    ] {
        let message = refused_inventory(name, text.as_bytes());
        assert_names(
            &message,
            &[name, ": line ", " bytes, longer than the limit of 65536 bytes"],
        );
    }
}

/// A computer's summary carries its latest few install events with their
/// detail cut short, and the nodes above refuse one that carries more.
#[test]
fn a_summary_carries_a_bounded_few_events() {
    use cascade_core::model::{Agent, ComputerId, EventKind, InstallEvent, PatchMethod, RECENT_DETAIL, RECENT_EVENTS};
    let mut agent = Agent::new(
        ComputerId::new("pc-1").unwrap(),
        NodeId::new("site").unwrap(),
        1_700_000_000,
    );
    let event = |n: i64, detail: String| InstallEvent {
        at: 1_700_000_000 + n,
        update: UpdateId::new(&format!("KB{n}")),
        method: PatchMethod::default(),
        kind: EventKind::Installed,
        detail,
    };
    // Multi-byte characters across the cut: it falls on a boundary.
    let events: Vec<InstallEvent> = (0..8).map(|n| event(n, "ü".repeat(HUGE / 1000))).collect();
    agent.note_events(&events[..3]);
    agent.note_events(&events[3..]);
    let summary = agent.summary();
    let kept: Vec<i64> = summary.recent_events.iter().map(|e| e.at - 1_700_000_000).collect();
    assert_eq!(kept, (8 - RECENT_EVENTS as i64..8).collect::<Vec<_>>());
    for e in &summary.recent_events {
        assert!(
            e.detail.len() <= RECENT_DETAIL + '…'.len_utf8() && e.detail.ends_with('…'),
            "{}",
            e.detail
        );
    }
    assert_eq!(summary.check(), Ok(()));
    let mut too_many = summary.clone();
    too_many.recent_events.push(event(9, String::new()));
    assert!(too_many.check().unwrap_err().contains("recent events"));
    let mut too_long = summary;
    too_long.recent_events[0].detail = "x".repeat(RECENT_DETAIL + 10);
    assert!(too_long.check().unwrap_err().contains("detail"));
}
