//! The store as a node's async code reaches it. sled reads and writes the
//! disk, so every call runs on the blocking pool: [`Db::run`] for the store
//! alone, `Node::run` for the node's views over it (agents, targeting,
//! effective objects). Only the admission checks, which decide before any
//! work whether a peer is a registered child or an operator's site covers
//! this node, read the site records in place.

use std::sync::Arc;

use cascade_store::Store;

/// A handle on a node's store for async code.
#[derive(Clone, Debug)]
pub struct Db(Arc<Store>);

impl Db {
    pub fn new(store: Arc<Store>) -> Db {
        Db(store)
    }

    /// Runs `f` with the store on the blocking pool.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let store = self.0.clone();
        crate::blocking(move || f(&store)).await
    }
}
