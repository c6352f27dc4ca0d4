//! Benchmark (not a test) of the scheduler at scale: `herd render` against
//! many nodes running the *simulated* renderer (`herd node --simulate-ms`,
//! a timer and a generated image instead of Blender), all on loopback.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_scale -- \
//!     [--nodes 32] [--frames 2000] [--ms 50] [--reps 3] [--out-dir /dev/shm]
//! ```
//!
//! Efficiency = ideal wall (frames × ms / nodes) ÷ the job's wall time (from
//! the engine's `started` event to `finished`); controller CPU = its user +
//! system time over the same wall time, in cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// The scheduler at scale with simulated nodes (docs/BENCHMARKS.md §2).
#[derive(Parser)]
struct Options {
    /// Simulated nodes.
    #[arg(long, default_value_t = 32)]
    nodes: usize,
    /// Frames in the job.
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    /// Milliseconds a simulated frame takes.
    #[arg(long, default_value_t = 50)]
    ms: u64,
    /// Runs.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where the job's frames go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    out_dir: PathBuf,
    /// The herd binary.
    #[arg(long, default_value_os_t = common::release_herd())]
    herd: PathBuf,
}

fn run_once(options: &Options, urls: &[String]) -> (f64, f64) {
    let out = tempfile::tempdir_in(&options.out_dir).unwrap();
    let mut command = Command::new(&options.herd);
    command
        .arg("render")
        .arg(common::demo_blend())
        .args(["--frames", &format!("1-{}", options.frames)])
        .args([
            "--no-local",
            "--no-discovery",
            "--json",
            "--resolution-percent",
            "10",
        ])
        .arg("--out")
        .arg(out.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for url in urls {
        command.args(["--node", url]);
    }
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let mut started = None;
    let mut cpu_at_start = 0.0;
    let mut result = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with(r#"{"event":"started""#) {
            started = Some(Instant::now());
            cpu_at_start = common::cpu_secs(pid).unwrap_or(0.0);
        } else if line.starts_with(r#"{"event":"finished""#) {
            let wall = started.unwrap().elapsed().as_secs_f64();
            let cpu = common::cpu_secs(pid).unwrap_or(0.0) - cpu_at_start;
            let summary: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(summary["outcome"], "complete", "{summary}");
            assert_eq!(summary["frames_done"].as_u64(), Some(options.frames as u64));
            result = Some((wall, cpu / wall));
        }
    }
    assert!(child.wait().unwrap().success());
    result.unwrap()
}

fn main() {
    let options = Options::parse();
    let ms = options.ms.to_string();
    let works: Vec<_> = (0..options.nodes)
        .map(|_| tempfile::tempdir_in(&options.out_dir).unwrap())
        .collect();
    let mut nodes: Vec<(Child, String)> = works
        .iter()
        .map(|work| common::start_node(&options.herd, work.path(), &["--simulate-ms", &ms]))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|(_, url)| url.clone()).collect();
    let ideal = options.frames as f64 * options.ms as f64 / 1000.0 / options.nodes as f64;
    let (mut walls, mut efficiencies, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=options.reps {
        let (wall, cpu) = run_once(&options, &urls);
        eprintln!(
            "rep {rep}: wall {wall:.2} s, ideal {ideal:.2} s, efficiency {:.3}, controller CPU {cpu:.2} cores",
            ideal / wall
        );
        walls.push(wall);
        efficiencies.push(ideal / wall);
        cpus.push(cpu);
    }
    println!(
        "{} simulated nodes × {} frames × {} ms, {} repetitions (medians):",
        options.nodes, options.frames, options.ms, options.reps
    );
    println!("| ideal wall (s) | job wall (s) | efficiency | controller CPU (cores) |");
    println!("|---|---|---|---|");
    println!(
        "| {ideal:.2} | {:.2} | {:.3} | {:.2} |",
        common::median(&walls),
        common::median(&efficiencies),
        common::median(&cpus)
    );
    for (child, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
}
