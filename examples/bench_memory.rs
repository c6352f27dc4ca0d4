//! Benchmark (not a test): the controller's memory over a long job.
//! `--nodes` `herd node --simulate-ms` processes (a timer and a generated
//! image instead of Blender; for benchmarks only) on loopback, and one
//! `herd render --no-local --no-discovery --node …` with enough frames to
//! keep them all busy for `--minutes`. The controller's resident memory is
//! sampled every `--sample-secs` from the job's start to its end.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_memory -- \
//!     [--nodes 64] [--minutes 10] [--ms 1000] [--sample-secs 5] [--out-dir /dev/shm]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The controller's memory with many simulated nodes (docs/BENCHMARKS.md §6).
#[derive(Parser)]
struct Options {
    /// Simulated nodes.
    #[arg(long, default_value_t = 64)]
    nodes: usize,
    /// Minutes the job runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Milliseconds a simulated frame takes.
    #[arg(long, default_value_t = 1000)]
    ms: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 5.0)]
    sample_secs: f64,
    /// Where the job's frames go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    out_dir: PathBuf,
    /// The herd binary.
    #[arg(long, default_value_os_t = common::release_herd())]
    herd: PathBuf,
}

/// One sample of the controller.
struct Sample {
    secs: f64,
    frames_done: u64,
    rss_mib: f64,
}

fn main() {
    let options = Options::parse();
    common::require(&options.herd);
    let ms = options.ms.to_string();
    let works: Vec<_> = (0..options.nodes)
        .map(|_| tempfile::tempdir_in(&options.out_dir).unwrap())
        .collect();
    let mut nodes: Vec<(Child, String)> = works
        .iter()
        .map(|work| common::start_node(&options.herd, work.path(), &["--simulate-ms", &ms]))
        .collect();
    let frames =
        (options.minutes * 60.0 * 1000.0 / options.ms as f64 * options.nodes as f64).ceil() as u64;

    let out = tempfile::tempdir_in(&options.out_dir).unwrap();
    let work = tempfile::tempdir_in(&options.out_dir).unwrap();
    let mut command = Command::new(&options.herd);
    command
        .arg("render")
        .arg(common::demo_blend())
        .args(["--frames", &format!("1-{frames}")])
        .args(["--no-local", "--no-discovery", "--json"])
        .args(["--resolution-percent", "10"])
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (_, url) in &nodes {
        command.args(["--node", url]);
    }
    let mut controller = command.spawn().unwrap();
    let pid = controller.id();
    // Events on a thread: the pipe must never fill while we sample.
    let (events_tx, events) = mpsc::channel::<serde_json::Value>();
    let stdout = controller.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str(&line) else {
                continue;
            };
            if events_tx.send(event).is_err() {
                break;
            }
        }
    });

    let mut started: Option<Instant> = None;
    let mut frames_done = 0;
    let mut samples = Vec::new();
    let mut next_sample = 0.0;
    let mut summary = None;
    let (mut cpu_at_start, mut cpu_at_end) = (0.0, 0.0);
    loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => match event["event"].as_str() {
                Some("started") => {
                    started = Some(Instant::now());
                    cpu_at_start = common::cpu_secs(pid).unwrap_or(0.0);
                }
                Some("progress") => frames_done = event["done"].as_u64().unwrap_or(frames_done),
                Some("finished") => {
                    cpu_at_end = common::cpu_secs(pid).unwrap_or(0.0);
                    summary = Some(event);
                }
                _ => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let Some(started) = started else { continue };
        let secs = started.elapsed().as_secs_f64();
        if secs >= next_sample && summary.is_none() {
            if let Some(rss) = common::rss_bytes(pid) {
                samples.push(Sample {
                    secs,
                    frames_done,
                    rss_mib: rss as f64 / 1024.0 / 1024.0,
                });
                eprintln!(
                    "{secs:6.0} s: {frames_done:6} frames done, controller RSS {:.1} MiB",
                    rss as f64 / 1024.0 / 1024.0
                );
            }
            next_sample += options.sample_secs;
        }
    }
    let status = controller.wait().unwrap();
    let summary = summary.expect("the job finished");
    assert!(status.success(), "{summary}");
    assert_eq!(summary["outcome"], "complete", "{summary}");
    let wall = samples.last().map_or(0.0, |sample| sample.secs);
    for (child, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }

    let at = |fraction: f64| -> &Sample {
        let target = wall * fraction;
        samples
            .iter()
            .min_by(|a, b| (a.secs - target).abs().total_cmp(&(b.secs - target).abs()))
            .unwrap()
    };
    let rss: Vec<f64> = samples.iter().map(|sample| sample.rss_mib).collect();
    let max = rss.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "{} simulated nodes × {} ms frames, {frames} frames, job wall {:.0} s, {} samples every {} s:",
        options.nodes,
        options.ms,
        wall,
        samples.len(),
        options.sample_secs
    );
    println!("| point | time (s) | frames done | controller RSS (MiB) |");
    println!("|---|---|---|---|");
    for (name, fraction) in [
        ("start", 0.0),
        ("quarter", 0.25),
        ("middle", 0.5),
        ("three quarters", 0.75),
        ("end", 1.0),
    ] {
        let sample = at(fraction);
        println!(
            "| {name} | {:.0} | {} | {:.1} |",
            sample.secs, sample.frames_done, sample.rss_mib
        );
    }
    let second_half: Vec<&Sample> = samples.iter().filter(|s| s.secs >= wall / 2.0).collect();
    let half_rss: Vec<f64> = second_half.iter().map(|s| s.rss_mib).collect();
    println!(
        "max {max:.1} MiB; second half: min {:.1}, max {:.1} MiB; controller CPU {:.2} cores",
        half_rss.iter().copied().fold(f64::MAX, f64::min),
        half_rss.iter().copied().fold(f64::MIN, f64::max),
        (cpu_at_end - cpu_at_start) / wall.max(1e-9)
    );
}
