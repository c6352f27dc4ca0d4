//! The `herd` command line: parse, build the runtime, pick the mode.

mod commands;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// herd: a render farm for Blender on your local network.
///
/// Without a subcommand it opens the window used last (the controller the
/// first time).
#[derive(Debug, Parser)]
#[command(name = "herd", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a render node: keep Blender loaded, serve the API, announce on the LAN
    /// (in a window; `--headless` for none).
    Node(commands::node::NodeArgs),
    /// Open the controller window: drop a .blend, watch the servers and every frame.
    Controller(commands::ControllerArgs),
    /// List the nodes on the LAN: probe, hear their beacons, confirm each.
    Nodes(commands::nodes::NodesArgs),
    /// Render a .blend across the LAN: find nodes, send the file, collect the frames.
    Render(commands::render::RenderArgs),
    /// Read a .blend's scene: frame range, resolution, engine, samples, format; `--json` for scripts.
    Inspect(commands::inspect::InspectArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A node logs what it does; the other commands show their own output
    // and log only warnings (HERD_LOG overrides both).
    let default_filter = match cli.command {
        Some(Command::Node(_)) => "herd=info",
        _ => "herd=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
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
        None => commands::window::run_last(&runtime),
        Some(Command::Controller(args)) => commands::window::run_controller(&runtime, args),
        Some(Command::Node(args)) if !args.headless => commands::window::run_node(&runtime, args),
        Some(Command::Node(args)) => runtime.block_on(commands::node::run(args)),
        Some(Command::Nodes(args)) => runtime.block_on(commands::nodes::run(args)),
        Some(Command::Render(args)) => runtime.block_on(commands::render::run(args)),
        Some(Command::Inspect(args)) => runtime.block_on(commands::inspect::run(args)),
    }
}
