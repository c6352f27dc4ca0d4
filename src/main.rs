//! The `herd` command line: parse, build the runtime, pick the mode.

mod commands;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// herd: a render farm for Blender on your local network.
#[derive(Debug, Parser)]
#[command(name = "herd", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a render node: keep Blender loaded, serve the API, announce on the LAN.
    Node(commands::node::NodeArgs),
    /// List the nodes on the LAN: probe, hear their beacons, confirm each.
    Nodes(commands::nodes::NodesArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herd=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herd-worker")
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Node(args) => runtime.block_on(commands::node::run(args)),
        Command::Nodes(args) => runtime.block_on(commands::nodes::run(args)),
    }
}
