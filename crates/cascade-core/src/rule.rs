//! Applicability rules: boolean expressions over inventory facts, evaluated
//! in three-valued logic so that what cannot be decided says so.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::ids::UpdateId;
use crate::inventory::Inventory;
use crate::version::Version;

pub(crate) mod detect;

pub use crate::logic::{Cmp, Truth};

/// The deepest rule Cascade accepts, counting every rule on the longest path
/// from the top (`{"not": "always"}` is two deep). Importers refuse deeper
/// rules and decoding refuses them too, so every rule that exists can be
/// evaluated, dropped and printed without exhausting the stack, and its JSON
/// form stays far inside serde_json's 128-level recursion limit when it is
/// stored inside an update inside a change: each level takes at most two JSON
/// levels (`{"all": [...]}`), so a rule of this depth takes at most 65.
/// Real WSUS rules nest fewer than ten deep.
pub const MAX_RULE_DEPTH: usize = 32;

/// An applicability rule. Its canonical JSON form is this type's serde form:
/// `"always"`, `{"all": [...]}`, `{"fact": {"name": "os.release", "cmp": "eq", "value": "21H2"}}`.
// Decoding (by hand, below) refuses a rule deeper than MAX_RULE_DEPTH. Not
// in the doc comment: that is the JSON Schema's description too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    Always,
    Never,
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    /// A fact of the inventory: `os.family`, `os.product`, `os.release`,
    /// `os.edition`, `os.arch`, `os.installation`, `os.service_pack`,
    /// `os.version`, `os.build`, `os.revision`, `os.product_type`, or any key
    /// of the inventory's `facts`.
    Fact {
        name: String,
        cmp: Cmp,
        #[serde(default)]
        value: String,
    },
    /// Installed software matched by name or Windows Installer code, with
    /// a version condition in winget's order (third-party packages).
    Software(Box<crate::software::SoftwareMatch>),
    /// An installed product, optionally with a version condition.
    Product {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmp: Option<Cmp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<Version>,
    },
    /// The computer lists this update as installed.
    Installed(UpdateId),
    /// A vendor detection expression kept as the vendor wrote it (WSUS
    /// `bar:RegDword`, `bar:FileVersion`, ...), evaluated against the
    /// registry, files and facts the inventory carries.
    Check {
        kind: String,
        #[serde(default)]
        attrs: BTreeMap<String, String>,
    },
}

/// Decoding, by hand so that it can count how deep it is: the derived
/// decoder would recurse as deep as the input nests (in formats without
/// serde_json's recursion limit, until the stack overflows) and accept
/// rules that cannot be stored and read back.
mod decode {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, EnumAccess, SeqAccess, VariantAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    use super::{Cmp, MAX_RULE_DEPTH, Rule};
    use crate::ids::UpdateId;
    use crate::version::Version;

    const VARIANTS: &[&str] = &[
        "always",
        "never",
        "all",
        "any",
        "not",
        "fact",
        "product",
        "installed",
        "check",
        "software",
    ];

    #[derive(Deserialize)]
    #[serde(variant_identifier, rename_all = "snake_case")]
    enum Tag {
        Always,
        Never,
        All,
        Any,
        Not,
        Fact,
        Product,
        Installed,
        Check,
        Software,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fact {
        name: String,
        cmp: Cmp,
        #[serde(default)]
        value: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Product {
        name: String,
        #[serde(default)]
        cmp: Option<Cmp>,
        #[serde(default)]
        version: Option<Version>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Check {
        kind: String,
        #[serde(default)]
        attrs: BTreeMap<String, String>,
    }

    impl<'de> Deserialize<'de> for Rule {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
            RuleAt { depth: 1 }.deserialize(deserializer)
        }
    }

    /// A rule at `depth` (the top one is at 1).
    #[derive(Clone, Copy)]
    struct RuleAt {
        depth: usize,
    }

    impl<'de> DeserializeSeed<'de> for RuleAt {
        type Value = Rule;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Rule, D::Error> {
            if self.depth > MAX_RULE_DEPTH {
                return Err(de::Error::custom(format!(
                    "rule nesting deeper than {MAX_RULE_DEPTH} levels"
                )));
            }
            deserializer.deserialize_enum("Rule", VARIANTS, self)
        }
    }

    impl<'de> Visitor<'de> for RuleAt {
        type Value = Rule;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a rule")
        }

        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Rule, A::Error> {
            let inner = RuleAt { depth: self.depth + 1 };
            let (tag, variant) = data.variant::<Tag>()?;
            Ok(match tag {
                Tag::Always => {
                    variant.unit_variant()?;
                    Rule::Always
                }
                Tag::Never => {
                    variant.unit_variant()?;
                    Rule::Never
                }
                Tag::All => Rule::All(variant.newtype_variant_seed(RulesAt(inner))?),
                Tag::Any => Rule::Any(variant.newtype_variant_seed(RulesAt(inner))?),
                Tag::Not => Rule::Not(Box::new(variant.newtype_variant_seed(inner)?)),
                Tag::Fact => {
                    let Fact { name, cmp, value } = variant.newtype_variant()?;
                    Rule::Fact { name, cmp, value }
                }
                Tag::Product => {
                    let Product { name, cmp, version } = variant.newtype_variant()?;
                    Rule::Product { name, cmp, version }
                }
                Tag::Installed => Rule::Installed(variant.newtype_variant::<UpdateId>()?),
                Tag::Check => {
                    let Check { kind, attrs } = variant.newtype_variant()?;
                    Rule::Check { kind, attrs }
                }
                Tag::Software => Rule::Software(Box::new(variant.newtype_variant()?)),
            })
        }
    }

    /// The rules of an `all` or `any`, each at the given depth.
    struct RulesAt(RuleAt);

    impl<'de> DeserializeSeed<'de> for RulesAt {
        type Value = Vec<Rule>;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Rule>, D::Error> {
            deserializer.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for RulesAt {
        type Value = Vec<Rule>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of rules")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Rule>, A::Error> {
            // Not the length the input claims: it may lie.
            let mut rules = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(rule) = seq.next_element_seed(self.0)? {
                rules.push(rule);
            }
            Ok(rules)
        }
    }
}

/// Where a rule can be looked up in a catalog index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKey {
    /// An operating system product, lower case ("windows 10").
    Os(String),
    /// An installed product, lower case.
    Product(String),
}

impl Rule {
    pub fn fact(name: &str, cmp: Cmp, value: impl Into<String>) -> Rule {
        Rule::Fact {
            name: name.to_owned(),
            cmp,
            value: value.into(),
        }
    }

    pub fn product(name: impl Into<String>) -> Rule {
        Rule::Product {
            name: name.into(),
            cmp: None,
            version: None,
        }
    }

    /// Disjunction, flattening nested disjunctions and dropping `never` and
    /// rules repeated after the first one, so that OR-ing rules again and
    /// again (merging many records of one update) does not make them deeper.
    pub fn or(rules: Vec<Rule>) -> Rule {
        let mut flat: Vec<Rule> = Vec::new();
        for r in rules {
            let parts = match r {
                Rule::Any(inner) => inner,
                Rule::Never => Vec::new(),
                other => vec![other],
            };
            if flat.is_empty() {
                // The first rule's parts are taken as they are: checking
                // them against each other would make repeated merging cubic.
                flat = parts;
                continue;
            }
            for part in parts {
                if !flat.contains(&part) {
                    flat.push(part);
                }
            }
        }
        match flat.len() {
            0 => Rule::Never,
            1 => flat.pop().unwrap_or(Rule::Never),
            _ => Rule::Any(flat),
        }
    }

    /// The number of rules on the longest path from this one down, this one
    /// included: `always` is 1, `{"not": "always"}` is 2. Counted without
    /// recursion, so it can measure any rule.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 1)];
        while let Some((rule, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            match rule {
                Rule::All(rules) | Rule::Any(rules) => pending.extend(rules.iter().map(|r| (r, depth + 1))),
                Rule::Not(inner) => pending.push((inner, depth + 1)),
                _ => {}
            }
        }
        deepest
    }

    /// Conjunction, flattening nested conjunctions and dropping `always`.
    pub fn and(rules: Vec<Rule>) -> Rule {
        let mut flat = Vec::with_capacity(rules.len());
        for r in rules {
            match r {
                Rule::All(inner) => flat.extend(inner),
                Rule::Always => {}
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Rule::Always,
            1 => flat.pop().unwrap_or(Rule::Always),
            _ => Rule::All(flat),
        }
    }

    /// Evaluates the rule against an inventory.
    pub fn eval(&self, inv: &Inventory) -> Truth {
        match self {
            Rule::Always => Truth::True,
            Rule::Never => Truth::False,
            Rule::All(rules) => {
                let mut unknown = None;
                for r in rules {
                    match r.eval(inv) {
                        Truth::False => return Truth::False,
                        Truth::Unknown(why) => {
                            unknown.get_or_insert(why);
                        }
                        Truth::True => {}
                    }
                }
                unknown.map_or(Truth::True, Truth::Unknown)
            }
            Rule::Any(rules) => {
                let mut unknown = None;
                for r in rules {
                    match r.eval(inv) {
                        Truth::True => return Truth::True,
                        Truth::Unknown(why) => {
                            unknown.get_or_insert(why);
                        }
                        Truth::False => {}
                    }
                }
                unknown.map_or(Truth::False, Truth::Unknown)
            }
            Rule::Not(rule) => !rule.eval(inv),
            Rule::Fact { name, cmp, value } => match inv.fact(name) {
                // Debian package versions order the way dpkg orders them.
                Some(actual)
                    if name.starts_with("deb:")
                        && matches!(cmp, Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge | Cmp::Eq | Cmp::Ne) =>
                {
                    Truth::from_bool(cmp.accepts(crate::version::deb_version_cmp(&actual, value)))
                }
                Some(actual)
                    if name.starts_with("rpm:")
                        && matches!(cmp, Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge | Cmp::Eq | Cmp::Ne) =>
                {
                    Truth::from_bool(cmp.accepts(crate::version::rpm_version_cmp(&actual, value)))
                }
                Some(actual) => Truth::from_bool(cmp.holds(&actual, value)),
                None if *cmp == Cmp::Exists => Truth::False,
                // The package list was collected and this package is not in it.
                None if name.starts_with("deb:") && inv.facts.keys().any(|k| k.starts_with("deb:")) => Truth::False,
                None if name.starts_with("rpm:") && inv.facts.keys().any(|k| k.starts_with("rpm:")) => Truth::False,
                None => Truth::Unknown(inv.why_no_fact(name)),
            },
            Rule::Product { name, cmp, version } => {
                use crate::inventory::ProductsKnown;
                let known = inv.products_known();
                if known == ProductsKnown::No {
                    return Truth::Unknown(format!(
                        "the inventory does not list installed software (needed for {name})"
                    ));
                }
                // Most names stand for themselves; the others are expanded once.
                let expanded = crate::products::expands(name).then(|| crate::products::covered_by(name));
                let mut found = inv
                    .installed_products()
                    .iter()
                    .filter(|p| match &expanded {
                        None => p.name.eq_ignore_ascii_case(name),
                        Some(names) => names.iter().any(|c| p.name.eq_ignore_ascii_case(c)),
                    })
                    .peekable();
                if found.peek().is_none() {
                    if inv.os.family == crate::inventory::OsFamily::Windows && crate::products::other_platform(name) {
                        return Truth::False;
                    }
                    return match known {
                        ProductsKnown::Completely
                            if inv.software.is_none()
                                || crate::products::covered_by(name)
                                    .iter()
                                    .any(|c| crate::products::detectable(c)) =>
                        {
                            Truth::False
                        }
                        ProductsKnown::Completely => Truth::Unknown(format!(
                            "the software list cannot show whether {name} is installed (no entry of the product map gives it)"
                        )),
                        ProductsKnown::Partly(why) => Truth::Unknown(format!("{name} is not listed, and {why}")),
                        ProductsKnown::No => Truth::Unknown(String::new()),
                    };
                }
                match (cmp, version) {
                    (Some(cmp), Some(wanted)) => {
                        let mut unknown = false;
                        for p in found {
                            match &p.version {
                                Some(v) if cmp.accepts(v.cmp(wanted)) => return Truth::True,
                                Some(_) => {}
                                None => unknown = true,
                            }
                        }
                        if unknown {
                            Truth::Unknown(format!("the inventory has no version for product {name}"))
                        } else {
                            Truth::False
                        }
                    }
                    _ => Truth::True,
                }
            }
            Rule::Installed(id) => Truth::from_bool(inv.has_update(id)),
            Rule::Software(m) => m.eval(inv.software.as_ref(), inv.os.arch.as_deref()),
            Rule::Check { kind, attrs } => detect::eval(kind, attrs, inv),
        }
    }

    /// The key under which a catalog indexes this rule, when the rule can
    /// only hold for computers with a particular OS product or installed
    /// product. `None` means "look at it for every computer".
    pub fn index_key(&self) -> Option<IndexKey> {
        match self {
            Rule::Fact {
                name,
                cmp: Cmp::Eq,
                value,
            } if name == "os.product" => Some(IndexKey::Os(value.to_ascii_lowercase())),
            Rule::Product { name, .. } => Some(IndexKey::Product(name.to_ascii_lowercase())),
            Rule::All(rules) => {
                let keys: Vec<IndexKey> = rules.iter().filter_map(Rule::index_key).collect();
                keys.iter()
                    .find(|k| matches!(k, IndexKey::Os(_)))
                    .or_else(|| keys.first())
                    .cloned()
            }
            _ => None,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(f: &mut fmt::Formatter<'_>, rules: &[Rule], op: &str) -> fmt::Result {
            f.write_str("(")?;
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{r}")?;
            }
            f.write_str(")")
        }
        match self {
            Rule::Always => f.write_str("always"),
            Rule::Never => f.write_str("never"),
            Rule::All(rules) => join(f, rules, "and"),
            Rule::Any(rules) => join(f, rules, "or"),
            Rule::Not(rule) => write!(f, "not {rule}"),
            Rule::Fact {
                name, cmp: Cmp::Exists, ..
            } => write!(f, "{name} exists"),
            Rule::Fact { name, cmp, value } => write!(f, "{name} {} {value:?}", cmp.symbol()),
            Rule::Product {
                name,
                cmp: Some(cmp),
                version: Some(v),
            } => {
                write!(f, "product {name:?} {} {v}", cmp.symbol())
            }
            Rule::Product { name, .. } => write!(f, "product {name:?} installed"),
            Rule::Installed(id) => write!(f, "installed {id}"),
            Rule::Software(m) => write!(f, "software {:?}", m.describe()),
            Rule::Check { kind, attrs } => {
                write!(f, "{kind}(")?;
                for (i, (k, v)) in attrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v:?}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{InstalledProduct, Inventory};

    fn win10() -> Inventory {
        let mut inv = Inventory::windows("10.0.19044".parse().unwrap(), false, Some("x64"));
        inv.products = Some(vec![InstalledProduct {
            name: "Microsoft Office 2019".into(),
            version: Some("16.0.10394".parse().unwrap()),
        }]);
        inv
    }

    #[test]
    fn three_valued_logic() {
        let inv = win10();
        let release = Rule::fact("os.release", Cmp::Eq, "21H2");
        let unknown = Rule::fact("no.such.fact", Cmp::Eq, "x");
        assert_eq!(release.eval(&inv), Truth::True);
        assert!(matches!(unknown.eval(&inv), Truth::Unknown(_)));
        assert_eq!(Rule::All(vec![Rule::Never, unknown.clone()]).eval(&inv), Truth::False);
        assert_eq!(
            Rule::Any(vec![release.clone(), unknown.clone()]).eval(&inv),
            Truth::True
        );
        assert!(matches!(
            Rule::All(vec![release, unknown.clone()]).eval(&inv),
            Truth::Unknown(_)
        ));
        assert!(matches!(Rule::Not(Box::new(unknown)).eval(&inv), Truth::Unknown(_)));
    }

    #[test]
    fn products_and_versions() {
        let inv = win10();
        let office = Rule::Product {
            name: "microsoft office 2019".into(),
            cmp: Some(Cmp::Lt),
            version: Some("16.0.10395".parse().unwrap()),
        };
        assert_eq!(office.eval(&inv), Truth::True);
        assert_eq!(Rule::product("Visio 2016").eval(&inv), Truth::False);
        let mut no_products = inv.clone();
        no_products.products = None;
        assert!(matches!(
            Rule::product("Visio 2016").eval(&no_products),
            Truth::Unknown(_)
        ));
        assert_eq!(Rule::fact("os.build", Cmp::Ge, "19041").eval(&inv), Truth::True);
        assert_eq!(
            Rule::fact("os.version", Cmp::Lt, "10.0.19044.1").eval(&inv),
            Truth::True
        );
    }

    #[test]
    fn canonical_json_round_trip() {
        let rule = Rule::and(vec![
            Rule::fact("os.product", Cmp::Eq, "Windows 10"),
            Rule::Not(Box::new(Rule::Installed(UpdateId::new("5019959")))),
            Rule::Product {
                name: "Office".into(),
                cmp: Some(Cmp::Ge),
                version: Some("16.0".parse().unwrap()),
            },
        ]);
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(
            json,
            r#"{"all":[{"fact":{"name":"os.product","cmp":"eq","value":"Windows 10"}},{"not":{"installed":"KB5019959"}},{"product":{"name":"Office","cmp":"ge","version":"16.0"}}]}"#
        );
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), rule);
        assert_eq!(
            rule.to_string(),
            r#"(os.product = "Windows 10" and not installed KB5019959 and product "Office" >= 16.0)"#
        );
        assert_eq!(rule.index_key(), Some(IndexKey::Os("windows 10".into())));
    }
}
