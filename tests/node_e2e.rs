//! End-to-end tests of `herd node --headless` with the real Blender, on
//! loopback (HERD_LOOPBACK_ONLY=1): uploads, renders, failures, beacons and
//! shutdown, all through the real binary and its HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{NodeProcess, demo_blend, demo_variant};
use serde_json::json;

const FRAME_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn renders_frames_with_blender_kept_loaded() {
    let node = NodeProcess::start(&[]);
    let bytes = std::fs::read(demo_blend()).unwrap();
    let hash = node.upload(bytes.clone()).await;
    // A second upload of the same file is skipped: HEAD says the node has it.
    let head = node
        .client
        .head(node.api(&format!("blobs/{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    let ids = [
        node.queue(&hash, 1, json!({})).await,
        node.queue(&hash, 2, json!({})).await,
        node.queue(&hash, 3, json!({})).await,
    ];
    let mut pids = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let status = node.wait_final(id, FRAME_LIMIT).await;
        assert_eq!(status["state"], "done", "{status}");
        assert_eq!(status["frame"], index + 1);
        assert!(status["render_secs"].as_f64().unwrap() > 0.0);
        // Blender loads the scene for the first frame only.
        assert_eq!(status["load_secs"].is_number(), index == 0, "{status}");

        let (code, png) = node.bytes(&format!("renders/{id}/image")).await;
        assert_eq!(code, 200);
        let image = image::load_from_memory(&png).unwrap();
        assert_eq!((image.width(), image.height()), (320, 180));
        let (code, thumb) = node.bytes(&format!("renders/{id}/thumbnail")).await;
        assert_eq!(code, 200);
        let thumb = image::load_from_memory(&thumb).unwrap();
        assert!(thumb.width() <= 256 && thumb.height() <= 256);
        pids.push(node.info().await["blender_pid"].clone());
    }
    assert!(
        pids.iter().all(|pid| pid == &pids[0] && pid.is_number()),
        "{pids:?}"
    );
    let info = node.info().await;
    assert_eq!(info["frames_rendered"], 3);
    assert_eq!(info["state"], "idle");

    // Overrides apply to one request only.
    let half = node
        .queue(
            &hash,
            4,
            json!({"resolution_percent": 50, "format": "JPEG", "samples": 2}),
        )
        .await;
    let status = node.wait_final(&half, FRAME_LIMIT).await;
    assert_eq!(
        (status["state"].as_str(), status["extension"].as_str()),
        (Some("done"), Some("jpg"))
    );
    assert_eq!(
        (status["width"].as_u64(), status["height"].as_u64()),
        (Some(160), Some(90))
    );
    let full = node.queue(&hash, 5, json!({})).await;
    let status = node.wait_final(&full, FRAME_LIMIT).await;
    assert_eq!(
        (status["width"].as_u64(), status["extension"].as_str()),
        (Some(320), Some("png"))
    );
}

#[tokio::test]
async fn killed_blender_fails_its_frame_and_the_next_frame_renders() {
    let node = NodeProcess::start(&[]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    // Enough samples that the frame is still rendering when Blender is killed.
    let slow = node.queue(&hash, 7, json!({"samples": 100000})).await;
    node.wait_until(&slow, FRAME_LIMIT, |status| {
        status["state"] == "rendering" && status["progress"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    let pid = node.info().await["blender_pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let status = node.wait_final(&slow, FRAME_LIMIT).await;
    assert_eq!(status["state"], "failed");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("Blender exited unexpectedly (killed by signal 9)"),
        "{error}"
    );
    assert!(
        error.contains("Sample"),
        "the error carries Blender's last lines: {error}"
    );

    let next = node.queue(&hash, 8, json!({})).await;
    let status = node.wait_final(&next, FRAME_LIMIT).await;
    assert_eq!(status["state"], "done", "{status}");
    assert!(
        status["load_secs"].is_number(),
        "a fresh Blender loaded the scene"
    );
    assert_ne!(node.info().await["blender_pid"].as_u64(), Some(pid));
}

#[tokio::test]
async fn cancelling_stops_the_frame_and_empties_the_queue() {
    let node = NodeProcess::start(&[]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let slow = node.queue(&hash, 1, json!({"samples": 100000})).await;
    let queued = node.queue(&hash, 2, json!({})).await;
    node.wait_until(&slow, FRAME_LIMIT, |status| status["state"] == "rendering")
        .await;
    let delete = |id: String| {
        node.client
            .delete(node.api(&format!("renders/{id}")))
            .send()
    };
    assert_eq!(delete(queued.clone()).await.unwrap().status(), 200);
    assert_eq!(node.status(&queued).await["state"], "cancelled");
    let started = Instant::now();
    assert_eq!(delete(slow.clone()).await.unwrap().status(), 200);
    let status = node.wait_final(&slow, FRAME_LIMIT).await;
    assert_eq!(status["state"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Blender was stopped mid-frame"
    );
    let (code, _) = node.bytes(&format!("renders/{slow}/image")).await;
    assert_eq!(code, 409, "a cancelled render has no image");

    let after = node.queue(&hash, 3, json!({})).await;
    assert_eq!(node.wait_final(&after, FRAME_LIMIT).await["state"], "done");
}

#[tokio::test]
async fn corrupt_blend_is_a_clear_error_and_the_node_stays_up() {
    let node = NodeProcess::start(&[]);
    // A .blend cut in half: its hash is right, its content is not.
    let whole = std::fs::read(demo_blend()).unwrap();
    let truncated = node.upload(whole[..whole.len() / 2].to_vec()).await;
    let garbage = node
        .upload(b"this is not a blend file at all".to_vec())
        .await;
    for blob in [truncated, garbage] {
        let id = node.queue(&blob, 1, json!({})).await;
        let status = node.wait_final(&id, FRAME_LIMIT).await;
        assert_eq!(status["state"], "failed");
        let error = status["error"].as_str().unwrap();
        assert!(error.contains("Blender cannot open the .blend"), "{error}");
        assert!(error.contains(&blob), "the error names the file: {error}");
    }
    assert_eq!(node.info().await["state"], "idle");
    let good = node.upload(whole).await;
    let id = node.queue(&good, 2, json!({})).await;
    assert_eq!(node.wait_final(&id, FRAME_LIMIT).await["state"], "done");
}

#[tokio::test]
async fn blender_errors_surface_verbatim() {
    let scenes = tempfile::tempdir().unwrap();
    let denoised = demo_variant(
        scenes.path(),
        "denoised.blend",
        "scene.cycles.use_denoising = True",
    );
    let node = NodeProcess::start(&[]);
    let hash = node.upload(std::fs::read(denoised).unwrap()).await;
    let id = node.queue(&hash, 1, json!({})).await;
    let status = node.wait_final(&id, FRAME_LIMIT).await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["error"], "Error: Build without OpenImageDenoiser");
}

#[tokio::test]
async fn beacons_reach_announce_to_and_probes_are_answered() {
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let node = NodeProcess::start(&["--announce-to", &target, "--announce-interval", "60"]);
    let info = node.info().await;

    let mut buffer = [0u8; 2048];
    let (length, _) = listener.recv_from(&mut buffer).unwrap();
    let beacon: serde_json::Value = serde_json::from_slice(&buffer[..length]).unwrap();
    assert_eq!(beacon["kind"], "beacon");
    assert_eq!(beacon["herd"], 1);
    assert_eq!(beacon["id"], info["id"]);
    assert_eq!(beacon["uri"].as_str(), Some(node.url.as_str()));

    // Garbage first: the node must shrug it off and still answer the probe.
    let prober = UdpSocket::bind("127.0.0.1:0").unwrap();
    prober
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let node_udp = format!("127.0.0.1:{}", node.discovery_port);
    prober.send_to(b"\x00\xffnot json", &node_udp).unwrap();
    prober.send_to(&vec![b'{'; 4000], &node_udp).unwrap();
    let asked = Instant::now();
    prober
        .send_to(br#"{"kind":"probe","herd":1}"#, &node_udp)
        .unwrap();
    let (length, _) = prober.recv_from(&mut buffer).unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "answered at once, not at the period"
    );
    let answer: serde_json::Value = serde_json::from_slice(&buffer[..length]).unwrap();
    assert_eq!(answer["id"], info["id"]);
    assert_eq!(answer["uri"].as_str(), Some(node.url.as_str()));
}

#[tokio::test]
async fn sigterm_mid_frame_cancels_it_ends_blender_and_exits_0() {
    let mut node = NodeProcess::start(&[]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let slow = node.queue(&hash, 1, json!({"samples": 100000})).await;
    node.wait_until(&slow, FRAME_LIMIT, |status| status["state"] == "rendering")
        .await;
    let pid = node.info().await["blender_pid"].as_u64().unwrap();
    let status = node.terminate();
    assert!(status.success(), "{status}");
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(!alive, "Blender {pid} outlived the node");
    let incoming = node.work_dir.path().join("blobs/incoming");
    assert_eq!(std::fs::read_dir(incoming).unwrap().count(), 0);
}

#[tokio::test]
async fn stop_over_the_api_exits_0() {
    let mut node = NodeProcess::start(&[]);
    let response = node.client.post(node.api("stop")).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let status = common::wait_exit(&mut node.child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn missing_blender_is_a_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["node", "--headless", "--port", "0", "--discovery-port", "0"])
        .args(["--blender", "/nonexistent/blender"])
        .env("HERD_LOOPBACK_ONLY", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Blender not found at /nonexistent/blender"),
        "{stderr}"
    );
    assert!(stderr.contains("--blender PATH"), "{stderr}");
}

#[tokio::test]
async fn hung_blender_is_killed_after_the_frame_timeout() {
    let node = NodeProcess::start(&["--frame-timeout", "3"]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let slow = node.queue(&hash, 1, json!({"samples": 100000})).await;
    node.wait_until(&slow, FRAME_LIMIT, |status| status["state"] == "rendering")
        .await;
    let pid = node.info().await["blender_pid"]
        .as_u64()
        .unwrap()
        .to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let status = node.wait_final(&slow, FRAME_LIMIT).await;
    assert_eq!(status["state"], "failed");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("Blender showed no sign of life for 3 s"),
        "{error}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(15));
    let next = node.queue(&hash, 2, json!({})).await;
    assert_eq!(node.wait_final(&next, FRAME_LIMIT).await["state"], "done");
}

#[tokio::test]
async fn a_busy_silent_frame_outlives_the_frame_timeout() {
    // In the background Cycles prints "Sample 1/N" and then nothing until the
    // frame ends: with one thread and many samples that silence lasts far
    // longer than the 1 s timeout, but Blender keeps using CPU time.
    let node = NodeProcess::start(&["--frame-timeout", "1", "--threads", "1"]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let long = node.queue(&hash, 1, json!({"samples": 400})).await;
    let status = node.wait_final(&long, FRAME_LIMIT).await;
    assert_eq!(status["state"], "done", "{status}");
    let secs = status["render_secs"].as_f64().unwrap();
    assert!(
        secs > 10.0,
        "the frame took {secs} s, not 10 times the timeout: make it longer"
    );
}

#[tokio::test]
async fn max_frame_time_stops_a_busy_frame() {
    let node = NodeProcess::start(&["--max-frame-time", "2", "--threads", "1"]);
    let hash = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let endless = node.queue(&hash, 1, json!({"samples": 100000})).await;
    let started = Instant::now();
    let status = node.wait_final(&endless, FRAME_LIMIT).await;
    assert_eq!(status["state"], "failed");
    let error = status["error"].as_str().unwrap();
    assert!(error.contains("more than 2 s"), "{error}");
    assert!(error.contains("--max-frame-time"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn scripts_in_a_blend_run_only_with_allow_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("script-ran");
    // A text block registered to run when the file loads, writing a file.
    let change = format!(
        "text = bpy.data.texts.new('herd_probe.py')\ntext.write(\"open('{}', 'w').write('ran')\\n\")\ntext.use_module = True",
        marker.display()
    );
    let scripted = demo_variant(dir.path(), "scripted.blend", &change);
    assert!(!marker.exists());
    let bytes = std::fs::read(scripted).unwrap();

    let node = NodeProcess::start(&[]);
    let hash = node.upload(bytes.clone()).await;
    let id = node.queue(&hash, 1, json!({"samples": 1})).await;
    assert_eq!(node.wait_final(&id, FRAME_LIMIT).await["state"], "done");
    assert!(
        !marker.exists(),
        "the file's script ran without --allow-scripts"
    );
    drop(node);

    let trusting = NodeProcess::start(&["--allow-scripts"]);
    let hash = trusting.upload(bytes).await;
    let id = trusting.queue(&hash, 1, json!({"samples": 1})).await;
    assert_eq!(trusting.wait_final(&id, FRAME_LIMIT).await["state"], "done");
    assert!(
        marker.exists(),
        "with --allow-scripts the file's script runs"
    );
}

#[tokio::test]
async fn a_blob_sent_again_without_expect_is_answered_not_cut_off() {
    let node = NodeProcess::start(&[]);
    let host = node.url.trim_start_matches("http://").to_string();
    // 8 MB: far more than the socket buffers hold, so a node that answered
    // without reading would close the connection under the sender.
    let body: Vec<u8> = (0..8 << 20).map(|n: u32| (n % 251) as u8).collect();
    let hash = common::sha256(&body);
    let statuses = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let first = common::put_raw(&mut stream, &host, &hash, &body).0;
        let again = common::put_raw(&mut stream, &host, &hash, &body).0;
        // The same connection still serves: the body was read to its end.
        let third = common::put_raw(&mut stream, &host, &hash, &body).0;
        // A new connection sends it again, too.
        let mut other = std::net::TcpStream::connect(&host).unwrap();
        let fresh = common::put_raw(&mut other, &host, &hash, &body).0;
        // A client that asks first is told at once and sends nothing.
        let mut asking = std::net::TcpStream::connect(&host).unwrap();
        asking
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "PUT /api/v1/blobs/{hash} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        std::io::Write::write_all(&mut asking, head.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(asking), &mut answer).unwrap();
        [first, again, third, fresh, answer.trim_end().to_string()]
    })
    .await
    .unwrap();
    assert_eq!(statuses[0], "HTTP/1.1 201 Created");
    for status in &statuses[1..] {
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
}
