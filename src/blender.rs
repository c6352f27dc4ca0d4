//! Blender as a long-lived child process.
//!
//! A [`Worker`] is one Blender in background mode running `assets/worker.py`.
//! It loads a .blend once and then renders frame after frame on command, so
//! Blender's start-up and the scene load are paid once per file, not once per
//! frame. Commands and answers travel over a private loopback TCP connection
//! (one JSON object per line), so nothing Blender prints can be mistaken for an
//! answer; Blender's stdout and stderr are read separately for progress and for
//! the last log lines an error report carries. While a command runs, the
//! worker also sends Blender's render statistics (progress on every version,
//! 5.0 included, which no longer prints them) and a heartbeat with Blender's
//! CPU time; [`liveness`] decides from those when a Blender is hung.

mod liveness;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

use crate::wire::Overrides;
use liveness::{CpuSource, Liveness};

/// The worker script, embedded so the binary is all a node needs.
pub const WORKER_SCRIPT: &str = include_str!("../assets/worker.py");

/// The scene inspector, run by `herd inspect`'s Blender and imported by the
/// worker (`inspect` command).
pub const INSPECT_SCRIPT: &str = include_str!("../assets/inspect.py");

/// Environment variable naming the Blender executable.
pub const BLENDER_ENV: &str = "HERD_BLENDER";

/// How many of Blender's last output lines are kept for error reports.
const LOG_TAIL_LINES: usize = 30;

/// How long Blender may take to start and connect back.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors from running Blender.
#[derive(Debug, thiserror::Error)]
pub enum BlenderError {
    /// No Blender executable could be found.
    #[error(
        "Blender not found{where_}: install it (apt-get install blender) or pass --blender PATH or set HERD_BLENDER"
    )]
    NotFound {
        /// Where it was looked for, e.g. " at /opt/blender".
        where_: String,
    },
    /// Blender could not be started.
    #[error("cannot start Blender at {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Blender reported an error for a command; the message is Blender's own.
    #[error("{0}")]
    Blender(String),
    /// Blender exited while working.
    #[error("Blender exited unexpectedly ({status}){}", tail_text(.log_tail))]
    Exited {
        /// Exit status as text, e.g. "signal 9".
        status: String,
        /// Blender's last output lines.
        log_tail: Vec<String>,
    },
    /// Blender showed no sign of life (no output, no CPU time used) for too
    /// long and was killed.
    #[error("Blender showed no sign of life for {secs} s (no output, no CPU time used) and was killed (--frame-timeout){}", tail_text(.log_tail))]
    Hung {
        /// The timeout that ran out.
        secs: u64,
        /// Blender's last output lines.
        log_tail: Vec<String>,
    },
    /// A frame took longer than the hard cap and Blender was killed.
    #[error("Blender worked on this frame for more than {secs} s and was killed (--max-frame-time){}", tail_text(.log_tail))]
    TooLong {
        /// The cap that ran out.
        secs: u64,
        /// Blender's last output lines.
        log_tail: Vec<String>,
    },
    /// The command was cancelled and Blender was stopped.
    #[error("cancelled")]
    Cancelled,
    /// The private channel to the worker failed.
    #[error("lost the connection to Blender's worker script: {0}")]
    Channel(String),
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; Blender's last lines:\n{}", lines.join("\n"))
    }
}

/// The file that remembers the Blender the user located in a window.
fn remembered_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "herd").map(|dirs| dirs.config_dir().join("blender"))
}

/// The Blender the user located in a window, if it is still there.
pub fn remembered() -> Option<PathBuf> {
    let text = std::fs::read_to_string(remembered_file()?).ok()?;
    let path = PathBuf::from(text.trim());
    path.is_file().then_some(path)
}

/// Remembers `path` as the Blender to use when none is given (see
/// [`locate`]).
pub fn remember(path: &Path) -> std::io::Result<()> {
    let file =
        remembered_file().ok_or_else(|| std::io::Error::other("this user has no config dir"))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, path.as_os_str().as_encoded_bytes())
}

/// The folders of PATH.
fn path_dirs() -> impl Iterator<Item = PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
}

/// The file `name` names in a folder of PATH.
fn on_path(name: &Path) -> Option<PathBuf> {
    path_dirs()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Finds the Blender executable: `explicit` (from `--blender`), else
/// `HERD_BLENDER`, else the one located in a window ([`remembered`]), else
/// `blender` on `PATH`, else the usual install places.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, BlenderError> {
    let given = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(BLENDER_ENV).map(PathBuf::from));
    if let Some(path) = given {
        // A bare name (`blender`, `blender-4.2`) is looked up on PATH, as a
        // shell would.
        let bare = path.components().count() == 1 && !path.is_file();
        let found = if bare {
            on_path(&path)
        } else {
            Some(path.clone()).filter(|path| path.is_file())
        };
        return found.ok_or_else(|| BlenderError::NotFound {
            where_: format!(" at {}", path.display()),
        });
    }
    let name = if cfg!(windows) {
        "blender.exe"
    } else {
        "blender"
    };
    if let Some(path) = remembered() {
        return Ok(path);
    }
    let on_path = path_dirs().map(|dir| dir.join(name));
    let usual = [
        "/usr/bin/blender",
        "/usr/local/bin/blender",
        "/snap/bin/blender",
        "/Applications/Blender.app/Contents/MacOS/Blender",
    ]
    .into_iter()
    .map(PathBuf::from);
    on_path
        .chain(usual)
        .find(|path| path.is_file())
        .ok_or(BlenderError::NotFound {
            where_: " on PATH".into(),
        })
}

/// Asks Blender for its version, e.g. `3.4.1`. `blender --version` costs
/// about 0.4 s, so the answer is remembered per executable (its canonical
/// path, size and modification time), in this process and in the user's
/// cache dir; a changed binary is asked again.
pub async fn version(path: &Path) -> Result<String, BlenderError> {
    let key = version_key(path);
    if let Some(key) = &key
        && let Some(known) = version_cache::get(key)
    {
        return Ok(known);
    }
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| BlenderError::Spawn {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Blender "))
        .map(|version| version.trim().to_string())
        .ok_or_else(|| {
            BlenderError::Blender(format!(
                "{} --version did not print a Blender version (exit {})",
                path.display(),
                output.status
            ))
        })?;
    if let Some(key) = key {
        version_cache::put(key, &version);
    }
    Ok(version)
}

/// What identifies one Blender binary: canonical path, size, mtime.
fn version_key(path: &Path) -> Option<String> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{}|{}|{}",
        canonical.display(),
        meta.len(),
        modified.as_nanos()
    ))
}

/// Blender versions already asked, in memory and in a small JSON file.
mod version_cache {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock, PoisonError};

    fn memory() -> &'static Mutex<HashMap<String, String>> {
        static MEMORY: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
        MEMORY.get_or_init(|| Mutex::new(HashMap::new()))
    }

    fn file() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "herd")
            .map(|dirs| dirs.cache_dir().join("blender-versions.json"))
    }

    fn read_file() -> HashMap<String, String> {
        file()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub(super) fn get(key: &str) -> Option<String> {
        let mut memory = memory().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(version) = memory.get(key) {
            return Some(version.clone());
        }
        let version = read_file().remove(key)?;
        memory.insert(key.to_string(), version.clone());
        Some(version)
    }

    pub(super) fn put(key: String, version: &str) {
        memory()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), version.to_string());
        let Some(path) = file() else { return };
        let mut all = read_file();
        all.insert(key, version.to_string());
        let Ok(bytes) = serde_json::to_vec(&all) else {
            return;
        };
        // A cache: failing to write it only costs the next start 0.4 s.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let temp = path.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&temp, bytes).is_ok() {
            let _ = std::fs::rename(&temp, &path);
        }
    }
}

/// How to run Blender.
#[derive(Clone, Debug)]
pub struct BlenderConfig {
    /// The executable.
    pub path: PathBuf,
    /// Render threads (`-t`); `None` lets Blender use every core.
    pub threads: Option<u32>,
    /// Let .blend files run their Python (auto-exec); off by default.
    pub allow_scripts: bool,
    /// Kill Blender when it shows no sign of life (output, CPU time) for
    /// this long.
    pub frame_timeout: Duration,
    /// Kill Blender when one frame takes longer than this, alive or not;
    /// `None`: no cap.
    pub max_frame_time: Option<Duration>,
    /// Folder the worker script is written to.
    pub script_dir: PathBuf,
}

/// What Blender printed lately, shared with the tasks reading its output.
#[derive(Debug)]
pub struct OutputLog {
    lines: VecDeque<String>,
    last_output: Instant,
    progress: f32,
    /// When the current command began.
    started: Instant,
    /// Seconds from the command's start to its first sample.
    sampling_after: Option<f64>,
}

impl Default for OutputLog {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputLog {
    /// An empty log.
    pub fn new() -> Self {
        Self {
            lines: VecDeque::with_capacity(LOG_TAIL_LINES),
            last_output: Instant::now(),
            progress: 0.0,
            started: Instant::now(),
            sampling_after: None,
        }
    }

    fn push(&mut self, line: String) {
        self.last_output = Instant::now();
        self.stats(&line);
        if self.lines.len() == LOG_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Takes the progress from a statistics line, printed by Blender or sent
    /// by the worker's `render_stats` handler.
    fn stats(&mut self, line: &str) {
        if let Some(progress) = parse_progress(line) {
            self.progress = progress;
            if self.sampling_after.is_none() {
                self.sampling_after = Some(self.started.elapsed().as_secs_f64());
            }
        }
    }

    /// The last lines Blender printed, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// Progress of the current frame, 0.0 to 1.0.
    pub fn progress(&self) -> f32 {
        self.progress
    }

    /// Seconds the current frame spent before its first sample: moving to
    /// the frame and preparing the scene (sync, BVH, shaders), what a warm
    /// scene saves. `None` until sampling began.
    pub fn prep_secs(&self) -> Option<f64> {
        self.sampling_after
    }

    /// Starts a new command: forget progress and lines, restart the watchdog.
    fn reset(&mut self) {
        self.lines.clear();
        self.progress = 0.0;
        self.last_output = Instant::now();
        self.started = Instant::now();
        self.sampling_after = None;
    }
}

/// Reads a frame's progress from a Blender statistics line: Cycles
/// `Sample 3/16`, tiled Cycles `Rendered 2/4 Tiles, Sample 8/16`, EEVEE
/// `Rendering 5 / 64 samples`.
pub fn parse_progress(line: &str) -> Option<f32> {
    fn ratio(text: &str) -> Option<(f32, f32)> {
        let (done, total) = text.split_once('/')?;
        let done: f32 = done.trim().parse().ok()?;
        let total: f32 = total.split_whitespace().next()?.trim().parse().ok()?;
        (total > 0.0).then_some((done, total))
    }
    let stats = line.rsplit('|').next()?.trim();
    if stats == "Finished" {
        return Some(1.0);
    }
    let samples = stats
        .split(", ")
        .find_map(|part| part.strip_prefix("Sample ").and_then(ratio));
    let tiles = stats.split(", ").find_map(|part| {
        part.strip_prefix("Rendered ")
            .and_then(|rest| rest.strip_suffix(" Tiles"))
            .and_then(ratio)
    });
    let eevee = stats
        .strip_prefix("Rendering ")
        .and_then(|rest| rest.strip_suffix(" samples"))
        .and_then(ratio);
    let progress = match (tiles, samples.or(eevee)) {
        (Some((tile, tiles)), Some((sample, samples))) => {
            ((tile - 1.0).max(0.0) + sample / samples) / tiles
        }
        (Some((tile, tiles)), None) => tile / tiles,
        (None, Some((sample, samples))) => sample / samples,
        (None, None) => return None,
    };
    Some(progress.clamp(0.0, 1.0))
}

/// Size and modification time of a file, to tell whether it changed.
fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

/// Answer to a `load` command.
#[derive(Clone, Debug, Deserialize)]
pub struct Loaded {
    /// Seconds `open_mainfile` took.
    pub load_secs: f64,
    /// Whether the scene the last inspection opened was kept as the job's
    /// instead of opened again (see [`Worker::load`]).
    #[serde(default)]
    pub kept: bool,
    /// Files the scene reads that are not in the job's folder, e.g.
    /// `image 'wood': //tex/wood.png`.
    #[serde(default)]
    pub missing: Vec<String>,
    /// The scene's own settings.
    pub scene: SceneSummary,
}

/// A scene's settings as Blender read them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SceneSummary {
    /// Scene name.
    pub name: String,
    /// First frame.
    pub frame_start: i32,
    /// Last frame.
    pub frame_end: i32,
    /// Frame step.
    pub frame_step: i32,
    /// Render engine, e.g. `CYCLES`.
    pub engine: String,
    /// Width before the percentage.
    pub resolution_x: u32,
    /// Height before the percentage.
    pub resolution_y: u32,
    /// Resolution percentage.
    pub resolution_percentage: u32,
    /// Output file format, e.g. `PNG`.
    pub file_format: String,
    /// Active camera's name.
    pub camera: Option<String>,
}

/// Answer to a `render` command.
#[derive(Clone, Debug, Deserialize)]
pub struct Rendered {
    /// Frame number.
    pub frame: i32,
    /// The render's folder: every output is inside it.
    pub dir: PathBuf,
    /// Every file the frame wrote, relative to `dir` (`image/...` first).
    pub outputs: Vec<String>,
    /// An image of the result the node decodes, for checks and thumbnails:
    /// the frame itself when it is a PNG or JPEG, else an 8-bit PNG.
    pub preview: PathBuf,
    /// What the worker changed and the controller should say.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Seconds before the first sample (see [`OutputLog::prep_secs`]).
    #[serde(default)]
    pub prep_secs: Option<f64>,
    /// Seconds the render and save took.
    pub render_secs: f64,
    /// Expected image width; unknown when the render is cropped to a border.
    pub width: Option<u32>,
    /// Expected image height; unknown when the render is cropped to a border.
    pub height: Option<u32>,
}

#[derive(Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum WorkerCommand<'a> {
    Load {
        path: &'a Path,
        allow_scripts: bool,
        /// Every file Blender reads is pointed inside this folder.
        jail: &'a Path,
        /// The file is the same bytes as the one last inspected.
        keep_inspected: bool,
    },
    Inspect {
        path: &'a Path,
        scene: Option<&'a str>,
    },
    Render {
        frame: i32,
        dir: &'a Path,
        name: Option<&'a str>,
        scene: Option<&'a str>,
        overrides: &'a Overrides,
    },
    Quit,
}

#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WorkerAnswer {
    Hello {
        secret: String,
        blender_version: String,
    },
    /// The heartbeat: CPU seconds of Blender's threads but the heartbeat's.
    Alive {
        cpu_secs: f64,
        /// The heartbeat thread's id, left out of `/proc` readings.
        #[serde(default)]
        tid: Option<u32>,
    },
    /// Blender's render statistics text.
    Progress {
        stats: String,
    },
    Loaded(Loaded),
    Rendered(Rendered),
    Inspected {
        report: serde_json::Value,
    },
    Error {
        message: String,
    },
}

/// One running Blender with the worker script, ready for commands.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    answers: Lines<BufReader<OwnedReadHalf>>,
    commands: OwnedWriteHalf,
    log: Arc<Mutex<OutputLog>>,
    frame_timeout: Duration,
    max_frame_time: Option<Duration>,
    liveness: Liveness,
    /// The worker's heartbeat thread, once it has reported.
    heartbeat_tid: Option<u32>,
    allow_scripts: bool,
    /// The .blend currently loaded.
    loaded: Option<PathBuf>,
    /// Files the loaded scene reads that are not there.
    missing: Vec<String>,
    /// SHA-256 of the file the last inspection opened, while it is still
    /// open as the inspection left it.
    inspected_blob: Option<String>,
    /// Blender's version as the worker reported it.
    pub blender_version: String,
}

impl Worker {
    /// Starts Blender with the worker script and waits until it is ready.
    pub async fn start(config: &BlenderConfig) -> Result<Self, BlenderError> {
        let channel_error = |err: std::io::Error| BlenderError::Channel(err.to_string());
        let script = config.script_dir.join("herd_worker.py");
        tokio::fs::create_dir_all(&config.script_dir)
            .await
            .map_err(channel_error)?;
        tokio::fs::write(&script, WORKER_SCRIPT)
            .await
            .map_err(channel_error)?;
        let inspector = config.script_dir.join("herd_inspect.py");
        tokio::fs::write(&inspector, INSPECT_SCRIPT)
            .await
            .map_err(channel_error)?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(channel_error)?;
        let addr = listener.local_addr().map_err(channel_error)?;
        let secret = uuid::Uuid::new_v4().to_string();

        let mut command = Command::new(&config.path);
        command
            .arg("-b")
            .arg("-noaudio")
            .arg(if config.allow_scripts { "-y" } else { "-Y" });
        if let Some(threads) = config.threads {
            command.arg("-t").arg(threads.to_string());
        }
        command
            .arg("--python")
            .arg(&script)
            .env("HERD_WORKER_ADDR", addr.to_string())
            .env("HERD_INSPECT_SCRIPT", &inspector)
            .env("HERD_WORKER_SECRET", &secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| BlenderError::Spawn {
            path: config.path.clone(),
            source,
        })?;

        let log = Arc::new(Mutex::new(OutputLog::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_output(stdout, Arc::clone(&log)));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_output(stderr, Arc::clone(&log)));
        }

        let accepted = tokio::select! {
            accepted = tokio::time::timeout(STARTUP_TIMEOUT, listener.accept()) => accepted,
            status = child.wait() => {
                let status = status.map_or_else(|err| err.to_string(), exit_text);
                // Give the output readers a moment to catch Blender's last words.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(BlenderError::Exited { status, log_tail: lock(&log).tail() });
            }
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted.map_err(channel_error)?,
            Err(_) => {
                return Err(BlenderError::Hung {
                    secs: STARTUP_TIMEOUT.as_secs(),
                    log_tail: lock(&log).tail(),
                });
            }
        };
        let (read, write) = stream.into_split();
        let mut worker = Self {
            child,
            answers: BufReader::new(read).lines(),
            commands: write,
            log,
            frame_timeout: config.frame_timeout,
            max_frame_time: config.max_frame_time,
            liveness: Liveness::new(Instant::now()),
            heartbeat_tid: None,
            allow_scripts: config.allow_scripts,
            loaded: None,
            missing: Vec::new(),
            inspected_blob: None,
            blender_version: String::new(),
        };
        match worker.answer(None, None).await? {
            WorkerAnswer::Hello {
                secret: theirs,
                blender_version,
            } if theirs == secret => {
                worker.blender_version = blender_version;
                Ok(worker)
            }
            _ => Err(BlenderError::Channel(
                "the worker did not introduce itself with the node's secret".into(),
            )),
        }
    }

    /// Process id of the Blender child.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The .blend currently loaded, if any.
    pub fn loaded(&self) -> Option<&Path> {
        self.loaded.as_deref()
    }

    /// Files the loaded scene reads that are not in its job's folder.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Blender's output, shared for progress reports.
    pub fn log(&self) -> Arc<Mutex<OutputLog>> {
        Arc::clone(&self.log)
    }

    /// Loads `path`, replacing the scene that was loaded, and points every
    /// file the scene reads inside `jail` (the job's folder): absolute paths
    /// go to the same place under it, and nothing outside it is read.
    ///
    /// `blob` is the file's SHA-256. When it is the file the last
    /// [`Worker::inspect`] opened, still untouched, and that scene reads no
    /// other file, Blender keeps it instead of reading it again
    /// ([`Loaded::kept`]): the first frame of a job of the local node then
    /// costs no second load.
    pub async fn load(
        &mut self,
        path: &Path,
        jail: &Path,
        blob: Option<&str>,
    ) -> Result<Loaded, BlenderError> {
        self.loaded = None;
        let inspected_blob = self.inspected_blob.take();
        let command = WorkerCommand::Load {
            path,
            allow_scripts: self.allow_scripts,
            jail,
            keep_inspected: blob.is_some() && blob == inspected_blob.as_deref(),
        };
        match self.request(&command, None).await? {
            WorkerAnswer::Loaded(loaded) => {
                self.loaded = Some(path.to_path_buf());
                self.missing.clone_from(&loaded.missing);
                Ok(loaded)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Reads scene `scene` (the file's active one when `None`) of the .blend
    /// at `path` as `herd inspect` does; returns the inspector's report and
    /// the lines Blender printed meanwhile. The file stays loaded but not as
    /// a job's: the next render loads its own, or keeps this one when it is
    /// the same bytes (see [`Worker::load`]). The file is hashed meanwhile,
    /// beside Blender's reading.
    pub async fn inspect(
        &mut self,
        path: &Path,
        scene: Option<&str>,
    ) -> Result<(serde_json::Value, Vec<String>), BlenderError> {
        self.loaded = None;
        self.inspected_blob = None;
        let before = file_stamp(path);
        let hashed = tokio::task::spawn_blocking({
            let path = path.to_path_buf();
            move || crate::node::blobs::hash_file(&path)
        });
        let command = WorkerCommand::Inspect { path, scene };
        let answer = self.request(&command, None).await;
        let hash = hashed.await.ok().and_then(Result::ok);
        match answer? {
            WorkerAnswer::Inspected { report } => {
                // Bytes that changed while Blender and the hash read them
                // match nothing.
                if before.is_some() && before == file_stamp(path) {
                    self.inspected_blob = hash.map(|(sha, _)| sha);
                }
                Ok((report, lock(&self.log).tail()))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Renders `frame` of the loaded file as Blender would write it, into
    /// the folder `dir` (see `assets/worker.py`).
    pub async fn render(
        &mut self,
        frame: i32,
        dir: &Path,
        overrides: &Overrides,
    ) -> Result<Rendered, BlenderError> {
        self.inspected_blob = None;
        let command = WorkerCommand::Render {
            frame,
            dir,
            name: overrides.output_name.as_deref(),
            scene: overrides.scene.as_deref(),
            overrides,
        };
        match self.request(&command, self.max_frame_time).await? {
            WorkerAnswer::Rendered(rendered) => Ok(rendered),
            other => Err(unexpected(other)),
        }
    }

    /// Asks Blender to quit, and kills it if it does not within a few seconds.
    pub async fn quit(mut self) {
        if let Ok(mut line) = serde_json::to_string(&WorkerCommand::Quit) {
            line.push('\n');
            let _ = self.commands.write_all(line.as_bytes()).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    /// Kills Blender at once.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends `command` and waits for its answer; `hard_limit` caps the
    /// time it may take, whatever Blender does.
    async fn request(
        &mut self,
        command: &WorkerCommand<'_>,
        hard_limit: Option<Duration>,
    ) -> Result<WorkerAnswer, BlenderError> {
        let mut line =
            serde_json::to_string(command).map_err(|err| BlenderError::Channel(err.to_string()))?;
        line.push('\n');
        lock(&self.log).reset();
        self.liveness.sign(Instant::now());
        if let Err(err) = self.commands.write_all(line.as_bytes()).await {
            return Err(self.exited_or(BlenderError::Channel(err.to_string())).await);
        }
        match self.answer(Some(self.frame_timeout), hard_limit).await? {
            WorkerAnswer::Error { message } => Err(BlenderError::Blender(message)),
            answer => Ok(answer),
        }
    }

    /// Waits for the worker's next answer while watching Blender: an exit,
    /// `quiet_limit` without a sign of life (see [`liveness`]) or
    /// `hard_limit` in all ends the wait with an error. Heartbeats and
    /// statistics are taken in on the way.
    async fn answer(
        &mut self,
        quiet_limit: Option<Duration>,
        hard_limit: Option<Duration>,
    ) -> Result<WorkerAnswer, BlenderError> {
        let started = Instant::now();
        let mut watchdog = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                line = self.answers.next_line() => {
                    let answer = match line {
                        Ok(Some(line)) => serde_json::from_str(&line).map_err(|err| {
                            BlenderError::Channel(format!("unreadable answer {line:?}: {err}"))
                        }),
                        Ok(None) => Err(self.exited_or(BlenderError::Channel("closed".into())).await),
                        Err(err) => Err(self.exited_or(BlenderError::Channel(err.to_string())).await),
                    };
                    match answer? {
                        WorkerAnswer::Alive { cpu_secs, tid } => {
                            self.heartbeat_tid = tid.or(self.heartbeat_tid);
                            self.liveness.cpu(CpuSource::Heartbeat, cpu_secs, Instant::now());
                        }
                        WorkerAnswer::Progress { stats } => lock(&self.log).stats(&stats),
                        answer => return Ok(answer),
                    }
                }
                _ = watchdog.tick() => {
                    let now = Instant::now();
                    if let Some(pid) = self.child.id()
                        && let Some(cpu_secs) = liveness::proc_cpu_secs(pid, self.heartbeat_tid)
                    {
                        self.liveness.cpu(CpuSource::Proc, cpu_secs, now);
                    }
                    if let Some(limit) = hard_limit
                        && started.elapsed() > limit
                    {
                        self.kill().await;
                        return Err(BlenderError::TooLong {
                            secs: limit.as_secs(),
                            log_tail: lock(&self.log).tail(),
                        });
                    }
                    let Some(limit) = quiet_limit else { continue };
                    let quiet = lock(&self.log)
                        .last_output
                        .elapsed()
                        .min(self.liveness.quiet_for(now));
                    if quiet > limit {
                        self.kill().await;
                        return Err(BlenderError::Hung {
                            secs: limit.as_secs(),
                            log_tail: lock(&self.log).tail(),
                        });
                    }
                }
            }
        }
    }

    /// After the channel broke: if Blender has exited (or exits within a
    /// moment), report that with its last lines; else report `otherwise`.
    async fn exited_or(&mut self, otherwise: BlenderError) -> BlenderError {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(status) => {
                // Let the output readers drain what Blender printed last.
                tokio::time::sleep(Duration::from_millis(100)).await;
                BlenderError::Exited {
                    status: status.map_or_else(|err| err.to_string(), exit_text),
                    log_tail: lock(&self.log).tail(),
                }
            }
            Err(_) => otherwise,
        }
    }
}

fn unexpected(answer: WorkerAnswer) -> BlenderError {
    let what = match answer {
        WorkerAnswer::Hello { .. } => "hello",
        WorkerAnswer::Alive { .. } => "alive",
        WorkerAnswer::Progress { .. } => "progress",
        WorkerAnswer::Loaded(_) => "loaded",
        WorkerAnswer::Rendered(_) => "rendered",
        WorkerAnswer::Inspected { .. } => "inspected",
        WorkerAnswer::Error { .. } => "error",
    };
    BlenderError::Channel(format!("unexpected answer '{what}' from the worker"))
}

/// Locks the output log; a poisoned lock still holds usable lines.
pub fn lock(log: &Mutex<OutputLog>) -> std::sync::MutexGuard<'_, OutputLog> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn exit_text(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

async fn read_output(stream: impl AsyncRead + Unpin, log: Arc<Mutex<OutputLog>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::trace!(target: "herd::blender", "{line}");
        lock(&log).push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_from_cycles_and_eevee_lines() {
        let cycles = "Fra:3 Mem:9.46M (Peak 9.46M) | Time:00:00.02 | Mem:0.35M, Peak:0.35M | Demo, ViewLayer | Sample 4/16";
        assert_eq!(parse_progress(cycles), Some(0.25));
        let tiles =
            "Fra:1 Mem:9M | Time:00:01.00 | Scene, ViewLayer | Rendered 2/4 Tiles, Sample 8/16";
        assert_eq!(parse_progress(tiles), Some(0.375));
        let eevee = "Fra:1 Mem:30M | Time:00:02.00 | Scene, ViewLayer | Rendering 16 / 64 samples";
        assert_eq!(parse_progress(eevee), Some(0.25));
        assert_eq!(parse_progress("Fra:1 | Scene | Finished"), Some(1.0));
        assert_eq!(parse_progress("Fra:1 | Scene | Updating Shaders"), None);
        assert_eq!(parse_progress("Blender 3.4.1"), None);
        assert_eq!(parse_progress("| Sample 3/0"), None);
    }

    #[test]
    fn log_keeps_only_the_tail() {
        let mut log = OutputLog::new();
        for i in 0..100 {
            log.push(format!("line {i}"));
        }
        let tail = log.tail();
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 99"));
    }
}
