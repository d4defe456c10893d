//! The parts of the `cascade` command that a running node shares with the
//! command line, and that tests drive directly.

pub mod inprocess;
pub mod relay;
