//! The node's render table: every render it was asked for, the queue in
//! arrival order, and which one Blender is on. Plain data, no I/O: the API
//! and the renderer change it under the node's lock.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::blobs::BlobPin;
use super::jobs::JobFolder;
use crate::blender::{OutputLog, lock};
use crate::wire::{NodeState, Overrides, RenderState, RenderStatus};

/// Finished renders kept for the controller to fetch; older ones are dropped
/// with their files.
const FINISHED_KEPT: usize = 1000;

/// One render the node was asked for.
#[derive(Debug)]
struct Render {
    status: RenderStatus,
    /// The table's sequence number when this render last changed.
    changed: u64,
    overrides: Overrides,
    queued_at: Instant,
    /// The blobs it needs (the .blend first) and their folder: held until
    /// it ends.
    input: Option<JobInput>,
    cancel: CancellationToken,
    image: Option<PathBuf>,
    dir: Option<PathBuf>,
    /// The image its thumbnail is made from, when asked for.
    preview: Option<PathBuf>,
    log: Option<Arc<Mutex<OutputLog>>>,
}

/// What a render needs on disk: its blobs, pinned, and the folder they are
/// laid out in.
#[derive(Debug)]
pub struct JobInput {
    /// The .blend's blob and then the other files'.
    pub pins: Vec<BlobPin>,
    /// The job's folder.
    pub folder: Arc<JobFolder>,
}

/// What the renderer needs to render one frame.
#[derive(Debug, Clone)]
pub struct RenderTask {
    /// Render id.
    pub id: String,
    /// The .blend's blob (its SHA-256).
    pub blob: String,
    /// The .blend on disk, in its job's folder.
    pub blend: PathBuf,
    /// The job's folder: Blender is pointed at files inside it only.
    pub folder: PathBuf,
    /// Frame number.
    pub frame: i32,
    /// Changes to the file's settings.
    pub overrides: Overrides,
    /// Cancelled by `DELETE` or shutdown.
    pub cancel: CancellationToken,
}

/// An image that passed its checks.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The frame's main image.
    pub image: PathBuf,
    /// The render's folder.
    pub dir: PathBuf,
    /// Every file the frame wrote, relative to `dir`.
    pub outputs: Vec<String>,
    /// What the worker changed and the controller should say.
    pub notes: Vec<String>,
    /// Seconds before the first sample.
    pub prep_secs: Option<f64>,
    /// The image herd decodes for its thumbnail: the frame itself when it
    /// is a PNG or JPEG, else Blender's 8-bit copy of the result.
    pub preview: PathBuf,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The thumbnail's pixels, for a window on the node.
    pub thumbnail: Arc<image::RgbImage>,
}

/// Where a done render's files are.
#[derive(Debug, Clone)]
pub struct FinishedFiles {
    /// The frame's own image.
    pub image: PathBuf,
    /// The render's folder.
    pub dir: PathBuf,
    /// The image its thumbnail is made from.
    pub preview: PathBuf,
}

/// All renders of this node.
#[derive(Debug, Default)]
pub struct Renders {
    map: HashMap<String, Render>,
    queue: VecDeque<String>,
    finished: VecDeque<String>,
    current: Option<String>,
    /// Paused by the owner: no new frame starts.
    pub paused: bool,
    /// Frames rendered successfully since start.
    pub frames_rendered: u64,
    /// The thumbnail of the frame finished last, with its frame number.
    pub last_preview: Option<(i32, Arc<image::RgbImage>)>,
    /// Process id of the running Blender.
    pub blender_pid: Option<u32>,
    /// Renders forgotten whose folders are still to be removed.
    forgotten: Vec<String>,
    /// Bumped on every change of a render's state.
    seq: u64,
}

impl Renders {
    /// Queues a render of `frame` of the job laid out in `input`; returns
    /// its id.
    pub fn enqueue(
        &mut self,
        input: JobInput,
        frame: i32,
        overrides: Overrides,
        shutdown: &CancellationToken,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let status = RenderStatus {
            id: id.clone(),
            blob: input
                .pins
                .first()
                .map(|pin| pin.hash().to_string())
                .unwrap_or_default(),
            frame,
            state: RenderState::Queued,
            progress: 0.0,
            load_secs: None,
            render_secs: None,
            queued_secs: None,
            width: None,
            height: None,
            extension: None,
            error: None,
            log_tail: Vec::new(),
            missing_files: Vec::new(),
            outputs: Vec::new(),
            notes: Vec::new(),
            prep_secs: None,
        };
        self.map.insert(
            id.clone(),
            Render {
                status,
                overrides,
                queued_at: Instant::now(),
                input: Some(input),
                cancel: shutdown.child_token(),
                image: None,
                dir: None,
                preview: None,
                log: None,
                changed: 0,
            },
        );
        self.queue.push_back(id.clone());
        self.touch(&id);
        id
    }

    /// Records that render `id` changed.
    fn touch(&mut self, id: &str) {
        self.seq += 1;
        if let Some(render) = self.map.get_mut(id) {
            render.changed = self.seq;
        }
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Renders that are not finished, and finished ones that changed after
    /// `since`: what a controller watching the node needs to see.
    pub fn changes_since(&self, since: u64) -> Vec<RenderStatus> {
        let mut changed: Vec<&Render> = self
            .map
            .values()
            .filter(|render| !render.status.state.is_final() || render.changed > since)
            .collect();
        changed.sort_by_key(|render| render.changed);
        changed
            .into_iter()
            .filter_map(|render| self.status(&render.status.id))
            .collect()
    }

    /// Takes the next queued render for the renderer, unless paused or busy.
    pub fn start_next(&mut self) -> Option<RenderTask> {
        if self.paused || self.current.is_some() {
            return None;
        }
        let id = self.queue.pop_front()?;
        let render = self.map.get_mut(&id)?;
        let folder = &render.input.as_ref()?.folder;
        let (blend, folder) = (folder.blend.clone(), folder.dir.clone());
        render.status.state = RenderState::Loading;
        render.status.queued_secs = Some(render.queued_at.elapsed().as_secs_f64());
        let task = RenderTask {
            id: id.clone(),
            blob: render.status.blob.clone(),
            blend,
            folder,
            frame: render.status.frame,
            overrides: render.overrides.clone(),
            cancel: render.cancel.clone(),
        };
        self.current = Some(id.clone());
        self.touch(&id);
        Some(task)
    }

    /// Notes the files the render's scene reads that the node lacks.
    pub fn set_missing(&mut self, id: &str, missing: Vec<String>) {
        if let Some(render) = self.map.get_mut(id) {
            render.status.missing_files = missing;
        }
    }

    /// The current render moved on to `state` (loading or rendering), with
    /// Blender's output to follow.
    pub fn set_phase(&mut self, id: &str, state: RenderState, log: Arc<Mutex<OutputLog>>) {
        if let Some(render) = self.map.get_mut(id) {
            render.status.state = state;
            render.log = Some(log);
        }
        self.touch(id);
    }

    /// Blender is done with the current render: it is no longer current.
    /// `Ok` leaves it rendering while its image is checked; `Err` ends it.
    pub fn blender_done(
        &mut self,
        id: &str,
        load_secs: Option<f64>,
        result: Result<f64, (RenderState, String)>,
    ) {
        if self.current.as_deref() == Some(id) {
            self.current = None;
        }
        self.touch(id);
        let Some(render) = self.map.get_mut(id) else {
            return;
        };
        render.status.load_secs = load_secs;
        let tail = render.log.take().map(|log| lock(&log).tail());
        render.status.log_tail = tail.unwrap_or_default();
        match result {
            Ok(render_secs) => {
                render.status.render_secs = Some(render_secs);
                render.status.progress = 1.0;
            }
            Err((state, error)) => {
                render.status.state = state;
                render.status.error = Some(error);
                self.retire(id);
            }
        }
    }

    /// The image of a render was checked: done, or failed with the reason.
    pub fn image_checked(&mut self, id: &str, result: Result<Finished, String>) {
        self.touch(id);
        let Some(render) = self.map.get_mut(id) else {
            return;
        };
        if render.status.state.is_final() {
            return;
        }
        match result {
            Ok(finished) => {
                render.status.state = RenderState::Done;
                render.status.width = Some(finished.width);
                render.status.height = Some(finished.height);
                render.status.extension = finished
                    .image
                    .extension()
                    .map(|ext| ext.to_string_lossy().into_owned());
                render.status.outputs = finished.outputs;
                render.status.notes = finished.notes;
                render.status.prep_secs = finished.prep_secs;
                render.image = Some(finished.image);
                render.dir = Some(finished.dir);
                render.preview = Some(finished.preview);
                self.frames_rendered += 1;
                self.last_preview = Some((render.status.frame, finished.thumbnail));
            }
            Err(error) => {
                render.status.state = RenderState::Failed;
                render.status.error = Some(error);
            }
        }
        self.retire(id);
    }

    /// Cancels a render: a queued one leaves the queue at once, the current
    /// one has its token cancelled (the renderer stops Blender), and a
    /// finished one is forgotten with its files. Returns the render's status,
    /// `None` for an unknown id.
    pub fn cancel(&mut self, id: &str) -> Option<RenderStatus> {
        self.touch(id);
        let render = self.map.get_mut(id)?;
        if render.status.state.is_final() {
            let status = self.status(id);
            self.forget(id);
            return status;
        }
        render.cancel.cancel();
        if render.status.state == RenderState::Queued {
            render.status.state = RenderState::Cancelled;
            render.status.error = Some("cancelled before it started".into());
            self.queue.retain(|queued| queued != id);
            self.retire(id);
        }
        self.status(id)
    }

    /// A finished render's end: its blob is unpinned and the oldest finished
    /// renders beyond the kept number are forgotten.
    fn retire(&mut self, id: &str) {
        if let Some(render) = self.map.get_mut(id) {
            render.input = None;
            render.log = None;
        }
        self.finished.push_back(id.to_string());
        while self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.forget(&old);
            }
        }
    }

    fn forget(&mut self, id: &str) {
        if self.map.remove(id).is_some() {
            self.finished.retain(|finished| finished != id);
            self.forgotten.push(id.to_string());
        }
    }

    /// Ids of forgotten renders whose folders are to be removed.
    pub fn take_forgotten(&mut self) -> Vec<String> {
        std::mem::take(&mut self.forgotten)
    }

    /// A render's status, with live progress and log lines while it runs.
    pub fn status(&self, id: &str) -> Option<RenderStatus> {
        let render = self.map.get(id)?;
        let mut status = render.status.clone();
        if let Some(log) = &render.log {
            let log = lock(log);
            if status.state == RenderState::Rendering {
                status.progress = log.progress();
            }
            status.log_tail = log.tail();
        }
        Some(status)
    }

    /// The finished image of a render, if it is done.
    pub fn image(&self, id: &str) -> Option<FinishedFiles> {
        let render = self.map.get(id)?;
        Some(FinishedFiles {
            image: render.image.clone()?,
            dir: render.dir.clone()?,
            preview: render.preview.clone()?,
        })
    }

    /// One of a done render's outputs (as listed in its status), by its
    /// path relative to the render.
    pub fn output(&self, id: &str, output: &str) -> Option<PathBuf> {
        let render = self.map.get(id)?;
        let listed = render.status.outputs.iter().any(|known| known == output);
        Some(render.dir.as_ref()?.join(output)).filter(|_| listed)
    }

    /// The current render: id, frame, progress.
    pub fn current(&self) -> Option<(String, i32, f32)> {
        let id = self.current.as_ref()?;
        let status = self.status(id)?;
        Some((id.clone(), status.frame, status.progress))
    }

    /// Renders waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// What the node is doing, as announced.
    pub fn node_state(&self) -> NodeState {
        let current_state = self
            .current
            .as_ref()
            .and_then(|id| self.map.get(id))
            .map(|render| render.status.state);
        match current_state {
            Some(RenderState::Loading) => NodeState::Loading,
            Some(_) => NodeState::Rendering,
            None if self.paused => NodeState::Paused,
            None => NodeState::Idle,
        }
    }
}
