//! What a .blend holds, and whether this Blender can open it.
//!
//! Two steps, cheapest first. [`read_header`] reads the first bytes of the
//! file (through gzip or zstd when it is compressed) for the Blender version
//! that saved it, and [`check_compatible`] refuses a file that this Blender
//! cannot open, before Blender is started: Blender 3.4 segfaults on most 4.x
//! files, and only 4.5 and later read the 5.x file format (4.5 opens 5.x files
//! with a warning and renders them as 5.0 does). [`inspect`] then runs Blender in the
//! background with `assets/inspect.py`, which writes the scene's settings to a
//! JSON file, and turns what Blender said on the way into warnings a farm
//! needs before it sends out frames: no camera, an engine this Blender lacks,
//! Cycles denoising on a build without OpenImageDenoiser.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::deps::Dependency;
use crate::blender::{self, BlenderError};

mod header;

#[cfg(test)]
use header::parse_header;
pub use header::{BlendHeader, BlendVersion, Compression, check_compatible, is_newer, read_header};

/// The inspector script, embedded so the binary is all `herd inspect` needs.
pub use crate::blender::INSPECT_SCRIPT;

/// How long Blender may take to load a file and describe it.
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(120);

/// How many of Blender's error lines an error report quotes.
const REASON_LINES: usize = 3;

/// How many of Blender's last output lines an error report shows when Blender
/// gave no reason.
const TAIL_LINES: usize = 10;

/// Errors from reading a .blend or running Blender on it.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {cause}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so it is not repeated as a source).
        cause: std::io::Error,
    },
    /// The file looks compressed but does not decompress.
    #[error(
        "cannot decompress {} ({compression}): {detail}: the file is damaged",
        .path.display()
    )]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The compression its first bytes announce.
        compression: Compression,
        /// The decompressor's complaint in short, e.g. "it ends too early".
        detail: String,
    },
    /// The file does not start with a .blend header.
    #[error("{} is not a .blend file: {start}", .path.display())]
    NotBlend {
        /// The file.
        path: PathBuf,
        /// What the file starts with, e.g. `it starts with "PK\x03\x04"`.
        start: String,
    },
    /// The file was saved by a newer major version than this Blender.
    #[error(
        "{} was saved by Blender {file_version}, newer than this Blender ({blender_version}), which cannot open it ({why}): save it from Blender {blender_major_minor} or install a newer Blender",
        .path.display()
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The version that saved it.
        file_version: BlendVersion,
        /// This Blender's version as it prints it, e.g. `3.4.1`.
        blender_version: String,
        /// This Blender's major.minor.
        blender_major_minor: BlendVersion,
        /// Why it cannot, e.g. "Blender 3.4 crashes on most 4.x files".
        why: String,
    },
    /// Blender's version string could not be read.
    #[error("cannot tell which version Blender {0:?} is: expected e.g. 3.4.1")]
    BlenderVersion(String),
    /// Blender could not be found, started or asked for its version.
    #[error(transparent)]
    Blender(#[from] BlenderError),
    /// Blender ran but could not open the file; the reason is Blender's own.
    #[error("Blender cannot open {}: {reason}", .path.display())]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// Blender's error lines, or its exit status and last lines.
        reason: String,
    },
    /// Blender crashed while loading the file.
    #[error(
        "Blender crashed with {status} while opening {}: the file may be damaged or need a newer Blender{}",
        .path.display(),
        quoted(.log_tail)
    )]
    Crashed {
        /// The file.
        path: PathBuf,
        /// How it ended, e.g. "signal 11 (SIGSEGV)".
        status: String,
        /// Blender's last output lines.
        log_tail: Vec<String>,
    },
    /// Blender took longer than [`INSPECT_TIMEOUT`] and was killed.
    #[error(
        "Blender took more than {secs} s to open {} and was killed",
        .path.display()
    )]
    TimedOut {
        /// The file.
        path: PathBuf,
        /// The limit.
        secs: u64,
    },
    /// The inspector script or its scratch files failed.
    #[error("cannot inspect {}: {message}", .path.display())]
    Script {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn quoted(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; Blender's last lines:\n{}", lines.join("\n"))
    }
}

/// Whether a node can render `blend`: its Blender must open the file's
/// version (checked against the header, read once here).
pub fn node_check(blend: &Path) -> Result<super::engine::NodeCheck, InspectError> {
    let header = read_header(blend)?;
    let file = blend.to_path_buf();
    Ok(std::sync::Arc::new(move |info| {
        check_compatible(&file, header.version, &info.blender_version)
            .map_err(|err| err.to_string())
    }))
}

/// A scene's settings as Blender read them, with what may stop a render.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneInfo {
    /// The file, as an absolute path.
    pub file: PathBuf,
    /// The Blender version that saved it, e.g. `3.4`.
    pub saved_by: String,
    /// How the file is compressed.
    pub compression: Compression,
    /// The Blender that inspected it, e.g. `3.4.1`.
    pub blender_version: String,
    /// The scene Blender renders (the file's active scene).
    pub scene: String,
    /// First frame.
    pub frame_start: i32,
    /// Last frame.
    pub frame_end: i32,
    /// Frame step.
    pub frame_step: i32,
    /// Width before the percentage.
    pub resolution_x: u32,
    /// Height before the percentage.
    pub resolution_y: u32,
    /// Resolution percentage.
    pub resolution_percentage: u32,
    /// Render engine as stored in the file, e.g. `CYCLES`, `BLENDER_EEVEE`,
    /// or an add-on's engine such as `LUXCORE` (then a warning says what
    /// Blender renders with instead).
    pub engine: String,
    /// Samples per pixel: Cycles samples or EEVEE render samples; none for
    /// other engines.
    pub samples: Option<u32>,
    /// Output file format, e.g. `PNG`.
    pub file_format: String,
    /// Frames per second (fps / fps_base).
    pub fps: f64,
    /// Active camera's name; without one Blender refuses to render.
    pub camera: Option<String>,
    /// Whether Cycles denoising is on; none for other engines.
    pub use_denoising: Option<bool>,
    /// The files outside the .blend it reads (packed ones are inside).
    pub dependencies: Vec<Dependency>,
    /// What may stop or change a render, one sentence each.
    pub warnings: Vec<String>,
    /// The scene's output path (`render.filepath`) as stored, e.g.
    /// `//renders/shot_###`.
    #[serde(default)]
    pub output_path: String,
    /// Whether Blender adds the format's extension to file names.
    #[serde(default = "yes")]
    pub use_file_extension: bool,
    /// Whether the scene renders several views (stereo, multiview).
    #[serde(default)]
    pub use_multiview: bool,
    /// The File Output nodes that write when the scene renders, in the
    /// compositor tree's order.
    #[serde(default)]
    pub file_outputs: Vec<FileOutputInfo>,
    /// Every scene of the file (`--scene` picks one).
    #[serde(default)]
    pub scenes: Vec<String>,
    /// The view layers Blender renders (enabled ones).
    #[serde(default)]
    pub view_layers: Vec<String>,
    /// Its simulations, baked or not.
    #[serde(default)]
    pub simulations: Vec<super::bake::Simulation>,
}

fn yes() -> bool {
    true
}

/// A File Output node of the compositor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileOutputInfo {
    /// The node's name.
    pub name: String,
    /// Its folder as stored (`base_path`; `directory` in Blender 5.0).
    pub path: String,
}

impl SceneInfo {
    /// The dependencies with files that are not there.
    pub fn missing(&self) -> Vec<&Dependency> {
        self.dependencies
            .iter()
            .filter(|dependency| !dependency.missing.is_empty())
            .collect()
    }
}

/// What `assets/inspect.py` writes.
#[derive(Debug, Deserialize)]
struct ScriptReport {
    scene: String,
    frame_start: i32,
    frame_end: i32,
    frame_step: i32,
    resolution_x: u32,
    resolution_y: u32,
    resolution_percentage: u32,
    engine: String,
    samples: Option<u32>,
    file_format: String,
    fps: f64,
    camera: Option<String>,
    use_denoising: Option<bool>,
    denoiser_available: Option<bool>,
    blender_version: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
    #[serde(default)]
    output_path: String,
    #[serde(default = "yes")]
    use_file_extension: bool,
    #[serde(default)]
    use_multiview: bool,
    #[serde(default)]
    file_outputs: Vec<FileOutputInfo>,
    #[serde(default)]
    scenes: Vec<String>,
    #[serde(default)]
    view_layers: Vec<String>,
    #[serde(default)]
    simulations: Vec<super::bake::Simulation>,
}

/// Reads `file`'s scene with the Blender at `blender`: checks the header
/// first, then runs Blender in the background (no add-ons, no auto-run
/// scripts) with the inspector script.
pub async fn inspect(blender: &Path, file: &Path) -> Result<SceneInfo, InspectError> {
    inspect_scene(blender, file, None).await
}

/// Reads the scene named `scene` of `file` with the local node's warm
/// Blender (`local`, whose Blender is `blender`), so a job starts one
/// Blender instead of two; where that cannot answer (Blender crashed on the
/// file, or refused it), reads it as [`inspect_scene`] does, which says
/// precisely why.
pub async fn inspect_with_local(
    local: &crate::controller::engine::LocalNode,
    blender: &Path,
    file: &Path,
    scene: Option<&str>,
) -> Result<SceneInfo, InspectError> {
    let header = read_header(file)?;
    let blender_version = local.blender_version().to_string();
    if check_compatible(file, header.version, &blender_version).is_ok()
        && let Some(running) = BlendVersion::parse_blender(&blender_version)
        && let Ok(absolute) = std::path::absolute(file)
        && let Ok((value, lines)) = local.inspect(&absolute, scene).await
        && let Ok(report) = serde_json::from_value::<ScriptReport>(value)
    {
        return Ok(scene_info(absolute, header, running, report, &lines));
    }
    inspect_scene(blender, file, scene).await
}

/// Reads the scene named `scene` of `file` (the file's active scene when
/// `None`), as [`inspect`] does.
pub async fn inspect_scene(
    blender: &Path,
    file: &Path,
    scene: Option<&str>,
) -> Result<SceneInfo, InspectError> {
    let header = read_header(file)?;
    let blender_version = blender::version(blender).await?;
    check_compatible(file, header.version, &blender_version)?;
    let running = BlendVersion::parse_blender(&blender_version)
        .ok_or_else(|| InspectError::BlenderVersion(blender_version.clone()))?;
    let absolute = std::path::absolute(file).map_err(|cause| InspectError::Read {
        path: file.to_path_buf(),
        cause,
    })?;
    let script_error = |message: String| InspectError::Script {
        path: absolute.clone(),
        message,
    };

    let scratch = ScratchDir::create().map_err(|err| {
        script_error(format!("cannot create a scratch folder for Blender: {err}"))
    })?;
    let script = scratch.path.join("herd_inspect.py");
    let answer = scratch.path.join("scene.json");
    tokio::fs::write(&script, INSPECT_SCRIPT)
        .await
        .map_err(|err| script_error(format!("cannot write {}: {err}", script.display())))?;

    let child = Command::new(blender)
        .args(["-b", "-noaudio", "-Y"])
        .arg(&absolute)
        .arg("--python")
        .arg(&script)
        .arg("--")
        .arg(&answer)
        .args(scene)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BlenderError::Spawn {
            path: blender.to_path_buf(),
            source,
        })?;
    // On timeout the future, and with it the child, is dropped: kill_on_drop
    // ends Blender.
    let output = tokio::time::timeout(INSPECT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| InspectError::TimedOut {
            path: absolute.clone(),
            secs: INSPECT_TIMEOUT.as_secs(),
        })?
        .map_err(|err| script_error(format!("lost track of Blender: {err}")))?;
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .map(str::to_string)
        .collect();

    if let Some(signal) = exit_signal(output.status) {
        return Err(InspectError::Crashed {
            path: absolute,
            status: signal,
            log_tail: tail(&lines, TAIL_LINES),
        });
    }
    let written = tokio::fs::read(&answer).await.ok();
    let report = match written {
        Some(bytes) if output.status.success() => bytes,
        _ => {
            return Err(InspectError::CannotOpen {
                reason: blender_reason(&lines).unwrap_or_else(|| {
                    format!(
                        "Blender ended ({}) without describing the scene{}",
                        output.status,
                        quoted(&tail(&lines, TAIL_LINES))
                    )
                }),
                path: absolute,
            });
        }
    };
    drop(scratch);
    let value: serde_json::Value = serde_json::from_slice(&report)
        .map_err(|err| script_error(format!("the inspector wrote unreadable JSON: {err}")))?;
    if let Some(message) = value.get("error").and_then(serde_json::Value::as_str) {
        return Err(script_error(format!(
            "the inspector failed inside Blender: {message}"
        )));
    }
    let report: ScriptReport = serde_json::from_value(value)
        .map_err(|err| script_error(format!("the inspector's answer is incomplete: {err}")))?;
    Ok(scene_info(absolute, header, running, report, &lines))
}

/// Builds the answer and its warnings from the script's report and
/// Blender's output.
fn scene_info(
    file: PathBuf,
    header: BlendHeader,
    running: BlendVersion,
    report: ScriptReport,
    lines: &[String],
) -> SceneInfo {
    let mut warnings = Vec::new();
    if is_newer(header.version, running) {
        warnings.push(format!(
            "{} was saved by Blender {}, newer than this Blender ({}): it opens, but what was added after {running} may be lost or render differently",
            file.display(),
            header.version,
            report.blender_version
        ));
    }
    let mut engine = report.engine.clone();
    if let Some(stored) = unavailable_engine(lines, &report.scene)
        && stored != report.engine
    {
        warnings.push(format!(
            "engine {stored} is not available in this Blender; it will render with {} (install and enable the add-on that provides {stored})",
            report.engine
        ));
        engine = stored;
    }
    if report.camera.is_none() {
        warnings.push(format!(
            "scene '{}' has no camera: Blender will refuse to render it",
            report.scene
        ));
    }
    if report.use_denoising == Some(true) {
        warnings.push(if report.denoiser_available == Some(false) {
            "Cycles denoising is on, but this Blender is built without OpenImageDenoiser (as Debian's is): rendering fails with \"Build without OpenImageDenoiser\"; turn denoising off in the file or use a Blender with OpenImageDenoise".to_string()
        } else {
            "Cycles denoising is on: nodes whose Blender is built without OpenImageDenoiser (Debian's is) fail to render it".to_string()
        });
    }
    for simulation in &report.simulations {
        if simulation.baked {
            continue;
        }
        warnings.push(if simulation.bakeable {
            format!(
                "{} is not baked: herd bakes it once on this machine before the job (frames stepped in order, as Blender plays them) and sends the baked file to the nodes",
                simulation.describe()
            )
        } else {
            format!(
                "{} may not be baked: each node would compute it from the frame it jumps to, not as Blender plays it; bake it in Blender first",
                simulation.describe()
            )
        });
    }
    let mut dependencies = report.dependencies;
    for dependency in &mut dependencies {
        dependency.check();
        if !dependency.missing.is_empty() {
            let files: Vec<String> = dependency
                .missing
                .iter()
                .map(|file| file.display().to_string())
                .collect();
            warnings.push(format!(
                "missing {}: {} not found; it renders without it (magenta for a texture): put the file back or fix the path in Blender (File > External Data > Report Missing Files)",
                dependency.describe(),
                files.join(", ")
            ));
        } else if dependency.is_absolute() {
            warnings.push(format!(
                "{} uses an absolute path: herd sends it along, but the .blend works only on this machine; File > External Data > Make Paths Relative fixes that",
                dependency.describe()
            ));
        }
    }
    SceneInfo {
        dependencies,
        file,
        saved_by: header.version.to_string(),
        compression: header.compression,
        blender_version: report.blender_version,
        scene: report.scene,
        frame_start: report.frame_start,
        frame_end: report.frame_end,
        frame_step: report.frame_step,
        resolution_x: report.resolution_x,
        resolution_y: report.resolution_y,
        resolution_percentage: report.resolution_percentage,
        engine,
        samples: report.samples,
        file_format: report.file_format,
        fps: report.fps,
        camera: report.camera,
        use_denoising: report.use_denoising,
        warnings,
        output_path: report.output_path,
        use_file_extension: report.use_file_extension,
        use_multiview: report.use_multiview,
        file_outputs: report.file_outputs,
        scenes: report.scenes,
        view_layers: report.view_layers,
        simulations: report.simulations,
    }
}

/// The engine a scene names but this Blender lacks, from Blender's
/// "Engine 'LUXCORE' not available for scene 'Scene' (...)" line. Blender
/// falls back to its default engine, and Python sees only the fallback.
fn unavailable_engine(lines: &[String], scene: &str) -> Option<String> {
    lines.iter().find_map(|line| {
        let rest = line.split_once("Engine '")?.1;
        let (engine, rest) = rest.split_once("' not available for scene '")?;
        let named = rest.rsplit_once('\'')?.0;
        (named == scene).then(|| engine.to_string())
    })
}

/// Blender's own words for a failure: its last lines that start with
/// "Error" or say "Failed to read blend file".
fn blender_reason(lines: &[String]) -> Option<String> {
    let mut reasons: Vec<&str> = Vec::new();
    for line in lines.iter().rev().map(|line| line.trim()) {
        if !(line.starts_with("Error") || line.contains("Failed to read blend file")) {
            continue;
        }
        let reason = line
            .strip_prefix("Error:")
            .map_or(line, str::trim_start)
            .trim();
        if !reason.is_empty() && !reasons.contains(&reason) {
            reasons.push(reason);
        }
        if reasons.len() == REASON_LINES {
            break;
        }
    }
    reasons.reverse();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn tail(lines: &[String], count: usize) -> Vec<String> {
    lines[lines.len().saturating_sub(count)..].to_vec()
}

/// "signal 11 (SIGSEGV)" when the process died of a signal.
fn exit_signal(status: std::process::ExitStatus) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal()?;
        let name = match signal {
            4 => " (SIGILL)",
            6 => " (SIGABRT)",
            7 => " (SIGBUS)",
            8 => " (SIGFPE)",
            9 => " (SIGKILL)",
            11 => " (SIGSEGV)",
            _ => "",
        };
        Some(format!("signal {signal}{name}"))
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

/// A private folder for the script and its answer, removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("herd-inspect-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scene as Blender would describe the demo.
    pub(crate) fn scene_info() -> SceneInfo {
        SceneInfo {
            file: "/work/shots/demo.blend".into(),
            saved_by: "3.4".into(),
            compression: Compression::None,
            blender_version: "3.4.1".into(),
            scene: "Scene".into(),
            frame_start: 1,
            frame_end: 24,
            frame_step: 1,
            resolution_x: 320,
            resolution_y: 180,
            resolution_percentage: 100,
            engine: "CYCLES".into(),
            samples: Some(16),
            file_format: "PNG".into(),
            fps: 24.0,
            camera: Some("Camera".into()),
            dependencies: Vec::new(),
            use_denoising: Some(false),
            warnings: Vec::new(),
            output_path: "/tmp/".into(),
            use_file_extension: true,
            use_multiview: false,
            file_outputs: Vec::new(),
            scenes: vec!["Scene".into()],
            view_layers: vec!["ViewLayer".into()],
            simulations: Vec::new(),
        }
    }

    #[test]
    fn both_header_layouts() {
        assert_eq!(
            parse_header(b"BLENDER-v304REND"),
            Some((BlendVersion { major: 3, minor: 4 }, 8, false))
        );
        assert_eq!(
            parse_header(b"BLENDER_V279"),
            Some((
                BlendVersion {
                    major: 2,
                    minor: 79
                },
                4,
                true
            ))
        );
        assert_eq!(
            parse_header(b"BLENDER17-01v0502"),
            Some((BlendVersion { major: 5, minor: 2 }, 8, false))
        );
        assert_eq!(parse_header(b"BLENDER-v30"), None);
        assert_eq!(parse_header(b"BLENDER17-01v05"), None);
        assert_eq!(parse_header(b"BLENDER*v304"), None);
        assert_eq!(parse_header(b"PK\x03\x04"), None);
    }

    #[test]
    fn blender_version_strings() {
        let parse = BlendVersion::parse_blender;
        assert_eq!(parse("3.4.1"), Some(BlendVersion { major: 3, minor: 4 }));
        assert_eq!(
            parse("4.2.3 LTS"),
            Some(BlendVersion { major: 4, minor: 2 })
        );
        assert_eq!(
            parse("2.79b"),
            Some(BlendVersion {
                major: 2,
                minor: 79
            })
        );
        assert_eq!(parse("blender"), None);
        assert_eq!(parse("3"), None);
    }

    #[test]
    fn engine_fallback_from_blender_output() {
        let lines = vec![
            "Read blend: /x/full_export.test.blend".to_string(),
            "Error: Engine 'LUXCORE' not available for scene 'Scene' (an add-on may need to be installed or enabled)".to_string(),
        ];
        assert_eq!(
            unavailable_engine(&lines, "Scene").as_deref(),
            Some("LUXCORE")
        );
        assert_eq!(unavailable_engine(&lines, "Other"), None);
    }

    #[test]
    fn reason_quotes_blender_errors_only() {
        let lines: Vec<String> = [
            "Blender 3.4.1",
            "ERROR (bke.main_namemap): ID name 'LIlib' is found more than once",
            "Error: Failed to read blend file '/x/a.blend': Missing DNA block",
            "",
            "Blender quit",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            blender_reason(&lines).as_deref(),
            Some("Failed to read blend file '/x/a.blend': Missing DNA block")
        );
        assert_eq!(blender_reason(&lines[..2]), None);
    }
}
