//! The `herd` command line: parse, build the runtime, pick the mode.

mod commands;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// herd: a render farm for Blender on your local network.
///
/// Without a subcommand it opens the window of the mode chosen on this
/// machine (asking the first time); with a .blend, the controller window.
#[derive(Debug, Parser)]
#[command(name = "herd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// A .blend to open in the controller window.
    file: Option<std::path::PathBuf>,
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
        None => match cli.file {
            Some(file) => commands::window::open_file(&runtime, file),
            None => commands::window::run_last(&runtime),
        },
        Some(Command::Controller(args)) => commands::window::run_controller(&runtime, args),
        Some(Command::Node(args)) if let Some(toggle) = args.autostart => {
            commands::node::set_autostart(toggle)
        }
        // One node per machine and port: a second start raises the first.
        Some(Command::Node(args)) if commands::node::raised_running_node(&runtime, &args) => Ok(()),
        Some(Command::Node(args)) if !args.headless => commands::window::run_node(&runtime, args),
        Some(Command::Node(args)) => runtime.block_on(commands::node::run(args)),
        Some(Command::Nodes(args)) => runtime.block_on(commands::nodes::run(args)),
        Some(Command::Render(args)) => runtime.block_on(commands::render::run(args)),
        Some(Command::Inspect(args)) => runtime.block_on(commands::inspect::run(args)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blend_alone_goes_to_the_controller_and_subcommands_still_force_a_mode() {
        let cli = Cli::try_parse_from(["herd", "shot.blend"]).unwrap();
        assert_eq!(
            cli.file.as_deref(),
            Some(std::path::Path::new("shot.blend"))
        );
        assert!(cli.command.is_none());

        let cli = Cli::try_parse_from(["herd"]).unwrap();
        assert!(cli.file.is_none() && cli.command.is_none());

        let cli = Cli::try_parse_from(["herd", "node"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Node(_))));

        let cli = Cli::try_parse_from(["herd", "controller", "shot.blend"]).unwrap();
        let Some(Command::Controller(args)) = cli.command else {
            panic!("not the controller: {cli:?}");
        };
        assert_eq!(
            args.file.as_deref(),
            Some(std::path::Path::new("shot.blend"))
        );
    }

    #[test]
    fn the_desktop_entry_opens_files_and_offers_a_render_node() {
        let entry = include_str!("../assets/herd.desktop");
        assert!(entry.contains("\nExec=herd %f\n"));
        assert!(entry.contains("\nActions=node;controller;\n"));
        assert!(entry.contains("[Desktop Action node]\nName=Render node\nExec=herd node\n"));
    }
}
