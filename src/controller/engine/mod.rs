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
use super::inspect::SceneInfo;
use super::journal::{FrameRecord, JobRecord, Journal, JournalWriter};
use super::output::{OutputPlan, format_from_blender};
use super::remote::{self, Blob, BlobSource, FromNode, JobContext, NodeLink, Report, ToNode};
use super::scheduler::{
    Decision, Event, FrameIndex, FrameState, NodeId, Scheduler, SchedulerConfig,
};
use crate::node::{self, Node, NodeConfig};
use crate::wire::{Beacon, ImageFormat, Manifest, ManifestFile, NodeInfo, NodeState, Overrides};

mod blobs;
mod driver;
mod link;
mod local;
#[cfg(test)]
mod tests;

use driver::{Emitter, run};
pub use link::{HttpLinks, Links};
pub use local::LocalNode;

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
    /// Its frames depend on the ones before (a simulation herd cannot
    /// bake): they go in order to one node, which steps through every frame
    /// from the scene's start.
    pub in_order: bool,
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

/// What the user chose for a job over the scene's own settings, the same
/// for `herd render`'s flags and the window's job panel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobChoices {
    /// The frames to render.
    pub frames: Vec<i32>,
    /// A folder for the frames instead of the scene's output path.
    pub out: Option<PathBuf>,
    /// An image format instead of the scene's.
    pub format: Option<ImageFormat>,
    /// A resolution percentage instead of the scene's.
    pub resolution_percent: Option<u32>,
    /// Samples instead of the scene's.
    pub samples: Option<u32>,
    /// The scene to render; none: the file's active scene.
    pub scene: Option<String>,
    /// Render without persistent data (a cold scene every frame).
    pub cold_scene: bool,
    /// Render frames again even when the output folder has them.
    pub overwrite: bool,
    /// Render in order on one node even when the scene does not need it.
    pub in_order: bool,
}

impl JobSpec {
    /// The job that renders `scene` as `choices` say. Only choices that
    /// differ from the scene's own settings become overrides; a scene whose
    /// frames depend on the ones before renders in order. The file's
    /// compatibility with each node is added when the job runs (see
    /// [`Session::run`](super::session::Session::run)).
    pub fn for_scene(scene: &SceneInfo, choices: JobChoices) -> Result<Self, String> {
        if choices.frames.is_empty() {
            return Err("the frame list names no frame".into());
        }
        let format = choices
            .format
            .filter(|format| format_from_blender(&scene.file_format) != Some(*format));
        let output = OutputPlan::for_scene(scene, choices.out.as_deref(), format);
        let percent = choices
            .resolution_percent
            .unwrap_or(scene.resolution_percentage);
        let overrides = Overrides {
            resolution_percent: (percent != scene.resolution_percentage).then_some(percent),
            samples: choices
                .samples
                .filter(|samples| Some(*samples) != scene.samples),
            format,
            scene: choices.scene,
            output_name: Some(output.name.clone()),
            persistent_data: choices.cold_scene.then_some(false),
            step_frames: None,
        };
        overrides.validate()?;
        Ok(Self {
            blend: scene.file.clone(),
            files: deps::files_to_send(&scene.dependencies),
            frames: choices.frames,
            output,
            baked: None,
            in_order: choices.in_order || super::bake::needs_in_order(scene),
            overrides,
            expected_size: (!scene.use_multiview).then_some((
                scene.resolution_x * percent / 100,
                scene.resolution_y * percent / 100,
            )),
            overwrite: choices.overwrite,
            node_check: None,
        })
    }
}

/// Where to find nodes and how to treat them.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Nodes given by hand (`http://HOST:PORT`).
    pub nodes: Vec<String>,
    /// Where beacons are heard (the process's one discovery socket);
    /// `None`: only the nodes given.
    pub discovery: Option<discovery::Listener>,
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
            discovery: None,
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
    /// Of those, the median seconds before the first sample (moving to the
    /// frame, preparing the scene): what a warm scene saves.
    pub prep_secs: Option<f64>,
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
    /// Median seconds a frame spent before its first sample (moving to the
    /// frame, preparing the scene): what a warm scene saves.
    pub prep_secs: Option<f64>,
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
    start_with(spec, config, Arc::new(HttpLinks), notify)
}

/// Starts a job whose nodes are reached through `links`.
pub fn start_with(
    spec: JobSpec,
    config: EngineConfig,
    links: Arc<dyn Links>,
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
) -> EngineHandle {
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(4096);
    let (progress_tx, progress_rx) = watch::channel(JobProgress::default());
    let task = tokio::spawn(run(
        spec,
        config,
        links,
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
