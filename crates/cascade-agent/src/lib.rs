//! The Cascade agent: runs on every managed computer. It enrolls with a
//! one-time token, checks in with the nearest reachable node (failing over
//! to the others), sends its inventory when it changed, installs what its
//! assignment says inside the maintenance windows, restarts when the vendor
//! and the policy say so, and reports every result durably and in order.
//!
//! The same code drives the fleet simulator's virtual agents, through the
//! `Env` trait (simulated installers, in-memory journal).

pub mod attest;
pub mod collect;
pub mod config;
pub mod connect;
pub mod cycle;
pub mod evidence;
pub mod install;
pub mod journal;
pub mod os_updater;
pub mod simulate;
pub mod system;

pub use config::{AgentConfig, Checked};
pub use cycle::{Agent, AgentError, Credentials, Env, RunSummary};
pub use journal::Journal;
