//! Benchmark (not a test): a rendering node under status load. One
//! `herd node` (real Blender, the demo scene) renders frames for `--secs`
//! seconds at a time, alternately with no other traffic and while this
//! process sends it `--rps` `GET /api/v1/node` requests a second. The load
//! is open loop: each request leaves on schedule, whether the earlier ones
//! were answered or not, so a slow node shows as latency, not as fewer
//! requests.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_load -- \
//!     [--reps 3] [--secs 30] [--rps 1000] [--threads 2]
//! ```
//!
//! Render time is the node's own `render_secs` of each frame (Blender
//! rendering and saving it); a run's figure is the median over its frames,
//! and the ratio loaded ÷ unloaded is taken within each repetition (the
//! anchor is the unloaded run of the same repetition). The order of the two
//! runs alternates between repetitions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd::wire::{RenderChanges, RenderState};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The node under 1,000 status requests a second (docs/BENCHMARKS.md §5).
#[derive(Parser)]
struct Options {
    /// Measurements of each kind.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds each measurement lasts.
    #[arg(long, default_value_t = 30.0)]
    secs: f64,
    /// Status requests a second.
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    /// Render threads of the node.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get() as u32))]
    threads: u32,
    /// The herd binary.
    #[arg(long, default_value_os_t = common::release_herd())]
    herd: PathBuf,
}

/// The node under test and how to reach it.
struct Node {
    client: reqwest::Client,
    url: String,
    blob: String,
}

impl Node {
    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.url)
    }

    async fn queue(&self, frame: i32) -> String {
        let body = serde_json::json!({"blob": self.blob, "frame": frame});
        let created: serde_json::Value = self
            .client
            .post(self.api("renders"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["id"].as_str().unwrap().to_string()
    }

    /// Renders demo frames (1 to 24, round and round), two waiting on the
    /// node at any time, until `secs` have passed; returns each frame's
    /// render time.
    async fn render_for(&self, secs: f64) -> Vec<f64> {
        let started = Instant::now();
        let mut frames = (1..=24).cycle();
        let mut waiting = BTreeSet::new();
        for _ in 0..2 {
            waiting.insert(self.queue(frames.next().unwrap()).await);
        }
        let mut render_secs = Vec::new();
        let mut since = 0;
        while !waiting.is_empty() {
            let changes: RenderChanges = self
                .client
                .get(self.api(&format!("renders?since={since}&wait_ms=1000")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            since = changes.seq;
            for status in changes.renders {
                let finished = matches!(
                    status.state,
                    RenderState::Done | RenderState::Failed | RenderState::Cancelled
                );
                if !finished || !waiting.remove(&status.id) {
                    continue;
                }
                assert_eq!(status.state, RenderState::Done, "{:?}", status.error);
                render_secs.push(status.render_secs.unwrap());
                // Free the node's copy of the image.
                let _ = self
                    .client
                    .delete(self.api(&format!("renders/{}", status.id)))
                    .send()
                    .await;
                if started.elapsed().as_secs_f64() < secs {
                    waiting.insert(self.queue(frames.next().unwrap()).await);
                }
            }
        }
        render_secs
    }
}

/// What the status load saw.
#[derive(Default)]
struct Load {
    sent: usize,
    answered: usize,
    failed: usize,
    latencies_ms: Vec<f64>,
    secs: f64,
}

/// Sends `rps` status requests a second to the node until `stop`.
async fn status_load(
    client: reqwest::Client,
    url: String,
    rps: f64,
    stop: CancellationToken,
) -> Load {
    let url = Arc::new(url);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
    // A late tick is sent at once: the rate holds on average.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    let mut load = Load::default();
    let record = |load: &mut Load, answer: Option<f64>| match answer {
        Some(ms) => {
            load.answered += 1;
            load.latencies_ms.push(ms);
        }
        None => load.failed += 1,
    };
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                load.sent += 1;
                let (client, url) = (client.clone(), Arc::clone(&url));
                requests.spawn(async move {
                    let sent = Instant::now();
                    let response = client.get(url.as_str()).timeout(Duration::from_secs(5)).send().await;
                    match response {
                        Ok(response) if response.status().is_success() => {
                            response.bytes().await.ok()?;
                            Some(sent.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => None,
                    }
                });
            }
            Some(answer) = requests.join_next() => record(&mut load, answer.unwrap()),
            () = stop.cancelled() => break,
        }
    }
    load.secs = started.elapsed().as_secs_f64();
    while let Some(answer) = requests.join_next().await {
        record(&mut load, answer.unwrap());
    }
    load
}

/// One run: frames rendered for `secs`, with or without the status load.
/// Returns the frames' render times, the load's figures, and the node's CPU
/// seconds (its own process, Blender not included).
async fn run(
    node: &Node,
    options: &Options,
    pid: u32,
    loaded: bool,
) -> (Vec<f64>, Option<Load>, f64) {
    let stop = CancellationToken::new();
    let load = loaded.then(|| {
        tokio::spawn(status_load(
            node.client.clone(),
            node.api("node"),
            options.rps,
            stop.clone(),
        ))
    });
    let cpu_before = common::cpu_secs(pid).unwrap_or(0.0);
    let render_secs = node.render_for(options.secs).await;
    let cpu = common::cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    stop.cancel();
    let load = match load {
        Some(task) => Some(task.await.unwrap()),
        None => None,
    };
    (render_secs, load, cpu)
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    common::require(&options.herd);
    let work = tempfile::tempdir().unwrap();
    let threads = options.threads.to_string();
    let (mut child, url) = common::start_node(&options.herd, work.path(), &["--threads", &threads]);
    let pid = child.id();
    let client = reqwest::Client::new();
    let bytes = std::fs::read(common::demo_blend()).unwrap();
    let blob = hex::encode(Sha256::digest(&bytes));
    let put = client
        .put(format!("{url}/api/v1/blobs/{blob}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let node = Node { client, url, blob };
    // Blender loads the scene with the first frames: not part of any run.
    node.render_for(0.0).await;

    let (mut unloaded, mut loaded, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loads, mut node_cpu) = (Vec::new(), Vec::new());
    for rep in 1..=options.reps {
        let mut figures = [None, None];
        let order = if rep % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for with_load in order {
            let (render_secs, load, cpu) = run(&node, &options, pid, with_load).await;
            let median = common::median(&render_secs);
            if let Some(load) = load {
                node_cpu.push(cpu / load.secs);
                loads.push(load);
            }
            figures[usize::from(with_load)] = Some((median, render_secs.len()));
        }
        let [Some((quiet, quiet_frames)), Some((busy, busy_frames))] = figures else {
            unreachable!("both runs ran")
        };
        let load = loads.last().unwrap();
        eprintln!(
            "rep {rep}: unloaded {quiet:.3} s/frame ({quiet_frames} frames), loaded {busy:.3} s/frame ({busy_frames} frames), ratio {:.3}; {} sent, {} answered, {} failed, p50 {:.2} ms, p99 {:.2} ms",
            busy / quiet,
            load.sent,
            load.answered,
            load.failed,
            common::quantile(&load.latencies_ms, 0.5),
            common::quantile(&load.latencies_ms, 0.99),
        );
        unloaded.push(quiet);
        loaded.push(busy);
        ratios.push(busy / quiet);
    }
    let _ = node.client.post(node.api("stop")).send().await;
    let _ = child.wait();

    let all_latencies: Vec<f64> = loads
        .iter()
        .flat_map(|load| load.latencies_ms.clone())
        .collect();
    let sent: usize = loads.iter().map(|load| load.sent).sum();
    let answered: usize = loads.iter().map(|load| load.answered).sum();
    let failed: usize = loads.iter().map(|load| load.failed).sum();
    let rates: Vec<f64> = loads
        .iter()
        .map(|load| load.sent as f64 / load.secs)
        .collect();
    println!(
        "{} repetitions of {} s runs, Blender with {} threads, {} status requests/s asked:",
        options.reps, options.secs, options.threads, options.rps
    );
    println!("| run | render s/frame (median) | ratio |");
    println!("|---|---|---|");
    println!(
        "| unloaded (anchor) | {:.3} | 1.000 |",
        common::median(&unloaded)
    );
    println!(
        "| under status load | {:.3} | {:.3} (median of per-repetition ratios; max {:.3}) |",
        common::median(&loaded),
        common::median(&ratios),
        ratios.iter().copied().fold(f64::MIN, f64::max)
    );
    println!(
        "status requests: {sent} sent ({:.0}/s achieved, median of runs), {answered} answered, {failed} failed; latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; node CPU while loaded {:.2} cores (median; Blender not included)",
        common::median(&rates),
        common::quantile(&all_latencies, 0.5),
        common::quantile(&all_latencies, 0.99),
        all_latencies.iter().copied().fold(0.0, f64::max),
        common::median(&node_cpu)
    );
}
