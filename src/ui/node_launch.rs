//! The node window's background side: prepares the node
//! ([`crate::node::launch`]) and serves it on the tokio runtime, and tells the
//! window how that went over a bounded channel (each message followed by a
//! repaint request).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bridge::Notify;
use crate::node;
pub use crate::node::launch::{NodeDiscovery, NodeLaunch, NodeRunning};

/// What the node's background tells the window.
#[derive(Debug)]
pub enum NodeEvent {
    /// The node is serving.
    Started(NodeRunning),
    /// The node could not start; the message says why and what to do.
    Failed(String),
    /// The node stopped; an error says why.
    Stopped(Result<(), String>),
}

/// Starts the node on `runtime`; it serves until `shutdown` is cancelled or
/// the node is stopped (its own `shutdown` token, `/api/v1/stop`). Await the
/// handle to let it end its Blender.
pub fn launch(
    runtime: &tokio::runtime::Handle,
    launch: NodeLaunch,
    notify: Notify,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<NodeEvent>, JoinHandle<()>) {
    let (events_tx, events_rx) = mpsc::channel(8);
    let task = runtime.spawn(async move {
        let send = |event| {
            let events_tx = events_tx.clone();
            let notify = Arc::clone(&notify);
            async move {
                let _ = events_tx.send(event).await;
                notify();
            }
        };
        let (running, listener, discovery) = match node::launch::prepare(&launch).await {
            Ok(started) => started,
            Err(err) => {
                send(NodeEvent::Failed(err)).await;
                return;
            }
        };
        let node = Arc::clone(&running.node);
        send(NodeEvent::Started(running)).await;
        let served = node::serve(node, listener, discovery, shutdown.cancelled_owned())
            .await
            .map_err(|err| format!("the node's HTTP server failed: {err}"));
        send(NodeEvent::Stopped(served)).await;
    });
    (events_rx, task)
}
