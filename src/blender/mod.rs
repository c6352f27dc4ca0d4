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
mod log;
mod worker;

pub use log::{OutputLog, lock, parse_progress};
pub use worker::{Loaded, Rendered, SceneSummary, Worker};

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
pub const WORKER_SCRIPT: &str = include_str!("../../assets/worker.py");

/// The scene inspector, run by `herd inspect`'s Blender and imported by the
/// worker (`inspect` command).
pub const INSPECT_SCRIPT: &str = include_str!("../../assets/inspect.py");

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
