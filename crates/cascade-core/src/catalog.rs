//! A set of updates, merged by id, with its supersedence graph and an index
//! by product.

use std::collections::HashMap;

use crate::ids::UpdateId;
use crate::inventory::Inventory;
use crate::rule::IndexKey;
use crate::update::Update;

pub use crate::diagnostic::CatalogDiagnostic;

/// Updates by id, with supersedence resolved to indices and an index by
/// product. Built once per catalog revision; planning only reads it.
#[derive(Debug, Default)]
pub struct Catalog {
    updates: Vec<Update>,
    by_id: HashMap<UpdateId, u32>,
    /// Direct superseders of each update (edges inside cycles removed).
    superseded_by: Vec<Vec<u32>>,
    /// Bundles each update is part of.
    bundled_in: Vec<Vec<u32>>,
    index: HashMap<IndexKey, Vec<u32>>,
    /// Updates whose rules name no product: looked at for every computer.
    unindexed: Vec<u32>,
    /// Updates indexed by an installed product: looked at for computers
    /// whose products are unknown.
    product_indexed: Vec<u32>,
    /// Of those, the ones for a product a software list cannot show: looked
    /// at for every computer (they are unknown where not listed).
    undetectable: Vec<u32>,
    diagnostics: Vec<CatalogDiagnostic>,
    detectoids: usize,
    /// The baseline cumulative update of each hotpatch that has one here.
    baselines: HashMap<u32, u32>,
}

impl Catalog {
    /// Builds a catalog, merging records with the same id in order.
    pub fn new(updates: impl IntoIterator<Item = Update>) -> Catalog {
        let mut merged: Vec<Update> = Vec::new();
        let mut by_id: HashMap<UpdateId, u32> = HashMap::new();
        for update in updates {
            match by_id.get(&update.id) {
                Some(&i) => merged[i as usize].merge(update),
                None => {
                    by_id.insert(update.id.clone(), merged.len() as u32);
                    merged.push(update);
                }
            }
        }
        // Aliases resolve to their update unless they are updates themselves.
        for (i, u) in merged.iter().enumerate() {
            for alias in &u.aliases {
                by_id.entry(alias.clone()).or_insert(i as u32);
            }
        }
        let n = merged.len();
        let mut superseded_by: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut bundled_in: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, u) in merged.iter().enumerate() {
            let i = i as u32;
            for old in &u.supersedes {
                if let Some(&o) = by_id.get(old)
                    && o != i
                {
                    superseded_by[o as usize].push(i);
                }
            }
            for new in &u.superseded_by {
                if let Some(&s) = by_id.get(new)
                    && s != i
                {
                    superseded_by[i as usize].push(s);
                }
            }
            for child in &u.bundled {
                if let Some(&c) = by_id.get(child) {
                    bundled_in[c as usize].push(i);
                }
            }
        }
        let derived = crate::containment::derive(&merged, &mut superseded_by);
        let mut diagnostics = derived.diagnostics;
        if !superseded_by.iter().all(Vec::is_empty) {
            diagnostics.extend(break_cycles(&mut superseded_by, &merged));
        }
        // By id, so that which superseder a plan names does not depend on
        // the order the catalog was given in.
        for list in &mut superseded_by {
            list.sort_unstable_by(|a, b| merged[*a as usize].id.cmp(&merged[*b as usize].id));
            list.dedup();
        }

        let mut index: HashMap<IndexKey, Vec<u32>> = HashMap::new();
        let mut unindexed = Vec::new();
        let mut product_indexed = Vec::new();
        let mut undetectable = Vec::new();
        for (i, u) in merged.iter().enumerate() {
            let i = i as u32;
            let keys: Option<Vec<IndexKey>> = if u.targets.is_empty() {
                u.applicable_when.as_ref().and_then(|r| r.index_key()).map(|k| vec![k])
            } else {
                u.targets.iter().map(|t| t.rule.index_key()).collect()
            };
            match keys {
                None => unindexed.push(i),
                Some(keys) => {
                    // A vendor's product name is indexed under the installed
                    // products it stands for.
                    let mut keys: Vec<IndexKey> = keys
                        .into_iter()
                        .flat_map(|k| match k {
                            IndexKey::Product(name) => crate::products::covered_by(&name)
                                .iter()
                                .map(|c| IndexKey::Product(c.to_ascii_lowercase()))
                                .collect::<Vec<_>>(),
                            other => vec![other],
                        })
                        .collect();
                    keys.sort();
                    keys.dedup();
                    if keys.iter().any(|k| matches!(k, IndexKey::Product(_))) {
                        product_indexed.push(i);
                        if keys
                            .iter()
                            .any(|k| matches!(k, IndexKey::Product(name) if !crate::products::detectable(name)))
                        {
                            undetectable.push(i);
                        }
                    }
                    for k in keys {
                        index.entry(k).or_default().push(i);
                    }
                }
            }
        }
        let detectoids = merged
            .iter()
            .filter(|u| u.classification == crate::update::Classification::Detectoid)
            .count();
        Catalog {
            updates: merged,
            by_id,
            superseded_by,
            bundled_in,
            index,
            unindexed,
            product_indexed,
            undetectable,
            diagnostics,
            detectoids,
            baselines: derived.baselines,
        }
    }

    /// The baseline cumulative update of hotpatch `i`, where known.
    pub(crate) fn baseline(&self, i: u32) -> Option<u32> {
        self.baselines.get(&i).copied()
    }

    pub fn len(&self) -> usize {
        self.updates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    pub fn updates(&self) -> &[Update] {
        &self.updates
    }

    pub fn get(&self, id: &UpdateId) -> Option<&Update> {
        self.by_id.get(id).map(|&i| &self.updates[i as usize])
    }

    pub fn diagnostics(&self) -> &[CatalogDiagnostic] {
        &self.diagnostics
    }

    /// How many categories and detectoids the catalog has.
    pub(crate) fn detectoids(&self) -> usize {
        self.detectoids
    }

    pub(crate) fn index_of(&self, id: &UpdateId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn update(&self, i: u32) -> &Update {
        &self.updates[i as usize]
    }

    pub(crate) fn superseded_by(&self, i: u32) -> &[u32] {
        &self.superseded_by[i as usize]
    }

    pub(crate) fn bundled_in(&self, i: u32) -> &[u32] {
        &self.bundled_in[i as usize]
    }

    /// The updates that may apply to `inv`: those indexed under its OS
    /// product and its installed products (all product-indexed ones when
    /// its products are unknown), and the unindexed ones. Sorted, no repeats.
    pub(crate) fn candidates(&self, inv: &Inventory) -> Vec<u32> {
        let mut out: Vec<u32> = self.unindexed.clone();
        // An undecided product (a build that is both a client and a server
        // release) looks at every product it may be: their updates are
        // then unknown, with the reason, rather than silently absent.
        for product in inv.possible_os_products() {
            if let Some(list) = self.index.get(&IndexKey::Os(product.to_ascii_lowercase())) {
                out.extend_from_slice(list);
            }
        }
        match inv.products_known() {
            crate::inventory::ProductsKnown::Completely => {
                for p in inv.installed_products() {
                    if let Some(list) = self.index.get(&IndexKey::Product(p.name.to_ascii_lowercase())) {
                        out.extend_from_slice(list);
                    }
                }
                if inv.software.is_some() {
                    out.extend_from_slice(&self.undetectable);
                }
            }
            _ => out.extend_from_slice(&self.product_indexed),
        }
        // Sorted and without repeats: through a bit per update of the
        // catalog, cheaper than sorting thousands of indices.
        let mut marks = vec![0u64; self.updates.len().div_ceil(64)];
        for &i in &out {
            marks[i as usize / 64] |= 1 << (i % 64);
        }
        out.clear();
        for (word_at, &word) in marks.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                let bit = word.trailing_zeros();
                out.push(word_at as u32 * 64 + bit);
                word &= word - 1;
            }
        }
        out
    }

    /// Whether some update of this catalog supersedes `id`.
    pub fn is_superseded(&self, id: &UpdateId) -> bool {
        self.index_of(id).is_some_and(|i| !self.superseded_by(i).is_empty())
    }

    /// Every update that supersedes `id`, directly or through others.
    pub fn superseders_of(&self, id: &UpdateId) -> Vec<&Update> {
        let Some(start) = self.index_of(id) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.updates.len()];
        let mut stack = vec![start];
        let mut out = Vec::new();
        while let Some(i) = stack.pop() {
            for &s in self.superseded_by(i) {
                if !std::mem::replace(&mut seen[s as usize], true) {
                    out.push(self.update(s));
                    stack.push(s);
                }
            }
        }
        out
    }
}

/// Finds strongly connected components of the superseded-by graph (Tarjan,
/// iteratively, so long chains cannot overflow the stack), removes the edges
/// inside each cycle and reports it.
fn break_cycles(graph: &mut [Vec<u32>], updates: &[Update]) -> Vec<CatalogDiagnostic> {
    const UNSEEN: u32 = u32::MAX;
    let n = graph.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut component = vec![UNSEEN; n];
    let mut components: Vec<Vec<u32>> = Vec::new();
    let mut next = 0u32;
    for root in 0..n as u32 {
        if index[root as usize] != UNSEEN {
            continue;
        }
        let mut work: Vec<(u32, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            let vi = v as usize;
            if *edge == 0 && index[vi] == UNSEEN {
                index[vi] = next;
                low[vi] = next;
                next += 1;
                stack.push(v);
                on_stack[vi] = true;
            }
            if let Some(&w) = graph[vi].get(*edge) {
                *edge += 1;
                let wi = w as usize;
                if index[wi] == UNSEEN {
                    work.push((w, 0));
                } else if on_stack[wi] {
                    low[vi] = low[vi].min(index[wi]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent as usize] = low[parent as usize].min(low[vi]);
            }
            if low[vi] == index[vi] {
                let id = components.len() as u32;
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w as usize] = false;
                    component[w as usize] = id;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(members);
            }
        }
    }
    let mut diagnostics = Vec::new();
    // An update superseded by one member of a cycle is superseded by all of them.
    for list in graph.iter_mut() {
        let mut expanded: Vec<u32> = Vec::with_capacity(list.len());
        for &w in list.iter() {
            let members = &components[component[w as usize] as usize];
            if members.len() > 1 {
                expanded.extend(members)
            } else {
                expanded.push(w)
            }
        }
        expanded.sort_unstable();
        expanded.dedup();
        *list = expanded;
    }
    for members in components.iter().filter(|m| m.len() > 1) {
        // The members stand for each other: none supersedes another, and
        // whatever supersedes one of them supersedes them all.
        let c = component[members[0] as usize];
        let mut outside: Vec<u32> = members
            .iter()
            .flat_map(|&m| graph[m as usize].iter().copied())
            .filter(|&w| component[w as usize] != c)
            .collect();
        outside.sort_unstable();
        outside.dedup();
        for &m in members {
            graph[m as usize] = outside.clone();
        }
        let mut ids: Vec<UpdateId> = members.iter().map(|&m| updates[m as usize].id.clone()).collect();
        ids.sort();
        diagnostics.push(CatalogDiagnostic::SupersedenceCycle(ids));
    }
    diagnostics.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::Classification;

    fn update(id: &str, supersedes: &[&str]) -> Update {
        let mut u = Update::new(UpdateId::new(id), id, Classification::SecurityUpdate);
        u.supersedes = supersedes.iter().map(|s| UpdateId::new(s)).collect();
        u
    }

    #[test]
    fn cycles_are_reported_and_broken() {
        let catalog = Catalog::new(vec![
            update("KB1", &["KB3"]),
            update("KB2", &["KB1"]),
            update("KB3", &["KB2"]),
            update("KB4", &["KB3"]),
        ]);
        assert_eq!(
            catalog.diagnostics(),
            &[CatalogDiagnostic::SupersedenceCycle(vec![
                UpdateId::new("KB1"),
                UpdateId::new("KB2"),
                UpdateId::new("KB3")
            ])]
        );
        // KB4 supersedes KB3, and with it the whole cycle.
        let kb4 = catalog.index_of(&UpdateId::new("KB4")).unwrap();
        for member in ["KB1", "KB2", "KB3"] {
            let m = catalog.index_of(&UpdateId::new(member)).unwrap();
            assert_eq!(catalog.superseded_by(m), &[kb4], "{member}");
        }
        let names: Vec<&str> = catalog
            .superseders_of(&UpdateId::new("KB1"))
            .iter()
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(names, ["KB4"]);
    }

    #[test]
    fn merges_records_of_one_update() {
        let catalog = Catalog::new(vec![
            update("KB2", &["KB1"]),
            update("KB2", &["KB0"]),
            update("KB1", &[]),
        ]);
        assert_eq!(catalog.len(), 2);
        assert_eq!(
            catalog.get(&UpdateId::new("KB2")).unwrap().supersedes,
            vec![UpdateId::new("KB1"), UpdateId::new("KB0")]
        );
    }
}
