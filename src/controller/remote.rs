//! One task per node in a job: it sends the .blend (HEAD first, so a node
//! that has it is not sent it again), posts the frames the scheduler assigns,
//! follows them, fetches and checks the images, and reports what it sees.
//!
//! Following is a long poll: a watcher keeps one `GET /api/v1/renders?since=`
//! request waiting on the node, which answers the moment a render changes
//! (and at least every half second, with progress). So a finished frame is
//! known at once, and a node that stops answering for `loss_timeout` is
//! reported lost, whether it is busy or idle; the task then ends, and the
//! engine starts a new one if the node comes back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::client::{ClientError, NodeClient};
use super::output::{self, OutputPlan};
use super::scheduler::{FrameIndex, NodeId};
use crate::wire::{
    NodeState, Overrides, RenderChanges, RenderCreated, RenderRequest, RenderState, RenderStatus,
};

/// What every node task of a job shares.
#[derive(Debug)]
pub struct JobContext {
    /// SHA-256 of the .blend.
    pub blob: String,
    /// Every blob a node needs for the job: the files the scene reads, the
    /// manifest and the .blend (last).
    pub blobs: Vec<Blob>,
    /// SHA-256 of the job's manifest, when the scene reads files.
    pub manifest: Option<String>,
    /// Overrides of the file's settings.
    pub overrides: Overrides,
    /// Where frames go.
    pub output: OutputPlan,
    /// The size every frame must have, when known.
    pub expected_size: Option<(u32, u32)>,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Shared secret of the nodes.
    pub token: Option<String>,
    /// How long a watch request waits on the node for a change.
    pub watch_wait: Duration,
    /// How long a node may fail to answer before it counts as lost.
    pub loss_timeout: Duration,
    /// The controller's own node, whose files are on this machine.
    pub local_renders: Option<LocalRenders>,
}

/// Where the controller's own node keeps its renders: its frames' files are
/// taken from there by hard link (no copy, no HTTP) when the output folder
/// is on the same filesystem, and over HTTP otherwise.
#[derive(Debug, Clone)]
pub struct LocalRenders {
    /// The local node's API address.
    pub uri: String,
    /// Its renders folder: a render's files are under `DIR/ID/`.
    pub dir: PathBuf,
}

/// A blob to send to the nodes.
#[derive(Debug, Clone)]
pub struct Blob {
    /// SHA-256.
    pub hash: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Where its bytes are.
    pub source: BlobSource,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A file on the controller.
    File(PathBuf),
    /// In memory (the manifest).
    Memory(bytes::Bytes),
}

impl BlobSource {
    /// What it is, for messages.
    fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Memory(_) => "the job's manifest".into(),
        }
    }
}

/// Blobs sent to one node at once.
const UPLOADS_IN_FLIGHT: usize = 4;

impl JobContext {
    /// Why a node whose file cache holds `cache_bytes` cannot take this
    /// job: a file larger than the cache is refused, and the job's files
    /// are kept together while its frames render.
    pub fn too_big_for(&self, cache_bytes: u64) -> Option<String> {
        let cache = bytesize::ByteSize(cache_bytes).display().iec();
        if let Some(blob) = self.blobs.iter().find(|blob| blob.bytes > cache_bytes) {
            return Some(format!(
                "its file cache ({cache}) cannot hold {} ({}): start it with a larger --cache-size",
                blob.source.describe(),
                bytesize::ByteSize(blob.bytes).display().iec()
            ));
        }
        let total: u64 = self.blobs.iter().map(|blob| blob.bytes).sum();
        (total > cache_bytes).then(|| {
            format!(
                "its file cache ({cache}) cannot hold the job's {} files together ({}): start it with a larger --cache-size",
                self.blobs.len(),
                bytesize::ByteSize(total).display().iec()
            )
        })
    }

    /// The API of the node at `uri`, for this job.
    fn api(&self, uri: &str) -> NodeClient {
        NodeClient::new(
            self.client.clone(),
            uri,
            self.token.clone(),
            self.loss_timeout,
        )
    }
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
    /// The node's own state, and the frame it renders with its progress.
    Activity(NodeState, Option<(i32, f32)>),
    /// The node answered that it cannot take this job (e.g. its disk is
    /// full); it is left out of the job.
    Refused(String),
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
    /// Files the scene reads that the node does not have (told once).
    MissingFiles(Vec<String>),
    /// What the node changed of a frame, to be said (e.g. a movie scene's
    /// frame written as PNG).
    Note(String),
    /// Seconds a frame spent before its first sample on the node.
    Prepared(f64),
}

/// A report from node `node`.
#[derive(Debug)]
pub struct FromNode {
    /// The node.
    pub node: NodeId,
    /// What it saw.
    pub report: Report,
}

/// One node's part of a job, handed to the task that serves it.
#[derive(Debug)]
pub struct NodeLink {
    /// The engine's id of the node.
    pub node: NodeId,
    /// Where it answers (`http://HOST:PORT`).
    pub uri: String,
    /// Render ids of an earlier connection to cancel first.
    pub stale: Vec<String>,
    /// What the engine asks; closed when the job no longer needs the node.
    pub commands: mpsc::Receiver<ToNode>,
    /// Where the task reports what it saw.
    pub reports: mpsc::Sender<FromNode>,
}

#[derive(Debug)]
struct Tracked {
    id: String,
    number: i32,
    started: bool,
    rendered: bool,
    posted_at: Instant,
    /// What the frame wrote, once done (paths relative to the render).
    outputs: Vec<String>,
}

struct Task {
    ctx: Arc<JobContext>,
    node: NodeId,
    uri: String,
    api: NodeClient,
    reports: mpsc::Sender<FromNode>,
    renders: BTreeMap<FrameIndex, Tracked>,
    last_answer: Instant,
    last_activity: Option<(NodeState, Option<(i32, f32)>)>,
    /// The node said which of the scene's files it lacks.
    missing_told: bool,
}

/// Why an upload failed: the node did not answer (it may come back), or it
/// answered no (it cannot take this job).
enum Upload {
    Unreachable(String),
    Refused(String),
}

/// Runs the task for `link`'s node until the engine drops its channel or
/// the node is lost; renders of an earlier connection are cancelled first.
pub async fn run(ctx: Arc<JobContext>, link: NodeLink) {
    let NodeLink {
        node,
        uri,
        stale,
        mut commands,
        reports,
    } = link;
    let api = ctx.api(&uri);
    let mut task = Task {
        ctx,
        node,
        uri,
        api,
        reports,
        renders: BTreeMap::new(),
        last_answer: Instant::now(),
        last_activity: None,
        missing_told: false,
    };
    for id in stale {
        let _ = task.api.delete_render(&id).await;
    }
    task.report(Report::Uploading).await;
    match task.upload().await {
        Ok(()) => {}
        Err(Upload::Refused(reason)) => {
            task.report(Report::Refused(reason)).await;
            return;
        }
        Err(Upload::Unreachable(reason)) => {
            task.lost(reason).await;
            return;
        }
    }
    task.report(Report::Ready).await;
    let (watched_tx, mut watched) = mpsc::channel(4);
    let watcher = tokio::spawn(watch(task.api.clone(), task.ctx.watch_wait, watched_tx));
    task.last_answer = Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(250));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => task.command(command).await,
                None => {
                    watcher.abort();
                    task.cancel_all().await;
                    return;
                }
            },
            Some((requested_at, changes)) = watched.recv() => {
                task.last_answer = Instant::now();
                task.apply(requested_at, changes).await;
            }
            _ = check.tick() => {
                if task.last_answer.elapsed() >= task.ctx.loss_timeout + task.ctx.watch_wait {
                    watcher.abort();
                    let reason = format!(
                        "{} stopped answering for {:.1} s",
                        task.uri,
                        task.last_answer.elapsed().as_secs_f64()
                    );
                    task.lost(reason).await;
                    return;
                }
            }
        }
    }
}

/// Keeps one watch request waiting on the node and forwards every answer.
/// Failed requests are retried after a short pause; the node task decides
/// when silence means the node is lost.
async fn watch(
    api: NodeClient,
    watch_wait: Duration,
    answers: mpsc::Sender<(Instant, RenderChanges)>,
) {
    // The first request only learns the node's sequence number.
    let mut since = u64::MAX;
    loop {
        let wait = if since == u64::MAX {
            Duration::ZERO
        } else {
            watch_wait
        };
        let requested_at = Instant::now();
        match api.changes(since, wait).await {
            Ok(changes) => {
                since = changes.seq;
                if answers.send((requested_at, changes)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::debug!("watching {}: {err}", api.uri());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Task {
    async fn report(&self, report: Report) {
        send_report(&self.reports, self.node, report).await;
    }

    async fn lost(&mut self, reason: String) {
        let stale = std::mem::take(&mut self.renders)
            .into_values()
            .map(|tracked| tracked.id)
            .collect();
        self.report(Report::Lost { reason, stale }).await;
    }

    /// Sends the node every blob of the job it does not have (HEAD first),
    /// a few at a time.
    async fn upload(&self) -> Result<(), Upload> {
        use futures_util::stream::{self, TryStreamExt};
        stream::iter(self.ctx.blobs.iter().map(Ok))
            .try_for_each_concurrent(UPLOADS_IN_FLIGHT, |blob| self.upload_blob(blob))
            .await
    }

    async fn upload_blob(&self, blob: &Blob) -> Result<(), Upload> {
        match self.api.has_blob(&blob.hash).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) if err.is_transport() => return Err(Upload::Unreachable(err.to_string())),
            Err(err) => {
                return Err(Upload::Refused(format!(
                    "{} refused the job ({})",
                    self.uri,
                    err.reason()
                )));
            }
        }
        let body = match &blob.source {
            BlobSource::File(file_path) => {
                let file = tokio::fs::File::open(file_path).await.map_err(|err| {
                    Upload::Refused(format!("cannot read {}: {err}", file_path.display()))
                })?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
            }
            BlobSource::Memory(bytes) => reqwest::Body::from(bytes.clone()),
        };
        // Generous: a slow link still gets 1 MB/s, and never less than a minute.
        let limit = Duration::from_secs(60 + blob.bytes / 1_000_000);
        // Another controller may send the same blob meanwhile: the client
        // counts "the node has it" as success, whatever the transfer did.
        match self.api.put_blob(&blob.hash, body, blob.bytes, limit).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_transport() => Err(Upload::Unreachable(format!(
                "upload to {} failed: {}",
                self.uri,
                err.reason()
            ))),
            Err(err) => Err(Upload::Refused(format!(
                "{} refused {} ({})",
                self.uri,
                blob.source.describe(),
                err.reason()
            ))),
        }
    }

    async fn command(&mut self, command: ToNode) {
        match command {
            ToNode::Assign { frame, number } => {
                let request = RenderRequest {
                    blob: self.ctx.blob.clone(),
                    manifest: self.ctx.manifest.clone(),
                    frame: number,
                    overrides: self.ctx.overrides.clone(),
                };
                match self.api.render(&request).await {
                    Ok(RenderCreated { id }) => {
                        self.renders.insert(
                            frame,
                            Tracked {
                                id,
                                number,
                                started: false,
                                rendered: false,
                                posted_at: Instant::now(),
                                outputs: Vec::new(),
                            },
                        );
                    }
                    Err(err) => {
                        let error = format!(
                            "{} would not take frame {number}: {}",
                            self.uri,
                            err.reason()
                        );
                        self.report(Report::Failed(frame, error)).await;
                    }
                }
            }
            ToNode::Cancel { frame } => {
                if let Some(tracked) = self.renders.remove(&frame) {
                    let _ = self.api.delete_render(&tracked.id).await;
                }
            }
            ToNode::Download { frame } => {
                if let Some(tracked) = self.renders.remove(&frame) {
                    let fetch = Fetch {
                        ctx: Arc::clone(&self.ctx),
                        node: self.node,
                        uri: self.uri.clone(),
                        api: self.api.clone(),
                        reports: self.reports.clone(),
                    };
                    tokio::spawn(fetch.run(frame, tracked));
                }
            }
        }
    }

    /// Takes in what the node says changed, in answer to a request sent at
    /// `requested_at`.
    async fn apply(&mut self, requested_at: Instant, changes: RenderChanges) {
        let statuses: BTreeMap<&str, &RenderStatus> = changes
            .renders
            .iter()
            .map(|status| (status.id.as_str(), status))
            .collect();
        let current = changes
            .renders
            .iter()
            .find(|status| status.state == RenderState::Rendering)
            .map(|status| (status.frame, status.progress));
        let activity = (changes.state, current);
        if self.last_activity != Some(activity) {
            self.last_activity = Some(activity);
            self.report(Report::Activity(changes.state, current)).await;
        }
        let tracked: Vec<(FrameIndex, String, bool)> = self
            .renders
            .iter()
            .map(|(&frame, tracked)| {
                // Unfinished renders are always in the answer: one posted
                // before the request and missing from it is gone from the
                // node (it restarted).
                let gone = tracked.posted_at < requested_at && !tracked.rendered;
                (frame, tracked.id.clone(), gone)
            })
            .collect();
        for (frame, id, gone) in tracked {
            match statuses.get(id.as_str()) {
                Some(status) => self.observe(frame, (*status).clone()).await,
                None if gone => {
                    self.renders.remove(&frame);
                    let error = format!("{} no longer has this frame (did it restart?)", self.uri);
                    self.report(Report::Failed(frame, error)).await;
                }
                None => {}
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
        if !status.missing_files.is_empty() && !self.missing_told {
            self.missing_told = true;
            self.report(Report::MissingFiles(status.missing_files.clone()))
                .await;
        }
        match status.state {
            RenderState::Queued | RenderState::Loading => {}
            RenderState::Rendering => {
                self.report(Report::Progress(frame, status.progress)).await;
            }
            RenderState::Done => {
                if let Some(tracked) = self.renders.get_mut(&frame)
                    && !tracked.rendered
                {
                    tracked.rendered = true;
                    tracked.outputs = status.outputs.clone();
                    for note in &status.notes {
                        self.report(Report::Note(note.clone())).await;
                    }
                    if let Some(secs) = status.prep_secs {
                        self.report(Report::Prepared(secs)).await;
                    }
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
            let _ = self.api.delete_render(&tracked.id).await;
        }
    }
}

/// Tells the engine what `node`'s task saw (nothing, when the job is over).
async fn send_report(reports: &mpsc::Sender<FromNode>, node: NodeId, report: Report) {
    let _ = reports.send(FromNode { node, report }).await;
}

/// Fetching one frame's image, beside the node's watching.
struct Fetch {
    ctx: Arc<JobContext>,
    node: NodeId,
    uri: String,
    api: NodeClient,
    reports: mpsc::Sender<FromNode>,
}

impl Fetch {
    async fn run(self, frame: FrameIndex, tracked: Tracked) {
        let report = match self.fetch(&tracked).await {
            Ok(()) => Report::Done(frame),
            Err(error) => Report::Failed(frame, error),
        };
        send_report(&self.reports, self.node, report).await;
        // Free the node's copy; it is in the output folder now (or useless).
        let _ = self.api.delete_render(&tracked.id).await;
    }

    /// Fetches every file the frame wrote into a temporary file beside its
    /// place, checks them, and only then renames them all into place: a
    /// frame is in when all its outputs are.
    async fn fetch(&self, tracked: &Tracked) -> Result<(), String> {
        let number = tracked.number;
        // Nodes that list no outputs hand over the frame's image only.
        let outputs = if tracked.outputs.is_empty() {
            vec![String::new()]
        } else {
            tracked.outputs.clone()
        };
        let mut fetched: Vec<(PathBuf, PathBuf)> = Vec::new();
        let result = async {
            for output in &outputs {
                let (remote, path) = if output.is_empty() {
                    let path = self.ctx.output.frame_path(number);
                    (format!("renders/{}/image", tracked.id), path)
                } else {
                    let path = self.ctx.output.place(output).ok_or_else(|| {
                        format!(
                            "{} named an output outside the job's folders: {output:?}",
                            self.uri
                        )
                    })?;
                    (format!("renders/{}/files/{output}", tracked.id), path)
                };
                let temp = output::temp_path(&path);
                fetched.push((temp.clone(), path.clone()));
                let linked = match self.local_file(&tracked.id, output) {
                    Some(local) => link(local, temp.clone()).await,
                    None => false,
                };
                if !linked {
                    self.download(&remote, number, &temp).await?;
                }
                let main = output.is_empty() || output.starts_with("image/");
                let expected = self.ctx.expected_size.filter(|_| main);
                let (checked, shown) = (temp.clone(), path.clone());
                tokio::task::spawn_blocking(move || {
                    output::check_file_as(&checked, &shown, expected)
                })
                .await
                .map_err(|err| format!("checking frame {number} crashed: {err}"))?
                .map_err(|err| format!("frame {number}: {err}"))?;
            }
            // The frame's own image goes in last: a frame whose image is in
            // place has all its files, which is what a resumed job checks.
            let main = self.ctx.output.frame_path(number);
            let mut renamed = fetched.clone();
            renamed.sort_by_key(|(_, path)| *path == main);
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                for (temp, path) in &renamed {
                    std::fs::rename(temp, path)
                        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
                }
                Ok(())
            })
            .await
            .map_err(|err| format!("writing frame {number} crashed: {err}"))?
        }
        .await;
        if result.is_err() {
            for (temp, _) in &fetched {
                let _ = tokio::fs::remove_file(temp).await;
            }
        }
        result
    }

    /// Where `output` of render `id` is on this machine's disk, when this
    /// task's node is the controller's own.
    fn local_file(&self, id: &str, output: &str) -> Option<PathBuf> {
        let local = self.ctx.local_renders.as_ref()?;
        let plain = |path: &str| {
            !path.is_empty()
                && std::path::Path::new(path)
                    .components()
                    .all(|part| matches!(part, std::path::Component::Normal(_)))
        };
        (local.uri == self.uri && plain(id) && plain(output))
            .then(|| local.dir.join(id).join(output))
    }

    /// Streams one file from the node to `temp` and flushes it to disk.
    async fn download(
        &self,
        remote: &str,
        number: i32,
        temp: &std::path::Path,
    ) -> Result<(), String> {
        match self.api.download(remote, temp, DOWNLOAD_LIMIT).await {
            Ok(_) => Ok(()),
            Err(err @ ClientError::Write { .. }) => Err(err.to_string()),
            Err(err) if err.is_transport() => Err(format!(
                "fetching frame {number} from {} failed: {}",
                self.uri,
                err.reason()
            )),
            Err(err) => Err(format!(
                "{} would not hand over frame {number} ({remote}): {}",
                self.uri,
                err.reason()
            )),
        }
    }
}

/// How long one of a frame's files may take to arrive.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(300);

/// Hard-links the local node's file `from` at `temp`, flushed to disk as a
/// download is; false when that cannot be done (another filesystem, say),
/// and the file is fetched over HTTP instead.
async fn link(from: PathBuf, temp: PathBuf) -> bool {
    let linked = tokio::task::spawn_blocking(move || output::link_synced(&from, &temp)).await;
    match linked {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!("cannot link the local node's file, fetching it: {err}");
            false
        }
        Err(_) => false,
    }
}
