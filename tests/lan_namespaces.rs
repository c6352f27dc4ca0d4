//! Tests across a LAN of network namespaces (see `common/netns.rs`): real
//! broadcast discovery between hosts and the node's LAN-only guard. They need
//! root; without it each prints that it is skipped. CI runs them as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::Lan;
use serde_json::Value;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// Starts `herd node` on `host` with default ports and waits until it listens.
fn start_node(lan: &Lan, host: &str, work_dir: &std::path::Path) -> Child {
    start_node_with(lan, host, work_dir, &["--announce-interval", "60"])
}

fn start_node_with(lan: &Lan, host: &str, work_dir: &std::path::Path, extra: &[&str]) -> Child {
    let mut child = lan
        .command(host, HERD)
        .args(["node", "--headless", "--name", host])
        .args(extra)
        .env("HERD_LOG", "herd=warn")
        .arg("--work-dir")
        .arg(work_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on http://0.0.0.0:8082"), "{line}");
    child
}

/// A LAN of `hosts` hosts: h1 for the controller, and a node started with
/// `args` on each of h2, h3, …, with a work dir of its own. The nodes are
/// killed when it is dropped.
struct Farm {
    lan: Lan,
    /// The nodes of h2, h3, …
    nodes: Vec<Child>,
    /// Their work dirs.
    work: Vec<tempfile::TempDir>,
}

impl Farm {
    fn up(hosts: usize, args: &[&str]) -> Self {
        let lan = Lan::up(hosts);
        let mut work = Vec::new();
        let mut nodes = Vec::new();
        for host in 2..=hosts {
            let dir = tempfile::tempdir().unwrap();
            nodes.push(start_node_with(&lan, &format!("h{host}"), dir.path(), args));
            work.push(dir);
        }
        Self { lan, nodes, work }
    }

    /// Three hosts, nodes on h2 and h3 with a beacon every second.
    fn two_nodes() -> Self {
        Self::up(3, &["--threads", "1", "--announce-interval", "1"])
    }
}

/// `herd render` arguments for the node on h2 only, given by hand.
const ONLY_H2: [&str; 3] = ["--no-discovery", "--node", "http://10.77.0.2:8082"];

impl Drop for Farm {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Runs `herd nodes --json` on `host` and returns the list it prints.
fn list_nodes(lan: &Lan, host: &str, args: &[&str]) -> Vec<Value> {
    let output = lan
        .command(host, HERD)
        .args(["nodes", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn node_on_one_host_is_heard_on_another_by_broadcast_needs_root() {
    if !common::root_or_skip("node_on_one_host_is_heard_on_another_by_broadcast") {
        return;
    }
    let lan = Lan::up(3);
    let work = tempfile::tempdir().unwrap();
    let mut node = start_node(&lan, "h1", work.path());

    // The probe is answered at once: the node's period is 60 s, the wait 1 s.
    let asked = Instant::now();
    let found = list_nodes(&lan, "h2", &["--wait", "1"]);
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["uri"], "http://10.77.0.1:8082");
    assert_eq!(found[0]["name"], "h1");
    assert_eq!(found[0]["state"], "idle");
    assert_eq!(found[0]["blender_version"], "3.4.1");

    // A second host hears it too; a host on its own hears nothing once cut.
    assert_eq!(list_nodes(&lan, "h3", &["--wait", "1"]).len(), 1);
    lan.cut("h3");
    assert_eq!(list_nodes(&lan, "h3", &["--wait", "1"]).len(), 0);
    lan.heal("h3");
    assert_eq!(list_nodes(&lan, "h3", &["--wait", "1"]).len(), 1);
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn clients_outside_the_subnet_are_refused_needs_root() {
    if !common::root_or_skip("clients_outside_the_subnet_are_refused") {
        return;
    }
    let lan = Lan::up(2);
    lan.plug("out", "10.78.0.9/24");
    let work = tempfile::tempdir().unwrap();
    let mut node = start_node(&lan, "h1", work.path());
    let uri = "http://10.77.0.1:8082";

    let inside = list_nodes(&lan, "h2", &["--no-discovery", "--node", uri]);
    assert_eq!(inside[0]["name"], "h1", "{inside:?}");

    let outside = list_nodes(&lan, "out", &["--no-discovery", "--node", uri]);
    let error = outside[0]["error"].as_str().unwrap();
    assert!(error.contains("403"), "{error}");
    assert!(
        error.contains("not on this node's local network"),
        "{error}"
    );
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn a_job_across_hosts_survives_a_cut_link_and_the_node_rejoins_needs_root() {
    if !common::root_or_skip("a_job_across_hosts_survives_a_cut_link_and_the_node_rejoins") {
        return;
    }
    let farm = Farm::two_nodes();
    let lan = &farm.lan;
    let out = tempfile::tempdir().unwrap();
    let work1 = tempfile::tempdir().unwrap();
    let mut controller = lan
        .command("h1", HERD)
        .arg("render")
        .arg(common::demo_blend())
        .args(["--frames", "1-24", "--no-local", "--json", "--out"])
        .arg(out.path())
        .arg("--work-dir")
        .arg(work1.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut cut_at = None;
    let mut events = Vec::new();
    let mut healer = None;
    for line in BufReader::new(controller.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if cut_at.is_none()
            && event["event"] == "frame"
            && event["state"] == "done"
            && event["node"] == "h3"
        {
            lan.cut("h3");
            cut_at = Some(Instant::now());
        }
        let lost = event["event"] == "log"
            && event["message"]
                .as_str()
                .unwrap_or("")
                .contains("node lost");
        if lost && healer.is_none() {
            let since_cut = cut_at.map(|at| at.elapsed());
            assert!(
                since_cut.is_some_and(|d| d < Duration::from_secs(5)),
                "loss seen {since_cut:?} after the cut"
            );
            std::thread::sleep(Duration::from_secs(1));
            lan.heal("h3");
            healer = Some(Instant::now());
        }
        events.push(event);
    }
    let status = controller.wait().unwrap();
    assert!(status.success(), "{events:?}");
    assert!(
        cut_at.is_some() && healer.is_some(),
        "the link was cut and healed"
    );
    let back = events.iter().any(|event| {
        event["event"] == "log" && event["message"].as_str().unwrap_or("").contains("is back")
    });
    assert!(back, "the node rejoined after the link returned");
    assert_job_complete(out.path(), &events, 24);
}

/// Runs `herd render --json` on `host` with `args`; `on_event` sees each
/// event with the controller's pid and may kill it. Returns the events and
/// whether the controller exited successfully.
fn render_on(
    lan: &Lan,
    host: &str,
    out: &std::path::Path,
    work: &std::path::Path,
    args: &[&str],
    mut on_event: impl FnMut(&Value, u32),
) -> (Vec<Value>, bool) {
    let mut controller = lan
        .command(host, HERD)
        .arg("render")
        .arg(common::demo_blend())
        .args(["--no-local", "--json", "--out"])
        .arg(out)
        .arg("--work-dir")
        .arg(work)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = controller.id();
    let mut events = Vec::new();
    for line in BufReader::new(controller.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        on_event(&event, pid);
        events.push(event);
    }
    let success = controller.wait().unwrap().success();
    (events, success)
}

#[test]
fn node_and_controller_killed_mid_job_then_resumed_by_hand_needs_root() {
    if !common::root_or_skip("node_and_controller_killed_mid_job_then_resumed_by_hand") {
        return;
    }
    let mut farm = Farm::two_nodes();
    let lan = &farm.lan;
    let out = tempfile::tempdir().unwrap();
    let work1 = tempfile::tempdir().unwrap();

    // First run, by broadcast discovery: kill -9 node h3 once it rendered a
    // frame, then kill -9 the controller after 8 frames.
    let mut done = 0;
    let mut node3_killed = false;
    let (events, success) = render_on(
        lan,
        "h1",
        out.path(),
        work1.path(),
        &["--frames", "1-20"],
        |event, pid| {
            if event["event"] == "frame" && event["state"] == "done" {
                done += 1;
                if event["node"] == "h3" && !node3_killed {
                    let _ = farm.nodes[1].kill();
                    node3_killed = true;
                }
                if done == 8 {
                    std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap();
                }
            }
        },
    );
    assert!(!success, "the controller was killed: {events:?}");
    assert!(
        node3_killed,
        "node h3 rendered a frame before the controller died"
    );
    let lost = events.iter().any(|event| {
        event["event"] == "log"
            && event["message"]
                .as_str()
                .unwrap_or("")
                .contains("node lost")
    });
    assert!(lost, "h3's death was noticed before the controller's");
    let before: usize = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".png")
        })
        .count();
    assert!(before >= 8, "{before}");

    // Second run: the surviving node given by hand, no discovery.
    let (events, success) = render_on(
        lan,
        "h1",
        out.path(),
        work1.path(),
        &[&["--frames", "1-20"][..], &ONLY_H2].concat(),
        |_, _| {},
    );
    assert!(success, "{events:?}");
    let started = events
        .iter()
        .find(|event| event["event"] == "started")
        .unwrap();
    assert_eq!(started["skipped"].as_u64(), Some(before as u64));
    let summary = events
        .iter()
        .find(|event| event["event"] == "finished")
        .unwrap();
    assert_eq!(summary["nodes"][0]["name"], "h2");
    assert_eq!(
        summary["nodes"][0]["frames"].as_u64(),
        Some(20 - before as u64),
        "done frames were not rendered again"
    );
    for frame in 1..=20 {
        let image = image::open(out.path().join(format!("demo_{frame:04}.png"))).unwrap();
        assert_eq!((image.width(), image.height()), (320, 180));
    }
    let leftovers = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".part")
        })
        .count();
    assert_eq!(leftovers, 0, "no temp files left");
}

/// A node's blob store: each stored blob's name and whether its content
/// hashes to it, and the half uploads still in `incoming/`.
fn blob_store(work: &std::path::Path) -> (Vec<(String, bool)>, Vec<String>) {
    let names = |dir: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
            .unwrap_or_default()
    };
    let blobs = names(work.join("blobs"))
        .into_iter()
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let intact = common::sha256(&std::fs::read(&path).unwrap()) == name;
            (name, intact)
        })
        .collect();
    let partial = names(work.join("blobs/incoming"))
        .into_iter()
        .map(|path| path.display().to_string())
        .collect();
    (blobs, partial)
}

/// Every frame of `frames` decodes at the demo's size, none is written
/// twice (the nodes' counts add up) and no temporary file is left.
fn assert_job_complete(out: &std::path::Path, events: &[Value], frames: u64) {
    let last = i32::try_from(frames).unwrap();
    common::check_demo_frames(out, 1..=last);
    common::assert_rendered_once(events, frames);
}

/// How long a cut link stays down in the transfer tests: longer than the
/// controller's loss detection (2.5 s), so the node is taken for lost.
const CUT: Duration = Duration::from_secs(4);

#[test]
fn a_link_cut_mid_upload_then_restored_never_uses_a_half_upload_needs_root() {
    if !common::root_or_skip("a_link_cut_mid_upload_then_restored_never_uses_a_half_upload") {
        return;
    }
    let farm = Farm::up(2, &["--threads", "1"]);
    let (lan, work2) = (&farm.lan, farm.work[0].path());
    // The controller sends at 256 kbit/s: the 96 KiB scene takes 3 s.
    lan.shape("h1", "256kbit");
    let out = tempfile::tempdir().unwrap();
    let work1 = tempfile::tempdir().unwrap();
    let incoming = work2.join("blobs/incoming");
    let scene_bytes = std::fs::metadata(common::demo_blend()).unwrap().len();
    let (cut_at_bytes, (events, success)) = std::thread::scope(|scope| {
        // Cut the node's link once part of the scene is on its disk.
        let cutter = scope.spawn(|| {
            let started = Instant::now();
            loop {
                let partial = std::fs::read_dir(&incoming)
                    .into_iter()
                    .flatten()
                    .filter_map(|entry| entry.ok()?.metadata().ok())
                    .map(|meta| meta.len())
                    .find(|&len| len > 0);
                if let Some(len) = partial {
                    lan.cut("h2");
                    std::thread::sleep(CUT);
                    lan.heal("h2");
                    return len;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no upload seen"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let rendered = render_on(
            lan,
            "h1",
            out.path(),
            work1.path(),
            &[&["--frames", "1-4"][..], &ONLY_H2].concat(),
            |_, _| {},
        );
        (cutter.join().unwrap(), rendered)
    });
    assert!(success, "{events:?}");
    assert!(
        cut_at_bytes < scene_bytes,
        "cut mid-upload: {cut_at_bytes} of {scene_bytes} bytes had arrived"
    );
    assert_job_complete(out.path(), &events, 4);
    let (blobs, partial) = blob_store(work2);
    assert_eq!(blobs.len(), 1, "one blob, the scene: {blobs:?}");
    assert!(blobs[0].1, "the stored blob hashes to its name: {blobs:?}");
    assert!(partial.is_empty(), "no half upload left: {partial:?}");
}

#[test]
fn a_link_cut_mid_download_then_restored_writes_each_frame_once_needs_root() {
    if !common::root_or_skip("a_link_cut_mid_download_then_restored_writes_each_frame_once") {
        return;
    }
    let farm = Farm::up(2, &["--threads", "1"]);
    let lan = &farm.lan;
    // The node sends at 256 kbit/s: a frame (≈ 100 KB) takes about 3 s.
    lan.shape("h2", "256kbit");
    let out = tempfile::tempdir().unwrap();
    let work1 = tempfile::tempdir().unwrap();
    let mut cut = false;
    let (events, success) = std::thread::scope(|scope| {
        render_on(
            lan,
            "h1",
            out.path(),
            work1.path(),
            &[&["--frames", "1-4"][..], &ONLY_H2].concat(),
            |event, _| {
                if !cut && event["event"] == "frame" && event["state"] == "downloading" {
                    cut = true;
                    std::thread::sleep(Duration::from_millis(500));
                    lan.cut("h2");
                    scope.spawn(|| {
                        std::thread::sleep(CUT);
                        lan.heal("h2");
                    });
                }
            },
        )
    });
    assert!(cut, "a download was cut");
    assert!(success, "{events:?}");
    let logs: Vec<&str> = common::log_lines(&events).collect();
    assert!(
        logs.iter().any(|line| line.contains("node lost")),
        "the cut was noticed: {logs:?}"
    );
    assert_job_complete(out.path(), &events, 4);
}
