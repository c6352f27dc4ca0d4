//! Faults a real farm meets, with real Blender: a node restarted mid-job (it
//! forgets its renders), a node whose disk is full. Loopback; the disk-full
//! test mounts a small tmpfs and needs root (it says so and is skipped
//! without it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{NodeProcess, demo_blend};
use serde_json::Value;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn render(
    out: &Path,
    work: &Path,
    nodes: &[&str],
    frames: &str,
    mut on_event: impl FnMut(&Value),
) -> (bool, Vec<Value>) {
    let mut command = Command::new(HERD);
    command
        .arg("render")
        .arg(demo_blend())
        .args([
            "--frames",
            frames,
            "--no-local",
            "--no-discovery",
            "--json",
            "--out",
        ])
        .arg(out)
        .arg("--work-dir")
        .arg(work)
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for node in nodes {
        command.args(["--node", node]);
    }
    let mut child = command.spawn().unwrap();
    let mut events = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        on_event(&event);
        events.push(event);
    }
    (child.wait().unwrap().success(), events)
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
    let noticed = events.iter().any(|event| {
        event["event"] == "log"
            && event["message"]
                .as_str()
                .unwrap_or("")
                .contains("no longer has this frame")
            || event["message"]
                .as_str()
                .unwrap_or("")
                .contains("node lost")
    });
    assert!(noticed, "the restart was noticed: {events:?}");
}

#[test]
fn a_node_with_a_full_disk_is_left_out_and_the_others_render_needs_root() {
    if !common::root_or_skip("a_node_with_a_full_disk_is_left_out_and_the_others_render") {
        return;
    }
    // A 64 KiB disk: the node starts, but the 96 KiB demo scene cannot fit.
    let tiny = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "herd-test",
            tiny.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(tiny.path());
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
    let reported = events.iter().any(|event| {
        event["event"] == "log"
            && event["message"]
                .as_str()
                .unwrap_or("")
                .contains("disk is full")
    });
    assert!(reported, "the full disk was reported: {events:?}");
    let summary = events
        .iter()
        .find(|event| event["event"] == "finished")
        .unwrap();
    for node in summary["nodes"].as_array().unwrap() {
        if node["name"] == "full" {
            assert_eq!(node["frames"], 0);
        }
    }
    // The node is still up and says what it is.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(full.info())["name"], "full");
}
