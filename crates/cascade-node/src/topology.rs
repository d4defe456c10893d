//! Where a node sits, as its running tasks know it: the parent it links
//! to (configured, or where a move sent it), the status of its links both
//! ways, and what each child declared below it; and the signals by which
//! its tasks wake each other. Each is a service with its own state; what
//! also needs the store (the children it registered) is on `Node`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cascade_core::model::NodeId;
use tokio::sync::{Notify, watch};

use crate::LinkStatus;

/// How a node's tasks wake each other.
#[derive(Debug)]
pub struct Signals {
    /// Bumped whenever a change is applied here, to wake subscribers.
    changes: watch::Sender<u64>,
    /// Woken when something was queued for the parent.
    pub(crate) outbox_ready: Notify,
    /// Woken by "replicate now".
    pub(crate) wake: Notify,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals {
            changes: watch::channel(0).0,
            outbox_ready: Notify::new(),
            wake: Notify::new(),
        }
    }
}

impl Signals {
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A change was applied here: the children's streams send it.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Something was queued for the parent: send it soon.
    pub fn upward_ready(&self) {
        self.outbox_ready.notify_one();
    }

    /// "Replicate now": the parent links reconnect at once if they are
    /// waiting to retry or have been quiet, and the outbox is sent.
    pub fn replicate_now(&self) {
        self.wake.notify_waiters();
        self.outbox_ready.notify_one();
    }
}

/// A link's key: the peer (the parent's address, a child's id) and the
/// direction ("down", "up", "child-down", "child-up").
type LinkKey = (String, &'static str);

/// The parent, the links and the children's declarations.
#[derive(Debug)]
pub struct Topology {
    /// The parent's address: the configured one, or where a move sent this
    /// node; the link follows it.
    parent: watch::Sender<Option<String>>,
    /// The id the parent's certificate must name: the configured one, or
    /// the one a move named.
    parent_id: Mutex<Option<NodeId>>,
    links: Mutex<BTreeMap<LinkKey, LinkStatus>>,
    links_dirty: AtomicBool,
    /// What each child declared its subtree to be (itself and the sites
    /// below it), from the declaration it sends first on every connection.
    subtrees: Mutex<BTreeMap<NodeId, BTreeSet<NodeId>>>,
    /// The parent of each site below each child, as the child declared it.
    parents: Mutex<BTreeMap<NodeId, BTreeMap<NodeId, NodeId>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Topology {
    /// `parent`: its address and id (none at the root); `links`: the status
    /// an earlier run left, every link disconnected.
    pub fn new(parent: Option<(String, Option<NodeId>)>, links: BTreeMap<LinkKey, LinkStatus>) -> Topology {
        let (address, id) = match parent {
            Some((address, id)) => (Some(address), id),
            None => (None, None),
        };
        Topology {
            parent: watch::channel(address).0,
            parent_id: Mutex::new(id),
            links: Mutex::new(links),
            links_dirty: AtomicBool::new(false),
            subtrees: Mutex::new(BTreeMap::new()),
            parents: Mutex::new(BTreeMap::new()),
        }
    }

    /// The parent's address now.
    pub fn parent_address(&self) -> Option<String> {
        self.parent.borrow().clone()
    }

    /// The id the parent's certificate must name (none known: the link
    /// refuses to connect).
    pub fn parent_id(&self) -> Option<NodeId> {
        lock(&self.parent_id).clone()
    }

    /// Follows the parent's address as moves change it.
    pub fn watch_parent(&self) -> watch::Receiver<Option<String>> {
        self.parent.subscribe()
    }

    /// A new parent: the link reconnects there. Returns the one before.
    pub fn set_parent(&self, address: String, id: NodeId) -> Option<String> {
        let previous = self.parent_address();
        *lock(&self.parent_id) = Some(id);
        self.parent.send_replace(Some(address));
        previous
    }

    pub fn set_link(&self, peer: &str, direction: &'static str, update: impl FnOnce(&mut LinkStatus)) {
        update(lock(&self.links).entry((peer.to_owned(), direction)).or_default());
        self.links_dirty.store(true, Ordering::Release);
    }

    /// Every link: peer, direction, status.
    pub fn links(&self) -> Vec<(String, &'static str, LinkStatus)> {
        lock(&self.links)
            .iter()
            .map(|((p, d), s)| (p.clone(), *d, s.clone()))
            .collect()
    }

    /// Whether a link changed since the last call.
    pub fn take_links_changed(&self) -> bool {
        self.links_dirty.swap(false, Ordering::AcqRel)
    }

    /// Records a child's declared subtree, keeping only what lies below
    /// it (never `own`, this node).
    pub fn declare_subtree(&self, own: &NodeId, child: &NodeId, mut sites: BTreeSet<NodeId>) {
        sites.insert(child.clone());
        sites.remove(own);
        lock(&self.subtrees).insert(child.clone(), sites);
    }

    /// Records the parents a child declared for the sites below it, keeping
    /// only sites of its declared subtree.
    pub fn declare_parents(&self, child: &NodeId, parents: BTreeMap<NodeId, NodeId>) {
        let kept: BTreeMap<NodeId, NodeId> = parents
            .into_iter()
            .filter(|(site, _)| site != child && self.in_subtree_of(child, site))
            .collect();
        lock(&self.parents).insert(child.clone(), kept);
    }

    /// Whether `site` lies in `child`'s subtree as the child declared it.
    pub fn in_subtree_of(&self, child: &NodeId, site: &NodeId) -> bool {
        site == child || lock(&self.subtrees).get(child).is_some_and(|s| s.contains(site))
    }

    /// The sites below each of `children` as they declared them, with the
    /// children themselves.
    pub fn declared_below(&self, children: &[NodeId]) -> BTreeSet<NodeId> {
        let declared = lock(&self.subtrees);
        let mut out = BTreeSet::new();
        for child in children {
            if let Some(below) = declared.get(child) {
                out.extend(below.iter().cloned());
            }
            out.insert(child.clone());
        }
        out
    }

    /// The parent of every site below `children` as they declared them,
    /// and `own` as the parent of each child.
    pub fn declared_parents(&self, own: &NodeId, children: &[NodeId]) -> BTreeMap<NodeId, NodeId> {
        let declared = lock(&self.parents);
        let mut out = BTreeMap::new();
        for child in children {
            if let Some(below) = declared.get(child) {
                out.extend(below.iter().map(|(s, p)| (s.clone(), p.clone())));
            }
            out.insert(child.clone(), own.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn a_child_declares_only_what_lies_below_it() {
        let t = Topology::new(None, BTreeMap::new());
        let (root, a, b) = (id("root"), id("region-a"), id("region-b"));
        // Region A claims the root and a site of region B as its own.
        t.declare_subtree(&root, &a, [id("a-1"), root.clone()].into());
        t.declare_subtree(&root, &b, [id("b-1")].into());
        t.declare_parents(&a, [(id("a-1"), a.clone()), (id("b-1"), a.clone())].into());
        assert!(t.in_subtree_of(&a, &id("a-1")));
        assert!(!t.in_subtree_of(&a, &root));
        assert!(!t.in_subtree_of(&a, &id("b-1")));
        let below = t.declared_below(&[a.clone(), b.clone()]);
        assert_eq!(below, [a.clone(), id("a-1"), b.clone(), id("b-1")].into());
        let parents = t.declared_parents(&root, &[a.clone(), b.clone()]);
        assert_eq!(parents.get(&id("a-1")), Some(&a));
        assert_eq!(parents.get(&id("b-1")), None, "only what A declared below itself");
        assert_eq!(parents.get(&b), Some(&root));
    }

    #[test]
    fn a_move_changes_the_parent_and_links_say_when_they_changed() {
        let t = Topology::new(Some(("p:1".into(), Some(id("p")))), BTreeMap::new());
        let watch = t.watch_parent();
        assert_eq!(t.set_parent("q:2".into(), id("q")), Some("p:1".into()));
        assert!(watch.has_changed().unwrap());
        assert_eq!(t.parent_id(), Some(id("q")));
        assert!(!t.take_links_changed());
        t.set_link("q:2", "down", |l| l.connected = true);
        assert!(t.take_links_changed());
        assert!(!t.take_links_changed());
        assert!(t.links()[0].2.connected);
    }
}
