//! Benchmark (not a test): a whole animation rendered four ways on this
//! machine with the same thread count, interleaved, several times:
//! - `blender -b FILE -a`, Blender natively in one process (the anchor);
//! - one `herd node` driven through its HTTP API;
//! - `herd render FILE --no-discovery`, the controller with its local node only;
//! - `blender -b FILE -f N` once per frame, how most farm workers run Blender.
//!
//! The figures are medians, and ratios against the native anchor of the
//! same run.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_node -- \
//!     [--blend assets/demo/demo.blend] [--frames 24] [--reps 5] [--threads 2] \
//!     [--blender PATH]... [--variant cheap] [--ways native,herd,render,per-frame]
//! ```
//!
//! `--blender` (repeatable; default `blender`) measures each Blender in the
//! same run, interleaved, each against its own native anchor; herd is given
//! the same Blender (`--blender`) as the anchor. `--variant cheap` renders a
//! copy of the demo scene made cheap (96×54, 1 sample, `--frames` long),
//! where a frame costs little beside what herd adds around it. `--ways`
//! picks which of the four ways run.
//!
//! herd runs with HERD_LOOPBACK_ONLY=1. A fresh node (and a fresh
//! `herd render`) is started for each repetition and timed from its start,
//! so its figure includes starting Blender, reading and loading the scene.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use sha2::{Digest, Sha256};

/// The demo (or a variant of it) rendered by herd and by Blender alone
/// (docs/BENCHMARKS.md §1, §7, §8).
#[derive(Parser)]
struct Options {
    /// The scene.
    #[arg(long, default_value_os_t = common::demo_blend())]
    blend: PathBuf,
    /// The Blender of the current measurement.
    #[arg(skip)]
    blender: PathBuf,
    /// Every Blender to measure (again for each).
    #[arg(long = "blender", default_values_os_t = [PathBuf::from("blender")])]
    blenders: Vec<PathBuf>,
    /// A variant of the scene made for the measurement (`cheap`: 96×54,
    /// one sample).
    #[arg(long)]
    variant: Option<String>,
    /// The ways to render, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["native", "herd", "render", "per-frame"].map(String::from))]
    ways: Vec<String>,
    /// Frames rendered.
    #[arg(long, default_value_t = 24)]
    frames: i32,
    /// Runs of each way.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Render threads.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get() as u32))]
    threads: u32,
    /// The herd binary.
    #[arg(long, default_value_os_t = common::release_herd())]
    herd: PathBuf,
}

fn blender(options: &Options, out: &Path) -> Command {
    let mut command = Command::new(&options.blender);
    command
        .arg("-b")
        .arg(&options.blend)
        .args(["-noaudio", "-t", &options.threads.to_string()])
        .arg("-o")
        .arg(out.join("f_####"))
        .args(["-F", "PNG"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn native(options: &Options) -> f64 {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = blender(options, out.path())
        .args(["-s", "1", "-e", &options.frames.to_string(), "-a"])
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

fn per_frame(options: &Options) -> f64 {
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for frame in 1..=options.frames {
        let status = blender(options, out.path())
            .args(["-f", &frame.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    started.elapsed().as_secs_f64()
}

fn herd_render(options: &Options) -> f64 {
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = Command::new(&options.herd)
        .arg("render")
        .arg(&options.blend)
        .arg("--blender")
        .arg(&options.blender)
        .args(["--frames", &format!("1-{}", options.frames)])
        .args([
            "--no-discovery",
            "--local-threads",
            &options.threads.to_string(),
        ])
        .args(["--format", "PNG"])
        .arg("--out")
        .arg(out.path())
        .arg("--work-dir")
        .arg(work.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

async fn herd(options: &Options) -> f64 {
    let work = tempfile::tempdir().unwrap();
    // Timed from the node's start: it starts Blender then, and that counts.
    let started = Instant::now();
    let threads = options.threads.to_string();
    let blender = options.blender.to_string_lossy().into_owned();
    let (mut child, url) = common::start_node(
        &options.herd,
        work.path(),
        &["--threads", &threads, "--blender", &blender],
    );
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{url}/api/v1/{path}");

    let bytes = std::fs::read(&options.blend).unwrap();
    let hash = hex::encode(Sha256::digest(&bytes));
    let put = client
        .put(api(&format!("blobs/{hash}")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let mut ids = Vec::new();
    for frame in 1..=options.frames {
        let body = serde_json::json!({"blob": hash, "frame": frame});
        let created: serde_json::Value = client
            .post(api("renders"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    for id in ids {
        loop {
            let status: serde_json::Value = client
                .get(api(&format!("renders/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match status["state"].as_str() {
                Some("done") => break,
                Some("failed" | "cancelled") => panic!("frame failed: {status}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let image = client
            .get(api(&format!("renders/{id}/image")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        image::load_from_memory(&image).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = client.post(api("stop")).send().await;
    let _ = child.wait();
    secs
}

/// Times of one Blender's runs, one entry per repetition.
#[derive(Default)]
struct Times {
    natives: Vec<f64>,
    herds: Vec<f64>,
    renders: Vec<f64>,
    launches: Vec<f64>,
}

/// A copy of the demo scene at 96×54, 1 sample, `frames` long, in `dir`.
fn cheap_variant(dir: &Path, frames: i32) -> PathBuf {
    let out = dir.join("cheap.blend");
    let script = format!(
        "import bpy\nscene = bpy.context.scene\nscene.render.resolution_x = 96\n\
         scene.render.resolution_y = 54\nscene.render.resolution_percentage = 100\n\
         scene.cycles.samples = 1\nscene.frame_start = 1\nscene.frame_end = {frames}\n\
         bpy.ops.wm.save_as_mainfile(filepath={:?})\n",
        out.display().to_string()
    );
    let status = Command::new("blender")
        .args(["-b", "--factory-startup", "-noaudio"])
        .arg(common::demo_blend())
        .arg("--python-expr")
        .arg(script)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success() && out.is_file(),
        "could not make the cheap variant"
    );
    out
}

#[tokio::main]
async fn main() {
    let mut options = Options::parse();
    common::require(&options.herd);
    let variant_dir = tempfile::tempdir().unwrap();
    match options.variant.as_deref() {
        None => {}
        Some("cheap") => options.blend = cheap_variant(variant_dir.path(), options.frames),
        Some(other) => panic!("unknown variant {other}: use cheap"),
    }
    let mut times: Vec<Times> = options.blenders.iter().map(|_| Times::default()).collect();
    for rep in 1..=options.reps {
        for (index, blender) in options.blenders.clone().into_iter().enumerate() {
            options.blender = blender;
            let times = &mut times[index];
            // Rotate the order so drift in the machine's load spreads evenly.
            let mut order = options.ways.clone();
            let turn = rep % order.len().max(1);
            order.rotate_left(turn);
            for which in &order {
                match which.as_str() {
                    "native" => times.natives.push(native(&options)),
                    "herd" => times.herds.push(herd(&options).await),
                    "render" => times.renders.push(herd_render(&options)),
                    "per-frame" => times.launches.push(per_frame(&options)),
                    other => panic!("unknown way {other}"),
                }
            }
            let last =
                |values: &[f64]| values.last().map_or("-".to_string(), |v| format!("{v:.2}"));
            eprintln!(
                "rep {rep}, {}: native {} s, node API {} s, herd render {} s, per-frame {} s",
                options.blender.display(),
                last(&times.natives),
                last(&times.herds),
                last(&times.renders),
                last(&times.launches)
            );
        }
    }
    for (blender, times) in options.blenders.iter().zip(&times) {
        report(&options, blender, times);
    }
}

fn report(options: &Options, blender: &Path, times: &Times) {
    let Times {
        natives,
        herds,
        renders,
        launches,
    } = times;
    let median = |values: &[f64]| {
        if values.is_empty() {
            f64::NAN
        } else {
            common::median(values)
        }
    };
    let ratios: Vec<f64> = herds.iter().zip(natives).map(|(h, n)| h / n).collect();
    let render_ratios: Vec<f64> = renders.iter().zip(natives).map(|(h, n)| h / n).collect();
    let launch_ratios: Vec<f64> = launches.iter().zip(renders).map(|(l, h)| l / h).collect();
    println!(
        "{} frames of {} with {}, {} threads, {} repetitions (medians):",
        options.frames,
        options.blend.display(),
        blender.display(),
        options.threads,
        options.reps
    );
    println!("| way | wall (s) | ratio |");
    println!("|---|---|---|");
    println!(
        "| `blender -b -a` (anchor) | {:.2} | 1.00 |",
        median(natives)
    );
    println!(
        "| herd node via API | {:.2} | {:.3} × native (median of per-run ratios) |",
        median(herds),
        median(&ratios)
    );
    println!(
        "| `herd render` (local node only) | {:.2} | {:.3} × native (median of per-run ratios) |",
        median(renders),
        median(&render_ratios)
    );
    println!(
        "| `blender -b -f N` per frame | {:.2} | {:.2} × native; `herd render` is {:.2} × faster |",
        median(launches),
        median(launches) / median(natives),
        median(&launch_ratios)
    );
    println!();
}
