//! `herd render FILE.blend`: render a job across the LAN from the command
//! line, with a progress bar (or one JSON event a line) and a summary.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use herd::blender;
use herd::controller::engine::{
    self, EngineCommand, EngineEvent, JobChoices, JobProgress, JobSpec, JobSummary, LocalNode,
    NodeStatus, NodeView,
};
use herd::controller::frames::parse_frames;
use herd::controller::output::format_from_blender;
use herd::controller::pool::Pool;
use herd::controller::scheduler::SchedulerConfig;
use herd::controller::session::{Session, Step, Steps};
use herd::controller::{bake, discovery, inspect, job_end};
use herd::node::NodeConfig;
use herd::wire::ImageFormat;

/// Options of `herd render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Where the nodes are and how to use them.
    #[command(flatten)]
    pub farm: super::FarmArgs,
    /// The .blend to render.
    pub file: PathBuf,
    /// Run this shell command when the job ends (done, failed or stopped),
    /// with the job's summary as JSON on its stdin (HERD_JOB_OUTCOME holds
    /// the outcome); e.g. a script, a chat webhook, a shutdown.
    #[arg(long, value_name = "CMD")]
    pub on_end: Option<String>,
    /// Frames to render, e.g. 1-24,30,40-50x2 (default: the scene's range).
    #[arg(long)]
    pub frames: Option<String>,
    /// Output folder, holding the frames as <blend name>_####.<ext>
    /// (default: where the scene's output path says, or <blend
    /// name>_frames/ next to the .blend when that path cannot be used here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The scene to render (default: the one the file was saved on, as
    /// Blender's own -a).
    #[arg(long)]
    pub scene: Option<String>,
    /// Resolution percentage instead of the file's.
    #[arg(long)]
    pub resolution_percent: Option<u32>,
    /// Samples instead of the file's.
    #[arg(long)]
    pub samples: Option<u32>,
    /// Output format instead of the file's: PNG, JPEG or OPEN_EXR.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<ImageFormat>,
    /// Render frames again even when a valid image is in the output folder.
    #[arg(long)]
    pub overwrite: bool,
    /// Let Cycles rebuild the scene for every frame (the file's own
    /// persistent-data setting) instead of keeping it warm on each node.
    #[arg(long)]
    pub no_persistent_data: bool,
    /// Render the frames in order on one node, each stepped from the
    /// scene's start as playback does, for frames that depend on the ones
    /// before (chosen by itself for simulations herd cannot bake).
    #[arg(long)]
    pub in_order: bool,
    /// Render even when files the scene reads are missing (a missing
    /// texture renders magenta).
    #[arg(long)]
    pub allow_missing: bool,
    /// Print one JSON event per line instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

fn parse_format(text: &str) -> Result<ImageFormat, String> {
    format_from_blender(&text.to_ascii_uppercase())
        .ok_or_else(|| format!("'{text}' is not a format herd collects: use PNG, JPEG or OPEN_EXR"))
}

/// Runs `herd render`.
pub async fn run(args: RenderArgs) -> Result<()> {
    let blender_path = blender::locate(args.farm.blender.as_deref())?;
    let discovery = if args.farm.no_discovery {
        None
    } else {
        Some(discovery::Listener::bind(args.farm.discovery_port)?)
    };
    let mut pool = Pool::new(discovery, args.farm.node.clone(), args.farm.token.clone());
    // The local node starts first: its Blender warms up while the file is read.
    if !args.farm.no_local {
        pool.set_local(LocalNode::start(local_node(&args, blender_path.clone()).await?).await?);
    }
    let result = render(&args, &blender_path, &pool).await;
    pool.close().await;
    result
}

async fn render(args: &RenderArgs, blender_path: &std::path::Path, pool: &Pool) -> Result<()> {
    let scene = match pool.local() {
        // The local node's warm Blender reads the scene: one Blender for the
        // job, not two.
        Some(local) => {
            inspect::inspect_with_local(local, blender_path, &args.file, args.scene.as_deref())
                .await?
        }
        None => inspect::inspect_scene(blender_path, &args.file, args.scene.as_deref()).await?,
    };
    let missing = scene.missing();
    if !missing.is_empty() && !args.allow_missing {
        let list: Vec<String> = missing
            .iter()
            .map(|dependency| {
                let files: Vec<String> = dependency
                    .missing
                    .iter()
                    .map(|file| file.display().to_string())
                    .collect();
                format!("  {}: {}", dependency.describe(), files.join(", "))
            })
            .collect();
        bail!(
            "{} reads files that are missing:\n{}\nThey would render without them (a missing texture comes out magenta). Put them back or fix the paths in Blender (File > External Data > Report Missing Files), or pass --allow-missing to render anyway.",
            args.file.display(),
            list.join("\n")
        );
    }
    let frames = match &args.frames {
        Some(list) => parse_frames(list)?,
        None => {
            let step = usize::try_from(scene.frame_step.max(1)).unwrap_or(1);
            (scene.frame_start..=scene.frame_end)
                .step_by(step)
                .collect()
        }
    };
    if frames.is_empty() {
        bail!(
            "{} has no frames to render (scene range {}..{})",
            args.file.display(),
            scene.frame_start,
            scene.frame_end
        );
    }
    let spec = JobSpec::for_scene(
        &scene,
        JobChoices {
            frames,
            out: args.out.clone(),
            format: args.format,
            resolution_percent: args.resolution_percent,
            samples: args.samples,
            scene: args.scene.clone(),
            cold_scene: args.no_persistent_data,
            overwrite: args.overwrite,
            in_order: args.in_order,
        },
    )
    .map_err(anyhow::Error::msg)?;
    let config = pool.engine_config(SchedulerConfig {
        max_attempts: args.farm.retries.max(1),
        ..SchedulerConfig::default()
    });
    if !args.json {
        for warning in &scene.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let session = Session {
        bake: bake::needs_bake(&scene) && !spec.in_order,
        spec,
        config,
        blender: Some(blender_path.to_path_buf()),
    };
    let json = args.json;
    let ended = session
        .run(&TerminalSteps::new(json), None, |handle| async move {
            let summary = drive(handle, json)
                .await
                .map_err(|err| format!("{err:#}"))?;
            if !json {
                print_summary(&summary);
            }
            Ok(summary)
        })
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(command) = &args.on_end {
        run_on_end(command, &ended.summary).await;
    }
    match ended.failure() {
        Some(failure) => bail!(failure),
        None => Ok(()),
    }
}

/// Runs the `--on-end` command; a failure is said, not fatal: the frames
/// are there either way.
async fn run_on_end(command: &str, summary: &JobSummary) {
    match job_end::run_command(command, summary).await {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("herd: the --on-end command `{command}` ended with {status}"),
        Err(err) => eprintln!("herd: {err}"),
    }
}

/// The steps around the job on a terminal: a progress bar and a line at
/// the end, or JSON events.
struct TerminalSteps {
    json: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl TerminalSteps {
    fn new(json: bool) -> Self {
        Self {
            json,
            bar: std::sync::Mutex::new(None),
        }
    }

    /// Takes the step's bar off the terminal.
    fn clear_bar(&self) {
        if let Some(bar) = self
            .bar
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .take()
        {
            bar.finish_and_clear();
        }
    }

    fn event_name(step: Step) -> &'static str {
        match step {
            Step::Bake => "baking",
            Step::Encode => "encoding",
        }
    }
}

impl Steps for TerminalSteps {
    fn started(&self, step: Step) {
        let template = match step {
            Step::Bake => "baking the simulations {bar:30} {pos}/{len} frames",
            Step::Encode => "encoding {bar:30} {pos}/{len} frames",
        };
        let bar = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        *self.bar.lock().unwrap_or_else(|err| err.into_inner()) = Some(bar);
    }

    fn progress(&self, step: Step, done: usize, total: usize) {
        if self.json {
            let event = Self::event_name(step);
            println!(
                "{}",
                serde_json::json!({"event": event, "done": done, "total": total})
            );
        }
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|err| err.into_inner()) {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    fn finished(&self, step: Step, path: &std::path::Path, secs: f64) {
        self.clear_bar();
        let event = match step {
            Step::Bake => "baked",
            Step::Encode => "encoded",
        };
        match (self.json, step) {
            (true, _) => println!(
                "{}",
                serde_json::json!({"event": event, "path": path, "secs": secs})
            ),
            (false, Step::Bake) => eprintln!("simulations baked in {secs:.1} s"),
            (false, Step::Encode) => println!("movie: {} (encoded in {secs:.1} s)", path.display()),
        }
    }
}

impl Drop for TerminalSteps {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

async fn local_node(args: &RenderArgs, blender_path: PathBuf) -> Result<NodeConfig> {
    LocalNode::config(
        blender_path,
        args.farm.local_threads,
        args.farm.work_dir.clone(),
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// Shows the job's events and snapshots until it ends; Ctrl-C or SIGTERM
/// cancels it cleanly (what is rendered stays).
async fn drive(mut handle: engine::EngineHandle, json: bool) -> Result<JobSummary> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} frames  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut shown: Option<JobProgress> = None;
    let cancel = handle.commands.clone();
    tokio::spawn(async move {
        super::termination().await;
        let _ = cancel.send(EngineCommand::Cancel).await;
    });
    let mut snapshots = true;
    loop {
        let event = tokio::select! {
            event = handle.events.recv() => event,
            changed = handle.progress.changed(), if snapshots => {
                snapshots = changed.is_ok();
                show_progress(&bar, &mut handle.progress, &mut shown, json)?;
                continue;
            }
        };
        let Some(event) = event else { break };
        if let EngineEvent::Finished(_) = &event {
            // The job's last snapshot comes before its end.
            show_progress(&bar, &mut handle.progress, &mut shown, json)?;
        }
        if json {
            println!("{}", serde_json::to_string(&event)?);
            if let EngineEvent::Finished(_) = event {
                break;
            }
            continue;
        }
        match event {
            EngineEvent::Started {
                total,
                skipped,
                output_dir,
            } => {
                bar.set_length(total as u64);
                bar.set_position(skipped as u64);
                say(
                    &bar,
                    format!("rendering {total} frames into {}", output_dir.display()),
                );
                if skipped > 0 {
                    say(
                        &bar,
                        format!("{skipped} frames are there already and are skipped"),
                    );
                }
            }
            // Snapshots: they come through `handle.progress`.
            EngineEvent::Node(_) | EngineEvent::Progress(_) | EngineEvent::Frame(_) => {}
            EngineEvent::Log { message } => say(&bar, message),
            EngineEvent::Finished(_) => break,
        }
    }
    bar.finish_and_clear();
    handle
        .task
        .await
        .context("the job engine crashed")?
        .map_err(anyhow::Error::from)
}

/// Shows the job's snapshot if it changed: on the bar, or as `node` and
/// `progress` events with `--json`.
fn show_progress(
    bar: &ProgressBar,
    progress: &mut tokio::sync::watch::Receiver<JobProgress>,
    shown: &mut Option<JobProgress>,
    json: bool,
) -> Result<()> {
    let snapshot = progress.borrow_and_update().clone();
    if shown.as_ref() == Some(&snapshot) {
        return Ok(());
    }
    if json {
        for event in snapshot.events(shown.as_ref()) {
            println!("{}", serde_json::to_string(&event)?);
        }
    } else {
        bar.set_position(snapshot.progress.done as u64);
        let eta = snapshot
            .progress
            .eta_secs
            .map_or_else(String::new, |secs| format!("ETA {} ", clock(secs)));
        bar.set_message(format!("{eta}{}", activity(&snapshot.nodes)));
    }
    *shown = Some(snapshot);
    Ok(())
}

/// Prints above the bar, or plainly when there is no terminal for it.
fn say(bar: &ProgressBar, message: String) {
    if bar.is_hidden() {
        eprintln!("{message}");
    } else {
        bar.println(message);
    }
}

fn activity(nodes: &[NodeView]) -> String {
    nodes
        .iter()
        .filter_map(|node| match (node.status, node.current) {
            (NodeStatus::Rendering, Some((frame, progress))) => {
                Some(format!("{}: {frame} {:.0}%", node.name, progress * 100.0))
            }
            (NodeStatus::Rendering | NodeStatus::Idle | NodeStatus::Loading, _) => None,
            (status, _) => Some(format!("{}: {status:?}", node.name).to_lowercase()),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn clock(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn print_summary(summary: &JobSummary) {
    println!();
    println!(
        "{:<28} {:>7} {:>12} {:>12} {:>9}",
        "NODE", "FRAMES", "S/FRAME", "PREP S", "FAILURES"
    );
    let secs = |secs: Option<f64>| secs.map_or_else(|| "-".into(), |secs| format!("{secs:.2}"));
    for node in &summary.nodes {
        println!(
            "{:<28} {:>7} {:>12} {:>12} {:>9}",
            node.name,
            node.frames,
            secs(node.mean_secs),
            secs(node.prep_secs),
            node.failures
        );
    }
    println!(
        "{} of {} frames done ({} already there), {} retries, wall time {}",
        summary.frames_done,
        summary.frames_total,
        summary.frames_skipped,
        summary.retries,
        clock(summary.wall_secs)
    );
    println!("output: {}", summary.output_dir.display());
}
