//! The `partisan` command.

use clap::{Parser, Subcommand};

mod admin;
mod bench;
mod demo;
mod duration_arg;
mod node_cmd;
mod sim_cmd;

/// partisan: a distributed runtime for Rust.
#[derive(Parser, Debug)]
#[command(name = "partisan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node until SIGINT or SIGTERM.
    Node(node_cmd::NodeArgs),
    /// Start a small cluster in this process on loopback, exchange messages, print a summary.
    Demo(demo::DemoArgs),
    /// Transport benchmarks against a peer node run as a second process on loopback.
    Bench(bench::BenchArgs),
    /// Deterministic simulations of the protocols at scale (virtual time, one process).
    Sim(sim_cmd::SimArgs),
    /// The peer process of `partisan bench` (started by it).
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; no backtrace for user errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Node(args) => {
            init_logging("info");
            rt()?.block_on(node_cmd::run(args))
        }
        Command::Demo(args) => {
            init_logging("warn");
            rt()?.block_on(demo::run(args))
        }
        // Benchmarks build their own runtime: its size is one of their options.
        Command::Bench(args) => {
            init_logging("warn");
            bench::run(args)
        }
        Command::Sim(args) => {
            init_logging("warn");
            sim_cmd::run(args)
        }
        Command::BenchPeer(args) => {
            init_logging("warn");
            bench::run_peer(args)
        }
    }
}
