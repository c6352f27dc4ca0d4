//! Unbaked simulations before a job: the controller's Blender steps the
//! frames in order once (as the artist's playback does), marks the caches
//! baked and saves a copy of the .blend that every node then renders in
//! parallel (`assets/bake.py`). Simulations herd cannot bake this way
//! (fluid domains, geometry-nodes simulation zones) are named before the job.

use std::path::{Path, PathBuf};

use super::inspect::SceneInfo;
use super::step;

/// The baker script, run inside Blender.
pub const BAKE_SCRIPT: &str = include_str!("../../assets/bake.py");

/// A simulation of a scene, as `herd inspect` reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Simulation {
    /// What simulates: `rigid body`, `cloth`, `soft body`, `particles`,
    /// `dynamic paint`, `fluid`, `geometry nodes simulation`.
    pub kind: String,
    /// The object (or collection) it belongs to.
    pub name: String,
    /// Whether its frames are baked (then every frame renders on its own).
    pub baked: bool,
    /// Whether herd can bake it by stepping the frames (point caches).
    pub bakeable: bool,
}

impl Simulation {
    /// `rigid body 'Cube'`.
    pub fn describe(&self) -> String {
        format!("{} '{}'", self.kind, self.name)
    }
}

/// Whether `scene` has unbaked simulations herd bakes before the job.
pub fn needs_bake(scene: &SceneInfo) -> bool {
    scene
        .simulations
        .iter()
        .any(|simulation| !simulation.baked && simulation.bakeable)
}

/// Whether `scene` has unbaked simulations herd cannot bake: its frames
/// then render in order on one node ([`crate::controller::engine::JobSpec::in_order`]).
pub fn needs_in_order(scene: &SceneInfo) -> bool {
    scene
        .simulations
        .iter()
        .any(|simulation| !simulation.baked && !simulation.bakeable)
}

/// Bakes the simulations of `job`'s scene over the job's frames into the
/// copy its nodes render ([`baked_path`] in its output folder).
pub async fn bake_job(
    blender: &Path,
    job: &crate::controller::engine::JobSpec,
    progress: impl FnMut(usize, usize),
) -> Result<PathBuf, String> {
    let first = job.frames.iter().copied().min().unwrap_or(1);
    let last = job.frames.iter().copied().max().unwrap_or(1);
    let out = baked_path(&job.output.dir, &job.blend);
    bake(
        blender,
        &job.blend,
        job.overrides.scene.as_deref(),
        first,
        last,
        &out,
        progress,
    )
    .await
}

/// Bakes `blend`'s simulations (scene `scene`, or its active one) from the
/// scene's start to `frame_end`, into a copy at `out`; `progress(done,
/// total)` follows the frames.
pub async fn bake(
    blender: &Path,
    blend: &Path,
    scene: Option<&str>,
    frame_start: i32,
    frame_end: i32,
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<PathBuf, String> {
    if let Some(dir) = out.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    }
    let job = serde_json::json!({
        "scene": scene,
        "frame_start": frame_start,
        "frame_end": frame_end,
        "out": out,
    });
    step::run(
        blender,
        blend,
        BAKE_SCRIPT,
        &job,
        "herd-bake: ",
        &mut progress,
    )
    .await
    .map_err(|err| {
        format!(
            "baking the simulations of {} failed: {err}",
            blend.display()
        )
    })?;
    if out.is_file() {
        Ok(out.to_path_buf())
    } else {
        Err(format!(
            "baking the simulations of {} wrote no file",
            blend.display()
        ))
    }
}

/// Where the baked copy of `blend` is kept: beside the job's journal.
pub fn baked_path(frames_dir: &Path, blend: &Path) -> PathBuf {
    let name = blend.file_name().map_or_else(
        || "scene.blend".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    frames_dir.join(format!(".herd-baked-{name}"))
}
