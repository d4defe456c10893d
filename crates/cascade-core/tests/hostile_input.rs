//! Hostile input for every importer, the systeminfo parser and rule
//! evaluation: random bytes and real vendor files with bytes flipped,
//! removed, inserted or cut short. Whatever comes in, the result is a value
//! or an error, never a panic. Bounded numbers of cases, so they run in CI
//! (the cargo-fuzz targets in fuzz/ run the same calls without a bound).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use cascade_core::import::{NoFragments, import_catalog, import_inventory};
use cascade_core::inventory::Inventory;
use cascade_core::rule::Rule;
use cascade_core::version::Version;
use proptest::prelude::*;

fn fixture(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A real file damaged at random: a flipped byte, a cut, a removed or an
/// inserted run of bytes, applied a few times.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Remove(usize, usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Flip(at, b)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Damage::Remove(at, n)),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..32),
                Just(b"<".to_vec()),
                Just(b"</".to_vec()),
                Just(b"\"".to_vec()),
                Just(b"{".to_vec()),
                Just(b"]]>".to_vec()),
                Just("\u{feff}".as_bytes().to_vec()),
                Just(vec![0xff, 0xfe]),
            ]
        )
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
    ];
    proptest::collection::vec(one, 1..4)
}

fn apply(original: &[u8], damage: &[Damage]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for d in damage {
        if bytes.is_empty() {
            break;
        }
        match d {
            Damage::Flip(at, b) => {
                let at = at % bytes.len();
                bytes[at] ^= b | 1;
            }
            Damage::Cut(at) => bytes.truncate(at % bytes.len()),
            Damage::Remove(at, n) => {
                let at = at % bytes.len();
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Damage::Insert(at, more) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, more.iter().copied());
            }
        }
    }
    bytes
}

const CATALOGS: [&str; 5] = [
    "wsus-update-xml/wsusss-docs/1f9bd9bb-7390-4aa3-bbdb-ded99fac2583-r200.xml",
    "wsus-update-xml/wusp-reference/dd78b8a1-0b20-45c1-add6-4da72e9364cf-r202.core.xml",
    "wsus-update-xml/cbs/cbs-rollupfix-core-reduced.xml",
    "update-catalog/0b97c243-5833-4bf3-bcf8-77063e53c42a.json",
    "inventory/win10-21h2-x64.json",
];

const INVENTORIES: [&str; 6] = [
    "windows-inventory/10_1809_x64_education_es_systeminfo.txt",
    "windows-inventory/7_sp1_x64_ultimaten_de_systeminfo.txt",
    "windows-inventory/xp_sp2_x64_qfe.txt",
    "inventory/win10-21h2-x64.json",
    "linux/os-release",
    "linux/dpkg-status",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_no_catalog_and_no_inventory(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = import_catalog("random", &bytes, &NoFragments);
        let _ = import_inventory("random", &bytes);
    }

    #[test]
    fn damaged_catalogs_import_or_fail_cleanly(which in 0..CATALOGS.len(), damage in damage()) {
        let bytes = apply(&fixture(CATALOGS[which]), &damage);
        let _ = import_catalog(CATALOGS[which], &bytes, &NoFragments);
    }

    #[test]
    fn damaged_inventories_import_or_fail_cleanly(which in 0..INVENTORIES.len(), damage in damage()) {
        let bytes = apply(&fixture(INVENTORIES[which]), &damage);
        if let Ok((_, inventory)) = import_inventory(INVENTORIES[which], &bytes) {
            // What an importer accepts can be hashed and planned.
            let _ = inventory.content_hash();
        }
    }
}

proptest! {
    // The CVRF sample is large: fewer cases.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_cvrf_document_imports_or_fails_cleanly(damage in damage()) {
        let bytes = apply(&fixture("cvrf/cvrfDocument-2022-Dec.trimmed.xml"), &damage);
        let _ = import_catalog("cvrf", &bytes, &NoFragments);
    }
}

/// Rules as a catalog might carry them, including nonsense.
fn rule() -> impl Strategy<Value = Rule> {
    let name = prop_oneof![
        Just("os.family".to_owned()),
        Just("os.build".to_owned()),
        Just("os.version".to_owned()),
        Just("deb:openssl".to_owned()),
        Just("rpm:kernel".to_owned()),
        "[a-z.:]{0,12}",
    ];
    let cmp = prop_oneof![
        Just(cascade_core::rule::Cmp::Eq),
        Just(cascade_core::rule::Cmp::Ne),
        Just(cascade_core::rule::Cmp::Lt),
        Just(cascade_core::rule::Cmp::Ge),
        Just(cascade_core::rule::Cmp::Exists),
    ];
    let check_kind = prop_oneof![
        Just("RegDword".to_owned()),
        Just("RegSz".to_owned()),
        Just("FileVersion".to_owned()),
        Just("WindowsVersion".to_owned()),
        Just("CbsPackageInstalled".to_owned()),
        "[A-Za-z]{0,10}",
    ];
    let leaf = prop_oneof![
        Just(Rule::Always),
        Just(Rule::Never),
        (name, cmp, ".{0,12}").prop_map(|(n, c, v)| Rule::fact(&n, c, v)),
        ".{0,16}".prop_map(Rule::product),
        (
            check_kind,
            proptest::collection::btree_map("[A-Za-z]{1,12}", ".{0,24}", 0..5)
        )
            .prop_map(|(kind, attrs)| Rule::Check { kind, attrs }),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Rule::All),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Rule::Any),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_rule_evaluates_to_a_truth(rule in rule()) {
        let mut windows = Inventory::windows(Version::new(vec![10, 0, 19044, 2364]), false, Some("x64"));
        windows.registry = Some(Default::default());
        let linux = import_inventory("dpkg", &fixture("linux/dpkg-status")).unwrap().1;
        for inventory in [&windows, &linux, &Inventory::default()] {
            let _ = rule.eval(inventory);
        }
        // Its canonical JSON reads back as the same rule.
        let json = serde_json::to_string(&rule).unwrap();
        let back: Rule = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, rule);
    }

    #[test]
    fn rule_json_from_anywhere_is_a_rule_or_an_error(text in ".{0,256}") {
        if let Ok(rule) = serde_json::from_str::<Rule>(&text) {
            let _ = rule.eval(&Inventory::default());
        }
    }
}
