//! Helpers shared by the cross-process tests: start `herd node` on loopback
//! with its own work dir and ports, talk to it, and make test scenes with the
//! real Blender.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod display;
pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The demo scene shipped in the repository.
pub fn demo_blend() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/demo.blend")
}

/// The Blender the tests use; fails loudly when there is none, since every
/// test here is about the real Blender.
pub fn blender() -> PathBuf {
    herd::blender::locate(None).unwrap_or_else(|err| {
        panic!("these tests need the real Blender: {err}");
    })
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A `herd node --headless` child on 127.0.0.1 with loopback-only beacons.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    pub discovery_port: u16,
    pub work_dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl NodeProcess {
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_with_env(extra_args, &[])
    }

    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), 0, extra_args, env)
    }

    /// Starts a node with `work_dir` on `port` (0: any).
    pub fn start_in(
        work_dir: tempfile::TempDir,
        port: u16,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let command = Self::command(&work_dir, port, extra_args, env);
        Self::spawn(command, work_dir)
    }

    /// Starts a node that cannot see `hidden` (an empty tmpfs is mounted
    /// over it in a mount namespace of its own): it has only what it is
    /// sent. Needs root; see [`root_or_skip`].
    pub fn start_hiding(hidden: &Path, extra_args: &[&str]) -> Self {
        let work_dir = tempfile::tempdir().unwrap();
        let node = Self::command(&work_dir, 0, extra_args, &[]);
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount -t tmpfs herd-hidden "$0" && exec "$@""#)
            .arg(hidden)
            .arg(node.get_program())
            .args(node.get_args());
        for (key, value) in node.get_envs() {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::spawn(command, work_dir)
    }

    /// The `herd node --headless` command of a node on loopback.
    fn command(
        work_dir: &tempfile::TempDir,
        port: u16,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        blender();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        command
            .args([
                "node",
                "--headless",
                "--port",
                &port.to_string(),
                "--discovery-port",
                "0",
            ])
            .arg("--work-dir")
            .arg(work_dir.path())
            .args(extra_args)
            .env("HERD_LOOPBACK_ONLY", "1")
            .env("HERD_LOG", "herd=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Starts `command` and reads where the node listens from its first line.
    fn spawn(mut command: Command, work_dir: tempfile::TempDir) -> Self {
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("node did not say where it listens: {line:?}"))
            .trim_end_matches(',')
            .to_string();
        let discovery_port = line
            .split("discovery on UDP ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("node did not say its discovery port: {line:?}"));
        Self {
            child,
            url,
            discovery_port,
            work_dir,
            client: reqwest::Client::new(),
        }
    }

    /// `127.0.0.1:PORT`, for raw TCP clients.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.url)
    }

    pub async fn info(&self) -> Value {
        self.client
            .get(self.api("node"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Uploads `bytes` unless the node has them; returns the hash.
    pub async fn upload(&self, bytes: Vec<u8>) -> String {
        let hash = sha256(&bytes);
        let blob = self.api(&format!("blobs/{hash}"));
        let head = self.client.head(&blob).send().await.unwrap();
        if head.status() == 404 {
            let put = self.client.put(&blob).body(bytes).send().await.unwrap();
            assert_eq!(put.status(), 201, "upload refused: {:?}", put.text().await);
        } else {
            assert_eq!(head.status(), 200);
        }
        hash
    }

    pub async fn queue(&self, blob: &str, frame: i32, overrides: Value) -> String {
        let body = serde_json::json!({"blob": blob, "frame": frame, "overrides": overrides});
        let response = self
            .client
            .post(self.api("renders"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        created["id"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, id: &str) -> Value {
        self.client
            .get(self.api(&format!("renders/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls a render until it ends (done, failed, cancelled).
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        self.wait_until(id, limit, |status| {
            matches!(
                status["state"].as_str(),
                Some("done" | "failed" | "cancelled")
            )
        })
        .await
    }

    pub async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(id).await;
            if done(&status) {
                return status;
            }
            assert!(started.elapsed() < limit, "render {id} stuck: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self.client.get(self.api(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// Kills the node (SIGKILL) and starts it again on the same port with the
    /// same work dir (so the same id).
    pub fn restart(self, extra_args: &[&str]) -> Self {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let mut this = self;
        let _ = this.child.kill();
        let _ = this.child.wait();
        let work_dir = std::mem::replace(&mut this.work_dir, tempfile::tempdir().unwrap());
        drop(this);
        Self::start_in(work_dir, port, extra_args, &[])
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_exit(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < limit,
            "process did not exit in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `herd render --json --no-discovery` of the demo scene on loopback
/// with the given nodes and arguments, handing each event to `on_event`;
/// returns whether it exited 0, and the events.
pub fn render(
    out: &Path,
    work: &Path,
    nodes: &[&str],
    args: &[&str],
    on_event: impl FnMut(&Value),
) -> (bool, Vec<Value>) {
    render_file(&demo_blend(), out, work, nodes, args, on_event)
}

/// [`render`] of any .blend.
pub fn render_file(
    blend: &Path,
    out: &Path,
    work: &Path,
    nodes: &[&str],
    args: &[&str],
    mut on_event: impl FnMut(&Value),
) -> (bool, Vec<Value>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .arg("render")
        .arg(blend)
        .args(["--no-discovery", "--json", "--out"])
        .arg(out)
        .arg("--work-dir")
        .arg(work)
        .args(args)
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for node in nodes {
        command.args(["--node", node]);
    }
    let mut child = command.spawn().unwrap();
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON event: {line:?}: {err}"));
        on_event(&event);
        events.push(event);
    }
    (child.wait().unwrap().success(), events)
}

/// Log messages of a job's events.
pub fn log_lines(events: &[Value]) -> impl Iterator<Item = &str> {
    events
        .iter()
        .filter(|event| event["event"] == "log")
        .filter_map(|event| event["message"].as_str())
}

/// The job's `finished` event.
pub fn finished(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|event| event["event"] == "finished")
        .expect("a finished event")
}

/// Every demo frame of `frames` in `out` decodes at the demo's size
/// (320×180) and no temporary file is left there; returns how many PNGs
/// `out` holds.
pub fn check_demo_frames(out: &Path, frames: std::ops::RangeInclusive<i32>) -> usize {
    for frame in frames {
        let path = out.join(format!("demo_{frame:04}.png"));
        let image = image::open(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!((image.width(), image.height()), (320, 180));
    }
    let names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|name| !name.starts_with(".herd-part-") && !name.ends_with(".part")),
        "no temporary files left: {names:?}"
    );
    names.iter().filter(|name| name.ends_with(".png")).count()
}

/// The job's nodes rendered `frames` frames in all: every frame once.
pub fn assert_rendered_once(events: &[Value], frames: u64) {
    let summary = finished(events);
    assert_eq!(summary["frames_done"], frames, "{summary}");
    let rendered: u64 = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["frames"].as_u64().unwrap())
        .sum();
    assert_eq!(rendered, frames, "every frame exactly once: {summary}");
}

/// Saves a copy of the demo scene changed by a line of Blender Python
/// (`scene` is bound to the scene), e.g. to turn denoising on.
pub fn demo_variant(dir: &Path, name: &str, change: &str) -> PathBuf {
    let out = dir.join(name);
    let script = format!(
        "import bpy\nscene = bpy.context.scene\n{change}\nbpy.ops.wm.save_as_mainfile(filepath={:?})\n",
        out.display().to_string()
    );
    let status = Command::new(blender())
        .args(["-b", "--factory-startup", "-noaudio"])
        .arg(demo_blend())
        .arg("--python-expr")
        .arg(script)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() && out.exists(), "could not make {name}");
    out
}

/// Builds the scene of `tests/deps_scene.py` under `dir` (a texture, a
/// library and an image sequence beside it; with `evil`, paths that climb
/// out); returns its .blend.
pub fn deps_scene(dir: &Path, evil: bool) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deps_scene.py");
    let mut command = Command::new(blender());
    command
        .args(["-b", "--factory-startup", "-noaudio", "--python"])
        .arg(script)
        .arg("--")
        .arg(dir);
    if evil {
        command.arg("evil");
    }
    let status = command.stdout(Stdio::null()).status().unwrap();
    let blend = dir.join("shot/scene.blend");
    assert!(
        status.success() && blend.is_file(),
        "could not make the scene"
    );
    blend
}

/// Whether the tests run as root (network namespaces need it). When not,
/// says so on stderr so the skip is visible.
pub fn root_or_skip(test: &str) -> bool {
    let output = Command::new("id").arg("-u").output();
    let root = output.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if !root {
        eprintln!("SKIPPED {test}: needs root to build network namespaces (CI runs it as root)");
    }
    root
}

/// Environment variable naming the other Blenders of the version matrix:
/// `4.2=/path/to/blender-4.2,4.5=/path,5.0=/path` (see
/// `scripts/bpy-venvs.sh`, which prints it).
pub const TEST_BLENDERS_ENV: &str = "HERD_TEST_BLENDERS";

/// One Blender of the version matrix.
#[derive(Clone, Debug)]
pub struct TestBlender {
    /// Its label, e.g. `4.5`.
    pub label: String,
    /// The executable (or launcher).
    pub path: PathBuf,
}

impl TestBlender {
    /// The path as a string, for command lines.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// The Blenders of `HERD_TEST_BLENDERS`; empty, after saying on stderr why
/// `test` is skipped, when it is unset or empty.
pub fn test_blenders(test: &str) -> Vec<TestBlender> {
    let value = std::env::var(TEST_BLENDERS_ENV).unwrap_or_default();
    let blenders: Vec<TestBlender> = value
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (label, path) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("{TEST_BLENDERS_ENV} entry {entry:?} is not LABEL=PATH"));
            let path = PathBuf::from(path.trim());
            assert!(
                path.is_file(),
                "{TEST_BLENDERS_ENV}: no Blender at {}",
                path.display()
            );
            TestBlender {
                label: label.trim().to_string(),
                path,
            }
        })
        .collect();
    if blenders.is_empty() {
        eprintln!(
            "SKIPPED {test}: {TEST_BLENDERS_ENV} is not set (scripts/bpy-venvs.sh makes Blenders 4.2, 4.5 and 5.0 and prints its value; .ci/run sets it)"
        );
    }
    blenders
}

/// The Blender labelled `label` among `blenders` (from [`test_blenders`]),
/// or `None` after saying why `test` is skipped.
pub fn find_blender(blenders: &[TestBlender], test: &str, label: &str) -> Option<TestBlender> {
    let found = blenders
        .iter()
        .find(|blender| blender.label == label)
        .cloned();
    if found.is_none() && !blenders.is_empty() {
        eprintln!("SKIPPED {test}: {TEST_BLENDERS_ENV} names no Blender {label}");
    }
    found
}

/// The shared corpus of other people's .blend files, or `None` after saying
/// why `test` is skipped.
pub fn corpus(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/blend-corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: ../shared/blend-corpus not found");
        None
    }
}

/// Sends one `PUT` of `body` on `stream` the way a plain client does (no
/// `Expect: 100-continue`: the whole body goes at once) and returns the
/// status line and the body of the answer.
pub fn put_raw(
    stream: &mut std::net::TcpStream,
    host: &str,
    hash: &str,
    body: &[u8],
) -> (String, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let head = format!(
        "PUT /api/v1/blobs/{hash} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(64 * 1024) {
        stream
            .write_all(chunk)
            .unwrap_or_else(|err| panic!("the node broke the upload: {err}"));
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).unwrap();
    (
        status.trim_end().to_string(),
        String::from_utf8_lossy(&rest).into_owned(),
    )
}
