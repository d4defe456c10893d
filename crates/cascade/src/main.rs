//! The `cascade` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod bench_reports;
mod bench_rollup;
mod bench_unauthenticated;
mod cabinet;
mod ctl;
mod demo;
mod evaluate;
mod node;
mod pki;

/// mimalloc, not the system's allocator: a node that has held a million
/// computers' rows keeps allocating fast (glibc's spent half of an export
/// walking its free lists). See `cascade bench reports`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "cascade", version, about = "Hierarchical patch management")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A local demo hierarchy: 7 nodes, simulated computers, the bundled real CVRF sample, the console.
    Demo(demo::Args),
    /// Show which updates of the given catalogs a computer needs, in install order, and why.
    Evaluate(evaluate::Args),
    /// Run and look after a node.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Enroll and run this computer's agent, or simulate a fleet of agents.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Administer a running node.
    Ctl(ctl::Args),
    /// The organisation CA and certificates.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Measure: prints one JSON object with figures and goals.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Exit code for input Cascade cannot read (a malformed catalog or inventory).
pub const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Node(command) => node::run(command),
        Command::Agent(command) => agent::run(command),
        Command::Ctl(args) => ctl::run(args),
        Command::Pki(command) => pki::run(command),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}
