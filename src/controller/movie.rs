//! A movie scene's last step: once every frame is in (PNG, rendered by the
//! nodes), the controller's Blender encodes the movie with the scene's own
//! settings through its sequencer (`assets/encode.py`), to the place the
//! scene's output path names, as `blender -b FILE -a` would have written it.

use std::path::{Path, PathBuf};

use super::step;

/// The encoder script, run inside Blender.
pub const ENCODE_SCRIPT: &str = include_str!("../../assets/encode.py");

/// Why a movie was not encoded.
#[derive(Debug, thiserror::Error)]
pub enum MovieError {
    /// The frames are not one run of consecutive numbers.
    #[error(
        "a movie needs consecutive frames, this job has {0}: the frames stay in their folder; render the whole range (or encode them yourself)"
    )]
    NotConsecutive(String),
    /// A frame is not there.
    #[error("frame {frame} is not at {}: render it first", path.display())]
    Missing {
        /// The frame number.
        frame: i32,
        /// Where it should be.
        path: PathBuf,
    },
    /// Blender could not be run or failed.
    #[error("encoding the movie with Blender ({}) failed: {message}", blender.display())]
    Blender {
        /// The Blender.
        blender: PathBuf,
        /// What went wrong, with Blender's last lines.
        message: String,
    },
}

/// What to encode.
#[derive(Debug, Clone)]
pub struct Encode {
    /// The artist's .blend (its scene's movie settings are used).
    pub blend: PathBuf,
    /// The scene, when not the file's active one.
    pub scene: Option<String>,
    /// The frames, in order, each with its file.
    pub frames: Vec<(i32, PathBuf)>,
    /// The movie's folder and the file part of its name, by Blender's rules
    /// (`shot_` → `shot_0001-0250.mkv`).
    pub target: PathBuf,
}

impl Encode {
    /// The movie step of `spec`, when its scene's output is a movie.
    pub fn for_job(spec: &super::engine::JobSpec) -> Option<Self> {
        let target = spec.output.movie.clone()?;
        Some(Self {
            blend: spec.blend.clone(),
            scene: spec.overrides.scene.clone(),
            frames: spec
                .frames
                .iter()
                .map(|&frame| (frame, spec.output.frame_path(frame)))
                .collect(),
            target,
        })
    }
}

/// Encodes the movie, calling `progress(done, total)` as frames go in;
/// returns the movie's path.
pub async fn encode(
    blender: &Path,
    job: &Encode,
    mut progress: impl FnMut(usize, usize),
) -> Result<PathBuf, MovieError> {
    let numbers: Vec<i32> = job.frames.iter().map(|(frame, _)| *frame).collect();
    if numbers.windows(2).any(|pair| pair[1] != pair[0] + 1) {
        return Err(MovieError::NotConsecutive(
            crate::controller::frames::format_frames(&numbers),
        ));
    }
    if let Some((frame, path)) = job.frames.iter().find(|(_, path)| !path.is_file()) {
        return Err(MovieError::Missing {
            frame: *frame,
            path: path.clone(),
        });
    }
    let frame_start = numbers.first().copied().unwrap_or(1);
    let body = serde_json::json!({
        "scene": job.scene,
        "frames": job.frames.iter().map(|(_, path)| path).collect::<Vec<_>>(),
        "frame_start": frame_start,
        "target": job.target,
    });
    let failed = |message: String| MovieError::Blender {
        blender: blender.to_path_buf(),
        message,
    };
    if let Some(dir) = job.target.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|err| failed(format!("cannot create {}: {err}", dir.display())))?;
    }
    let said = step::run(
        blender,
        &job.blend,
        ENCODE_SCRIPT,
        &body,
        "herd-encode: ",
        &mut progress,
    )
    .await
    .map_err(failed)?;
    said.iter()
        .find_map(|line| line.strip_prefix("herd-encoded: "))
        .map(PathBuf::from)
        .filter(|movie| movie.is_file())
        .ok_or_else(|| failed("Blender wrote no movie".into()))
}
