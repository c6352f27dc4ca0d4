//! Hostile and broken peers, with real Blender on loopback: clients that
//! trickle their requests a byte a second, a thousand connections held open
//! on a rendering node, and a node that hands back wrong images.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use common::{NodeProcess, demo_blend};
use herd::node::http::HEADER_READ_TIMEOUT;
use herd::wire::{NodeInfo, NodeState, RenderChanges, RenderState, RenderStatus};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection to `addr`, writes `head` at once, then `slow` one byte
/// a second, while reading whatever comes back. Returns how long the
/// connection stayed open and what the server sent.
async fn trickle(addr: String, head: Vec<u8>, slow: Vec<u8>) -> (Duration, String) {
    let opened = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = async move {
        writer.write_all(&head).await?;
        for byte in slow {
            tokio::time::sleep(Duration::from_secs(1)).await;
            writer.write_all(&[byte]).await?;
        }
        // Everything sent and the server still listening: wait for it.
        std::future::pending::<std::io::Result<()>>().await
    };
    let read = async move {
        let mut received = Vec::new();
        let _ = reader.read_to_end(&mut received).await;
        received
    };
    let received = tokio::select! {
        received = read => received,
        _ = write => Vec::new(),
    };
    (
        opened.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

/// A slow client may take the header timeout (plus scheduling slack), no more.
fn assert_cut_off_on_time(what: &str, open_for: Duration) {
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    assert!(
        open_for >= HEADER_READ_TIMEOUT - Duration::from_secs(1) && open_for <= limit,
        "{what} was open for {open_for:?}, expected about {HEADER_READ_TIMEOUT:?}"
    );
}

/// Asks for the node's status every 100 ms (calling `on_answer` after each)
/// until the renders `ids` are done. Returns the slowest answer.
async fn status_until(node: &NodeProcess, ids: &[String], mut on_answer: impl FnMut()) -> Duration {
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let info = tokio::time::timeout(Duration::from_secs(5), node.info())
            .await
            .expect("the node answers its status");
        slowest = slowest.max(asked.elapsed());
        assert!(info["name"].is_string(), "{info}");
        on_answer();
        let mut finished = 0;
        for id in ids {
            let status = node.status(id).await;
            match status["state"].as_str() {
                Some("done") => finished += 1,
                Some("failed" | "cancelled") => panic!("a frame failed: {status}"),
                _ => {}
            }
        }
        if finished == ids.len() {
            return slowest;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue_demo_frames(
    node: &NodeProcess,
    frames: std::ops::RangeInclusive<i32>,
) -> Vec<String> {
    let blob = node.upload(std::fs::read(demo_blend()).unwrap()).await;
    let mut ids = Vec::new();
    for frame in frames {
        ids.push(node.queue(&blob, frame, serde_json::json!({})).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_a_byte_a_second_are_cut_off_while_the_node_renders() {
    let node = NodeProcess::start(&["--threads", "1"]);
    // Headers one byte a second: cut off by the header timeout.
    let slow_head = tokio::spawn(trickle(
        node.addr(),
        Vec::new(),
        b"GET /api/v1/node HTTP/1.1\r\nHost: node\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n"
            .to_vec(),
    ));
    // A render request whose body comes a byte a second: refused with 408
    // by the body timeout, having queued nothing.
    let body = br#"{"blob": "0000000000000000000000000000000000000000000000000000000000000000", "frame": 1}"#;
    let head = format!(
        "POST /api/v1/renders HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let slow_body = tokio::spawn(trickle(node.addr(), head.into_bytes(), body.to_vec()));

    let ids = queue_demo_frames(&node, 1..=8).await;
    let slowest = status_until(&node, &ids, || {}).await;
    assert!(slowest < Duration::from_secs(1), "status took {slowest:?}");

    let (head_open_for, _) = slow_head.await.unwrap();
    assert_cut_off_on_time("the slow header", head_open_for);
    let (body_open_for, answer) = slow_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("send it at once"), "{answer}");
    assert_cut_off_on_time("the slow body", body_open_for);

    let info = node.info().await;
    assert_eq!(info["frames_rendered"], 8, "{info}");
    assert_eq!(info["queued"], 0, "the slow request queued nothing: {info}");
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// A slow client that never finishes its request: it connects, begins one,
/// waits for the node to hang up, and connects again. `open` counts the
/// connections it holds.
async fn slow_client(addr: String, open: Arc<AtomicUsize>) {
    loop {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if stream
            .write_all(b"GET /api/v1/node HTTP/1.1\r\n")
            .await
            .is_ok()
        {
            let _ = stream.read_to_end(&mut Vec::new()).await;
        }
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_connections_leave_status_and_rendering_alone() {
    const CONNECTIONS: usize = 1000;
    // This process holds the client ends; the node (its child) inherits the
    // raised limit and raises its own too.
    let limit = herd::node::http::raise_open_files_limit().unwrap_or(u64::MAX);
    assert!(
        limit > 1200,
        "the open files limit is {limit}: raise it (ulimit -n 4096) for this test"
    );
    let node = NodeProcess::start(&["--threads", "1"]);
    let open = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        clients.spawn(slow_client(node.addr(), Arc::clone(&open)));
    }
    let opened = Instant::now();
    while open.load(Ordering::Relaxed) < CONNECTIONS {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "could not open {CONNECTIONS} connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids = queue_demo_frames(&node, 1..=4).await;
    // The node's own count: its files include every connection it serves.
    let pid = node.child.id();
    let mut samples = Vec::new();
    let slowest = status_until(&node, &ids, || samples.push(open_fds(pid))).await;
    clients.abort_all();
    // The node closes them all at the header timeout and they come back at
    // once: the count dips for a moment every 10 s, so take the median.
    let mut sorted = samples.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        median >= CONNECTIONS,
        "the node held a median of {median} files, fewer than the {CONNECTIONS} connections: {samples:?}"
    );
    assert!(slowest < Duration::from_secs(1), "status took {slowest:?}");
    assert_eq!(node.info().await["frames_rendered"], 4);
}

/// A node that speaks the API just enough to take frames, and hands back a
/// wrong image for each: a PNG of the wrong size, or bytes that are no image.
#[derive(Default)]
struct FakeNode {
    seq: u64,
    /// Render id → frame number.
    renders: BTreeMap<String, i32>,
    images_served: usize,
}

type Fake = Arc<Mutex<FakeNode>>;

fn fake_info() -> NodeInfo {
    NodeInfo {
        id: "00000000-0000-4000-8000-00000000fa4e".into(),
        name: "fake".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        blender_version: "3.4.1".into(),
        blender_path: "/usr/bin/blender".into(),
        blender_pid: None,
        cores: 2,
        state: NodeState::Idle,
        current: None,
        queued: 0,
        frames_rendered: 0,
        uptime_secs: 1.0,
        blob_bytes_received: 0,
        cache_bytes: None,
    }
}

fn fake_status(id: &str, frame: i32) -> RenderStatus {
    RenderStatus {
        id: id.into(),
        blob: String::new(),
        frame,
        state: RenderState::Done,
        progress: 1.0,
        load_secs: None,
        render_secs: Some(0.01),
        queued_secs: Some(0.0),
        width: Some(320),
        height: Some(180),
        extension: Some("png".into()),
        error: None,
        log_tail: Vec::new(),
        missing_files: Vec::new(),
        outputs: Vec::new(),
        notes: Vec::new(),
        prep_secs: None,
    }
}

fn fake_router(fake: Fake) -> Router {
    async fn watch(
        State(fake): State<Fake>,
        Query(query): Query<BTreeMap<String, u64>>,
    ) -> Json<RenderChanges> {
        let since = query.get("since").copied().unwrap_or(0);
        let wait_ms = query.get("wait_ms").copied().unwrap_or(0);
        let seq = fake.lock().unwrap().seq;
        if wait_ms > 0 && since >= seq {
            tokio::time::sleep(Duration::from_millis(wait_ms.min(200))).await;
        }
        let fake = fake.lock().unwrap();
        Json(RenderChanges {
            seq: fake.seq,
            state: NodeState::Idle,
            renders: fake
                .renders
                .iter()
                .map(|(id, frame)| fake_status(id, *frame))
                .collect(),
        })
    }
    async fn create(
        State(fake): State<Fake>,
        Json(body): Json<Value>,
    ) -> (axum::http::StatusCode, Json<Value>) {
        let id = uuid::Uuid::new_v4().to_string();
        let mut fake = fake.lock().unwrap();
        fake.seq += 1;
        let frame = i32::try_from(body["frame"].as_i64().unwrap()).unwrap();
        fake.renders.insert(id.clone(), frame);
        (
            axum::http::StatusCode::CREATED,
            Json(serde_json::json!({"id": id})),
        )
    }
    async fn image(State(fake): State<Fake>) -> Vec<u8> {
        let served = {
            let mut fake = fake.lock().unwrap();
            fake.images_served += 1;
            fake.images_served
        };
        if served % 2 == 1 {
            let mut png = Vec::new();
            image::RgbImage::new(64, 36)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png
        } else {
            b"\x89PNG\r\n\x1a\n but no image follows".to_vec()
        }
    }
    async fn forget(State(fake): State<Fake>, Path(id): Path<String>) -> Json<Value> {
        let mut fake = fake.lock().unwrap();
        fake.seq += 1;
        let frame = fake.renders.remove(&id).unwrap_or_default();
        Json(serde_json::to_value(fake_status(&id, frame)).unwrap())
    }
    Router::new()
        .route("/api/v1/node", get(|| async { Json(fake_info()) }))
        .route(
            "/api/v1/blobs/{hash}",
            // Claims the file after a second, so the real node is ready
            // first and each failed frame has somewhere else to go.
            put(|| async { axum::http::StatusCode::CREATED }).head(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                axum::http::StatusCode::OK
            }),
        )
        .route("/api/v1/renders", post(create).get(watch))
        .route("/api/v1/renders/{id}", delete(forget))
        .route("/api/v1/renders/{id}/image", get(image))
        .with_state(fake)
}

#[test]
fn a_node_returning_wrong_images_lands_nothing_and_its_frames_go_elsewhere() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = Fake::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = fake_router(Arc::clone(&fake));
    runtime.spawn(async move { axum::serve(listener, router).await });

    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (success, events) = common::render(
        out.path(),
        work.path(),
        &[&url],
        &["--frames", "1-8", "--local-threads", "1"],
        |_| {},
    );
    assert!(success, "{events:?}");

    // Every frame is in the folder once, at the scene's size.
    for frame in 1..=8 {
        let path = out.path().join(format!("demo_{frame:04}.png"));
        let image = image::open(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(
            (image.width(), image.height()),
            (320, 180),
            "{}",
            path.display()
        );
    }
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|name| name.ends_with(".png")).count(),
        8,
        "{names:?}"
    );
    assert!(
        names.iter().all(|name| !name.ends_with(".part")),
        "{names:?}"
    );

    // The fake's images were refused, for what was wrong with each.
    let refusals: Vec<&str> = common::log_lines(&events)
        .filter(|line| line.contains("failed on fake"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|line| line.contains("is 64x36, expected 320x180")),
        "{refusals:?}"
    );
    assert!(
        refusals.iter().any(|line| line.contains("does not decode")),
        "{refusals:?}"
    );
    assert_eq!(fake.lock().unwrap().images_served, refusals.len());

    // Each of those frames was rendered again elsewhere; the fake counts none.
    let summary = common::finished(&events);
    assert_eq!(summary["outcome"], "complete", "{summary}");
    assert_eq!(summary["frames_done"], 8, "{summary}");
    for node in summary["nodes"].as_array().unwrap() {
        if node["name"] == "fake" {
            assert_eq!(node["frames"], 0, "{summary}");
        }
    }
    for line in &refusals {
        let number: i64 = line
            .strip_prefix("frame ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no frame number in {line:?}"));
        let last = events
            .iter()
            .rfind(|event| event["event"] == "frame" && event["frame"] == number)
            .unwrap();
        assert_eq!(last["state"], "done", "{last}");
        assert_ne!(last["node"], "fake", "{last}");
    }
}
