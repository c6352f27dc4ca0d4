//! End-to-end tests of `herd render` with real Blender nodes on loopback
//! (`--node` addresses, HERD_LOOPBACK_ONLY=1): whole jobs, a node killed
//! mid-job, the controller killed and restarted, a scene that fails
//! everywhere. The same across network namespaces is in `lan_namespaces.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{NodeProcess, check_demo_frames, demo_blend, demo_variant, finished};
use serde_json::Value;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// `herd render --json` on loopback with the given nodes and no discovery.
fn render_command(
    blend: &Path,
    out: &Path,
    work: &Path,
    nodes: &[&NodeProcess],
    extra: &[&str],
) -> Command {
    let mut command = Command::new(HERD);
    command
        .arg("render")
        .arg(blend)
        .arg("--out")
        .arg(out)
        .arg("--work-dir")
        .arg(work)
        .args(["--no-discovery", "--json"])
        .args(extra)
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for node in nodes {
        command.args(["--node", &node.url]);
    }
    command
}

/// Reads events until the process ends; `on_event` may act on each one.
fn events(child: &mut Child, mut on_event: impl FnMut(&Value)) -> Vec<Value> {
    let stdout = child.stdout.take().unwrap();
    let mut all = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON event: {line:?}: {err}"));
        on_event(&event);
        all.push(event);
    }
    all
}

#[test]
fn a_job_spreads_over_given_nodes_and_the_local_one() {
    let a = NodeProcess::start(&["--threads", "1", "--name", "a"]);
    let b = NodeProcess::start(&["--threads", "1", "--name", "b"]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (success, events) = common::render(
        out.path(),
        work.path(),
        &[&a.url, &b.url],
        &["--frames", "1-12", "--local-threads", "1"],
        |_| {},
    );
    assert!(success, "{events:?}");
    assert_eq!(check_demo_frames(out.path(), 1..=12), 12);
    let summary = finished(&events);
    assert_eq!(summary["outcome"], "complete");
    common::assert_rendered_once(&events, 12);
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes
            .iter()
            .any(|node| node["name"].as_str().unwrap().ends_with("(local)"))
    );
}

#[test]
fn a_node_killed_mid_job_loses_nothing() {
    let mut a = NodeProcess::start(&["--threads", "1", "--name", "a"]);
    let b = NodeProcess::start(&["--threads", "1", "--name", "b"]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let nodes = [a.url.clone(), b.url.clone()];
    let mut killed_at = None;
    let (success, events) = common::render(
        out.path(),
        work.path(),
        &[&nodes[0], &nodes[1]],
        &["--frames", "1-16", "--no-local"],
        |event| {
            let done_on_a =
                event["event"] == "frame" && event["state"] == "done" && event["node"] == "a";
            if done_on_a && killed_at.is_none() {
                let _ = a.child.kill();
                killed_at = Some(Instant::now());
            }
        },
    );
    assert!(
        killed_at.is_some(),
        "node a rendered nothing before the kill"
    );
    assert!(success, "{events:?}");
    assert_eq!(check_demo_frames(out.path(), 1..=16), 16);
    let lost = events.iter().any(|event| {
        event["event"] == "log"
            && event["message"]
                .as_str()
                .unwrap_or("")
                .contains("node lost")
    });
    assert!(lost, "the loss was reported");
    common::assert_rendered_once(&events, 16);
}

#[test]
fn a_killed_controller_resumes_without_rendering_done_frames_again() {
    let node = NodeProcess::start(&["--threads", "1"]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let args = ["--frames", "1-10", "--no-local"];
    let mut first = render_command(&demo_blend(), out.path(), work.path(), &[&node], &args)
        .spawn()
        .unwrap();
    let mut done = 0;
    let pid = first.id();
    events(&mut first, |event| {
        if event["event"] == "frame" && event["state"] == "done" {
            done += 1;
            if done == 4 {
                Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .unwrap();
            }
        }
    });
    let status = first.wait().unwrap();
    assert!(!status.success(), "the first run was killed");
    let on_disk = std::fs::read_dir(out.path()).unwrap().filter(|entry| {
        entry
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".png")
    });
    let on_disk = on_disk.count();
    assert!(on_disk >= 4, "{on_disk}");

    let mut second = render_command(&demo_blend(), out.path(), work.path(), &[&node], &args)
        .spawn()
        .unwrap();
    let events = events(&mut second, |_| {});
    assert!(second.wait().unwrap().success(), "{events:?}");
    let started = events
        .iter()
        .find(|event| event["event"] == "started")
        .unwrap();
    assert_eq!(started["skipped"].as_u64(), Some(on_disk as u64));
    let summary = finished(&events);
    let rendered: u64 = summary["nodes"][0]["frames"].as_u64().unwrap();
    assert_eq!(
        rendered as usize,
        10 - on_disk,
        "done frames were not rendered again"
    );
    assert_eq!(check_demo_frames(out.path(), 1..=10), 10);
}

#[test]
fn a_scene_that_fails_everywhere_stops_once_with_blenders_error() {
    let scenes = tempfile::tempdir().unwrap();
    let denoised = demo_variant(
        scenes.path(),
        "demo.blend",
        "scene.cycles.use_denoising = True",
    );
    let node = NodeProcess::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = render_command(
        &denoised,
        out.path(),
        work.path(),
        &[&node],
        &["--frames", "1-24", "--no-local"],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the job stopped: every node failed 3 frames"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Error: Build without OpenImageDenoiser"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it did not loop over all 24 frames"
    );
}

#[test]
fn frames_already_there_are_skipped_unless_overwrite() {
    let node = NodeProcess::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["--frames", "1-3", "--no-local"];
        args.extend_from_slice(extra);
        let output = render_command(&demo_blend(), out.path(), work.path(), &[&node], &args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        finished(&events).clone()
    };
    assert_eq!(run(&[])["frames_skipped"], 0);
    assert_eq!(run(&[])["frames_skipped"], 3);
    // Another job's settings: --overwrite renders them again.
    let summary = run(&["--overwrite", "--samples", "4"]);
    assert_eq!(summary["frames_skipped"], 0);
    assert_eq!(summary["frames_done"], 3);
    // The same job again, finished before: --overwrite renders them again too.
    let summary = run(&["--overwrite", "--samples", "4"]);
    assert_eq!(summary["frames_skipped"], 0);
    assert_eq!(summary["frames_done"], 3);
}

#[test]
fn garbage_and_spoofed_beacons_do_not_disturb_a_job() {
    let node = NodeProcess::start(&["--threads", "1", "--name", "real"]);
    let real_id = {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(node.info())["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Something on the LAN that answers HTTP but is not a herd node.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let impostor_uri = format!("http://{}", impostor.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in impostor.incoming().flatten() {
            use std::io::Write;
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nnot json");
        }
    });
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(HERD)
        .arg("render")
        .arg(demo_blend())
        .args([
            "--frames",
            "1-6",
            "--no-local",
            "--json",
            "--discovery-port",
            &port.to_string(),
        ])
        .args(["--node", &node.url])
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spammer = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let target = format!("127.0.0.1:{port}");
            let beacon = |id: &str, uri: &str| {
                format!(
                    r#"{{"kind":"beacon","herd":1,"id":"{id}","name":"evil","uri":"{uri}","state":"idle","version":"0"}}"#
                )
            };
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                let datagrams = [
                    b"\x00\x01garbage".to_vec(),
                    vec![b'{'; 4000],
                    beacon(&real_id, &impostor_uri).into_bytes(),
                    beacon(&format!("fake-{sent}"), &impostor_uri).into_bytes(),
                    beacon("closed", "http://127.0.0.1:1").into_bytes(),
                ];
                for datagram in datagrams {
                    let _ = socket.send_to(&datagram, &target);
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let events = events(&mut child, |_| {});
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spammer.join().unwrap();
    assert!(child.wait().unwrap().success(), "{events:?}");
    assert_eq!(check_demo_frames(out.path(), 1..=6), 6);
    let summary = finished(&events);
    let names: Vec<&str> = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["real"], "no impostor took frames");
}

#[test]
fn nodes_with_a_token_need_it_and_unusable_nodes_stop_the_job_clearly() {
    let node = NodeProcess::start(&["--token", "s3cret", "--name", "guarded"]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let args = ["--frames", "1-2", "--no-local"];
    let output = render_command(&demo_blend(), out.path(), work.path(), &[&node], &args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no node can render this job"), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    let mut with_token = args.to_vec();
    with_token.extend(["--token", "s3cret"]);
    let output = render_command(
        &demo_blend(),
        out.path(),
        work.path(),
        &[&node],
        &with_token,
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(check_demo_frames(out.path(), 1..=2), 2);
}

#[test]
fn the_on_end_command_gets_the_jobs_summary_as_json_on_stdin() {
    let node = NodeProcess::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let written = work.path().join("summary.json");
    let on_end = format!("cat > '{}'", written.display());
    let output = render_command(
        &demo_blend(),
        out.path(),
        work.path(),
        &[&node],
        &[
            "--frames",
            "1-2",
            "--no-local",
            "--resolution-percent",
            "25",
            "--on-end",
            &on_end,
        ],
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&written).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "complete");
    assert_eq!(summary["frames_total"], 2);
    assert_eq!(summary["frames_done"], 2);
    assert_eq!(summary["nodes"][0]["frames"], 2);
    assert_eq!(
        summary["output_dir"].as_str().map(Path::new),
        Some(out.path())
    );
}
