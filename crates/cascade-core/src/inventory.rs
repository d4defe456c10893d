//! What a managed computer says about itself.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::UpdateId;
use crate::software::SoftwareList;
use crate::version::Version;
use crate::windows;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    Windows,
    Linux,
    Macos,
    #[default]
    Other,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
            OsFamily::Macos => "macos",
            OsFamily::Other => "other",
        }
    }
}

/// Whether the OS is a client, a server, or a server without the desktop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Installation {
    Client,
    Server,
    ServerCore,
}

impl Installation {
    pub fn as_str(self) -> &'static str {
        match self {
            Installation::Client => "client",
            Installation::Server => "server",
            Installation::ServerCore => "server_core",
        }
    }

    pub fn is_server(self) -> bool {
        !matches!(self, Installation::Client)
    }
}

/// The operating system. Fields a collector could not learn stay empty, and
/// rules over them evaluate to unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OsInfo {
    #[serde(default)]
    pub family: OsFamily,
    /// The name as the computer reports it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Product, as vendors name it in their catalogs ("Windows 10", "Windows Server 2022").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Full version; on Windows `major.minor.build[.revision]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Feature release ("21H2", "1809").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    /// `x86`, `x64`, `arm64`, `ia64`, or what the collector reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<Installation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_pack: Option<u32>,
}

pub use crate::products::InstalledProduct;

/// One computer's inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The computer's name; not part of the content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer: Option<String>,
    /// Absent in a file that lists only software or updates (merged with
    /// the computer's other inventories).
    #[serde(default)]
    pub os: OsInfo,
    /// Installed products; absent when the collector does not list them
    /// (rules over products are then unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<InstalledProduct>>,
    /// Installed software as the computer lists it (Uninstall keys, MSI,
    /// Click-to-Run, .NET, SQL Server ...); the products that vendors'
    /// catalogs name are derived from it (see [`crate::products`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwareList>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub installed_updates: BTreeSet<UpdateId>,
    /// Further facts, by name; they override the built-in ones of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    /// Registry values by full path (`HKEY_LOCAL_MACHINE\SOFTWARE\...\Value`).
    /// A value missing under a key that has others listed does not exist; a
    /// key with nothing listed was not collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<BTreeMap<String, String>>,
    /// File versions by full path, with the same convention per directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hotpatch_enrolled: bool,
    /// The products derived from `software`, made when first asked for.
    #[serde(skip)]
    #[schemars(skip)]
    pub derived: DerivedProducts,
}

fn cmp_ignore_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// A cache that takes no part in equality, hashing or serialisation.
#[derive(Clone, Debug, Default)]
pub struct DerivedProducts(std::sync::OnceLock<Vec<InstalledProduct>>);

impl PartialEq for DerivedProducts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DerivedProducts {}

/// Whether an inventory's list of installed products is all there is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductsKnown {
    /// Nothing about installed software was collected.
    No,
    /// Some was; a product not in it may still be installed. Why.
    Partly(&'static str),
    /// Everything was: a product that the list can show and that is not in
    /// it is not installed.
    Completely,
}

/// A fact two merged inventories disagree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeConflict {
    pub fact: String,
    /// The value kept: the first inventory's.
    pub kept: String,
    pub other: String,
}

impl std::fmt::Display for MergeConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the inventories disagree ({:?} and {:?}); kept {:?}, the first",
            self.fact, self.kept, self.other, self.kept
        )
    }
}

/// The identity of an inventory's content, without the computer's name:
/// computers with equal hashes get equal plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InventoryHash(pub [u8; 32]);

impl std::fmt::Display for InventoryHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for InventoryHash {
    type Err = String;

    /// The 64 hexadecimal digits [`Display`](std::fmt::Display) writes.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an inventory hash (64 hexadecimal digits)");
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(InventoryHash(out))
    }
}

impl Inventory {
    /// A Windows computer of the given version, with what follows from it.
    pub fn windows(version: Version, server: bool, arch: Option<&str>) -> Inventory {
        let mut inv = Inventory {
            os: OsInfo {
                family: OsFamily::Windows,
                version: Some(version),
                installation: Some(if server {
                    Installation::Server
                } else {
                    Installation::Client
                }),
                arch: arch.map(str::to_owned),
                ..OsInfo::default()
            },
            ..Inventory::default()
        };
        inv.normalize();
        inv
    }

    /// Fills in what follows from what was collected (a Windows product and
    /// release from version and build), lower-cases registry and file paths,
    /// and sorts lists, so that equal computers hash equally.
    pub fn normalize(&mut self) {
        if self.os.family == OsFamily::Windows {
            if let Some(version) = &self.os.version {
                let server = self.os.installation.map(Installation::is_server);
                if self.os.product.is_none() {
                    self.os.product = windows::product_for(version, server, &self.os.name).map(str::to_owned);
                }
                if self.os.release.is_none()
                    && let Some(product) = &self.os.product
                {
                    self.os.release = windows::release_for(product, version.part(2)).map(str::to_owned);
                }
            }
            if self.os.edition.is_none()
                && !self.os.name.is_empty()
                && let Some(product) = &self.os.product
            {
                self.os.edition = windows::edition_from_name(&self.os.name, product);
            }
            if let Some(arch) = &self.os.arch {
                self.os.arch = Some(windows::normalize_arch(arch).to_owned());
            }
        }
        if let Some(products) = &mut self.products {
            products.sort();
            products.dedup();
        }
        if let Some(list) = &mut self.software {
            list.entries.sort();
            list.entries.dedup();
        }
        self.derived = DerivedProducts::default();
        for map in [&mut self.registry, &mut self.files].into_iter().flatten() {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, v)| (normalize_path(&k), v))
                .collect();
        }
    }

    /// The value of a fact, if the inventory knows it.
    pub fn fact(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(v) = self.facts.get(name) {
            return Some(Cow::Borrowed(v));
        }
        let os = &self.os;
        let version = os.version.as_ref();
        match name {
            "os.family" => Some(Cow::Borrowed(os.family.as_str())),
            "os.name" if !os.name.is_empty() => Some(Cow::Borrowed(&os.name)),
            "os.product" => os.product.as_deref().map(Cow::Borrowed),
            "os.release" => os.release.as_deref().map(Cow::Borrowed),
            "os.edition" => os.edition.as_deref().map(Cow::Borrowed),
            "os.arch" => os.arch.as_deref().map(Cow::Borrowed),
            "os.installation" => os.installation.map(|i| Cow::Borrowed(i.as_str())),
            "os.service_pack" => os.service_pack.map(|sp| Cow::Owned(sp.to_string())),
            "os.version" => version.map(|v| Cow::Owned(v.to_string())),
            "os.major" => version.map(|v| Cow::Owned(v.part(0).to_string())),
            "os.minor" => version.map(|v| Cow::Owned(v.part(1).to_string())),
            "os.build" => version
                .filter(|v| v.len() >= 3)
                .map(|v| Cow::Owned(v.part(2).to_string())),
            "os.revision" => version
                .filter(|v| v.len() >= 4)
                .map(|v| Cow::Owned(v.part(3).to_string())),
            "os.product_type" => os
                .installation
                .map(|i| Cow::Borrowed(if i.is_server() { "3" } else { "1" })),
            "hotpatch.enrolled" => Some(Cow::Borrowed(if self.hotpatch_enrolled { "true" } else { "false" })),
            _ => None,
        }
    }

    /// Why the inventory has no value for fact `name`.
    pub fn why_no_fact(&self, name: &str) -> String {
        if self.os.family == OsFamily::Windows
            && matches!(name, "os.product" | "os.release")
            && let Some(version) = &self.os.version
            && let Err(why) = windows::decide_product(
                version,
                self.os.installation.map(Installation::is_server),
                &self.os.name,
            )
        {
            return why;
        }
        format!("the inventory has no fact {name}")
    }

    /// The OS products this computer may be: its product, or when that could
    /// not be decided, every product its version may be.
    pub fn possible_os_products(&self) -> Vec<String> {
        match (&self.os.product, &self.os.version) {
            (Some(p), _) => vec![p.clone()],
            (None, Some(v)) if self.os.family == OsFamily::Windows => {
                windows::possible_products(v).into_iter().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Installed products: those listed and those derived from the software
    /// list by the product map, sorted by name ignoring case.
    pub fn installed_products(&self) -> &[InstalledProduct] {
        self.derived.0.get_or_init(|| {
            let mut all: Vec<InstalledProduct> = self.products.iter().flatten().cloned().collect();
            if let Some(list) = &self.software {
                all.extend(crate::products::derive(&list.entries, self.os.arch.as_deref()));
            }
            all.sort_by(|a, b| cmp_ignore_case(&a.name, &b.name).then_with(|| a.version.cmp(&b.version)));
            all.dedup();
            all
        })
    }

    /// How much of the installed software the inventory lists.
    pub fn products_known(&self) -> ProductsKnown {
        match (&self.software, &self.products) {
            (Some(list), _) if list.complete => ProductsKnown::Completely,
            (Some(_), _) => ProductsKnown::Partly("the computer's software list is not complete"),
            // A list of products given without a software list is the whole list.
            (None, Some(_)) => ProductsKnown::Completely,
            (None, None) => ProductsKnown::No,
        }
    }

    pub fn has_update(&self, id: &UpdateId) -> bool {
        self.installed_updates.contains(id)
    }

    /// Adds what `other` knows to this inventory, fact by fact (a `wmic
    /// qfe` list merged into a `systeminfo`, two collectors' files): the more
    /// specific value wins (a build with its revision over one without, a
    /// stated architecture over none, Server Core over "server"), lists are
    /// united, and where both give different values this inventory's value
    /// is kept and the conflict returned.
    pub fn merge(&mut self, other: Inventory) -> Vec<MergeConflict> {
        let mut conflicts = Vec::new();
        if self.computer.is_none() {
            self.computer = other.computer;
        }
        self.merge_os(other.os, &mut conflicts);
        match (&mut self.products, other.products) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            (mine @ None, theirs) => *mine = theirs,
            _ => {}
        }
        match (&mut self.software, other.software) {
            (Some(mine), Some(theirs)) => {
                mine.complete |= theirs.complete;
                mine.entries.extend(theirs.entries);
            }
            (mine @ None, theirs) => *mine = theirs,
            _ => {}
        }
        self.installed_updates.extend(other.installed_updates);
        for (k, v) in other.facts {
            match self.facts.get(&k) {
                Some(mine) if *mine != v => conflicts.push(MergeConflict {
                    fact: k.clone(),
                    kept: mine.clone(),
                    other: v,
                }),
                Some(_) => {}
                None => {
                    self.facts.insert(k, v);
                }
            }
        }
        for (mine, theirs) in [(&mut self.registry, other.registry), (&mut self.files, other.files)] {
            match (mine, theirs) {
                (Some(mine), Some(theirs)) => {
                    for (k, v) in theirs {
                        mine.entry(k).or_insert(v);
                    }
                }
                (mine @ None, theirs) => *mine = theirs,
                _ => {}
            }
        }
        self.hotpatch_enrolled |= other.hotpatch_enrolled;
        self.normalize();
        conflicts
    }

    fn merge_os(&mut self, other: OsInfo, conflicts: &mut Vec<MergeConflict>) {
        let os = &mut self.os;
        let mut conflict = |fact: &str, kept: String, other: String| {
            conflicts.push(MergeConflict {
                fact: fact.to_owned(),
                kept,
                other,
            })
        };
        match (os.family, other.family) {
            (OsFamily::Other, theirs) => os.family = theirs,
            (_, OsFamily::Other) => {}
            (mine, theirs) if mine != theirs => conflict("os.family", mine.as_str().into(), theirs.as_str().into()),
            _ => {}
        }
        if os.name.is_empty() {
            os.name = other.name;
        } else if !other.name.is_empty()
            && !windows::clean_os_name(&os.name).eq_ignore_ascii_case(&windows::clean_os_name(&other.name))
        {
            conflict("os.name", os.name.clone(), other.name);
        }
        match (&os.version, other.version) {
            (None, theirs) => os.version = theirs,
            (Some(_), None) => {}
            (Some(mine), Some(theirs)) => {
                let shorter = mine.len().min(theirs.len());
                if mine.same_prefix(&theirs, shorter) {
                    if theirs.len() > mine.len() {
                        os.version = Some(theirs);
                    }
                } else {
                    conflict("os.version", mine.to_string(), theirs.to_string());
                }
            }
        }
        for (fact, mine, theirs) in [
            ("os.product", &mut os.product, other.product),
            ("os.release", &mut os.release, other.release),
            ("os.edition", &mut os.edition, other.edition),
        ] {
            match (mine.as_ref(), theirs) {
                (None, theirs) => *mine = theirs,
                (Some(m), Some(t)) if !m.eq_ignore_ascii_case(&t) => conflict(fact, m.clone(), t),
                _ => {}
            }
        }
        match (&os.arch, other.arch) {
            (None, theirs) => os.arch = theirs,
            (Some(m), Some(t)) if windows::normalize_arch(m) != windows::normalize_arch(&t) => {
                conflict("os.arch", m.clone(), t)
            }
            _ => {}
        }
        match (os.installation, other.installation) {
            (None, theirs) => os.installation = theirs,
            (Some(Installation::Server), Some(Installation::ServerCore)) => {
                os.installation = Some(Installation::ServerCore)
            }
            (Some(Installation::ServerCore), Some(Installation::Server)) => {}
            (Some(m), Some(t)) if m != t => conflict("os.installation", m.as_str().into(), t.as_str().into()),
            _ => {}
        }
        match (os.service_pack, other.service_pack) {
            (None, theirs) => os.service_pack = theirs,
            (Some(m), Some(t)) if m != t => conflict("os.service_pack", m.to_string(), t.to_string()),
            _ => {}
        }
    }

    /// The content hash (see [`InventoryHash`]).
    pub fn content_hash(&self) -> InventoryHash {
        /// The inventory as serialised without its computer's name (the
        /// fields in the order and with the rules of [`Inventory`]), written
        /// straight into the hasher.
        #[derive(Serialize)]
        struct Anonymous<'a> {
            os: &'a OsInfo,
            #[serde(skip_serializing_if = "none")]
            products: &'a Option<Vec<InstalledProduct>>,
            #[serde(skip_serializing_if = "none")]
            software: &'a Option<SoftwareList>,
            #[serde(skip_serializing_if = "BTreeSet::is_empty")]
            installed_updates: &'a BTreeSet<UpdateId>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            facts: &'a BTreeMap<String, String>,
            #[serde(skip_serializing_if = "none")]
            registry: &'a Option<BTreeMap<String, String>>,
            #[serde(skip_serializing_if = "none")]
            files: &'a Option<BTreeMap<String, String>>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            hotpatch_enrolled: bool,
        }
        fn none<T>(value: &&Option<T>) -> bool {
            value.is_none()
        }
        InventoryHash(crate::signed::json_digest(
            &[],
            &Anonymous {
                os: &self.os,
                products: &self.products,
                software: &self.software,
                installed_updates: &self.installed_updates,
                facts: &self.facts,
                registry: &self.registry,
                files: &self.files,
                hotpatch_enrolled: self.hotpatch_enrolled,
            },
        ))
    }

    /// A registry value by its full path.
    pub fn registry_value(&self, path: &str) -> Lookup<'_> {
        lookup(self.registry.as_ref(), path)
    }

    /// A file's version by its full path.
    pub fn file_version(&self, path: &str) -> Lookup<'_> {
        lookup(self.files.as_ref(), path)
    }
}

/// What the inventory says about a registry value or a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Present(&'a str),
    /// Its key or directory was collected and it is not there.
    Absent,
    /// Its key or directory was not collected: nobody knows.
    NotCollected,
}

fn lookup<'a>(map: Option<&'a BTreeMap<String, String>>, path: &str) -> Lookup<'a> {
    let Some(map) = map else {
        return Lookup::NotCollected;
    };
    let path = normalize_path(path);
    if let Some(v) = map.get(&path) {
        return Lookup::Present(v);
    }
    let Some(i) = path.rfind('\\') else {
        return Lookup::NotCollected;
    };
    let parent = &path[..=i];
    let collected = map
        .range(parent.to_owned()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(parent));
    if collected {
        Lookup::Absent
    } else {
        Lookup::NotCollected
    }
}

/// Lower case, backslashes, `HKLM` spelt out, no doubled separators.
pub fn normalize_path(path: &str) -> String {
    let mut p = path.trim().replace('/', "\\").to_ascii_lowercase();
    for (short, long) in [
        ("hklm\\", "hkey_local_machine\\"),
        ("hkcu\\", "hkey_current_user\\"),
        ("hkcr\\", "hkey_classes_root\\"),
        ("hku\\", "hkey_users\\"),
    ] {
        if p.starts_with(short) {
            p = format!("{long}{}", &p[short.len()..]);
        }
    }
    while p.contains("\\\\") {
        p = p.replace("\\\\", "\\");
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_windows_facts() {
        let inv = Inventory::windows("10.0.19044".parse().unwrap(), false, Some("x64-based PC"));
        assert_eq!(inv.fact("os.product").as_deref(), Some("Windows 10"));
        assert_eq!(inv.fact("os.release").as_deref(), Some("21H2"));
        assert_eq!(inv.fact("os.arch").as_deref(), Some("x64"));
        assert_eq!(inv.fact("os.build").as_deref(), Some("19044"));
        assert_eq!(inv.fact("os.revision"), None);
        let server = Inventory::windows("10.0.20348.1".parse().unwrap(), true, None);
        assert_eq!(server.fact("os.product").as_deref(), Some("Windows Server 2022"));
        assert_eq!(server.fact("os.revision").as_deref(), Some("1"));
    }

    #[test]
    fn the_hash_is_of_the_inventory_without_its_name() {
        let mut inv = Inventory::windows("10.0.19044.2364".parse().unwrap(), false, Some("x64"));
        inv.computer = Some("PC-1".into());
        inv.installed_updates.insert(UpdateId::new("KB5021233"));
        inv.facts.insert("rack".into(), "12".into());
        inv.software = Some(SoftwareList {
            complete: true,
            entries: vec![crate::software::Software {
                name: "7-Zip 22.01 (x64)".into(),
                ..Default::default()
            }],
        });
        let anonymous = Inventory {
            computer: None,
            ..inv.clone()
        };
        let bytes = serde_json::to_vec(&anonymous).unwrap();
        let expected: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
        assert_eq!(inv.content_hash(), InventoryHash(expected));
    }

    #[test]
    fn hashes_read_back_from_their_text() {
        let hash = Inventory::windows("10.0.19044".parse().unwrap(), false, None).content_hash();
        assert_eq!(hash.to_string().parse::<InventoryHash>(), Ok(hash));
        assert!("abc".parse::<InventoryHash>().is_err());
        assert!("zz".repeat(32).parse::<InventoryHash>().is_err());
    }

    #[test]
    fn hash_ignores_the_computer_name() {
        let mut a = Inventory::windows("10.0.19044".parse().unwrap(), false, Some("x64"));
        let mut b = a.clone();
        a.computer = Some("A".into());
        b.computer = Some("B".into());
        assert_eq!(a.content_hash(), b.content_hash());
        b.installed_updates.insert(UpdateId::new("KB1"));
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn registry_lookup_knows_what_was_collected() {
        let mut inv = Inventory {
            registry: Some(BTreeMap::from([("HKLM\\Software\\X\\A".to_owned(), "1".to_owned())])),
            ..Inventory::default()
        };
        inv.normalize();
        assert_eq!(
            inv.registry_value("HKEY_LOCAL_MACHINE\\SOFTWARE\\X\\A"),
            Lookup::Present("1")
        );
        assert_eq!(inv.registry_value("HKEY_LOCAL_MACHINE\\SOFTWARE\\X\\B"), Lookup::Absent);
        assert_eq!(
            inv.registry_value("HKEY_LOCAL_MACHINE\\SOFTWARE\\Y\\A"),
            Lookup::NotCollected
        );
    }
}
