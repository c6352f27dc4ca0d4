//! Faults a real farm meets, with real Blender: a node restarted mid-job (it
//! forgets its renders), a node whose disk is full. Loopback; the disk-full
//! test mounts a small tmpfs and needs root (it says so and is skipped
//! without it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::NodeProcess;
use serde_json::Value;

fn render(
    out: &Path,
    work: &Path,
    nodes: &[&str],
    frames: &str,
    on_event: impl FnMut(&Value),
) -> (bool, Vec<Value>) {
    common::render(
        out,
        work,
        nodes,
        &["--frames", frames, "--no-local"],
        on_event,
    )
}

fn pngs(out: &Path) -> usize {
    std::fs::read_dir(out)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".png")
        })
        .count()
}

#[test]
fn a_node_restarted_mid_job_has_its_frames_rendered_again() {
    let node = NodeProcess::start(&["--threads", "1"]);
    let url = node.url.clone();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut node = Some(node);
    let mut restarted = None;
    let (success, events) = render(out.path(), work.path(), &[&url], "1-8", |event| {
        if event["event"] == "frame" && event["state"] == "done" && restarted.is_none() {
            // Back within a second: too soon to count as lost, but it has
            // forgotten the frames it held.
            restarted = Some(node.take().unwrap().restart(&["--threads", "1"]));
        }
    });
    assert!(restarted.is_some());
    assert!(success, "{events:?}");
    assert_eq!(pngs(out.path()), 8);
    let noticed = common::log_lines(&events)
        .any(|line| line.contains("no longer has this frame") || line.contains("node lost"));
    assert!(noticed, "the restart was noticed: {events:?}");
}

#[test]
fn a_node_with_a_full_disk_is_left_out_and_the_others_render_needs_root() {
    if !common::root_or_skip("a_node_with_a_full_disk_is_left_out_and_the_others_render") {
        return;
    }
    // A 64 KiB disk: the node starts, but the 96 KiB demo scene cannot fit.
    let tiny = TinyDisk::mount();
    let work_dir = tempfile::tempdir_in(tiny.path()).unwrap();
    let full = NodeProcess::start_in(
        work_dir,
        0,
        &["--name", "full", "--cache-size", "1GiB"],
        &[],
    );
    let fine = NodeProcess::start(&["--name", "fine", "--threads", "1"]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (success, events) = render(
        out.path(),
        work.path(),
        &[&full.url, &fine.url],
        "1-4",
        |_| {},
    );
    assert!(success, "{events:?}");
    assert_eq!(pngs(out.path()), 4);
    let reported = common::log_lines(&events).any(|line| line.contains("disk is full"));
    assert!(reported, "the full disk was reported: {events:?}");
    for node in common::finished(&events)["nodes"].as_array().unwrap() {
        if node["name"] == "full" {
            assert_eq!(node["frames"], 0);
        }
    }
    // The node is still up and says what it is.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(full.info())["name"], "full");
}

/// A node whose disk fills part way through an upload answers the sender
/// with why, on the same connection, however much the sender still had to
/// send: a plain client (no `Expect: 100-continue`) sends the whole body at
/// once, and a node that answered without reading the rest would break its
/// pipe and leave it with no reason.
#[test]
fn a_full_disk_is_answered_not_cut_off_needs_root() {
    if !common::root_or_skip("a_full_disk_is_answered_not_cut_off") {
        return;
    }
    let tiny = TinyDisk::mount();
    let node = NodeProcess::start_in(
        tempfile::tempdir_in(tiny.path()).unwrap(),
        0,
        &["--name", "full", "--cache-size", "1GiB"],
        &[],
    );
    let host = node.url.trim_start_matches("http://").to_string();
    // 8 MB: far more than the disk and the socket buffers hold.
    let body: Vec<u8> = (0..8 << 20).map(|n: u32| (n % 251) as u8).collect();
    let hash = common::sha256(&body);
    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let (status, answer) = common::put_raw(&mut stream, &host, &hash, &body);
    assert_eq!(status, "HTTP/1.1 507 Insufficient Storage", "{answer}");
    assert!(answer.contains("disk is full"), "{answer}");
    // The connection still serves.
    let (status, _) = common::put_raw(&mut stream, &host, &hash, &body);
    assert_eq!(status, "HTTP/1.1 507 Insufficient Storage");
}

/// A 64 KiB tmpfs, mounted for as long as this lives (root only).
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "herd-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mount tmpfs");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
