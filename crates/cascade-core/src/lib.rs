//! Cascade's domain model and the applicability planner.
//!
//! This crate knows nothing about tonic, tokio, sled or the file system:
//! importers take bytes and a name to use in errors, and anything that needs
//! the time is handed it.

pub mod assignment;
pub mod catalog;
pub mod compliance;
mod containment;
pub mod diagnostic;
pub mod exact;
pub mod ids;
pub mod import;
pub mod inventory;
pub mod logic;
pub mod model;
pub mod planner;
pub mod products;
pub mod report;
pub mod rule;
pub mod schedule;
pub mod seal;
pub mod signed;
pub mod software;
pub mod update;
pub mod version;
pub mod windows;

pub use catalog::{Catalog, CatalogDiagnostic};
pub use compliance::ComplianceState;
pub use ids::UpdateId;
pub use inventory::Inventory;
pub use planner::{Plan, PlanEntry, Planner};
pub use rule::{Rule, Truth};
pub use update::{Classification, RestartBehavior, Severity, Update};
pub use version::Version;
