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
