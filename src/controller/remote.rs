//! One task per node in a job: it sends the .blend (HEAD first, so a node
//! that has it is not sent it again), posts the frames the scheduler assigns,
//! polls their progress, fetches and checks the images, and reports what it
//! sees. A node that stops answering for `loss_timeout` is reported lost and
//! the task ends; the engine starts a new one if the node comes back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::output::{self, OutputDir};
use super::scheduler::{FrameIndex, NodeId};
use crate::wire::{NodeInfo, Overrides, RenderState, RenderStatus};

/// What every node task of a job shares.
#[derive(Debug)]
pub struct JobContext {
    /// The .blend on the controller.
    pub blend: PathBuf,
    /// Its SHA-256.
    pub blob: String,
    /// Its size in bytes.
    pub blob_bytes: u64,
    /// Overrides of the file's settings.
    pub overrides: Overrides,
    /// Where frames go.
    pub output: OutputDir,
    /// The size every frame must have, when known.
    pub expected_size: Option<(u32, u32)>,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Shared secret of the nodes.
    pub token: Option<String>,
    /// How often renders are polled.
    pub poll_interval: Duration,
    /// How long a node may fail to answer before it counts as lost.
    pub loss_timeout: Duration,
}

/// What the engine asks a node task to do.
#[derive(Debug)]
pub enum ToNode {
    /// Render this frame.
    Assign {
        /// Index in the job.
        frame: FrameIndex,
        /// Frame number.
        number: i32,
    },
    /// Drop this frame (and its result).
    Cancel {
        /// Index in the job.
        frame: FrameIndex,
    },
    /// Fetch this frame's image into the output folder.
    Download {
        /// Index in the job.
        frame: FrameIndex,
    },
}

/// What a node task saw.
#[derive(Debug)]
pub enum Report {
    /// The node's files are being sent.
    Uploading,
    /// The node has the .blend.
    Ready,
    /// The node's own state and activity.
    Info(Box<NodeInfo>),
    /// The node stopped answering; its render ids, to cancel if it returns.
    Lost {
        /// Why.
        reason: String,
        /// Renders it may still hold.
        stale: Vec<String>,
    },
    /// A frame began rendering.
    Started(FrameIndex),
    /// A frame's progress.
    Progress(FrameIndex, f32),
    /// A frame finished rendering on the node.
    Rendered(FrameIndex),
    /// A frame's image is in the output folder.
    Done(FrameIndex),
    /// A frame failed.
    Failed(FrameIndex, String),
}

/// A report from node `node`.
#[derive(Debug)]
pub struct FromNode {
    /// The node.
    pub node: NodeId,
    /// What it saw.
    pub report: Report,
}

#[derive(Debug)]
struct Tracked {
    id: String,
    number: i32,
    started: bool,
    rendered: bool,
}

struct Task {
    ctx: Arc<JobContext>,
    node: NodeId,
    uri: String,
    reports: mpsc::Sender<FromNode>,
    renders: BTreeMap<FrameIndex, Tracked>,
    failing_since: Option<Instant>,
    last_info: Option<Instant>,
}

/// Why a request failed: the node is unreachable, or it answered an error.
enum CallError {
    Transport(String),
    Status(u16, String),
}

impl CallError {
    fn message(&self) -> String {
        match self {
            Self::Transport(reason) => reason.clone(),
            Self::Status(status, message) => format!("{status}: {message}"),
        }
    }
}

/// Runs the task for `node` at `uri` until the engine drops its channel or
/// the node is lost. `stale` are renders of an earlier connection to cancel.
pub async fn run(
    ctx: Arc<JobContext>,
    node: NodeId,
    uri: String,
    stale: Vec<String>,
    mut commands: mpsc::Receiver<ToNode>,
    reports: mpsc::Sender<FromNode>,
) {
    let mut task = Task {
        ctx,
        node,
        uri,
        reports,
        renders: BTreeMap::new(),
        failing_since: None,
        last_info: None,
    };
    for id in stale {
        let _ = task
            .call(reqwest::Method::DELETE, &format!("renders/{id}"), None)
            .await;
    }
    task.report(Report::Uploading).await;
    if let Err(reason) = task.upload().await {
        task.lost(reason).await;
        return;
    }
    task.report(Report::Ready).await;
    let mut poll = tokio::time::interval(task.ctx.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => task.command(command).await,
                None => {
                    task.cancel_all().await;
                    return;
                }
            },
            _ = poll.tick() => {
                if let Err(reason) = task.poll().await {
                    task.lost(reason).await;
                    return;
                }
            }
        }
    }
}

impl Task {
    async fn report(&self, report: Report) {
        let _ = self
            .reports
            .send(FromNode {
                node: self.node,
                report,
            })
            .await;
    }

    async fn lost(&mut self, reason: String) {
        let stale = std::mem::take(&mut self.renders)
            .into_values()
            .map(|tracked| tracked.id)
            .collect();
        self.report(Report::Lost { reason, stale }).await;
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .ctx
            .client
            .request(method, format!("{}/api/v1/{path}", self.uri));
        match &self.ctx.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CallError> {
        let mut request = self.request(method, path).timeout(self.ctx.loss_timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| CallError::Transport(transport_text(&err)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string();
            Err(CallError::Status(status.as_u16(), message))
        }
    }

    /// Sends the .blend unless the node has it.
    async fn upload(&self) -> Result<(), String> {
        let path = format!("blobs/{}", self.ctx.blob);
        let head = self
            .request(reqwest::Method::HEAD, &path)
            .timeout(self.ctx.loss_timeout)
            .send()
            .await
            .map_err(|err| format!("cannot reach {}: {}", self.uri, transport_text(&err)))?;
        match head.status().as_u16() {
            200 => return Ok(()),
            404 => {}
            status => return Err(format!("{} refused the job ({status})", self.uri)),
        }
        let file = tokio::fs::File::open(&self.ctx.blend)
            .await
            .map_err(|err| format!("cannot read {}: {err}", self.ctx.blend.display()))?;
        // Generous: a slow link still gets 1 MB/s, and never less than a minute.
        let limit = Duration::from_secs(60 + self.ctx.blob_bytes / 1_000_000);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let response = self
            .request(reqwest::Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, self.ctx.blob_bytes)
            .body(body)
            .timeout(limit)
            .send()
            .await
            .map_err(|err| format!("upload to {} failed: {}", self.uri, transport_text(&err)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Err(format!(
                "{} refused the .blend: {}",
                self.uri,
                body["error"].as_str().unwrap_or("no reason given")
            ))
        }
    }

    async fn command(&mut self, command: ToNode) {
        match command {
            ToNode::Assign { frame, number } => {
                let body = serde_json::json!({
                    "blob": self.ctx.blob,
                    "frame": number,
                    "overrides": self.ctx.overrides,
                });
                match self
                    .call(reqwest::Method::POST, "renders", Some(body))
                    .await
                {
                    Ok(created) => {
                        let id = created["id"].as_str().unwrap_or_default().to_string();
                        self.renders.insert(
                            frame,
                            Tracked {
                                id,
                                number,
                                started: false,
                                rendered: false,
                            },
                        );
                    }
                    Err(err) => {
                        let error = format!(
                            "{} would not take frame {number}: {}",
                            self.uri,
                            err.message()
                        );
                        self.report(Report::Failed(frame, error)).await;
                    }
                }
            }
            ToNode::Cancel { frame } => {
                if let Some(tracked) = self.renders.remove(&frame) {
                    let path = format!("renders/{}", tracked.id);
                    let _ = self.call(reqwest::Method::DELETE, &path, None).await;
                }
            }
            ToNode::Download { frame } => {
                if let Some(tracked) = self.renders.remove(&frame) {
                    let fetch = Fetch {
                        ctx: Arc::clone(&self.ctx),
                        node: self.node,
                        uri: self.uri.clone(),
                        reports: self.reports.clone(),
                    };
                    tokio::spawn(fetch.run(frame, tracked));
                }
            }
        }
    }

    /// Polls the node's renders (and, once a second, the node itself).
    async fn poll(&mut self) -> Result<(), String> {
        let info_due = self
            .last_info
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        let mut failure = None;
        if info_due {
            match self.call(reqwest::Method::GET, "node", None).await {
                Ok(body) => {
                    self.last_info = Some(Instant::now());
                    if let Ok(info) = serde_json::from_value::<NodeInfo>(body) {
                        self.report(Report::Info(Box::new(info))).await;
                    }
                }
                Err(err) => failure = Some(err),
            }
        }
        let frames: Vec<FrameIndex> = self.renders.keys().copied().collect();
        for frame in frames {
            if failure.is_some() {
                break;
            }
            let Some(id) = self.renders.get(&frame).map(|tracked| tracked.id.clone()) else {
                continue;
            };
            match self
                .call(reqwest::Method::GET, &format!("renders/{id}"), None)
                .await
            {
                Ok(body) => match serde_json::from_value::<RenderStatus>(body) {
                    Ok(status) => self.observe(frame, status).await,
                    Err(err) => {
                        failure = Some(CallError::Transport(format!("not a render status: {err}")))
                    }
                },
                Err(CallError::Status(404, _)) => {
                    self.renders.remove(&frame);
                    let error =
                        format!("{} no longer knows this render (did it restart?)", self.uri);
                    self.report(Report::Failed(frame, error)).await;
                }
                Err(err) => failure = Some(err),
            }
        }
        match failure {
            None => {
                self.failing_since = None;
                Ok(())
            }
            Some(err) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.ctx.loss_timeout {
                    Err(format!("{} stopped answering: {}", self.uri, err.message()))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn observe(&mut self, frame: FrameIndex, status: RenderStatus) {
        let Some(tracked) = self.renders.get_mut(&frame) else {
            return;
        };
        let newly_started =
            !tracked.started && matches!(status.state, RenderState::Rendering | RenderState::Done);
        if newly_started {
            tracked.started = true;
        }
        let number = tracked.number;
        if newly_started {
            self.report(Report::Started(frame)).await;
        }
        match status.state {
            RenderState::Queued | RenderState::Loading => {}
            RenderState::Rendering => self.report(Report::Progress(frame, status.progress)).await,
            RenderState::Done => {
                if let Some(tracked) = self.renders.get_mut(&frame)
                    && !tracked.rendered
                {
                    tracked.rendered = true;
                    self.report(Report::Rendered(frame)).await;
                }
            }
            RenderState::Failed | RenderState::Cancelled => {
                self.renders.remove(&frame);
                let why = status
                    .error
                    .unwrap_or_else(|| format!("frame {number} was cancelled on the node"));
                self.report(Report::Failed(frame, why)).await;
            }
        }
    }

    /// Cancels every render this job still has on the node.
    async fn cancel_all(&mut self) {
        for tracked in std::mem::take(&mut self.renders).into_values() {
            let _ = self
                .call(
                    reqwest::Method::DELETE,
                    &format!("renders/{}", tracked.id),
                    None,
                )
                .await;
        }
    }
}

/// Fetching one frame's image, beside the node's polling.
struct Fetch {
    ctx: Arc<JobContext>,
    node: NodeId,
    uri: String,
    reports: mpsc::Sender<FromNode>,
}

impl Fetch {
    async fn run(self, frame: FrameIndex, tracked: Tracked) {
        let report = match self.fetch(&tracked).await {
            Ok(()) => Report::Done(frame),
            Err(error) => Report::Failed(frame, error),
        };
        let _ = self
            .reports
            .send(FromNode {
                node: self.node,
                report,
            })
            .await;
        // Free the node's copy; it is in the output folder now (or useless).
        let mut request = self
            .ctx
            .client
            .delete(format!("{}/api/v1/renders/{}", self.uri, tracked.id))
            .timeout(self.ctx.loss_timeout);
        if let Some(token) = &self.ctx.token {
            request = request.bearer_auth(token);
        }
        let _ = request.send().await;
    }

    async fn fetch(&self, tracked: &Tracked) -> Result<(), String> {
        let number = tracked.number;
        let mut request = self
            .ctx
            .client
            .get(format!("{}/api/v1/renders/{}/image", self.uri, tracked.id))
            .timeout(Duration::from_secs(300));
        if let Some(token) = &self.ctx.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|err| {
            format!(
                "fetching frame {number} from {} failed: {}",
                self.uri,
                transport_text(&err)
            )
        })?;
        if !response.status().is_success() {
            return Err(format!(
                "{} would not hand over frame {number}: {}",
                self.uri,
                response.status()
            ));
        }
        let bytes = response.bytes().await.map_err(|err| {
            format!(
                "fetching frame {number} from {} broke off: {}",
                self.uri,
                transport_text(&err)
            )
        })?;
        let ctx = Arc::clone(&self.ctx);
        tokio::task::spawn_blocking(move || {
            output::check_image(&bytes, ctx.expected_size)
                .map_err(|err| format!("frame {number}: {err}"))?;
            let path = ctx.output.frame_path(number);
            output::write_atomically(&ctx.output.temp_path(number), &path, &bytes)
                .map_err(|err| format!("cannot write {}: {err}", path.display()))
        })
        .await
        .map_err(|err| format!("writing frame {number} crashed: {err}"))?
    }
}

/// A transport error with its causes, short enough for a table cell.
fn transport_text(err: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
