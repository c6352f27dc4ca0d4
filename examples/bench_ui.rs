//! Benchmark (not a test) of the controller window under a big job: a
//! simulated 10,000-frame job on 64 nodes is fed to a [`ControllerApp`]
//! through the bridge's channel, as the real bridge would, and the window is
//! run headless on a plain `egui::Context` (no network, no Blender, no GPU).
//!
//! ```text
//! cargo run --release --example bench_ui -- [--frames 10000] [--nodes 64] \
//!     [--ticks-per-frame 16] [--idle 300]
//! ```
//!
//! Each UI frame ("tick") first queues the events the engine would have sent
//! since the last one (half the nodes report progress, finished frames go
//! rendering → downloading → done and the next ones queued → assigned →
//! rendering, a `Progress` event, a `Log` line now and then), then times the
//! window's pass (`Context::run_ui` with [`ControllerApp::window_ui`], which
//! drains the events) plus the tessellation of its shapes: the CPU work of
//! a frame, painting on the GPU left out. A stretch of idle frames follows
//! once every frame is done. Resident memory is read from `/proc/self/statm`
//! at 0, 25, 50, 75 and 100 % of frames done and after the idle stretch.
//! No previews: the job has no files, so no thumbnails are decoded or shown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herd::controller::engine::{
    EngineEvent, FrameView, JobSummary, NodeStatus, NodeView, Outcome, ProgressView,
};
use herd::controller::scheduler::FrameState;
use herd::ui::ControllerApp;
use herd::ui::bridge::{self, BridgeEnd, BridgeEvent};

/// Window size, in points (1 pixel per point).
const SIZE: egui::Vec2 = egui::vec2(1280.0, 800.0);

/// Simulated seconds per UI frame (60 Hz).
const TICK_SECS: f64 = 1.0 / 60.0;

/// The controller window with a big job (docs/BENCHMARKS.md §4).
#[derive(Parser)]
struct Options {
    /// Frames in the job.
    #[arg(long, default_value_t = 10_000)]
    frames: usize,
    /// Nodes in the table.
    #[arg(long, default_value_t = 64)]
    nodes: usize,
    /// Engine ticks between two frames drawn.
    #[arg(long, default_value_t = 16)]
    ticks_per_frame: usize,
    /// Frames drawn with nothing changing.
    #[arg(long, default_value_t = 300)]
    idle: usize,
}

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn node_name(id: usize) -> String {
    format!("node-{id:02}")
}

fn frame_view(index: usize, state: FrameState) -> FrameView {
    FrameView {
        index,
        frame: index as i32 + 1,
        state,
        attempts: u32::from(state != FrameState::Queued),
        node: None,
        progress: 0.0,
        secs: None,
        error: None,
    }
}

/// One simulated node: the frame it renders, how far, and the one queued
/// on it next.
struct SimNode {
    view: NodeView,
    rendering: Option<(usize, usize)>,
    assigned: Option<usize>,
}

/// The engine's side: a job played tick by tick, its events sent through
/// the bridge's channel.
struct Job {
    end: BridgeEnd,
    nodes: Vec<SimNode>,
    next_frame: usize,
    total: usize,
    done: usize,
    downloading: Vec<usize>,
    ticks_per_frame: usize,
    tick: usize,
    events: usize,
}

impl Job {
    fn start(end: BridgeEnd, options: &Options) -> Self {
        let nodes = (0..options.nodes)
            .map(|id| SimNode {
                view: NodeView {
                    id: id as u32,
                    uri: format!("http://10.0.{}.{}:7878", id / 200, id % 200 + 10),
                    name: node_name(id),
                    status: NodeStatus::Idle,
                    blender_version: "3.4.1".into(),
                    cores: 8,
                    current: None,
                    frames_done: 0,
                    secs_per_frame: None,
                    prep_secs: None,
                    local: id == 0,
                    enabled: true,
                    error: None,
                    last_seen_secs: None,
                },
                rendering: None,
                assigned: None,
            })
            .collect();
        let mut job = Self {
            end,
            nodes,
            next_frame: 0,
            total: options.frames,
            done: 0,
            downloading: Vec::new(),
            ticks_per_frame: options.ticks_per_frame,
            tick: 0,
            events: 0,
        };
        job.send(EngineEvent::Started {
            total: options.frames,
            skipped: 0,
            output_dir: "/renders/big_job".into(),
        });
        for id in 0..job.nodes.len() {
            let view = job.nodes[id].view.clone();
            job.send(EngineEvent::Node(view));
        }
        job
    }

    fn send(&mut self, event: EngineEvent) {
        self.end
            .events
            .try_send(BridgeEvent::Engine(event))
            .unwrap();
        self.events += 1;
    }

    fn take_next(&mut self) -> Option<usize> {
        (self.next_frame < self.total).then(|| {
            self.next_frame += 1;
            self.next_frame - 1
        })
    }

    fn finished(&self) -> bool {
        self.done == self.total
    }

    /// Sends what the engine would report over one UI frame.
    fn step(&mut self) {
        self.tick += 1;
        // Frames downloaded since the last tick are done.
        for index in std::mem::take(&mut self.downloading) {
            self.done += 1;
            self.send(EngineEvent::Frame(FrameView {
                node: Some(node_name(index % self.nodes.len())),
                secs: Some(self.ticks_per_frame as f64 * TICK_SECS),
                ..frame_view(index, FrameState::Done)
            }));
        }
        for id in 0..self.nodes.len() {
            // Nodes start staggered so that they finish at different ticks.
            if self.tick < 1 + id % self.ticks_per_frame && self.nodes[id].rendering.is_none() {
                continue;
            }
            let mut changed = false;
            let mut finished = None;
            if let Some((index, ticks)) = &mut self.nodes[id].rendering {
                *ticks += 1;
                if *ticks >= self.ticks_per_frame {
                    finished = Some(*index);
                } else if (self.tick + id).is_multiple_of(2) {
                    // Half the nodes report progress each tick.
                    changed = true;
                }
            }
            if let Some(index) = finished {
                self.nodes[id].rendering = None;
                self.downloading.push(index);
                let node = &mut self.nodes[id].view;
                node.frames_done += 1;
                node.secs_per_frame = Some(self.ticks_per_frame as f64 * TICK_SECS);
                self.send(EngineEvent::Frame(FrameView {
                    node: Some(node_name(id)),
                    progress: 1.0,
                    ..frame_view(index, FrameState::Downloading)
                }));
            }
            if self.nodes[id].rendering.is_none() {
                let next = self.nodes[id].assigned.take().or_else(|| self.take_next());
                if let Some(index) = next {
                    self.nodes[id].rendering = Some((index, 0));
                    changed = true;
                }
                if let Some(index) = self.take_next() {
                    self.nodes[id].assigned = Some(index);
                    self.send(EngineEvent::Frame(FrameView {
                        node: Some(node_name(id)),
                        ..frame_view(index, FrameState::Assigned)
                    }));
                }
            }
            let sim = &mut self.nodes[id];
            let current = sim.rendering.map(|(index, ticks)| {
                (index as i32 + 1, ticks as f32 / self.ticks_per_frame as f32)
            });
            sim.view.current = current;
            let status = if current.is_some() {
                NodeStatus::Rendering
            } else {
                NodeStatus::Idle
            };
            changed |= sim.view.status != status || finished.is_some();
            sim.view.status = status;
            if changed {
                let view = sim.view.clone();
                if let Some((frame, progress)) = current {
                    self.send(EngineEvent::Frame(FrameView {
                        node: Some(node_name(id)),
                        progress,
                        ..frame_view(frame as usize - 1, FrameState::Rendering)
                    }));
                }
                self.send(EngineEvent::Node(view));
            }
        }
        let elapsed = self.tick as f64 * TICK_SECS;
        let rate = self.done as f64 / elapsed.max(TICK_SECS) * 60.0;
        self.send(EngineEvent::Progress(ProgressView {
            done: self.done,
            failed: 0,
            total: self.total,
            elapsed_secs: elapsed,
            eta_secs: (rate > 0.0).then(|| (self.total - self.done) as f64 / rate * 60.0),
            frames_per_minute: rate,
            paused: false,
        }));
        if self.tick.is_multiple_of(30) {
            let id = self.tick / 30 % self.nodes.len();
            self.send(EngineEvent::Log {
                message: format!(
                    "{}: frame {} rendered in {:.2} s",
                    node_name(id),
                    self.done,
                    self.ticks_per_frame as f64 * TICK_SECS
                ),
            });
        }
        if self.finished() {
            self.send(EngineEvent::Finished(JobSummary {
                outcome: Outcome::Complete,
                frames_total: self.total,
                frames_done: self.done,
                frames_skipped: 0,
                failed: Vec::new(),
                nodes: Vec::new(),
                retries: 0,
                wall_secs: elapsed,
                output_dir: "/renders/big_job".into(),
            }));
            self.end
                .events
                .try_send(BridgeEvent::JobEnded(Ok(())))
                .unwrap();
        }
    }
}

/// The window on a plain context, the way eframe runs it, minus painting.
struct Window {
    ctx: egui::Context,
    app: ControllerApp,
    time: f64,
    /// Triangles tessellated in the last frame, to show the work is real.
    triangles: usize,
}

impl Window {
    /// Runs one frame: the window's pass and the tessellation of its shapes.
    fn frame(&mut self) -> Duration {
        self.time += TICK_SECS;
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, SIZE)),
            time: Some(self.time),
            predicted_dt: TICK_SECS as f32,
            ..Default::default()
        };
        let started = Instant::now();
        let app = &mut self.app;
        let output = self.ctx.run_ui(input, |ui| app.window_ui(ui));
        let primitives = self.ctx.tessellate(output.shapes, output.pixels_per_point);
        let took = started.elapsed();
        self.triangles = primitives
            .iter()
            .map(|clipped| match &clipped.primitive {
                egui::epaint::Primitive::Mesh(mesh) => mesh.indices.len() / 3,
                egui::epaint::Primitive::Callback(_) => 0,
            })
            .sum();
        took
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Median, 95th percentile and max, in ms.
fn stats(times: &[Duration]) -> (f64, f64, f64) {
    let mut sorted: Vec<f64> = times.iter().copied().map(ms).collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95), at(1.0))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let options = Options::parse();
    let (link, end) = bridge::channel();
    let mut window = Window {
        ctx: egui::Context::default(),
        app: ControllerApp::new(link),
        time: 0.0,
        triangles: 0,
    };
    let frames: Vec<i32> = (1..=options.frames as i32).collect();
    window.app.state.begin_job(&frames);
    // Let fonts and the first layout settle before anything is timed.
    for _ in 0..5 {
        window.frame();
    }

    let mut job = Job::start(end, &options);
    let mut running = Vec::new();
    let mut rss = Vec::new();
    let mut marks: VecDeque<usize> = (0..=4).map(|q| options.frames * q / 4).collect();
    let started = Instant::now();
    let mut window_done = false;
    while !window_done {
        if !job.finished() {
            job.step();
        }
        running.push(window.frame());
        let shown = window
            .app
            .state
            .progress
            .as_ref()
            .map_or(0, |progress| progress.done);
        if marks.front().is_some_and(|&mark| shown >= mark) {
            let mark = marks.pop_front().unwrap();
            rss.push((mark * 100 / options.frames, rss_bytes()));
        }
        window_done = job.finished() && marks.is_empty();
    }
    let wall = started.elapsed();
    let triangles_running = window.triangles;
    let mut idle = Vec::new();
    for _ in 0..options.idle {
        idle.push(window.frame());
    }
    let rss_after_idle = rss_bytes();
    let triangles_idle = window.triangles;

    // The run's UI frames in quarters, to see a trend as frames finish.
    let per_quarter: Vec<(f64, f64, f64)> = running
        .chunks(running.len().div_ceil(4))
        .map(stats)
        .collect();

    println!(
        "cargo run --release --example bench_ui -- --frames {} --nodes {} --ticks-per-frame {} --idle {}",
        options.frames, options.nodes, options.ticks_per_frame, options.idle
    );
    println!();
    println!(
        "{} UI frames while the job ran ({} events, {:.1} per frame, {:.1} s), {} once every frame was done",
        running.len(),
        job.events,
        job.events as f64 / running.len() as f64,
        wall.as_secs_f64(),
        idle.len()
    );
    println!(
        "triangles in the last frame: {triangles_running} while running, {triangles_idle} idle"
    );
    println!();
    println!("| stretch | UI frames | median (ms) | p95 (ms) | max (ms) |");
    println!("|---|---|---|---|---|");
    let (median, p95, max) = stats(&running);
    println!(
        "| job running (0 → {} frames done) | {} | {median:.2} | {p95:.2} | {max:.2} |",
        options.frames,
        running.len()
    );
    for (quarter, (median, p95, max)) in per_quarter.iter().enumerate() {
        println!(
            "| … {}–{} % of the run's UI frames | {} | {median:.2} | {p95:.2} | {max:.2} |",
            quarter * 25,
            quarter * 25 + 25,
            running.len().div_ceil(4)
        );
    }
    let (median, p95, max) = stats(&idle);
    println!(
        "| every frame done | {} | {median:.2} | {p95:.2} | {max:.2} |",
        idle.len()
    );
    println!();
    println!("| frames done | RSS (MiB) |");
    println!("|---|---|");
    for (percent, bytes) in &rss {
        println!("| {percent} % | {:.1} |", mib(*bytes));
    }
    println!(
        "| 100 % + {} idle frames | {:.1} |",
        options.idle,
        mib(rss_after_idle)
    );
}
