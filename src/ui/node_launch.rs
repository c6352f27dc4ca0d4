//! The node window's background side: prepares the node
//! ([`crate::node::launch`]) and serves it on the tokio runtime, and tells the
//! window how that went over a bounded channel (each message followed by a
//! repaint request).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bridge::Notify;
use crate::blender;
use crate::node;
use crate::node::launch::LaunchError;
pub use crate::node::launch::{NodeDiscovery, NodeLaunch, NodeRunning};

/// What the node's background tells the window.
#[derive(Debug)]
pub enum NodeEvent {
    /// Starting (again, with another Blender).
    Starting,
    /// The node is serving.
    Started(NodeRunning),
    /// The node could not start; the message says why and what to do.
    Failed {
        /// What went wrong.
        message: String,
        /// Blender is missing or does not run: locating it may help.
        blender: bool,
    },
    /// The node stopped; an error says why.
    Stopped(Result<(), String>),
    /// herd was started again on this machine: show the window.
    Show,
}

/// What the node window asks of its background.
#[derive(Debug)]
pub enum NodeCommand {
    /// Show a file dialog for the Blender executable, then start with it.
    LocateBlender,
    /// Start with this Blender (what the dialog does once a file is
    /// picked); `remember` keeps it for later runs ([`blender::remember`]).
    UseBlender {
        /// The executable.
        path: PathBuf,
        /// Keep it for later runs.
        remember: bool,
    },
}

/// The window's ends of the node background's channels.
#[derive(Debug)]
pub struct NodeLink {
    /// What the background tells.
    pub events: mpsc::Receiver<NodeEvent>,
    /// What the window asks.
    pub commands: mpsc::Sender<NodeCommand>,
}

/// Starts the node on `runtime`; it serves until `shutdown` is cancelled or
/// the node is stopped (its own `shutdown` token, `/api/v1/stop`). When
/// Blender is missing it waits for the window to locate one. Await the
/// handle to let it end its Blender.
pub fn launch(
    runtime: &tokio::runtime::Handle,
    mut launch: NodeLaunch,
    notify: Notify,
    shutdown: CancellationToken,
) -> (NodeLink, JoinHandle<()>) {
    let (events_tx, events_rx) = mpsc::channel(8);
    let (commands_tx, mut commands) = mpsc::channel(8);
    let task = runtime.spawn(async move {
        let send = |event| {
            let events_tx = events_tx.clone();
            let notify = Arc::clone(&notify);
            async move {
                let _ = events_tx.send(event).await;
                notify();
            }
        };
        let (running, listener, discovery) = loop {
            let failure = match node::launch::prepare(&launch).await {
                Ok(started) => break started,
                Err(err) => err,
            };
            let blender = matches!(failure, LaunchError::Blender(_));
            send(NodeEvent::Failed {
                message: failure.to_string(),
                blender,
            })
            .await;
            // Wait for another Blender; anything else cannot be fixed here.
            let chosen = loop {
                let command = tokio::select! {
                    () = shutdown.cancelled() => return,
                    command = commands.recv() => command,
                };
                match command {
                    None => return,
                    Some(NodeCommand::LocateBlender) => {
                        if let Some(path) = pick_blender().await {
                            break (path, true);
                        }
                    }
                    Some(NodeCommand::UseBlender { path, remember }) => break (path, remember),
                }
            };
            let (path, remember) = chosen;
            if remember && let Err(err) = blender::remember(&path) {
                tracing::warn!("cannot remember Blender at {}: {err}", path.display());
            }
            launch.blender = Some(path);
            send(NodeEvent::Starting).await;
        };
        let node = Arc::clone(&running.node);
        send(NodeEvent::Started(running)).await;
        // Requests to show the window (a second start) become events; the
        // watcher ends with the node's shutdown.
        let mut show = node.subscribe_show();
        let shown = events_tx.clone();
        let show_notify = Arc::clone(&notify);
        let stop_watching = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop_watching.cancelled() => break,
                    changed = show.changed() => {
                        if changed.is_err() || shown.send(NodeEvent::Show).await.is_err() {
                            break;
                        }
                        show_notify();
                    }
                }
            }
        });
        let served = node::serve(node, listener, discovery, shutdown.cancelled_owned())
            .await
            .map_err(|err| format!("the node's HTTP server failed: {err}"));
        send(NodeEvent::Stopped(served)).await;
    });
    let link = NodeLink {
        events: events_rx,
        commands: commands_tx,
    };
    (link, task)
}

/// Asks the user for the Blender executable.
async fn pick_blender() -> Option<PathBuf> {
    let picked = rfd::AsyncFileDialog::new()
        .set_title("Locate Blender")
        .pick_file()
        .await?;
    Some(picked.path().to_path_buf())
}
