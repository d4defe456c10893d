//! An agent's report kept and sent with one attestation for all its records.
//!
//! An agent signs the Merkle root of a report's records (see
//! [`crate::seal::attest`]). A record alone proves itself with its path to
//! the root; records of one report together need far less: the tree nodes
//! that, beside their own leaves, rebuild the root (a multiproof). When every
//! record of the report is there that is nothing at all; when newer reports
//! replaced some, it is the few subtrees that hold only those. Nodes store
//! and send a report that way, and rebuild each record's own path from it.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ComplianceRecord;
use crate::seal::{Attestation, node_hash, record_leaf};

/// The most records one report may hold.
pub const MAX_RECORDS: u32 = 1 << 20;

/// A node of a report's Merkle tree: its level (0 for the leaves), its place
/// in the level, and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeNode {
    pub level: u8,
    pub position: u32,
    pub hash: [u8; 32],
}

/// The width of each level of a tree of `count` leaves, leaves first, root
/// last (an odd node at the end of a level is carried up unchanged).
fn widths(count: u32) -> Vec<u32> {
    let mut out = vec![count];
    let mut w = count;
    while w > 1 {
        w = w.div_ceil(2);
        out.push(w);
    }
    out
}

/// One level of a tree as far as it is known: (place, hash), sorted by
/// place.
type Level = Vec<(u32, [u8; 32])>;

/// Sorts a level by place; the last of nodes given twice a place stands.
fn sorted_keeping_last(mut level: Level) -> Level {
    level.sort_by_key(|(place, _)| *place);
    let mut out: Level = Vec::with_capacity(level.len());
    for node in level {
        match out.last_mut() {
            Some(last) if last.0 == node.0 => *last = node,
            _ => out.push(node),
        }
    }
    out
}

/// Folds the known nodes of a level of `width` nodes: each pair of siblings
/// makes its parent, and an odd last node is carried up unchanged. Returns
/// the parents made and the nodes that made none (their sibling unknown).
fn fold(level: &[(u32, [u8; 32])], width: u32) -> (Level, Level) {
    let mut made = Vec::with_capacity(level.len() / 2 + 1);
    let mut alone = Vec::new();
    let mut i = 0;
    while let Some(&(place, hash)) = level.get(i) {
        if place % 2 == 0 && place + 1 == width {
            made.push((place / 2, hash));
            i += 1;
            continue;
        }
        if place % 2 == 0
            && let Some(&(next, right)) = level.get(i + 1)
            && next == place + 1
        {
            made.push((place / 2, node_hash(&hash, &right)));
            i += 2;
            continue;
        }
        alone.push((place, hash));
        i += 1;
    }
    (made, alone)
}

/// Two sorted levels as one. A place in both keeps the node from `made`
/// when `given` agrees or `replace` says so, and is `None` otherwise.
fn merge(given: Level, made: Level, replace: bool) -> Option<Level> {
    let mut out = Vec::with_capacity(given.len() + made.len());
    let (mut given, mut made) = (given.into_iter().peekable(), made.into_iter().peekable());
    loop {
        let next = match (given.peek(), made.peek()) {
            (None, None) => return Some(out),
            (Some(_), None) => given.next(),
            (None, Some(_)) => made.next(),
            (Some(g), Some(m)) if g.0 < m.0 => given.next(),
            (Some(g), Some(m)) if g.0 > m.0 => made.next(),
            (Some(g), Some(m)) => {
                if g.1 != m.1 && !replace {
                    return None;
                }
                given.next();
                made.next()
            }
        };
        out.extend(next);
    }
}

/// The nodes that rebuild the root beside the leaves at the given places,
/// taken from those leaves' own paths; `None` when a path does not fit
/// `count`.
pub fn multiproof(count: u32, present: &[(u32, &[[u8; 32]])]) -> Option<Vec<TreeNode>> {
    let widths = widths(count);
    let mut offered: Vec<Level> = vec![Vec::new(); widths.len()];
    let mut covered: Vec<Vec<u32>> = vec![Vec::new(); widths.len()];
    for &(index, proof) in present {
        if index >= count {
            return None;
        }
        let mut pos = index;
        let mut path = proof.iter();
        for (level, &width) in widths.iter().enumerate() {
            covered[level].push(pos);
            if width <= 1 {
                break;
            }
            let sibling = pos ^ 1;
            if sibling < width {
                offered[level].push((sibling, *path.next()?));
            }
            pos /= 2;
        }
        if path.next().is_some() {
            return None;
        }
    }
    let mut out = Vec::new();
    for (level, (offered, mut covered)) in offered.into_iter().zip(covered).enumerate() {
        covered.sort_unstable();
        covered.dedup();
        out.extend(
            sorted_keeping_last(offered)
                .into_iter()
                .filter(|(place, _)| covered.binary_search(place).is_err())
                .map(|(position, hash)| TreeNode {
                    level: level as u8,
                    position,
                    hash,
                }),
        );
    }
    Some(out)
}

/// The same nodes with every pair of siblings replaced by their parent, up
/// to the fewest that stand for the same leaves.
pub fn minimize(count: u32, nodes: Vec<TreeNode>) -> Vec<TreeNode> {
    let widths = widths(count);
    let mut levels: Vec<Level> = vec![Vec::new(); widths.len()];
    for n in &nodes {
        match levels.get_mut(n.level as usize) {
            Some(level) => level.push((n.position, n.hash)),
            // Out of any tree of this size: left for `rebuild` to refuse.
            None => return nodes,
        }
    }
    let mut levels: Vec<Level> = levels.into_iter().map(sorted_keeping_last).collect();
    for level in 0..widths.len() - 1 {
        let (made, alone) = fold(&levels[level], widths[level]);
        levels[level] = alone;
        let above = std::mem::take(&mut levels[level + 1]);
        levels[level + 1] = merge(above, made, true).unwrap_or_default();
    }
    levels
        .into_iter()
        .enumerate()
        .flat_map(|(level, nodes)| {
            nodes.into_iter().map(move |(position, hash)| TreeNode {
                level: level as u8,
                position,
                hash,
            })
        })
        .collect()
}

/// A Merkle path: sibling hashes from the leaf up.
pub type Path = Vec<[u8; 32]>;

/// The root of a report of `count` records from the leaves at their places
/// and the nodes of its multiproof, and each given leaf's path to it (in the
/// order given). `None` when they do not make one whole tree: a place out of
/// range or given twice, a node that contradicts what the leaves make, or
/// one missing.
pub fn rebuild(count: u32, leaves: &[(u32, [u8; 32])], nodes: &[TreeNode]) -> Option<([u8; 32], Vec<Path>)> {
    if count == 0 || count > MAX_RECORDS {
        return None;
    }
    let widths = widths(count);
    let mut given: Vec<Level> = vec![Vec::new(); widths.len()];
    given[0].reserve(leaves.len());
    for &(index, leaf) in leaves {
        if index >= count {
            return None;
        }
        given[0].push((index, leaf));
    }
    for node in nodes {
        let level = node.level as usize;
        if level >= widths.len() || node.position >= widths[level] {
            return None;
        }
        given[level].push((node.position, node.hash));
    }
    for level in &mut given {
        level.sort_unstable_by_key(|(place, _)| *place);
        if level.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
    }
    let mut given = given.into_iter();
    let mut levels: Vec<Level> = Vec::with_capacity(widths.len());
    let mut current = given.next()?;
    for (&width, above) in widths.iter().zip(given) {
        // A node given where the leaves make one must agree with it.
        let (made, _) = fold(&current, width);
        levels.push(std::mem::replace(&mut current, merge(above, made, false)?));
    }
    let root = current.first().filter(|(place, _)| *place == 0)?.1;
    levels.push(current);
    let mut proofs = Vec::with_capacity(leaves.len());
    for &(index, _) in leaves {
        let mut proof = Vec::with_capacity(widths.len());
        let mut pos = index;
        for (level, &width) in levels.iter().zip(&widths).take(widths.len() - 1) {
            let sibling = pos ^ 1;
            if sibling < width {
                let at = level.binary_search_by_key(&sibling, |(place, _)| *place).ok()?;
                proof.push(level[at].1);
            }
            pos /= 2;
        }
        proofs.push(proof);
    }
    Some((root, proofs))
}

/// One agent report as nodes keep and send it: the signature once, the
/// records of it still current, and the multiproof that stands for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub computer: crate::model::ComputerId,
    pub counter: u64,
    pub count: u32,
    pub scheme: u16,
    pub sig: Vec<u8>,
    pub nodes: Vec<TreeNode>,
    /// The records, each with its place in the report.
    pub records: Vec<(u32, ComplianceRecord)>,
}

/// Groups attested records into reports (by computer, counter and
/// signature), each with the multiproof its records need; records without
/// an attestation (or whose paths do not fit) are returned apart.
pub fn group(records: Vec<ComplianceRecord>) -> (Vec<Report>, Vec<ComplianceRecord>) {
    type Key = (crate::model::ComputerId, u64, Vec<u8>, u16, u32);
    let mut groups: BTreeMap<Key, Vec<ComplianceRecord>> = BTreeMap::new();
    let mut loose = Vec::new();
    for record in records {
        match &record.attestation {
            Some(a) => {
                let key = (
                    record.computer.clone(),
                    record.counter,
                    a.sig.clone(),
                    a.scheme,
                    a.count,
                );
                groups.entry(key).or_default().push(record);
            }
            None => loose.push(record),
        }
    }
    let mut reports = Vec::with_capacity(groups.len());
    for ((computer, counter, sig, scheme, count), members) in groups {
        let paths: Vec<(u32, &[[u8; 32]])> = members
            .iter()
            .filter_map(|r| r.attestation.as_ref().map(|a| (a.index, a.proof.as_slice())))
            .collect();
        let mut places = BTreeSet::new();
        let unique = paths.iter().all(|(i, _)| places.insert(*i));
        match multiproof(count, &paths).filter(|_| unique) {
            Some(nodes) => reports.push(Report {
                computer,
                counter,
                count,
                scheme,
                sig,
                nodes,
                records: members
                    .into_iter()
                    .map(|mut r| {
                        let index = r.attestation.take().map_or(0, |a| a.index);
                        (index, r)
                    })
                    .collect(),
            }),
            None => loose.extend(members),
        }
    }
    (reports, loose)
}

impl Report {
    /// The report's records with each one's own attestation rebuilt, and the
    /// root the agent signed; `None` when the records and the multiproof do
    /// not make the report's tree.
    pub fn attested(self) -> Option<([u8; 32], Vec<ComplianceRecord>)> {
        let leaves: Vec<(u32, [u8; 32])> = self.records.iter().map(|(index, r)| (*index, record_leaf(r))).collect();
        let (root, proofs) = rebuild(self.count, &leaves, &self.nodes)?;
        let records = self
            .records
            .into_iter()
            .zip(proofs)
            .map(|((index, mut record), proof)| {
                record.computer = self.computer.clone();
                record.counter = self.counter;
                record.attestation = Some(Attestation {
                    index,
                    count: self.count,
                    proof,
                    scheme: self.scheme,
                    sig: self.sig.clone(),
                });
                record
            })
            .collect();
        Some((root, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{merkle, merkle_root_from};

    fn leaves(n: u32) -> Vec<[u8; 32]> {
        (0..n).map(|i| [i as u8 ^ 0x5a; 32]).collect()
    }

    #[test]
    fn every_subset_of_every_small_tree_rebuilds_its_root_and_paths() {
        for count in 1..=13u32 {
            let all = leaves(count);
            let (root, proofs) = merkle(&all);
            // Every subset of places (as a bit mask), none empty.
            for mask in 1u32..(1 << count) {
                let present: Vec<u32> = (0..count).filter(|i| mask & (1 << i) != 0).collect();
                let paths: Vec<(u32, &[[u8; 32]])> =
                    present.iter().map(|&i| (i, proofs[i as usize].as_slice())).collect();
                let nodes = multiproof(count, &paths).unwrap();
                let given: Vec<(u32, [u8; 32])> = present.iter().map(|&i| (i, all[i as usize])).collect();
                let (rebuilt, rebuilt_proofs) = rebuild(count, &given, &nodes).unwrap();
                assert_eq!(rebuilt, root, "count {count} mask {mask:b}");
                for (&i, proof) in present.iter().zip(&rebuilt_proofs) {
                    assert_eq!(proof, &proofs[i as usize]);
                    assert_eq!(merkle_root_from(all[i as usize], i, count, proof), Some(root));
                }
                if present.len() as u32 == count {
                    assert!(nodes.is_empty(), "a whole report needs no node");
                }
                // The leaves not sent fold into the same nodes.
                let not_sent: Vec<TreeNode> = (0..count)
                    .filter(|i| mask & (1 << i) == 0)
                    .map(|i| TreeNode {
                        level: 0,
                        position: i,
                        hash: all[i as usize],
                    })
                    .collect();
                assert_eq!(minimize(count, not_sent), nodes, "count {count} mask {mask:b}");
            }
        }
    }

    #[test]
    fn leaves_not_sent_fold_into_the_fewest_nodes() {
        let all = leaves(11);
        let (root, _) = merkle(&all);
        // Leaf 6 sent; every other leaf given as a node.
        let nodes: Vec<TreeNode> = (0..11u32)
            .filter(|&i| i != 6)
            .map(|i| TreeNode {
                level: 0,
                position: i,
                hash: all[i as usize],
            })
            .collect();
        let folded = minimize(11, nodes.clone());
        assert!(folded.len() <= 4, "{folded:?}");
        assert_eq!(rebuild(11, &[(6, all[6])], &folded).unwrap().0, root);
        assert_eq!(rebuild(11, &[(6, all[6])], &nodes).unwrap().0, root);
    }

    #[test]
    fn a_tree_that_does_not_fit_is_refused() {
        let all = leaves(6);
        let (root, proofs) = merkle(&all);
        let paths: Vec<(u32, &[[u8; 32]])> = vec![(1, &proofs[1]), (4, &proofs[4])];
        let nodes = multiproof(6, &paths).unwrap();
        let given = vec![(1, all[1]), (4, all[4])];
        assert_eq!(rebuild(6, &given, &nodes).unwrap().0, root);
        // A node left out, a place twice, a place out of range, an altered
        // leaf, a node that contradicts the leaves.
        assert!(rebuild(6, &given, &nodes[1..]).is_none());
        assert!(rebuild(6, &[(1, all[1]), (1, all[1])], &nodes).is_none());
        assert!(rebuild(6, &[(1, all[1]), (6, all[4])], &nodes).is_none());
        let mut altered = given.clone();
        altered[0].1[0] ^= 1;
        assert_ne!(rebuild(6, &altered, &nodes).map(|r| r.0), Some(root));
        let mut extra = nodes.clone();
        extra.push(TreeNode {
            level: 0,
            position: 0,
            hash: [9; 32],
        });
        assert!(rebuild(6, &given, &extra).is_none());
        assert!(rebuild(0, &[], &[]).is_none());
        assert!(multiproof(6, &[(7, &proofs[1])]).is_none());
    }
}
