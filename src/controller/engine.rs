//! The job engine: drives one render job across the nodes it finds. It is a
//! library for the command line and the window alike: commands in
//! ([`EngineCommand`]), events out ([`EngineEvent`]), nothing printed.
//!
//! What happens (a frame changes state, a log line, the start and the end)
//! goes out as [`EngineEvent`]s on a bounded channel; what only needs its
//! latest value (overall progress, the nodes, the progress of the frames
//! being rendered) is a [`JobProgress`] snapshot on a `watch` channel, so
//! the engine never waits for a reader that looks at it only now and then
//! (a minimised window).
//!
//! Around the pure [`Scheduler`] it does the I/O: discovery (beacons and a
//! probe), confirming nodes over their API, one task per node
//! ([`super::remote`]) for uploads, renders and downloads, the in-process
//! local node, the output folder and the journal that makes a killed job
//! resume where it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::deps;
use super::discovery;
use super::frames::format_frames;
use super::journal::{FrameRecord, JobRecord, Journal, JournalWriter};
use super::output::OutputPlan;
use super::remote::{self, Blob, BlobSource, FromNode, JobContext, Report, ToNode};
use super::scheduler::{
    Decision, Event, FrameIndex, FrameState, NodeId, Scheduler, SchedulerConfig,
};
use crate::lan;
use crate::node::{self, Node, NodeConfig};
use crate::wire::{MAX_DATAGRAM_BYTES, Manifest, ManifestFile, NodeInfo, NodeState, Overrides};

/// Checks whether a node can render the job (e.g. its Blender can open the
/// file); the error says why not.
pub type NodeCheck = Arc<dyn Fn(&NodeInfo) -> Result<(), String> + Send + Sync>;

/// What to render.
#[derive(Clone)]
pub struct JobSpec {
    /// The .blend.
    pub blend: PathBuf,
    /// The files it reads (textures, libraries, caches...), absolute paths
    /// that exist: each is sent once to each node and laid out beside the
    /// .blend as on this machine (see [`super::deps`]).
    pub files: Vec<PathBuf>,
    /// Frame numbers, in render order.
    pub frames: Vec<i32>,
    /// Where the frames and the File Output nodes' files go.
    pub output: OutputPlan,
    /// The file whose bytes are sent as the .blend, when not the .blend
    /// itself: a copy with its simulations baked (see [`super::bake`]). It
    /// takes the .blend's place on the nodes.
    pub baked: Option<PathBuf>,
    /// Overrides of the file's settings sent with every frame.
    pub overrides: Overrides,
    /// The size every frame must have, when known.
    pub expected_size: Option<(u32, u32)>,
    /// Render frames again even when a valid image is in the output folder.
    pub overwrite: bool,
    /// Refuses nodes that cannot render this file.
    pub node_check: Option<NodeCheck>,
}

impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSpec")
            .field("blend", &self.blend)
            .field("frames", &self.frames.len())
            .field("output_dir", &self.output.dir)
            .finish_non_exhaustive()
    }
}

/// Where to find nodes and how to treat them.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Nodes given by hand (`http://HOST:PORT`).
    pub nodes: Vec<String>,
    /// UDP port to hear beacons on; `None`: no discovery.
    pub discovery_port: Option<u16>,
    /// The controller's own node, running in-process on loopback (see
    /// [`LocalNode`]); `None`: none. Its owner starts and stops it.
    pub local: Option<Arc<LocalNode>>,
    /// Shared secret of the nodes.
    pub token: Option<String>,
    /// Scheduling rules.
    pub scheduler: SchedulerConfig,
    /// How long a watch request waits on a node for a change; a node is
    /// lost after this plus `loss_timeout` without an answer.
    pub watch_wait: Duration,
    /// How long a node may fail to answer before its frames go elsewhere.
    pub loss_timeout: Duration,
    /// Addresses of nodes left out of the job from its start: they show up
    /// but get nothing until [`EngineCommand::SetNodeEnabled`] puts them in.
    pub left_out: BTreeSet<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            discovery_port: Some(crate::wire::DEFAULT_PORT),
            local: None,
            token: None,
            scheduler: SchedulerConfig::default(),
            watch_wait: Duration::from_millis(500),
            loss_timeout: Duration::from_millis(2000),
            left_out: BTreeSet::new(),
        }
    }
}

/// What the user asks of a running job.
#[derive(Debug, Clone)]
pub enum EngineCommand {
    /// Stop the job; frames in the output folder stay.
    Cancel,
    /// Add a node by address.
    AddNode(String),
    /// Pause the job (no frame starts; those being rendered finish) or
    /// resume it.
    SetPaused(bool),
    /// Leave a node in or out of the job.
    SetNodeEnabled {
        /// The node.
        node: NodeId,
        /// In the job.
        enabled: bool,
    },
}

/// A node as the engine shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// Engine's number for the node.
    pub id: NodeId,
    /// API address.
    pub uri: String,
    /// Name.
    pub name: String,
    /// What it is doing for this job.
    pub status: NodeStatus,
    /// Blender version.
    pub blender_version: String,
    /// CPU cores.
    pub cores: usize,
    /// The frame it renders and its progress.
    pub current: Option<(i32, f32)>,
    /// Frames of this job it rendered.
    pub frames_done: u32,
    /// Its measured seconds per frame in this job.
    pub secs_per_frame: Option<f64>,
    /// The controller's own node.
    pub local: bool,
    /// Left in the job.
    pub enabled: bool,
    /// The last problem with it.
    pub error: Option<String>,
    /// Seconds since it last answered, when known (a node in a job that
    /// stops answering turns [`NodeStatus::Lost`]).
    pub last_seen_secs: Option<f64>,
}

/// A node's state in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Being sent the .blend.
    Uploading,
    /// Ready, nothing to do.
    Idle,
    /// Loading the scene.
    Loading,
    /// Rendering.
    Rendering,
    /// Paused by its owner.
    Paused,
    /// Not answering.
    Lost,
    /// Cannot render this job (e.g. its Blender is too old for the file).
    Refused,
    /// Failed too many frames of this job.
    Blocklisted,
}

impl From<NodeState> for NodeStatus {
    fn from(state: NodeState) -> Self {
        match state {
            NodeState::Idle => Self::Idle,
            NodeState::Loading => Self::Loading,
            NodeState::Rendering => Self::Rendering,
            NodeState::Paused => Self::Paused,
        }
    }
}

/// A frame as the engine shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameView {
    /// Index in the job.
    pub index: FrameIndex,
    /// Frame number.
    pub frame: i32,
    /// Where it is.
    pub state: FrameState,
    /// Times it was handed to a node.
    pub attempts: u32,
    /// The node on it, or that rendered it.
    pub node: Option<String>,
    /// 0 to 1.
    pub progress: f32,
    /// Seconds it took.
    pub secs: Option<f64>,
    /// Its last error.
    pub error: Option<String>,
}

/// Overall progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProgressView {
    /// Frames done (skipped ones included).
    pub done: usize,
    /// Frames failed for good.
    pub failed: usize,
    /// Frames in the job.
    pub total: usize,
    /// Seconds since the job started.
    pub elapsed_secs: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
    /// Frames finished per minute so far (skipped ones excluded).
    pub frames_per_minute: f64,
    /// Paused by the user.
    pub paused: bool,
}

/// The latest picture of a running job: overall progress, every node, and
/// how far the frames being rendered are. Each one replaces the last.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobProgress {
    /// Overall progress.
    pub progress: ProgressView,
    /// Every node of the job, by id.
    pub nodes: Vec<NodeView>,
    /// Frames being rendered and their progress, 0 to 1.
    pub rendering: Vec<(FrameIndex, f32)>,
}

impl JobProgress {
    /// The snapshot as events: a [`EngineEvent::Node`] for each node whose
    /// view differs from `before` (all of them without it), then
    /// [`EngineEvent::Progress`].
    pub fn events(&self, before: Option<&JobProgress>) -> Vec<EngineEvent> {
        let mut events: Vec<EngineEvent> = self
            .nodes
            .iter()
            .filter(|node| {
                before.is_none_or(|before| !before.nodes.iter().any(|seen| seen == *node))
            })
            .cloned()
            .map(EngineEvent::Node)
            .collect();
        events.push(EngineEvent::Progress(self.progress.clone()));
        events
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every frame is in the output folder.
    Complete,
    /// Some frames failed on every attempt.
    Incomplete,
    /// No node could render the remaining frames.
    Stuck {
        /// Why.
        reason: String,
    },
    /// Cancelled by the user.
    Cancelled,
}

/// One node's share of a job.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    /// Name.
    pub name: String,
    /// Address.
    pub uri: String,
    /// Frames it rendered.
    pub frames: u32,
    /// Mean seconds per frame.
    pub mean_secs: Option<f64>,
    /// Frames it failed.
    pub failures: u32,
}

/// The end of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Frames in the job.
    pub frames_total: usize,
    /// Frames in the output folder.
    pub frames_done: usize,
    /// Frames that were there already and were not rendered.
    pub frames_skipped: usize,
    /// Frames that failed, with their last error.
    pub failed: Vec<(i32, String)>,
    /// Per node.
    pub nodes: Vec<NodeSummary>,
    /// Renders beyond one per frame (retries and straggler copies).
    pub retries: u32,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// The output folder.
    pub output_dir: PathBuf,
}

/// What the engine tells its user. `Node` and `Progress` are snapshots: the
/// engine publishes them in [`JobProgress`] on [`EngineHandle::progress`],
/// never on [`EngineHandle::events`]; [`JobProgress::events`] turns a
/// snapshot into them for a reader that wants one stream (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    /// The job began.
    Started {
        /// Frames in the job.
        total: usize,
        /// Frames already in the output folder.
        skipped: usize,
        /// The output folder.
        output_dir: PathBuf,
    },
    /// A node changed.
    Node(NodeView),
    /// A frame changed state, attempts or node (its progress while it
    /// renders is in [`JobProgress::rendering`]).
    Frame(FrameView),
    /// Overall progress.
    Progress(ProgressView),
    /// Something worth telling.
    Log {
        /// The message.
        message: String,
    },
    /// The job ended.
    Finished(JobSummary),
}

/// Errors that stop a job before or outside the render.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The .blend cannot be read.
    #[error("cannot read {path}: {source}")]
    Blend {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The output folder cannot be used.
    #[error("cannot use the output folder {path}: {source}")]
    Output {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The discovery port cannot be bound.
    #[error(
        "cannot listen for nodes on UDP {port}: {source}; pick --discovery-port or use --no-discovery"
    )]
    Discovery {
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The local node cannot start.
    #[error("cannot start the local node: {0}")]
    Local(String),
}

/// A running job.
#[derive(Debug)]
pub struct EngineHandle {
    /// Send commands here.
    pub commands: mpsc::Sender<EngineCommand>,
    /// Events arrive here.
    pub events: mpsc::Receiver<EngineEvent>,
    /// The latest snapshot of the job, replaced about every 100 ms.
    pub progress: watch::Receiver<JobProgress>,
    /// The job itself; its result is the summary.
    pub task: tokio::task::JoinHandle<Result<JobSummary, EngineError>>,
}

/// Starts a job on the current tokio runtime. `notify` is called after every
/// event sent and every new snapshot (a window's `request_repaint`).
pub fn start(
    spec: JobSpec,
    config: EngineConfig,
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
) -> EngineHandle {
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(4096);
    let (progress_tx, progress_rx) = watch::channel(JobProgress::default());
    let task = tokio::spawn(run(
        spec,
        config,
        Emitter {
            events: events_tx,
            progress: progress_tx,
            notify,
        },
        commands_rx,
    ));
    EngineHandle {
        commands: commands_tx,
        events: events_rx,
        progress: progress_rx,
        task,
    }
}

struct Emitter {
    events: mpsc::Sender<EngineEvent>,
    progress: watch::Sender<JobProgress>,
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Emitter {
    async fn send(&self, event: EngineEvent) {
        let _ = self.events.send(event).await;
        self.wake();
    }

    /// Replaces the snapshot when it changed; never waits.
    fn snapshot(&self, progress: JobProgress) {
        let changed = self.progress.send_if_modified(|current| {
            if *current == progress {
                false
            } else {
                *current = progress;
                true
            }
        });
        if changed {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }

    async fn log(&self, message: String) {
        self.send(EngineEvent::Log { message }).await;
    }
}

struct NodeEntry {
    view: NodeView,
    sender: Option<mpsc::Sender<ToNode>>,
    stale: Vec<String>,
    task: Option<tokio::task::JoinHandle<()>>,
    paused: bool,
}

struct Confirmed {
    uri: String,
    local: bool,
    result: Result<NodeInfo, String>,
}

/// The controller's own node: a node in this process on a loopback port,
/// scheduled like any other. Start it early: its Blender starts at once, so
/// it is warm by the time the job begins.
#[derive(Debug)]
pub struct LocalNode {
    uri: String,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl LocalNode {
    /// Starts a node with `config` on 127.0.0.1, port chosen by the system.
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, EngineError> {
        let node = Node::new(config).map_err(|err| EngineError::Local(err.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| EngineError::Local(err.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|err| EngineError::Local(err.to_string()))?;
        let stop = node.shutdown.clone();
        let task = tokio::spawn(node::serve(node, listener, None, std::future::pending()));
        Ok(Arc::new(Self {
            uri: format!("http://{addr}"),
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }))
    }

    /// Its API address.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Stops it: cancels its frame and ends its Blender.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

struct Job {
    spec: JobSpec,
    config: EngineConfig,
    ctx: Arc<JobContext>,
    emit: Emitter,
    scheduler: Scheduler,
    journal: JournalWriter,
    started: Instant,
    nodes: BTreeMap<NodeId, NodeEntry>,
    by_uuid: HashMap<String, NodeId>,
    confirming: BTreeSet<String>,
    refused_at: HashMap<String, Instant>,
    reports_tx: mpsc::Sender<FromNode>,
    confirm_tx: mpsc::Sender<Confirmed>,
    /// What the events last said of each frame: state, attempts, node.
    published: Vec<(FrameState, u32, Option<NodeId>)>,
    skipped: usize,
    rendered_now: usize,
    end: Option<Outcome>,
    last_retry: Instant,
    unusable: Vec<String>,
    /// Paused by the user.
    paused: bool,
    /// Nodes' notes already said.
    notes_told: HashSet<String>,
}

/// How often lost nodes are asked whether they are back.
const LOST_RETRY: Duration = Duration::from_secs(3);

async fn run(
    spec: JobSpec,
    config: EngineConfig,
    emit: Emitter,
    mut commands: mpsc::Receiver<EngineCommand>,
) -> Result<JobSummary, EngineError> {
    let started = Instant::now();
    let output = spec.output.clone();
    let output_error = |source| EngineError::Output {
        path: output.dir.clone(),
        source,
    };
    std::fs::create_dir_all(&output.dir).map_err(output_error)?;
    output.remove_stale_temps();
    for note in &output.notes {
        emit.log(note.clone()).await;
    }
    let (blob, blob_bytes) = hash_file(spec.baked.as_ref().unwrap_or(&spec.blend)).await?;
    let (blobs, manifest) = job_blobs(&spec, &blob, blob_bytes).await?;
    let record = JobRecord {
        blob: blob.clone(),
        frames: format_frames(&spec.frames),
        overrides: spec.overrides.clone(),
    };
    let dir = output.dir.clone();
    let (journal, previous) = tokio::task::spawn_blocking(move || Journal::open(&dir, &record))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
        .map_err(output_error)?;
    if let Some(other) = &previous.other_job
        && !spec.overwrite
    {
        emit.log(format!(
            "{} held frames of another job (frames {}, overrides {:?}); valid frames there are kept, use --overwrite to render them again",
            output.dir.display(),
            other.frames,
            other.overrides
        ))
        .await;
    }
    let mut scheduler = Scheduler::new(&spec.frames, config.scheduler.clone());
    let mut skipped = 0;
    for (index, &frame) in spec.frames.iter().enumerate() {
        let keep = !spec.overwrite || previous.done.contains(&frame);
        if keep && output.has_valid(frame, spec.expected_size) {
            scheduler.mark_done(index);
            skipped += 1;
        }
    }
    emit.send(EngineEvent::Started {
        total: spec.frames.len(),
        skipped,
        output_dir: output.dir.clone(),
    })
    .await;

    let client = reqwest::Client::builder()
        .connect_timeout(config.loss_timeout)
        // Nodes close a connection idle for their header timeout; dropping
        // it first means no request is ever sent on one being closed.
        .pool_idle_timeout(crate::node::http::HEADER_READ_TIMEOUT / 2)
        .build()
        .map_err(|err| EngineError::Local(format!("cannot build the HTTP client: {err}")))?;
    let ctx = Arc::new(JobContext {
        blob,
        blobs,
        manifest,
        overrides: spec.overrides.clone(),
        output,
        expected_size: spec.expected_size,
        client,
        token: config.token.clone(),
        watch_wait: config.watch_wait,
        loss_timeout: config.loss_timeout,
    });
    let (journal, mut journal_errors) = journal.spawn_writer();
    let (reports_tx, mut reports_rx) = mpsc::channel(1024);
    let (confirm_tx, mut confirm_rx) = mpsc::channel(64);
    let mut job = Job {
        // As if every frame were queued: the first publish then reports the
        // frames found done in the output folder.
        published: vec![(FrameState::Queued, 0, None); scheduler.frames().len()],
        spec,
        config,
        ctx,
        emit,
        scheduler,
        journal,
        started,
        nodes: BTreeMap::new(),
        by_uuid: HashMap::new(),
        confirming: BTreeSet::new(),
        refused_at: HashMap::new(),
        reports_tx,
        confirm_tx,
        skipped,
        rendered_now: 0,
        end: None,
        last_retry: Instant::now(),
        unusable: Vec::new(),
        paused: false,
        notes_told: HashSet::new(),
    };
    if job.scheduler.is_finished() {
        job.end = Some(Outcome::Complete);
        return Ok(job.finish(journal_errors).await);
    }

    if let Some(local) = job.config.local.clone() {
        job.confirm(local.uri().to_string(), true);
    }
    for uri in job.config.nodes.clone() {
        job.confirm(uri.trim_end_matches('/').to_string(), false);
    }
    let socket = match job.config.discovery_port {
        Some(port) => {
            let socket = lan::bind_discovery(port)
                .and_then(tokio::net::UdpSocket::from_std)
                .map_err(|source| EngineError::Discovery { port, source })?;
            discovery::probe(&socket, &discovery::probe_targets(port)).await;
            Some(socket)
        }
        None => None,
    };

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    while job.end.is_none() {
        let datagram = async {
            match &socket {
                Some(socket) => socket.recv_from(&mut buffer).await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(report) = reports_rx.recv() => job.report(report).await,
            Some(confirmed) = confirm_rx.recv() => job.confirmed(confirmed).await,
            Some(error) = journal_errors.recv() => job.emit.log(error).await,
            Some((length, from)) = datagram => job.datagram(&buffer[..length], from),
            command = commands.recv() => match command {
                Some(command) => job.command(command).await,
                None => job.end = Some(Outcome::Cancelled),
            },
            _ = tick.tick() => {
                job.handle(Event::Tick).await;
                job.retry_lost();
                job.publish().await;
            }
        }
    }
    Ok(job.finish(journal_errors).await)
}

/// Everything a node needs besides the .blend: the files the scene reads
/// and the manifest that places them; returns every blob to send (the
/// .blend last) and the manifest's hash.
async fn job_blobs(
    spec: &JobSpec,
    blend_hash: &str,
    blend_bytes: u64,
) -> Result<(Vec<Blob>, Option<String>), EngineError> {
    let blend = Blob {
        hash: blend_hash.to_string(),
        bytes: blend_bytes,
        source: BlobSource::File(spec.baked.clone().unwrap_or_else(|| spec.blend.clone())),
    };
    if spec.files.is_empty() {
        return Ok((vec![blend], None));
    }
    let blend_abs = std::path::absolute(&spec.blend).map_err(|source| EngineError::Blend {
        path: spec.blend.clone(),
        source,
    })?;
    let placed = |path: &std::path::Path| {
        deps::job_key(path).ok_or_else(|| EngineError::Blend {
            path: path.to_path_buf(),
            source: std::io::Error::other("not an absolute path herd can place on the nodes"),
        })
    };
    let mut blobs = Vec::with_capacity(spec.files.len() + 2);
    let mut files = Vec::with_capacity(spec.files.len());
    for path in &spec.files {
        let (hash, bytes) = hash_file(path).await?;
        files.push(ManifestFile {
            path: placed(path)?,
            blob: hash.clone(),
        });
        if !blobs.iter().any(|blob: &Blob| blob.hash == hash) {
            blobs.push(Blob {
                hash,
                bytes,
                source: BlobSource::File(path.clone()),
            });
        }
    }
    let manifest = Manifest {
        blend_path: placed(&blend_abs)?,
        files,
    };
    manifest.validate().map_err(|err| EngineError::Blend {
        path: spec.blend.clone(),
        source: std::io::Error::other(err.to_string()),
    })?;
    let json = serde_json::to_vec(&manifest)
        .map_err(|err| EngineError::Local(format!("cannot write the job's manifest: {err}")))?;
    let hash = hex::encode(Sha256::digest(&json));
    blobs.push(Blob {
        hash: hash.clone(),
        bytes: json.len() as u64,
        source: BlobSource::Memory(bytes::Bytes::from(json)),
    });
    blobs.push(blend);
    Ok((blobs, Some(hash)))
}

async fn hash_file(path: &std::path::Path) -> Result<(String, u64), EngineError> {
    let path = path.to_path_buf();
    let error_path = path.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            total += read as u64;
            hasher.update(&buffer[..read]);
        }
        Ok((hex::encode(hasher.finalize()), total))
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
    .map_err(|source| EngineError::Blend {
        path: error_path,
        source,
    })
}

impl Job {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Confirms a node at `uri` in the background.
    fn confirm(&mut self, uri: String, local: bool) {
        let recently_refused = self
            .refused_at
            .get(&uri)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
        if recently_refused || self.confirming.len() >= 64 || !self.confirming.insert(uri.clone()) {
            return;
        }
        let client = self.ctx.client.clone();
        let token = self.config.token.clone();
        let sender = self.confirm_tx.clone();
        tokio::spawn(async move {
            let result = discovery::confirm(&client, &uri, token.as_deref())
                .await
                .map_err(|err| err.to_string());
            let _ = sender.send(Confirmed { uri, local, result }).await;
        });
    }

    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(beacon) = discovery::beacon_from(bytes, from) else {
            return;
        };
        let known = self
            .by_uuid
            .get(&beacon.id)
            .and_then(|id| self.nodes.get(id));
        let wanted = match known {
            None => true,
            Some(entry) => entry.view.status == NodeStatus::Lost,
        };
        if wanted {
            self.confirm(beacon.uri, false);
        }
    }

    async fn confirmed(&mut self, confirmed: Confirmed) {
        self.confirming.remove(&confirmed.uri);
        let info = match confirmed.result {
            Ok(info) => info,
            Err(error) => {
                self.refused_at
                    .insert(confirmed.uri.clone(), Instant::now());
                let known = self
                    .nodes
                    .values()
                    .any(|entry| entry.view.uri == confirmed.uri);
                if !known {
                    self.emit
                        .log(format!("node {} not added: {error}", confirmed.uri))
                        .await;
                    self.unusable.push(format!("{}: {error}", confirmed.uri));
                }
                self.check_nodes_left();
                return;
            }
        };
        if let Some(&id) = self.by_uuid.get(&info.id) {
            let lost = self
                .nodes
                .get(&id)
                .is_some_and(|entry| entry.view.status == NodeStatus::Lost);
            if lost {
                self.emit
                    .log(format!("node {} is back at {}", info.name, confirmed.uri))
                    .await;
                self.connect(id, confirmed.uri).await;
            }
            return;
        }
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        let refusal = self
            .spec
            .node_check
            .as_ref()
            .and_then(|check| check(&info).err());
        let view = NodeView {
            id,
            uri: confirmed.uri.clone(),
            name: info.name.clone(),
            status: if refusal.is_some() {
                NodeStatus::Refused
            } else {
                NodeStatus::Uploading
            },
            blender_version: info.blender_version.clone(),
            cores: info.cores,
            current: None,
            frames_done: 0,
            secs_per_frame: None,
            local: confirmed.local,
            enabled: !self.config.left_out.contains(&confirmed.uri),
            error: refusal.clone(),
            last_seen_secs: None,
        };
        self.by_uuid.insert(info.id.clone(), id);
        self.nodes.insert(
            id,
            NodeEntry {
                view: view.clone(),
                sender: None,
                stale: Vec::new(),
                task: None,
                paused: false,
            },
        );
        let enabled = view.enabled;
        self.publish_progress();
        match refusal {
            Some(reason) => {
                self.emit
                    .log(format!(
                        "node {} cannot render this job: {reason}",
                        info.name
                    ))
                    .await;
                self.check_nodes_left();
            }
            None if !enabled => {
                self.emit
                    .log(format!(
                        "node {} at {} is left out of this job",
                        info.name, confirmed.uri
                    ))
                    .await;
            }
            None => {
                self.emit
                    .log(format!("node {} joined at {}", info.name, confirmed.uri))
                    .await;
                self.connect(id, confirmed.uri).await;
            }
        }
    }

    /// Asks lost nodes again now and then (a cable plugged back in, a node
    /// restarted): beacons bring them back too, but nodes given by hand and
    /// networks that drop broadcasts have only this.
    fn retry_lost(&mut self) {
        if self.last_retry.elapsed() < LOST_RETRY {
            return;
        }
        self.last_retry = Instant::now();
        let lost: Vec<String> = self
            .nodes
            .values()
            .filter(|entry| entry.view.status == NodeStatus::Lost)
            .map(|entry| entry.view.uri.clone())
            .collect();
        for uri in lost {
            self.confirm(uri, false);
        }
    }

    /// Without discovery, a job whose every given node is unusable (not
    /// reachable, not herd, refused the file) cannot start: say so once
    /// instead of waiting for ever.
    fn check_nodes_left(&mut self) {
        let waiting = !self.confirming.is_empty() || self.config.discovery_port.is_some();
        let usable = self
            .nodes
            .values()
            .any(|entry| entry.view.status != NodeStatus::Refused);
        if !waiting && !usable && self.end.is_none() {
            let mut reasons = self.unusable.clone();
            reasons.extend(
                self.nodes
                    .values()
                    .filter_map(|entry| entry.view.error.clone()),
            );
            self.end = Some(Outcome::Stuck {
                reason: format!("no node can render this job: {}", reasons.join("; ")),
            });
        }
    }

    /// Starts the task that serves node `id` at `uri`.
    async fn connect(&mut self, id: NodeId, uri: String) {
        let Some(entry) = self.nodes.get_mut(&id) else {
            return;
        };
        let (sender, receiver) = mpsc::channel(64);
        let stale = std::mem::take(&mut entry.stale);
        entry.view.uri = uri.clone();
        entry.view.status = NodeStatus::Uploading;
        entry.view.error = None;
        entry.sender = Some(sender);
        entry.task = Some(tokio::spawn(remote::run(
            Arc::clone(&self.ctx),
            id,
            uri,
            stale,
            receiver,
            self.reports_tx.clone(),
        )));
        self.handle(Event::NodeJoined { node: id }).await;
    }

    async fn report(&mut self, from: FromNode) {
        let node = from.node;
        let event = match from.report {
            Report::Uploading => {
                self.set_status(node, NodeStatus::Uploading);
                None
            }
            Report::Ready => {
                self.set_status(node, NodeStatus::Idle);
                Some(Event::NodeReady { node })
            }
            Report::Activity(state, current) => self.activity(node, state, current),
            Report::Note(note) => {
                // Said once per node: the same note comes with every frame.
                let message = format!("{}: {note}", self.node_name(node));
                if self.notes_told.insert(message.clone()) {
                    self.emit.log(message).await;
                }
                None
            }
            Report::MissingFiles(files) => {
                let name = self.node_name(node);
                self.emit
                    .log(format!(
                        "node {name} renders without files it does not have: {}",
                        files.join("; ")
                    ))
                    .await;
                None
            }
            Report::Refused(reason) => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.sender = None;
                    entry.view.status = NodeStatus::Refused;
                    entry.view.error = Some(reason.clone());
                }
                self.emit
                    .log(format!("node left out of this job: {reason}"))
                    .await;
                self.check_nodes_left();
                Some(Event::NodeLost { node })
            }
            Report::Lost { reason, stale } => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.sender = None;
                    entry.stale = stale;
                    entry.view.status = NodeStatus::Lost;
                    entry.view.current = None;
                    entry.view.error = Some(reason.clone());
                }
                self.emit
                    .log(format!("node lost, its frames go elsewhere: {reason}"))
                    .await;
                Some(Event::NodeLost { node })
            }
            Report::Started(frame) => Some(Event::Started { node, frame }),
            Report::Progress(frame, progress) => Some(Event::Progress {
                node,
                frame,
                progress,
            }),
            Report::Rendered(frame) => Some(Event::Rendered { node, frame }),
            Report::Done(frame) => {
                self.rendered_now += 1;
                Some(Event::Done { node, frame })
            }
            Report::Failed(frame, error) => {
                let number = self.spec.frames.get(frame).copied().unwrap_or_default();
                let name = self.node_name(node);
                self.emit
                    .log(format!("frame {number} failed on {name}: {error}"))
                    .await;
                Some(Event::Failed { node, frame, error })
            }
        };
        if let Some(event) = event {
            let done = match &event {
                Event::Done { frame, .. } => Some(*frame),
                _ => None,
            };
            self.handle(event).await;
            if let Some(frame) = done {
                self.record_done(node, frame).await;
            }
        }
    }

    async fn record_done(&mut self, node: NodeId, frame: FrameIndex) {
        let Some(entry) = self.scheduler.frames().get(frame) else {
            return;
        };
        // Only the run that won counts (a late duplicate changes nothing).
        if entry.state != FrameState::Done || entry.node != Some(node) {
            return;
        }
        let (number, secs) = (entry.number, entry.render_secs);
        let name = self.node_name(node);
        self.journal
            .frame_done(FrameRecord {
                frame: number,
                node: name,
                secs,
            })
            .await;
    }

    fn activity(
        &mut self,
        node: NodeId,
        state: NodeState,
        current: Option<(i32, f32)>,
    ) -> Option<Event> {
        let entry = self.nodes.get_mut(&node)?;
        entry.view.current = current;
        let paused = state == NodeState::Paused;
        if !matches!(
            entry.view.status,
            NodeStatus::Uploading | NodeStatus::Lost | NodeStatus::Refused
        ) {
            entry.view.status = NodeStatus::from(state);
        }
        if paused != entry.paused {
            entry.paused = paused;
            return Some(Event::NodePaused { node, paused });
        }
        None
    }

    fn set_status(&mut self, node: NodeId, status: NodeStatus) {
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.view.status = status;
        }
    }

    fn node_name(&self, node: NodeId) -> String {
        self.nodes
            .get(&node)
            .map_or_else(|| format!("node {node}"), |entry| entry.view.name.clone())
    }

    async fn command(&mut self, command: EngineCommand) {
        match command {
            EngineCommand::Cancel => self.end = Some(Outcome::Cancelled),
            EngineCommand::AddNode(uri) => {
                self.confirm(uri.trim_end_matches('/').to_string(), false)
            }
            EngineCommand::SetPaused(paused) => {
                if paused != self.paused {
                    self.paused = paused;
                    self.emit
                        .log(if paused {
                            "job paused: frames being rendered finish, no new ones start".into()
                        } else {
                            "job resumed".to_string()
                        })
                        .await;
                    self.handle(Event::JobPaused { paused }).await;
                }
            }
            EngineCommand::SetNodeEnabled { node, enabled } => {
                let Some(entry) = self.nodes.get_mut(&node) else {
                    return;
                };
                entry.view.enabled = enabled;
                // A node left out from the start was never sent the file.
                let never_connected = entry.task.is_none()
                    && entry.sender.is_none()
                    && entry.view.status != NodeStatus::Refused;
                if enabled && never_connected {
                    let uri = entry.view.uri.clone();
                    self.connect(node, uri).await;
                }
                self.handle(Event::NodeEnabled { node, enabled }).await;
            }
        }
    }

    /// Feeds the scheduler and carries out what it decides.
    async fn handle(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            let now = self.now();
            for decision in self.scheduler.handle(event, now) {
                match decision {
                    Decision::Assign { node, frame } => {
                        let number = self.spec.frames[frame];
                        if !self.send(node, ToNode::Assign { frame, number }).await {
                            pending.push(Event::NodeLost { node });
                        }
                    }
                    Decision::Cancel { node, frame } => {
                        self.send(node, ToNode::Cancel { frame }).await;
                    }
                    Decision::Download { node, frame } => {
                        if !self.send(node, ToNode::Download { frame }).await {
                            pending.push(Event::NodeLost { node });
                        }
                    }
                    Decision::Finished => {
                        self.end = Some(if self.scheduler.failed_count() == 0 {
                            Outcome::Complete
                        } else {
                            Outcome::Incomplete
                        });
                    }
                    Decision::Stuck { reason } => self.end = Some(Outcome::Stuck { reason }),
                }
            }
        }
    }

    async fn send(&mut self, node: NodeId, message: ToNode) -> bool {
        let Some(sender) = self.nodes.get(&node).and_then(|entry| entry.sender.clone()) else {
            return false;
        };
        if sender.send(message).await.is_ok() {
            return true;
        }
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.sender = None;
            entry.view.status = NodeStatus::Lost;
        }
        false
    }

    /// Sends the frames that changed and replaces the snapshot.
    async fn publish(&mut self) {
        let mut changed = Vec::new();
        for (index, frame) in self.scheduler.frames().iter().enumerate() {
            let signature = (frame.state, frame.attempts, frame.node);
            if self.published[index] != signature {
                self.published[index] = signature;
                changed.push(index);
            }
        }
        for index in changed {
            let view = self.frame_view(index);
            self.emit.send(EngineEvent::Frame(view)).await;
        }
        self.publish_progress();
    }

    /// Replaces the snapshot: nodes, overall progress, frames rendering.
    fn publish_progress(&mut self) {
        let slots = self.scheduler.nodes();
        for (id, entry) in &mut self.nodes {
            if let Some(slot) = slots.get(id) {
                entry.view.frames_done = slot.done;
                entry.view.secs_per_frame = slot.secs_per_frame();
                if slot.blocklisted {
                    entry.view.status = NodeStatus::Blocklisted;
                }
            }
        }
        let rendering = self
            .scheduler
            .frames()
            .iter()
            .enumerate()
            .filter(|(_, frame)| frame.state == FrameState::Rendering)
            .map(|(index, frame)| (index, frame.progress))
            .collect();
        let snapshot = JobProgress {
            progress: self.progress(),
            nodes: self
                .nodes
                .values()
                .map(|entry| entry.view.clone())
                .collect(),
            rendering,
        };
        self.emit.snapshot(snapshot);
    }

    fn frame_view(&self, index: FrameIndex) -> FrameView {
        let frame = &self.scheduler.frames()[index];
        FrameView {
            index,
            frame: frame.number,
            state: frame.state,
            attempts: frame.attempts,
            node: frame.node.map(|node| self.node_name(node)),
            progress: frame.progress,
            secs: frame.render_secs,
            error: frame.last_error.clone(),
        }
    }

    fn progress(&self) -> ProgressView {
        let elapsed_secs = self.now();
        ProgressView {
            done: self.scheduler.done_count(),
            failed: self.scheduler.failed_count(),
            total: self.spec.frames.len(),
            elapsed_secs,
            eta_secs: self.scheduler.eta_secs(),
            frames_per_minute: self.rendered_now as f64 * 60.0 / elapsed_secs.max(1e-3),
            paused: self.paused,
        }
    }

    /// Ends the job: cancels what nodes still hold, waits for the journal
    /// to be on disk (telling what could not be written) and sums up.
    async fn finish(mut self, mut journal_errors: mpsc::Receiver<String>) -> JobSummary {
        self.publish().await;
        self.journal.close().await;
        while let Ok(error) = journal_errors.try_recv() {
            self.emit.log(error).await;
        }
        let mut tasks = Vec::new();
        for entry in self.nodes.values_mut() {
            // Dropping the sender makes the task cancel its renders and end.
            entry.sender = None;
            tasks.extend(entry.task.take());
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        let slots = self.scheduler.nodes();
        let nodes = self
            .nodes
            .iter()
            .filter_map(|(id, entry)| {
                let slot = slots.get(id)?;
                Some(NodeSummary {
                    name: entry.view.name.clone(),
                    uri: entry.view.uri.clone(),
                    frames: slot.done,
                    mean_secs: slot.secs_per_frame(),
                    failures: slot.failures,
                })
            })
            .collect();
        let frames = self.scheduler.frames();
        let failed = frames
            .iter()
            .filter(|frame| frame.state != FrameState::Done)
            .map(|frame| {
                let error = frame
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not rendered".into());
                (frame.number, error)
            })
            .collect();
        let renders: u32 = frames.iter().map(|frame| frame.attempts).sum();
        let summary = JobSummary {
            outcome: self.end.clone().unwrap_or(Outcome::Cancelled),
            frames_total: frames.len(),
            frames_done: self.scheduler.done_count(),
            frames_skipped: self.skipped,
            failed,
            nodes,
            retries: renders.saturating_sub(u32::try_from(self.rendered_now).unwrap_or(u32::MAX)),
            wall_secs: self.now(),
            output_dir: self.ctx.output.dir.clone(),
        };
        self.emit.send(EngineEvent::Finished(summary.clone())).await;
        summary
    }
}
