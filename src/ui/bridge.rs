//! The controller window's background side. The window never awaits: it
//! sends a [`BridgeCommand`] over a bounded channel and gets
//! [`BridgeEvent`]s back, each followed by a repaint request. A job's
//! snapshot (progress, nodes) is not queued: the window is handed the
//! engine's `watch` receiver ([`BridgeEvent::JobProgress`]) and reads the
//! latest value when it looks. The bridge runs
//! on the tokio runtime: it reads dropped files with Blender, opens file
//! dialogs, starts the engine and forwards its events, decodes previews of
//! finished frames, and keeps the controller's own node warm between jobs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::blender;
use crate::controller::engine::{
    self, EngineCommand, EngineConfig, EngineEvent, JobProgress, JobSpec, LocalNode, NodeView,
};
use crate::controller::inspect::{self, SceneInfo};
use crate::controller::pool::Pool;
use crate::controller::scheduler::SchedulerConfig;
use crate::controller::session::{Session, Step, Steps};
use crate::controller::{discovery, job_end};

use super::{notify, thumbnails};

/// Called after every event sent to the window: its `request_repaint`.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Commands the window can queue before the bridge takes them.
const COMMAND_CAPACITY: usize = 64;

/// Events the bridge can queue before it waits for the window to take them.
const EVENT_CAPACITY: usize = 4096;

/// What the window asks of the background.
#[derive(Debug)]
pub enum BridgeCommand {
    /// Read a .blend's scene with Blender: the named one, or the file's
    /// active scene.
    Inspect {
        /// The .blend.
        path: PathBuf,
        /// The scene.
        scene: Option<String>,
    },
    /// Show a file dialog for a .blend.
    PickBlend,
    /// Show a folder dialog for the output folder.
    PickOutputDir,
    /// Start a job (its node check is added here: it reads the file).
    Start {
        /// The job.
        spec: Box<JobSpec>,
        /// Its scene has unbaked simulations to bake first (see
        /// [`crate::controller::bake`]).
        bake: bool,
        /// A shell command to run when it ends, with its summary as JSON
        /// on stdin.
        on_end: Option<String>,
    },
    /// Whether the window has the keyboard focus: the desktop is notified
    /// of a job's end only while it has not.
    WindowFocused(bool),
    /// Pass a command to the running job.
    Engine(EngineCommand),
    /// Use this node (`http://HOST:PORT`) in the running job and the next.
    AddNode(String),
    /// The addresses of the servers the user unticked, for the next jobs
    /// (the running job is told by [`EngineCommand::SetNodeEnabled`]).
    LeaveOut(BTreeSet<String>),
    /// Show a folder in the desktop's file manager, or a file in its
    /// viewer.
    OpenPath(PathBuf),
    /// Decode a finished frame's image for the window.
    Decode {
        /// Frame number.
        frame: i32,
        /// Its file in the output folder.
        path: PathBuf,
        /// What it is for.
        size: ImageSize,
    },
}

/// What the background tells the window.
#[derive(Debug)]
pub enum BridgeEvent {
    /// A file was read (or could not be).
    Inspected {
        /// The file.
        path: PathBuf,
        /// Its scene, or what went wrong, said for the user.
        result: Result<Box<SceneInfo>, String>,
    },
    /// The user picked a .blend in the dialog.
    PickedBlend(PathBuf),
    /// The user picked an output folder in the dialog.
    PickedOutputDir(PathBuf),
    /// The running job reported.
    Engine(EngineEvent),
    /// A job started: its snapshots (progress, nodes) are read from here.
    JobProgress(tokio::sync::watch::Receiver<JobProgress>),
    /// The servers on the LAN, between jobs (during a job the engine's
    /// [`JobProgress`] tells).
    Servers(Vec<NodeView>),
    /// The running job ended; an error says why it could not run.
    JobEnded(Result<(), String>),
    /// A movie scene's frames are being encoded into the movie: frames in,
    /// of all.
    Encoding(usize, usize),
    /// The scene's simulations are being baked before the job: frames
    /// stepped, of all.
    Baking(usize, usize),
    /// A finished frame's image, or why there is none.
    Decoded {
        /// Frame number.
        frame: i32,
        /// What it was asked for.
        size: ImageSize,
        /// The image, shrunk to fit `size`.
        image: Result<egui::ColorImage, String>,
    },
    /// Something the user should know that belongs to no job.
    Message(String),
}

/// What a frame's image is decoded for, and so how big it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSize {
    /// A preview in the row of latest frames.
    Preview,
    /// The frame on its own, as big as a screen shows it.
    Full,
}

impl ImageSize {
    /// Longest side, in pixels.
    pub fn max_side_px(self) -> u32 {
        match self {
            Self::Preview => thumbnails::THUMBNAIL_PIXELS,
            Self::Full => thumbnails::FULL_VIEW_PIXELS,
        }
    }
}

/// The window's ends of the bridge's channels.
#[derive(Debug)]
pub struct BridgeLink {
    /// Commands go here.
    pub commands: mpsc::Sender<BridgeCommand>,
    /// Events arrive here.
    pub events: mpsc::Receiver<BridgeEvent>,
}

/// The background's ends of the channels; tests hold these to play the
/// bridge's part.
#[derive(Debug)]
pub struct BridgeEnd {
    /// Commands from the window arrive here.
    pub commands: mpsc::Receiver<BridgeCommand>,
    /// Events for the window go here.
    pub events: mpsc::Sender<BridgeEvent>,
}

/// A connected pair of channel ends.
pub fn channel() -> (BridgeLink, BridgeEnd) {
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
    (
        BridgeLink {
            commands: commands_tx,
            events: events_rx,
        },
        BridgeEnd {
            commands: commands_rx,
            events: events_tx,
        },
    )
}

/// How the controller finds nodes and Blender.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Blender executable; `None`: `HERD_BLENDER`, then `PATH`.
    pub blender: Option<PathBuf>,
    /// Render on this machine too.
    pub local: bool,
    /// Render threads of the local node; `None`: all cores.
    pub local_threads: Option<u32>,
    /// Work dir of the local node; `None`: the user's cache dir.
    pub work_dir: Option<PathBuf>,
    /// Nodes given by hand (`http://HOST:PORT`).
    pub nodes: Vec<String>,
    /// UDP port to hear beacons on; `None`: no discovery.
    pub discovery_port: Option<u16>,
    /// Shared secret of the nodes.
    pub token: Option<String>,
    /// Renders of one frame before it counts as failed.
    pub retries: u32,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            blender: None,
            local: true,
            local_threads: None,
            work_dir: None,
            nodes: Vec::new(),
            discovery_port: Some(crate::wire::DEFAULT_PORT),
            token: None,
            retries: 3,
        }
    }
}

/// Starts the bridge on `runtime`. It runs until `shutdown` is cancelled,
/// then cancels the job and stops the local node; await the handle to let
/// it finish.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    config: BridgeConfig,
    notify: Notify,
    shutdown: CancellationToken,
) -> (BridgeLink, JoinHandle<()>) {
    let (link, end) = channel();
    let out = Out {
        events: end.events,
        notify,
    };
    let task = runtime.spawn(run(config, end.commands, out, shutdown));
    (link, task)
}

/// Sends events to the window and wakes it.
#[derive(Clone)]
struct Out {
    events: mpsc::Sender<BridgeEvent>,
    notify: Notify,
}

impl Out {
    async fn send(&self, event: BridgeEvent) {
        let _ = self.events.send(event).await;
        (self.notify)();
    }
}

async fn run(
    config: BridgeConfig,
    mut commands: mpsc::Receiver<BridgeCommand>,
    out: Out,
    shutdown: CancellationToken,
) {
    let blender = blender::locate(config.blender.as_deref()).map_err(|err| err.to_string());
    if let Err(err) = &blender {
        out.send(BridgeEvent::Message(err.clone())).await;
    }
    // The local node starts at once so its Blender is warm by the first job.
    let (local_tx, mut local_rx) = mpsc::channel(1);
    let mut local_pending = false;
    if let (Ok(path), true) = (&blender, config.local) {
        local_pending = true;
        let (config, path, out) = (config.clone(), path.clone(), out.clone());
        tokio::spawn(async move {
            let _ = local_tx.send(start_local(config, path, out).await).await;
        });
    }
    // One discovery socket for the window's life, shared by the standing
    // watch and every job.
    let discovery = match config.discovery_port {
        Some(port) => match discovery::Listener::bind(port) {
            Ok(listener) => Some(listener),
            Err(err) => {
                out.send(BridgeEvent::Message(format!(
                    "cannot listen for servers on UDP {port}: {}; add them by address",
                    err.source
                )))
                .await;
                None
            }
        },
        None => None,
    };
    let mut pool = Pool::new(discovery, config.nodes.clone(), config.token.clone());
    // The standing watch's rows, whichever watch sends them.
    let (rows_tx, mut rows_rx) = mpsc::channel(4);
    {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(rows) = rows_rx.recv().await {
                out.send(BridgeEvent::Servers(rows)).await;
            }
        });
    }
    pool.watch(rows_tx.clone());
    let mut job: Option<mpsc::Sender<EngineCommand>> = None;
    let (ended_tx, mut ended_rx) = mpsc::channel::<()>(1);
    // Shared with the job tasks, which read it when their job ends.
    let focused = Arc::new(std::sync::atomic::AtomicBool::new(true));
    loop {
        let command = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(started) = local_rx.recv(), if local_pending => {
                local_pending = false;
                if let Some(local) = started {
                    pool.set_local(local);
                }
                continue;
            }
            Some(()) = ended_rx.recv() => {
                pool.watch(rows_tx.clone());
                continue;
            }
            command = commands.recv() => match command {
                Some(command) => command,
                None => break,
            },
        };
        match command {
            BridgeCommand::Inspect { path, scene } => {
                let blender = blender.clone();
                let out = out.clone();
                // The local node's warm Blender reads the file, unless it
                // renders a job (then a Blender of its own does).
                let idle = job.as_ref().is_none_or(mpsc::Sender::is_closed);
                let local = pool.local().filter(|_| idle).cloned();
                tokio::spawn(async move {
                    let scene = scene.as_deref();
                    let result = match (blender, local) {
                        (Ok(blender), Some(local)) => {
                            inspect::inspect_with_local(&local, &blender, &path, scene).await
                        }
                        (Ok(blender), None) => inspect::inspect_scene(&blender, &path, scene).await,
                        (Err(err), _) => {
                            out.send(BridgeEvent::Inspected {
                                path,
                                result: Err(err),
                            })
                            .await;
                            return;
                        }
                    };
                    let result = result.map(Box::new).map_err(|err| err.to_string());
                    out.send(BridgeEvent::Inspected { path, result }).await;
                });
            }
            BridgeCommand::PickBlend => {
                let out = out.clone();
                tokio::spawn(async move {
                    let picked = rfd::AsyncFileDialog::new()
                        .set_title("Open a Blender scene")
                        .add_filter("Blender scene", &["blend"])
                        .pick_file()
                        .await;
                    if let Some(file) = picked {
                        out.send(BridgeEvent::PickedBlend(file.path().to_path_buf()))
                            .await;
                    }
                });
            }
            BridgeCommand::PickOutputDir => {
                let out = out.clone();
                tokio::spawn(async move {
                    let picked = rfd::AsyncFileDialog::new()
                        .set_title("Output folder")
                        .pick_folder()
                        .await;
                    if let Some(folder) = picked {
                        out.send(BridgeEvent::PickedOutputDir(folder.path().to_path_buf()))
                            .await;
                    }
                });
            }
            BridgeCommand::WindowFocused(now) => {
                focused.store(now, std::sync::atomic::Ordering::Relaxed);
            }
            BridgeCommand::Start { spec, bake, on_end } => {
                if job.as_ref().is_some_and(|job| !job.is_closed()) {
                    out.send(BridgeEvent::Message(
                        "a job is running: cancel it before starting another".into(),
                    ))
                    .await;
                    continue;
                }
                if local_pending {
                    local_pending = false;
                    if let Some(local) = local_rx.recv().await.flatten() {
                        pool.set_local(local);
                    }
                }
                pool.stop_watch().await;
                let engine_config = pool.engine_config(SchedulerConfig {
                    max_attempts: config.retries.max(1),
                    ..SchedulerConfig::default()
                });
                job = Some(start_job(
                    *spec,
                    bake,
                    engine_config,
                    blender.clone().ok(),
                    out.clone(),
                    JobEnd {
                        ended: ended_tx.clone(),
                        on_end,
                        focused: Arc::clone(&focused),
                    },
                ));
            }
            BridgeCommand::Decode { frame, path, size } => {
                let out = out.clone();
                tokio::spawn(async move {
                    let image = tokio::task::spawn_blocking(move || {
                        thumbnails::decode(&path, size.max_side_px())
                    })
                    .await
                    .unwrap_or_else(|err| Err(format!("the image decoder crashed: {err}")));
                    out.send(BridgeEvent::Decoded { frame, size, image }).await;
                });
            }
            BridgeCommand::Engine(command) => {
                if let Some(job) = &job {
                    let _ = job.send(command).await;
                }
            }
            BridgeCommand::AddNode(uri) => {
                pool.add(&uri);
                if let Some(job) = &job {
                    let _ = job.send(EngineCommand::AddNode(uri)).await;
                }
            }
            BridgeCommand::LeaveOut(set) => pool.leave_out(set),
            BridgeCommand::OpenPath(path) => {
                let opener = if cfg!(target_os = "macos") {
                    "open"
                } else if cfg!(windows) {
                    "explorer"
                } else {
                    "xdg-open"
                };
                let spawned = tokio::process::Command::new(opener)
                    .arg(&path)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                if let Err(err) = spawned {
                    out.send(BridgeEvent::Message(format!(
                        "cannot open {}: {err} ({opener} is needed to show files and folders)",
                        path.display()
                    )))
                    .await;
                }
            }
        }
    }
    if let Some(job) = job {
        let _ = job.send(EngineCommand::Cancel).await;
    }
    if local_pending && let Some(local) = local_rx.recv().await.flatten() {
        pool.set_local(local);
    }
    pool.close().await;
}

/// What happens when a job ends.
struct JobEnd {
    /// Told when the job is over.
    ended: mpsc::Sender<()>,
    /// The user's command, run with the summary on stdin.
    on_end: Option<String>,
    /// Whether the window has the focus (then no desktop notification).
    focused: Arc<std::sync::atomic::AtomicBool>,
}

impl JobEnd {
    /// Runs the user's command and notifies the desktop (unless the window
    /// has the focus) for a job that ended with `result`, then says the
    /// job is over.
    async fn finish(self, result: &Result<engine::JobSummary, String>, out: &Out) {
        let focused = self.focused.load(std::sync::atomic::Ordering::Relaxed);
        let words = match result {
            Ok(summary) => job_end::notification(summary),
            Err(err) => Some(("herd: the job failed".into(), err.clone())),
        };
        if let (false, Some((title, body))) = (focused, words) {
            let shown = tokio::task::spawn_blocking(move || notify::show(&title, &body)).await;
            match shown {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!("{err}"),
                Err(err) => tracing::warn!("the desktop notification failed: {err}"),
            }
        }
        if let (Some(command), Ok(summary)) = (&self.on_end, result) {
            let said = match job_end::run_command(command, summary).await {
                Ok(status) if status.success() => None,
                Ok(status) => Some(format!(
                    "the job-end command `{command}` ended with {status}"
                )),
                Err(err) => Some(err.to_string()),
            };
            if let Some(said) = said {
                out.send(BridgeEvent::Message(said)).await;
            }
        }
        let _ = self.ended.send(()).await;
    }
}

/// Runs the job's session (see [`Session`]) on `spec`, forwarding the
/// engine's events and the steps around the job to the window; returns
/// where the job's commands go (they wait while the simulations bake).
/// `end` runs when the job is over.
fn start_job(
    spec: JobSpec,
    bake: bool,
    engine_config: EngineConfig,
    blender: Option<PathBuf>,
    out: Out,
    end: JobEnd,
) -> mpsc::Sender<EngineCommand> {
    let (commands, commands_rx) = mpsc::channel::<EngineCommand>(64);
    tokio::spawn(async move {
        let session = Session {
            spec,
            config: engine_config,
            blender,
            bake,
        };
        let (steps, told) = WindowSteps::start(out.clone());
        let drive_out = out.clone();
        let ended = session
            .run(&steps, Some(Arc::clone(&out.notify)), |handle| {
                drive_job(handle, commands_rx, drive_out)
            })
            .await;
        // Everything the steps said reaches the window before the end.
        drop(steps);
        let _ = told.await;
        let result = ended.and_then(|ended| match ended.movie {
            Some(Err(err)) => Err(err),
            _ => Ok(ended.summary),
        });
        out.send(BridgeEvent::JobEnded(result.clone().map(|_| ())))
            .await;
        end.finish(&result, &out).await;
    });
    commands
}

/// Passes the window's commands to the engine and its events to the window
/// until the job ends; the engine's summary.
async fn drive_job(
    handle: engine::EngineHandle,
    mut commands: mpsc::Receiver<EngineCommand>,
    out: Out,
) -> Result<engine::JobSummary, String> {
    let engine::EngineHandle {
        commands: engine_commands,
        mut events,
        progress,
        task,
    } = handle;
    // Ends with the engine, so the job's commands close with it.
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                command = commands.recv() => command,
                () = engine_commands.closed() => None,
            };
            let Some(command) = command else { break };
            if engine_commands.send(command).await.is_err() {
                break;
            }
        }
    });
    out.send(BridgeEvent::JobProgress(progress)).await;
    while let Some(event) = events.recv().await {
        out.send(BridgeEvent::Engine(event)).await;
    }
    match task.await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(format!("the job engine crashed: {err}")),
    }
}

/// The steps around a job (baking, encoding), told to the window in order
/// by a task of their own: a step's progress never waits for the window.
struct WindowSteps {
    told: mpsc::UnboundedSender<BridgeEvent>,
}

impl WindowSteps {
    /// The steps and the task telling them, which ends once they are
    /// dropped and all is told.
    fn start(out: Out) -> (Self, JoinHandle<()>) {
        let (told, mut telling) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(event) = telling.recv().await {
                out.send(event).await;
            }
        });
        (Self { told }, task)
    }

    fn log(&self, message: String) {
        let _ = self
            .told
            .send(BridgeEvent::Engine(EngineEvent::Log { message }));
    }
}

impl Steps for WindowSteps {
    fn started(&self, step: Step) {
        self.log(match step {
            Step::Bake => {
                "baking the scene's simulations before the job (frames stepped in order)".into()
            }
            Step::Encode => "every frame is in: encoding the movie".into(),
        });
    }

    fn progress(&self, step: Step, done: usize, total: usize) {
        let _ = self.told.send(match step {
            Step::Bake => BridgeEvent::Baking(done, total),
            Step::Encode => BridgeEvent::Encoding(done, total),
        });
    }

    fn finished(&self, step: Step, path: &Path, secs: f64) {
        self.log(match step {
            Step::Bake => format!("simulations baked in {secs:.1} s"),
            Step::Encode => format!("movie written: {}", path.display()),
        });
    }
}

/// Starts the controller's own node; a failure is told to the user and the
/// jobs run without it.
async fn start_local(
    config: BridgeConfig,
    blender_path: PathBuf,
    out: Out,
) -> Option<Arc<LocalNode>> {
    let result = async {
        let node = LocalNode::config(blender_path, config.local_threads, config.work_dir).await?;
        LocalNode::start(node).await.map_err(|err| err.to_string())
    }
    .await;
    match result {
        Ok(local) => Some(local),
        Err(err) => {
            out.send(BridgeEvent::Message(format!(
                "this machine will not render: {err}"
            )))
            .await;
            None
        }
    }
}
