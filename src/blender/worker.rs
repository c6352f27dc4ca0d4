//! The worker: one Blender in background mode running `assets/worker.py`,
//! commanded over a private loopback TCP connection.

use super::log::read_output;
use super::*;

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
        // The first look after one period: a frame shorter than that is
        // never watched (reading /proc costs more than such a frame's
        // Python work).
        let period = Duration::from_millis(500);
        let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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
