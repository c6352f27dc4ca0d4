//! The subcommands, one module each.

pub mod inspect;
pub mod node;
pub mod nodes;
pub mod render;
#[cfg(feature = "gui")]
pub mod window;
#[cfg(not(feature = "gui"))]
#[path = "no_window.rs"]
pub mod window;

use std::path::PathBuf;

use clap::Args;

use herd::wire::DEFAULT_PORT;

/// The farm options `herd render` and `herd controller` share.
#[derive(Debug, Args)]
pub struct FarmArgs {
    /// A node to use, e.g. http://10.0.0.5:8082 (repeatable).
    #[arg(long, value_name = "URI")]
    pub node: Vec<String>,
    /// Do not render on this machine.
    #[arg(long)]
    pub no_local: bool,
    /// Render threads of this machine's own node (default: all cores).
    #[arg(long)]
    pub local_threads: Option<u32>,
    /// Do not look for nodes on the LAN; use only --node and the local node.
    #[arg(long)]
    pub no_discovery: bool,
    /// UDP port nodes announce on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub discovery_port: u16,
    /// Renders of one frame before it counts as failed.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Shared secret of the nodes (their --token).
    #[arg(long, env = "HERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Blender executable for reading files and for the local node.
    #[arg(long, env = "HERD_BLENDER")]
    pub blender: Option<PathBuf>,
    /// Work dir of the local node (default: the user's cache dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Options of `herd controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// A .blend to open right away.
    pub file: Option<PathBuf>,
    /// Start rendering FILE as soon as it is read, with its own settings.
    #[arg(long, requires = "file")]
    pub start: bool,
    /// Where the nodes are and how to use them.
    #[command(flatten)]
    pub farm: FarmArgs,
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
