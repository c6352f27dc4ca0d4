//! A movie scene's last step: once every frame is in (PNG, rendered by the
//! nodes), the controller's Blender encodes the movie with the scene's own
//! settings through its sequencer (`assets/encode.py`), to the place the
//! scene's output path names, as `blender -b FILE -a` would have written it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

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
    let failed = |message: String| MovieError::Blender {
        blender: blender.to_path_buf(),
        message,
    };
    let scratch = tempfile_dir().map_err(|err| failed(format!("no scratch folder: {err}")))?;
    let script = scratch.join("herd_encode.py");
    let spec = scratch.join("job.json");
    let frame_start = numbers.first().copied().unwrap_or(1);
    let body = serde_json::json!({
        "scene": job.scene,
        "frames": job.frames.iter().map(|(_, path)| path).collect::<Vec<_>>(),
        "frame_start": frame_start,
        "target": job.target,
    });
    let written = async {
        if let Some(dir) = job.target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(&script, ENCODE_SCRIPT).await?;
        tokio::fs::write(&spec, body.to_string()).await
    }
    .await;
    let result = match written {
        Ok(()) => run(blender, job, &script, &spec, &mut progress).await,
        Err(err) => Err(format!("cannot write the encoder's files: {err}")),
    };
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    result.map_err(failed)
}

async fn run(
    blender: &Path,
    job: &Encode,
    script: &Path,
    spec: &Path,
    progress: &mut impl FnMut(usize, usize),
) -> Result<PathBuf, String> {
    let mut child = Command::new(blender)
        .arg("-b")
        .arg(&job.blend)
        .arg("--python")
        .arg(script)
        .arg("--")
        .arg(spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start it: {err}"))?;
    let stdout = child.stdout.take().ok_or("no output from Blender")?;
    let stderr = child.stderr.take().ok_or("no output from Blender")?;
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut last = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            last.push(line);
            if last.len() > 8 {
                last.remove(0);
            }
        }
        last
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut movie = None;
    let mut tail = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(count) = line.strip_prefix("herd-encode: ")
            && let Some((done, total)) = count.split_once('/')
            && let (Ok(done), Ok(total)) = (done.parse(), total.parse())
        {
            progress(done, total);
        } else if let Some(path) = line.strip_prefix("herd-encoded: ") {
            movie = Some(PathBuf::from(path));
        } else if line.contains("Error") {
            tail.push(line);
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|err| format!("lost Blender: {err}"))?;
    tail.extend(errors.await.unwrap_or_default());
    match movie {
        Some(movie) if status.success() && movie.is_file() => Ok(movie),
        _ => Err(format!(
            "Blender exited with {status}: {}",
            tail.join(" | ")
        )),
    }
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("herd-encode-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
