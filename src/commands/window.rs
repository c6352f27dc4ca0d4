//! The desktop windows: `herd controller`, `herd node` without `--headless`,
//! and `herd` alone (the window used last). eframe runs on the main thread
//! inside the tokio runtime; the window's background runs on the runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use tokio_util::sync::CancellationToken;

use herd::ui::bridge::{self, BridgeConfig, Notify};
use herd::ui::controller::Remembered;
use herd::ui::node_launch;
use herd::ui::{ControllerApp, NodeApp};

use super::ControllerArgs;
use super::node::NodeArgs;

/// How long the background may take to stop a job and end Blender after
/// the window closes.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The window's icon.
const ICON_PNG: &[u8] = include_bytes!("../../assets/icon.png");

/// Which window `herd` alone opens: the one used last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Controller,
    Node,
}

/// Opens the window used last (the controller the first time), with the
/// options' defaults.
pub fn run_last(runtime: &tokio::runtime::Runtime) -> Result<()> {
    match last_mode() {
        Mode::Controller => run_controller(runtime, defaults::<ControllerArgs>()?),
        Mode::Node => run_node(runtime, defaults::<NodeArgs>()?),
    }
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
    remember_mode(Mode::Controller);
    let config = BridgeConfig {
        blender: args.farm.blender,
        local: !args.farm.no_local,
        local_threads: args.farm.local_threads,
        work_dir: args.farm.work_dir,
        nodes: args.farm.node,
        discovery_port: (!args.farm.no_discovery).then_some(args.farm.discovery_port),
        token: args.farm.token.filter(|token| !token.is_empty()),
        retries: args.farm.retries,
    };
    let _entered = runtime.enter();
    let shutdown = CancellationToken::new();
    let repaint = RepaintSlot::default();
    repaint.close_on_signal(runtime);
    let (link, task) = bridge::spawn(runtime.handle(), config, repaint.notify(), shutdown.clone());
    let file = args.file;
    let start = args.start;
    let result = eframe::run_native(
        "herd",
        native_options("herd", [1100.0, 760.0]),
        Box::new(move |cc| {
            repaint.set(cc.egui_ctx.clone());
            let remembered = cc
                .storage
                .and_then(|storage| eframe::get_value(storage, Remembered::KEY))
                .unwrap_or_default();
            let mut app = ControllerApp::with_remembered(link, remembered);
            if let Some(file) = file {
                if start {
                    app.open_and_start(file);
                } else {
                    app.open(file);
                }
            }
            Ok(Box::new(app))
        }),
    );
    shutdown.cancel();
    let _ = runtime.block_on(tokio::time::timeout(SHUTDOWN_TIMEOUT, task));
    result.map_err(|err| {
        anyhow!("cannot open the window: {err}; without a display use `herd render`")
    })
}

/// Opens the node window and runs the node in it.
pub fn run_node(runtime: &tokio::runtime::Runtime, args: NodeArgs) -> Result<()> {
    remember_mode(Mode::Node);
    let launch = args.to_launch()?;
    let _entered = runtime.enter();
    let shutdown = CancellationToken::new();
    let repaint = RepaintSlot::default();
    repaint.close_on_signal(runtime);
    let (events, task) =
        node_launch::launch(runtime.handle(), launch, repaint.notify(), shutdown.clone());
    let result = eframe::run_native(
        "herd-node",
        native_options("herd node", [560.0, 500.0]),
        Box::new(move |cc| {
            repaint.set(cc.egui_ctx.clone());
            Ok(Box::new(NodeApp::new(events)))
        }),
    );
    shutdown.cancel();
    let _ = runtime.block_on(tokio::time::timeout(SHUTDOWN_TIMEOUT, task));
    result.map_err(|err| {
        anyhow!("cannot open the window: {err}; without a display use `herd node --headless`")
    })
}

fn native_options(title: &str, size: [f32; 2]) -> eframe::NativeOptions {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(title)
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

/// The file that remembers the last window.
fn mode_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "herd").map(|dirs| dirs.config_dir().join("window"))
}

fn last_mode() -> Mode {
    let text = mode_file()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    if text.trim() == "node" {
        Mode::Node
    } else {
        Mode::Controller
    }
}

/// Remembers the window for `herd` alone; failing to is harmless.
fn remember_mode(mode: Mode) {
    let Some(path) = mode_file() else {
        return;
    };
    let text = match mode {
        Mode::Controller => "controller",
        Mode::Node => "node",
    };
    if let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && let Err(err) = std::fs::write(&path, text)
    {
        tracing::debug!("cannot remember the window in {}: {err}", path.display());
    }
}
