//! The desktop windows: `herd controller`, `herd node` without `--headless`,
//! `herd` alone (the mode chosen on this machine, asked the first time)
//! and `herd FILE.blend` (the controller). One window serves both modes and
//! switches between them ([`herd::ui::shell`]). eframe runs on the main thread
//! inside the tokio runtime; the window's background runs on the runtime.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use herd::ui::bridge::{self, BridgeConfig, Notify};
use herd::ui::controller::Remembered;
use herd::ui::node_launch;
use herd::ui::shell::{Launcher, Mode, ModeFile};
use herd::ui::{ControllerApp, HerdApp, NodeApp};

use super::ControllerArgs;
use super::node::NodeArgs;

/// How long the background may take to stop a job and end Blender after
/// the window closes.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The window's icon.
const ICON_PNG: &[u8] = include_bytes!("../../assets/icon.png");

/// Opens the window `herd` alone opens: the mode chosen last on this
/// machine, or the question of what the machine is for the first time.
pub fn run_last(runtime: &tokio::runtime::Runtime) -> Result<()> {
    let mode = ModeFile::user().load();
    let node = defaults::<NodeArgs>()?;
    if mode == Some(Mode::Node) && super::node::raised_running_node(runtime, &node) {
        return Ok(());
    }
    run_window(runtime, defaults::<ControllerArgs>()?, node, mode)
}

/// Opens `file` in the controller window (`herd FILE.blend`, a .blend
/// opened with herd from the desktop).
pub fn open_file(runtime: &tokio::runtime::Runtime, file: PathBuf) -> Result<()> {
    let mut args = defaults::<ControllerArgs>()?;
    args.file = Some(file);
    run_controller(runtime, args)
}

/// A subcommand's options as given with no arguments (environment
/// variables included).
fn defaults<T: Args>() -> Result<T> {
    #[derive(clap::Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        args: T,
    }
    <Only<T> as clap::Parser>::try_parse_from(["herd"])
        .map(|only| only.args)
        .context("cannot build the window's default options")
}

/// Opens the controller window.
pub fn run_controller(runtime: &tokio::runtime::Runtime, args: ControllerArgs) -> Result<()> {
    run_window(
        runtime,
        args,
        defaults::<NodeArgs>()?,
        Some(Mode::Controller),
    )
}

/// Opens the node window and runs the node in it.
pub fn run_node(runtime: &tokio::runtime::Runtime, args: NodeArgs) -> Result<()> {
    run_window(
        runtime,
        defaults::<ControllerArgs>()?,
        args,
        Some(Mode::Node),
    )
}

/// Opens the window in `mode` (asking when `None`); `controller` and `node`
/// are the options each mode starts with, also after a switch.
fn run_window(
    runtime: &tokio::runtime::Runtime,
    controller: ControllerArgs,
    node: NodeArgs,
    mode: Option<Mode>,
) -> Result<()> {
    let launch = node.to_launch()?;
    // Only a node started as a node starts minimised (at login).
    let minimised = node.minimised && mode == Some(Mode::Node);
    let file = controller.file;
    let start = controller.start;
    let farm = controller.farm;
    let config = BridgeConfig {
        blender: farm.blender,
        local: !farm.no_local,
        local_threads: farm.local_threads,
        work_dir: farm.work_dir,
        nodes: farm.node,
        discovery_port: (!farm.no_discovery).then_some(farm.discovery_port),
        token: farm.token.filter(|token| !token.is_empty()),
        retries: farm.retries,
    };
    let _entered = runtime.enter();
    let repaint = RepaintSlot::default();
    repaint.close_on_signal(runtime);
    let backgrounds = Backgrounds::default();
    let launcher = WindowLauncher {
        runtime: runtime.handle().clone(),
        config,
        launch,
        notify: repaint.notify(),
        backgrounds: backgrounds.clone(),
    };
    let (title, size) = match mode {
        Some(Mode::Node) => (Mode::Node.title(), [560.0, 500.0]),
        _ => (Mode::Controller.title(), [1100.0, 760.0]),
    };
    let result = eframe::run_native(
        "herd",
        native_options(title, size, minimised),
        Box::new(move |cc| {
            repaint.set(cc.egui_ctx.clone());
            if minimised {
                cc.egui_ctx
                    .send_viewport_cmd(egui::ViewportCommand::Minimized(true));
            }
            let remembered = cc
                .storage
                .and_then(|storage| eframe::get_value(storage, Remembered::KEY))
                .unwrap_or_default();
            let mut app = HerdApp::new(Box::new(launcher), ModeFile::user(), remembered, mode);
            if let Some(file) = file
                && let Some(controller) = app.controller()
            {
                if start {
                    controller.open_and_start(file);
                } else {
                    controller.open(file);
                }
            }
            Ok(Box::new(app))
        }),
    );
    backgrounds.stop_all(runtime);
    result.map_err(|err| {
        anyhow!(
            "cannot open the window: {err}; without a display use `herd render` \
             or `herd node --headless`"
        )
    })
}

/// The backgrounds the window started (the one running and those still
/// ending after a switch), to stop and wait for when it closes.
#[derive(Clone, Default)]
struct Backgrounds(Arc<Mutex<Vec<Background>>>);

/// A background's shutdown and task.
type Background = (CancellationToken, JoinHandle<()>);

impl Backgrounds {
    /// Ends every background started so far and keeps `next`'s.
    fn replace(&self, token: CancellationToken, task: JoinHandle<()>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|(_, task)| !task.is_finished());
        for (token, _) in all.iter() {
            token.cancel();
        }
        all.push((token, task));
    }

    /// Stops every background and waits (a bounded time) for them to stop
    /// their job and end Blender.
    fn stop_all(&self, runtime: &tokio::runtime::Runtime) {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (token, _) in &all {
            token.cancel();
        }
        let tasks = futures_util::future::join_all(all.into_iter().map(|(_, task)| task));
        let _ = runtime.block_on(tokio::time::timeout(SHUTDOWN_TIMEOUT, tasks));
    }
}

/// Starts the controller's bridge or this machine's node for the window.
struct WindowLauncher {
    runtime: tokio::runtime::Handle,
    config: BridgeConfig,
    launch: node_launch::NodeLaunch,
    notify: Notify,
    backgrounds: Backgrounds,
}

impl Launcher for WindowLauncher {
    fn controller(&mut self, remembered: Remembered) -> ControllerApp {
        let shutdown = CancellationToken::new();
        let (link, task) = bridge::spawn(
            &self.runtime,
            self.config.clone(),
            Arc::clone(&self.notify),
            shutdown.clone(),
        );
        self.backgrounds.replace(shutdown, task);
        ControllerApp::with_remembered(link, remembered)
    }

    fn node(&mut self) -> NodeApp {
        let shutdown = CancellationToken::new();
        let (link, task) = node_launch::launch(
            &self.runtime,
            self.launch.clone(),
            Arc::clone(&self.notify),
            shutdown.clone(),
        );
        self.backgrounds.replace(shutdown, task);
        NodeApp::new(link)
    }
}

fn native_options(title: &str, size: [f32; 2], minimised: bool) -> eframe::NativeOptions {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(title)
        .with_active(!minimised)
        .with_app_id("herd")
        .with_inner_size(size)
        .with_min_inner_size([420.0, 280.0])
        .with_drag_and_drop(true);
    if let Ok(icon) = eframe::icon_data::from_png_bytes(ICON_PNG) {
        viewport = viewport.with_icon(icon);
    }
    eframe::NativeOptions {
        viewport,
        ..eframe::NativeOptions::default()
    }
}

/// The window's repaint, for a background that starts before the window:
/// events sent before the window exists are seen on its first frame.
#[derive(Clone, Default)]
struct RepaintSlot(Arc<std::sync::OnceLock<egui::Context>>);

impl RepaintSlot {
    fn set(&self, ctx: egui::Context) {
        let _ = self.0.set(ctx);
    }

    /// Closes the window on Ctrl-C or SIGTERM, so the background stops its
    /// job and Blender as when the window is closed by hand.
    fn close_on_signal(&self, runtime: &tokio::runtime::Runtime) {
        let slot = Arc::clone(&self.0);
        runtime.spawn(async move {
            super::termination().await;
            if let Some(ctx) = slot.get() {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                ctx.request_repaint();
            }
        });
    }

    fn notify(&self) -> Notify {
        let slot = Arc::clone(&self.0);
        Arc::new(move || {
            if let Some(ctx) = slot.get() {
                ctx.request_repaint();
            }
        })
    }
}
