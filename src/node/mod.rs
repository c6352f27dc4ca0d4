//! Node mode: a render machine. It keeps Blender loaded ([`crate::blender`]),
//! serves the HTTP API ([`api`]), renders queued frames one after another
//! ([`renderer`]) and announces itself on the LAN ([`beacon`]).
//!
//! [`Node`] is the state they share; [`serve`] runs them all on I/O passed in,
//! so tests bind port 0 and hand in their own shutdown.

pub mod api;
pub mod beacon;
pub mod blobs;
pub mod http;
pub mod instance;
pub mod jobs;
pub mod launch;
pub mod render_dirs;
pub mod renderer;
pub mod renders;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::blender::BlenderConfig;
use crate::lan::AccessList;
use crate::wire::{CurrentFrame, NodeInfo, NodeState};

pub use beacon::AnnounceConfig;
pub use renders::Renders;

/// Everything a node is started with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Name shown to controllers.
    pub name: String,
    /// Folder for the node id, blobs and rendered frames.
    pub work_dir: PathBuf,
    /// Bound of the blob cache, in bytes.
    pub cache_size_bytes: u64,
    /// How to run Blender.
    pub blender: BlenderConfig,
    /// Blender's version, e.g. `3.4.1`.
    pub blender_version: String,
    /// Networks let in besides loopback and the node's own subnets.
    pub allow: Vec<ipnet::IpNet>,
    /// Shared secret every request must carry, if set.
    pub token: Option<String>,
    /// Replace Blender with a timer and a generated image of this many
    /// milliseconds a frame: for scheduler tests and scale benchmarks only.
    pub simulate: Option<std::time::Duration>,
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The work dir cannot be used.
    #[error("cannot use the work dir {path}: {source}")]
    WorkDir {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The blob store cannot be opened.
    #[error(transparent)]
    Blobs(#[from] blobs::BlobError),
}

/// A scene to read with the node's Blender ([`Node::inspect`]).
#[derive(Debug)]
pub(crate) struct InspectRequest {
    /// The .blend.
    pub path: PathBuf,
    /// The scene; none: the file's active one.
    pub scene: Option<String>,
    /// Where the report goes.
    pub answer: tokio::sync::oneshot::Sender<Result<(serde_json::Value, Vec<String>), String>>,
}

/// The state a node's API, renderer and beacon share.
#[derive(Debug)]
pub struct Node {
    /// Stable id.
    pub id: String,
    /// Name shown to controllers.
    pub name: String,
    /// Blender's version.
    pub blender_version: String,
    /// How Blender is run.
    pub blender: BlenderConfig,
    /// The blob cache.
    pub blobs: Arc<blobs::BlobStore>,
    /// Who may talk to the node.
    pub access: AccessList,
    /// Shared secret, if set.
    pub token: Option<String>,
    /// The renders' folders.
    pub render_dirs: render_dirs::RenderDirs,
    /// Where jobs' files are laid out for Blender.
    pub jobs: jobs::JobFolders,
    /// The simulated renderer's time per frame, when simulating.
    pub simulate: Option<std::time::Duration>,
    started: Instant,
    /// CPU cores, read once (reading them costs syscalls and cgroup files,
    /// too much for every status request).
    cores: usize,
    renders: Mutex<Renders>,
    /// Scenes to read with the node's own Blender, before the next frame.
    inspections: Mutex<std::collections::VecDeque<InspectRequest>>,
    /// Wakes the renderer: new work, resume, cancel.
    work: Notify,
    state: watch::Sender<NodeState>,
    /// The render table's sequence number, for controllers waiting on changes.
    changes: watch::Sender<u64>,
    /// Cancelled when the node shuts down (`/stop`, Ctrl-C, SIGTERM).
    pub shutdown: CancellationToken,
    /// How many times the node was asked to show its window
    /// (`POST /api/v1/show`, from a second start on this machine).
    show: watch::Sender<u64>,
}

impl Node {
    /// Prepares the work dir (node id, blob store, an empty renders folder)
    /// and returns the node's shared state.
    pub fn new(config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        let work_dir = &config.work_dir;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::WorkDir { path, source }
        };
        std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
        let id = load_or_create_id(&work_dir.join("node-id")).map_err(io(work_dir))?;
        let blobs = blobs::BlobStore::open(&work_dir.join("blobs"), config.cache_size_bytes)?;
        let renders_dir = work_dir.join("renders");
        let render_dirs =
            render_dirs::RenderDirs::open(renders_dir.clone()).map_err(io(&renders_dir))?;
        let jobs_dir = work_dir.join("jobs");
        let jobs = jobs::JobFolders::open(jobs_dir.clone()).map_err(io(&jobs_dir))?;
        let (state, _) = watch::channel(NodeState::Idle);
        let (changes, _) = watch::channel(0);
        Ok(Arc::new(Self {
            id,
            name: config.name,
            blender_version: config.blender_version,
            blender: config.blender,
            blobs,
            access: AccessList::new(config.allow),
            token: config.token,
            render_dirs,
            jobs,
            simulate: config.simulate,
            started: Instant::now(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            renders: Mutex::new(Renders::default()),
            inspections: Mutex::new(std::collections::VecDeque::new()),
            work: Notify::new(),
            state,
            changes,
            shutdown: CancellationToken::new(),
            show: watch::channel(0).0,
        }))
    }

    /// Reads scene `scene` (the file's active one when `None`) of the .blend
    /// at `path` with the node's own Blender, before its next frame: the
    /// inspector's report and the lines Blender printed. For the
    /// controller's local node, which reads the artist's file where it is,
    /// so a job starts one Blender instead of two.
    pub async fn inspect(
        &self,
        path: &Path,
        scene: Option<&str>,
    ) -> Result<(serde_json::Value, Vec<String>), String> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.inspections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(InspectRequest {
                path: path.to_path_buf(),
                scene: scene.map(str::to_string),
                answer,
            });
        self.work.notify_one();
        answered
            .await
            .map_err(|_| "the node stopped before it read the scene".to_string())?
    }

    /// The next scene to read, if one is asked for.
    pub(crate) fn next_inspection(&self) -> Option<InspectRequest> {
        self.inspections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Locks the render table. Held only for short, non-async sections.
    pub(crate) fn renders(&self) -> MutexGuard<'_, Renders> {
        self.renders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on the render table, then publishes the node's state and
    /// wakes the renderer.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut Renders) -> T) -> T {
        let result = self.update_quiet(change);
        self.work.notify_one();
        result
    }

    /// Like [`Node::update`] without waking the renderer: for the renderer
    /// itself.
    pub(crate) fn update_quiet<T>(&self, change: impl FnOnce(&mut Renders) -> T) -> T {
        let (result, state, seq) = {
            let mut renders = self.renders();
            let result = change(&mut renders);
            (result, renders.node_state(), renders.seq())
        };
        self.changes.send_if_modified(|current| {
            let changed = *current != seq;
            *current = seq;
            changed
        });
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        result
    }

    /// Asks the node's window, if it has one, to show itself.
    pub fn ask_to_show(&self) {
        self.show.send_modify(|count| *count += 1);
    }

    /// Watches the requests to show the node's window.
    pub fn subscribe_show(&self) -> watch::Receiver<u64> {
        self.show.subscribe()
    }

    /// Watches the render table's sequence number.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Watches the node's state (for the beacon).
    pub fn subscribe_state(&self) -> watch::Receiver<NodeState> {
        self.state.subscribe()
    }

    /// The node's state now.
    pub fn state(&self) -> NodeState {
        *self.state.borrow()
    }

    /// Takes no new frames until [`Node::resume`].
    pub fn pause(&self) {
        self.update(|renders| renders.paused = true);
    }

    /// Takes frames again.
    pub fn resume(&self) {
        self.update(|renders| renders.paused = false);
    }

    /// The thumbnail of the frame this node finished last, with its frame
    /// number.
    pub fn last_preview(&self) -> Option<(i32, Arc<image::RgbImage>)> {
        self.renders().last_preview.clone()
    }

    /// Identity and activity, for `GET /api/v1/node`.
    pub fn info(&self) -> NodeInfo {
        let renders = self.renders();
        let current = renders
            .current()
            .map(|(render_id, frame, progress)| CurrentFrame {
                render_id,
                frame,
                progress,
            });
        NodeInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            blender_version: self.blender_version.clone(),
            blender_path: self.blender.path.display().to_string(),
            blender_pid: renders.blender_pid,
            cores: self.cores,
            state: renders.node_state(),
            current,
            queued: renders.queued_len(),
            frames_rendered: renders.frames_rendered,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            blob_bytes_received: self.blobs.received_bytes(),
            cache_bytes: Some(self.blobs.capacity_bytes()),
        }
    }
}

fn load_or_create_id(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(id) if uuid::Uuid::parse_str(id.trim()).is_ok() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(path, &id)?;
            Ok(id)
        }
    }
}

/// Runs a node until `shutdown` completes or the node is stopped: the HTTP
/// API on `listener`, the beacon on `discovery` (none: no announcements), and
/// the renderer. On the way out it cancels the current frame and ends Blender.
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    discovery: Option<(tokio::net::UdpSocket, AnnounceConfig)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http_port = listener.local_addr()?.port();
    let renderer = tokio::spawn(renderer::run(Arc::clone(&node)));
    let beacon = discovery.map(|(socket, config)| {
        tokio::spawn(beacon::run(Arc::clone(&node), socket, http_port, config))
    });
    let stop = node.shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });
    http::serve(
        listener,
        api::router(Arc::clone(&node)),
        node.shutdown.clone(),
    )
    .await;
    node.shutdown.cancel();
    let _ = renderer.await;
    if let Some(beacon) = beacon {
        let _ = beacon.await;
    }
    Ok(())
}
