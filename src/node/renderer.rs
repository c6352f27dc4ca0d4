//! The node's renderer: takes queued renders one after another, keeps one
//! Blender loaded between them, and checks every image before calling a
//! frame done. Checking (decode, size) runs beside the next frame's render,
//! so Blender never waits for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::renders::{Finished, FinishedFiles, RenderTask};
use super::{InspectRequest, Node};
use crate::blender::{BlenderError, Rendered, Worker, lock};
use crate::wire::RenderState;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_PX: u32 = 256;

/// Renders queued frames until the node shuts down, then ends Blender.
pub async fn run(node: Arc<Node>) {
    let mut worker: Option<Worker> = None;
    // Keep a Blender started ahead of work, so a file's first frame pays only
    // its load. After a failed start, Blender starts with the next frame
    // instead (which then reports why it cannot).
    let mut warm = node.simulate.is_none();
    loop {
        if warm && worker.is_none() {
            let started = tokio::select! {
                started = Worker::start(&node.blender) => Some(started),
                () = node.shutdown.cancelled() => None,
            };
            match started {
                None => break,
                Some(Ok(ready)) => {
                    let pid = ready.pid();
                    node.update_quiet(|renders| renders.blender_pid = pid);
                    worker = Some(ready);
                }
                Some(Err(err)) => {
                    tracing::warn!("cannot start Blender ahead of work: {err}");
                    warm = false;
                }
            }
        }
        let job = tokio::select! {
            work = next_work(&node) => match work {
                Work::Render(job) => job,
                Work::Inspect(request) => {
                    inspect(&node, &mut worker, request).await;
                    continue;
                }
            },
            () = node.shutdown.cancelled() => break,
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = async {
                match node.simulate {
                    Some(per_frame) => simulate(&node, &job, per_frame).await,
                    None => render(&node, &mut worker, &job).await,
                }
            } => Some(outcome),
            () = job.cancel.cancelled() => None,
        };
        let (load_secs, result) = match outcome {
            Some(outcome) => outcome,
            None => {
                // Cancelled mid-frame: Blender is stopped, whatever it was doing.
                if let Some(mut stopped) = worker.take() {
                    stopped.kill().await;
                }
                let why = if node.shutdown.is_cancelled() {
                    "cancelled: the node is shutting down"
                } else {
                    "cancelled"
                };
                (None, Err(RenderFailure::Cancelled(why.to_string())))
            }
        };
        if matches!(&result, Err(RenderFailure::BlenderGone(_))) {
            worker = None;
        }
        match result {
            Ok(rendered) => {
                node.update_quiet(|renders| {
                    renders.blender_done(&job.id, load_secs, Ok(rendered.render_secs));
                });
                tokio::spawn(check_image(Arc::clone(&node), job.id.clone(), rendered));
            }
            Err(failure) => {
                let (state, message) = failure.into_parts();
                tracing::warn!("frame {} ({}) {state:?}: {message}", job.frame, job.id);
                node.update_quiet(|renders| {
                    renders.blender_done(&job.id, load_secs, Err((state, message)));
                });
            }
        }
        tracing::debug!(
            "frame {} took {:.2} s",
            job.frame,
            started.elapsed().as_secs_f64()
        );
        let pid = worker.as_ref().and_then(Worker::pid);
        warm |= pid.is_some() && node.simulate.is_none();
        let forgotten = node.update_quiet(|renders| {
            renders.blender_pid = pid;
            renders.take_forgotten()
        });
        if !forgotten.is_empty() {
            // Off the render loop: the next frame starts now.
            tokio::spawn(remove_dirs(Arc::clone(&node), forgotten));
        }
    }
    if let Some(worker) = worker {
        worker.quit().await;
    }
    node.update_quiet(|renders| renders.blender_pid = None);
}

/// What the renderer does next.
enum Work {
    /// Render a frame.
    Render(RenderTask),
    /// Read a scene for the controller this node belongs to.
    Inspect(InspectRequest),
}

async fn next_work(node: &Node) -> Work {
    loop {
        let notified = node.work.notified();
        if let Some(request) = node.next_inspection() {
            return Work::Inspect(request);
        }
        if let Some(job) = node.update_quiet(|renders| renders.start_next()) {
            return Work::Render(job);
        }
        notified.await;
    }
}

/// Reads a scene with the node's Blender (started if needed) and answers.
async fn inspect(node: &Node, worker: &mut Option<Worker>, request: InspectRequest) {
    let result = async {
        if worker.is_none() {
            let started = Worker::start(&node.blender)
                .await
                .map_err(|err| err.to_string())?;
            let pid = started.pid();
            node.update_quiet(|renders| renders.blender_pid = pid);
            *worker = Some(started);
        }
        let Some(blender) = worker.as_mut() else {
            return Err("Blender is not running".to_string());
        };
        let read = blender
            .inspect(&request.path, request.scene.as_deref())
            .await;
        if matches!(&read, Err(err) if !matches!(err, BlenderError::Blender(_))) {
            // Blender died or hung: the next work starts a fresh one.
            *worker = None;
        }
        read.map_err(|err| err.to_string())
    }
    .await;
    let _ = request.answer.send(result);
}

/// Why a frame did not render.
#[derive(Debug)]
enum RenderFailure {
    /// Blender answered with an error and is still usable.
    Blender(String),
    /// Blender died, hung or lost its channel: it must be started again.
    BlenderGone(String),
    /// Cancelled by the controller or by shutdown.
    Cancelled(String),
    /// The node could not prepare the frame's folder.
    Node(String),
}

impl RenderFailure {
    fn into_parts(self) -> (RenderState, String) {
        match self {
            Self::Cancelled(why) => (RenderState::Cancelled, why),
            Self::Blender(why) | Self::BlenderGone(why) | Self::Node(why) => {
                (RenderState::Failed, why)
            }
        }
    }
}

impl From<BlenderError> for RenderFailure {
    fn from(err: BlenderError) -> Self {
        match err {
            BlenderError::Blender(message) => Self::Blender(message),
            BlenderError::Cancelled => Self::Cancelled(err.to_string()),
            other => Self::BlenderGone(other.to_string()),
        }
    }
}

/// Starts Blender if needed, loads the job's .blend if it is not the loaded
/// one, and renders the frame. Returns the seconds spent starting and
/// loading (when it had to) and the result.
async fn render(
    node: &Arc<Node>,
    worker: &mut Option<Worker>,
    job: &RenderTask,
) -> (Option<f64>, Result<Rendered, RenderFailure>) {
    let load_started = Instant::now();
    let mut loaded_now = false;
    if worker.is_none() {
        match Worker::start(&node.blender).await {
            Ok(started) => {
                let pid = started.pid();
                node.update_quiet(|renders| renders.blender_pid = pid);
                *worker = Some(started);
            }
            Err(err) => return (None, Err(RenderFailure::BlenderGone(err.to_string()))),
        }
        loaded_now = true;
    }
    let Some(blender) = worker.as_mut() else {
        return (
            None,
            Err(RenderFailure::Node("Blender is not running".into())),
        );
    };
    if blender.loaded() != Some(job.blend.as_path()) {
        node.update_quiet(|renders| {
            renders.set_phase(&job.id, RenderState::Loading, blender.log())
        });
        match blender.load(&job.blend, &job.folder, Some(&job.blob)).await {
            Ok(loaded) if loaded.kept => {
                tracing::debug!("kept the inspected scene for blob {}", job.blob);
            }
            Ok(_) => {}
            Err(err) => {
                let secs = load_started.elapsed().as_secs_f64();
                return (Some(secs), Err(load_failure(err, &job.blob)));
            }
        }
        loaded_now = true;
    }
    let load_secs = loaded_now.then(|| load_started.elapsed().as_secs_f64());
    let missing = blender.missing().to_vec();
    node.update_quiet(|renders| {
        renders.set_missing(&job.id, missing);
        renders.set_phase(&job.id, RenderState::Rendering, blender.log());
    });
    let dir = match create_dir(node, &job.id).await {
        Ok(dir) => dir,
        Err(failure) => return (load_secs, Err(failure)),
    };
    let result = blender.render(job.frame, &dir, &job.overrides).await;
    let prep_secs = lock(&blender.log()).prep_secs();
    let result = result.map(|rendered| Rendered {
        prep_secs,
        ..rendered
    });
    (load_secs, result.map_err(RenderFailure::from))
}

/// Width and height of the simulated renderer's frames at 100 %: the demo
/// scene's.
pub const SIMULATED_SIZE: (u32, u32) = (320, 180);

/// The simulated renderer: writes a flat image of [`SIMULATED_SIZE`] at the
/// requested percentage and answers `per_frame` after it began. For scheduler tests and
/// scale benchmarks only; it never starts Blender.
async fn simulate(
    node: &Arc<Node>,
    job: &RenderTask,
    per_frame: std::time::Duration,
) -> (Option<f64>, Result<Rendered, RenderFailure>) {
    let log = Arc::new(std::sync::Mutex::new(crate::blender::OutputLog::new()));
    node.update_quiet(|renders| renders.set_phase(&job.id, RenderState::Rendering, log));
    // The frame takes `per_frame` in all, its image included.
    let started = tokio::time::Instant::now();
    let percent = job.overrides.resolution_percent.unwrap_or(100);
    let width = (SIMULATED_SIZE.0 * percent / 100).max(1);
    let height = (SIMULATED_SIZE.1 * percent / 100).max(1);
    let dir = match create_dir(node, &job.id).await {
        Ok(dir) => dir,
        Err(failure) => return (None, Err(failure)),
    };
    let name = format!("frame_{:04}.png", job.frame);
    let path = dir.join("image").join(&name);
    let shade = u8::try_from(job.frame.rem_euclid(256)).unwrap_or(0);
    let written = tokio::task::spawn_blocking({
        let path = path.clone();
        move || -> Result<(), String> {
            image::RgbImage::from_pixel(width, height, image::Rgb([shade, 96, 160]))
                .save(&path)
                .map_err(|err| err.to_string())
        }
    })
    .await
    .unwrap_or_else(|err| Err(err.to_string()));
    tokio::time::sleep_until(started + per_frame).await;
    let result = written.map_err(RenderFailure::Node).map(|()| Rendered {
        frame: job.frame,
        dir: dir.clone(),
        outputs: vec![format!("image/{name}")],
        preview: path,
        notes: Vec::new(),
        prep_secs: None,
        render_secs: started.elapsed().as_secs_f64(),
        width: Some(width),
        height: Some(height),
    });
    (None, result)
}

fn load_failure(err: BlenderError, blob: &str) -> RenderFailure {
    match err {
        BlenderError::Blender(message) => RenderFailure::Blender(format!(
            "Blender cannot open the .blend (blob {blob}): {message}"
        )),
        other => other.into(),
    }
}

/// Decodes the image Blender wrote, checks its size and shrinks it for a
/// window on the node, off the async threads; then marks the render done or
/// failed.
async fn check_image(node: Arc<Node>, id: String, rendered: Rendered) {
    let frame = rendered.frame;
    let checked = tokio::task::spawn_blocking(move || verify(&rendered))
        .await
        .unwrap_or_else(|err| Err(format!("image check of frame {frame} crashed: {err}")));
    node.update_quiet(|renders| renders.image_checked(&id, checked));
}

fn verify(rendered: &Rendered) -> Result<Finished, String> {
    let main = rendered
        .outputs
        .iter()
        .find(|output| output.starts_with("image/"))
        .ok_or_else(|| format!("frame {} wrote no image", rendered.frame))?;
    for output in &rendered.outputs {
        let file = rendered.dir.join(output);
        if !file.is_file() {
            return Err(format!("Blender's output {} is not there", file.display()));
        }
    }
    // The preview is the result as an image herd decodes, whatever the
    // scene's format (the frame itself when it is a PNG or JPEG): the
    // frame's own files go back as Blender wrote them.
    let path = &rendered.preview;
    let image = decode(path).map_err(|err| format!("Blender's image {err}"))?;
    let (width, height) = (image.width(), image.height());
    if let (Some(expected_w), Some(expected_h)) = (rendered.width, rendered.height)
        && (expected_w, expected_h) != (width, height)
    {
        return Err(format!(
            "Blender's image {} is {width}x{height}, expected {expected_w}x{expected_h}",
            path.display()
        ));
    }
    Ok(Finished {
        image: rendered.dir.join(main),
        dir: rendered.dir.clone(),
        outputs: rendered.outputs.clone(),
        notes: rendered.notes.clone(),
        prep_secs: rendered.prep_secs,
        preview: rendered.preview.clone(),
        width,
        height,
        thumbnail: Arc::new(shrink(&image)),
    })
}

/// The image at `path`, its format guessed from its bytes; the error says
/// what went wrong after the path ("… cannot be read: …").
fn decode(path: &std::path::Path) -> Result<image::DynamicImage, String> {
    image::ImageReader::open(path)
        .and_then(|reader| reader.with_guessed_format())
        .map_err(|err| format!("{} cannot be read: {err}", path.display()))?
        .decode()
        .map_err(|err| format!("{} does not decode: {err}", path.display()))
}

/// `image` made to fit in [`THUMBNAIL_PX`] square, never larger than it is.
fn shrink(image: &image::DynamicImage) -> image::RgbImage {
    if image.width() <= THUMBNAIL_PX && image.height() <= THUMBNAIL_PX {
        image.to_rgb8()
    } else {
        image.thumbnail(THUMBNAIL_PX, THUMBNAIL_PX).to_rgb8()
    }
}

/// The thumbnail of a done render as a PNG in its folder, made from its
/// preview image the first time it is asked for (most never are: the
/// controller makes its own from the frames it fetches).
pub async fn thumbnail_file(files: FinishedFiles) -> Result<PathBuf, String> {
    let path = files.dir.join("thumbnail.png");
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Ok(path);
    }
    tokio::task::spawn_blocking(move || {
        let image = decode(&files.preview).map_err(|err| format!("the frame's preview {err}"))?;
        // Written beside and renamed, so a second request at the same time
        // never sends half a file.
        let temp = files
            .dir
            .join(format!("thumbnail.{}.png.part", uuid::Uuid::new_v4()));
        shrink(&image)
            .save_with_format(&temp, image::ImageFormat::Png)
            .and_then(|()| std::fs::rename(&temp, &path).map_err(Into::into))
            .map_err(|err| {
                let _ = std::fs::remove_file(&temp);
                format!("cannot write thumbnail {}: {err}", path.display())
            })?;
        Ok(path)
    })
    .await
    .unwrap_or_else(|err| Err(format!("making a thumbnail crashed: {err}")))
}

async fn remove_dirs(node: Arc<Node>, forgotten: Vec<String>) {
    let removed = tokio::task::spawn_blocking(move || {
        for id in forgotten {
            if let Err(err) = node.render_dirs.recycle(&id) {
                tracing::warn!(
                    "cannot remove {}: {err}",
                    node.render_dirs.path(&id).display()
                );
            }
        }
    })
    .await;
    if let Err(err) = removed {
        tracing::warn!("removing renders' folders crashed: {err}");
    }
}

/// The folder of render `id`, made for it (or a spare one given to it).
async fn create_dir(node: &Arc<Node>, id: &str) -> Result<PathBuf, RenderFailure> {
    let path = node.render_dirs.path(id);
    let made = tokio::task::spawn_blocking({
        let node = Arc::clone(node);
        let id = id.to_string();
        move || node.render_dirs.create(&id)
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err)));
    made.map_err(|err| RenderFailure::Node(format!("cannot create {}: {err}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_with_frame(dir: &std::path::Path, width: u32, height: u32) -> FinishedFiles {
        let image = dir.join("image/frame_0001.png");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]))
            .save(&image)
            .unwrap();
        FinishedFiles {
            image: image.clone(),
            dir: dir.to_path_buf(),
            preview: image,
        }
    }

    #[tokio::test]
    async fn a_thumbnail_is_made_once_when_asked_and_never_larger_than_the_frame() {
        let big = tempfile::tempdir().unwrap();
        let path = thumbnail_file(files_with_frame(big.path(), 1920, 1080))
            .await
            .unwrap();
        assert_eq!(path, big.path().join("thumbnail.png"));
        let thumbnail = image::open(&path).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (256, 144));
        let made = std::fs::metadata(&path).unwrap().modified().unwrap();
        thumbnail_file(files_with_frame(big.path(), 1920, 1080))
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), made);

        let small = tempfile::tempdir().unwrap();
        let path = thumbnail_file(files_with_frame(small.path(), 96, 54))
            .await
            .unwrap();
        let thumbnail = image::open(&path).unwrap();
        assert_eq!((thumbnail.width(), thumbnail.height()), (96, 54));
    }
}
