//! The windows, driven headless with egui_kittest: simulated engine events
//! fill the servers table and the frame grid, a dropped .blend is read by
//! the real Blender, and the node window says when Blender is missing.
//! `herd`'s window asks what the machine is for and switches modes.
//! Snapshots render on Mesa's software Vulkan (`mesa-vulkan-drivers`); the
//! one test that runs discovery keeps it on loopback
//! (`herd::lan::force_loopback_only`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable};
use tokio_util::sync::CancellationToken;

use herd::controller::engine::{
    EngineCommand, EngineEvent, FrameView, NodeStatus, NodeView, ProgressView,
};
use herd::controller::scheduler::FrameState;
use herd::ui::bridge::{self, BridgeCommand, BridgeConfig, BridgeEvent};
use herd::ui::controller::Remembered;
use herd::ui::node_launch::{self, NodeCommand, NodeLaunch};
use herd::ui::node_window::NodePhase;
use herd::ui::shell::{Launcher, Mode, ModeFile, Screen};
use herd::ui::{ControllerApp, HerdApp, NodeApp};

const SIZE: egui::Vec2 = egui::vec2(800.0, 500.0);

fn controller_harness(app: ControllerApp) -> Harness<'static, ControllerApp> {
    Harness::builder()
        .with_size(SIZE)
        .wgpu()
        .build_ui_state(|ui, app: &mut ControllerApp| app.window_ui(ui), app)
}

fn node(id: u32, name: &str, local: bool, status: NodeStatus) -> NodeView {
    NodeView {
        id,
        uri: format!("http://127.0.0.1:{}", 18000 + id),
        name: name.into(),
        status,
        blender_version: "3.4.1".into(),
        cores: 2 + id as usize * 2,
        current: None,
        frames_done: 0,
        secs_per_frame: None,
        prep_secs: None,
        local,
        enabled: true,
        error: None,
        last_seen_secs: None,
    }
}

fn frame(index: usize, state: FrameState) -> FrameView {
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

/// A job half-way: two nodes, frames in every state, one failed for good.
fn simulated_job() -> Vec<EngineEvent> {
    let mut events = vec![EngineEvent::Started {
        total: 40,
        skipped: 0,
        output_dir: "/renders/demo_frames".into(),
    }];
    let mut local = node(0, "studio (local)", true, NodeStatus::Rendering);
    local.current = Some((13, 0.4));
    local.frames_done = 6;
    local.secs_per_frame = Some(3.2);
    let mut other = node(1, "attic", false, NodeStatus::Rendering);
    other.current = Some((14, 0.75));
    other.frames_done = 5;
    other.secs_per_frame = Some(4.1);
    events.push(EngineEvent::Node(local));
    events.push(EngineEvent::Node(other));
    for index in 0..11 {
        events.push(EngineEvent::Frame(FrameView {
            node: Some(
                if index % 2 == 0 {
                    "studio (local)"
                } else {
                    "attic"
                }
                .into(),
            ),
            secs: Some(3.5),
            ..frame(index, FrameState::Done)
        }));
    }
    events.push(EngineEvent::Frame(FrameView {
        attempts: 3,
        node: Some("attic".into()),
        error: Some("Blender crashed with signal 11 (SIGSEGV)".into()),
        ..frame(11, FrameState::Failed)
    }));
    events.push(EngineEvent::Frame(FrameView {
        progress: 0.4,
        node: Some("studio (local)".into()),
        ..frame(12, FrameState::Rendering)
    }));
    events.push(EngineEvent::Frame(FrameView {
        progress: 0.75,
        node: Some("attic".into()),
        ..frame(13, FrameState::Rendering)
    }));
    events.push(EngineEvent::Frame(frame(14, FrameState::Assigned)));
    events.push(EngineEvent::Frame(frame(15, FrameState::Downloading)));
    events.push(EngineEvent::Progress(ProgressView {
        done: 11,
        failed: 1,
        total: 40,
        elapsed_secs: 42.0,
        eta_secs: Some(95.0),
        frames_per_minute: 15.7,
        paused: false,
    }));
    events.push(EngineEvent::Log {
        message: "node attic joined at http://127.0.0.1:18001".into(),
    });
    events
}

/// The next command the window sent, past the focus reports it sends on
/// its own.
fn next_command(
    end: &mut bridge::BridgeEnd,
) -> Result<BridgeCommand, tokio::sync::mpsc::error::TryRecvError> {
    loop {
        match end.commands.try_recv() {
            Ok(BridgeCommand::WindowFocused(_)) => {}
            other => return other,
        }
    }
}

/// A window fed [`simulated_job`] through the bridge's channel, as the real
/// bridge would.
fn window_with_job() -> (Harness<'static, ControllerApp>, bridge::BridgeEnd) {
    let (link, end) = bridge::channel();
    let mut app = ControllerApp::new(link);
    app.state.begin_job(&(1..=40).collect::<Vec<_>>());
    for event in simulated_job() {
        end.events.try_send(BridgeEvent::Engine(event)).unwrap();
    }
    let mut harness = controller_harness(app);
    harness.run_steps(4);
    (harness, end)
}

#[test]
fn simulated_events_fill_the_servers_table_and_the_frame_grid() {
    let (mut harness, _end) = window_with_job();
    harness.get_by_label("studio (local)");
    harness.get_by_label("attic");
    harness.get_by_label("127.0.0.1:18001");
    harness.get_by_label_contains("frame 14: 75%");
    harness.get_by_label("11 / 40 frames");
    harness.get_by_label_contains("ETA 0:01:35");
    harness.get_by_label("failed 1");
    harness.get_by_label("rendering 2");
    harness.get_by_label("done 11");

    let state = &harness.state().state;
    assert_eq!(state.nodes.len(), 2);
    assert_eq!(state.frames.len(), 40);
    assert_eq!(state.frame_counts(), [24, 1, 2, 1, 11, 1]);
    assert!(harness.state().grid.is_some(), "the grid was drawn");

    harness.snapshot("controller_job");
}

#[test]
fn hovering_a_failed_frame_shows_its_error() {
    let (mut harness, _end) = window_with_job();
    let tooltip = harness.state().state.frame_tooltip(11).unwrap();
    assert!(tooltip.contains("Frame 12: failed"), "{tooltip}");
    assert!(tooltip.contains("attempts: 3"), "{tooltip}");
    assert!(tooltip.contains("SIGSEGV"), "{tooltip}");

    harness
        .ctx
        .all_styles_mut(|style| style.interaction.tooltip_delay = 0.0);
    let cell = harness.state().grid.unwrap().cell(11).center();
    harness.hover_at(cell);
    harness.run_steps(6);
    // The tooltip (and the clickable cell's description) say it.
    assert!(
        harness
            .query_all_by_label_contains("error: Blender crashed with signal 11 (SIGSEGV)")
            .next()
            .is_some(),
        "the tooltip shows the error"
    );
}

#[test]
fn dropping_a_file_that_is_no_blend_says_so_and_reads_nothing() {
    let (link, mut end) = bridge::channel();
    let mut harness = controller_harness(ControllerApp::new(link));
    harness.run();
    harness
        .input_mut()
        .dropped_files
        .push(dropped(Path::new("/tmp/holiday.png")));
    harness.run();
    harness.get_by_label_contains("holiday.png is not a .blend file");
    assert!(
        next_command(&mut end).is_err(),
        "nothing was sent to inspect"
    );
}

/// A file dropped on the window, as egui-winit hands it over.
#[derive(Debug)]
struct DroppedPath(PathBuf);

impl egui::DroppedFile for DroppedPath {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|err| err.to_string())
    }
}

fn dropped(path: &Path) -> egui::DroppedFileHandle {
    Arc::new(DroppedPath(path.to_path_buf()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ui-test-worker")
        .enable_all()
        .build()
        .unwrap()
}

/// A window's background on a runtime of its own: the controller's bridge
/// or a node window's node. It is told to stop, and awaited, by
/// [`Background::stop`] (which checks it ended cleanly) or when dropped.
struct Background {
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn new() -> Self {
        Self {
            runtime: runtime(),
            shutdown: CancellationToken::new(),
            task: None,
        }
    }

    /// The controller's bridge with `config`, repainting with `notify`.
    fn bridge(config: BridgeConfig, notify: bridge::Notify) -> (Self, bridge::BridgeLink) {
        let mut background = Self::new();
        let (link, task) = bridge::spawn(
            background.runtime.handle(),
            config,
            notify,
            background.shutdown.clone(),
        );
        background.task = Some(task);
        (background, link)
    }

    /// Stops it and checks that it ended cleanly.
    fn stop(mut self) {
        self.shutdown.cancel();
        self.join();
    }

    /// Waits for it to end (after it was told to stop) and checks that it
    /// ended cleanly.
    fn join(&mut self) {
        if let Some(task) = self.task.take() {
            self.runtime.block_on(task).unwrap();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = self.runtime.block_on(task);
        }
    }
}

fn no_repaint() -> bridge::Notify {
    Arc::new(|| {})
}

/// A controller window over `link` that opened `blend`, stepped until the
/// file is read, at `size`.
fn read_in_window(
    link: bridge::BridgeLink,
    blend: &Path,
    size: egui::Vec2,
) -> Harness<'static, ControllerApp> {
    let mut app = ControllerApp::new(link);
    app.open(blend.to_path_buf());
    let mut harness = controller_harness(app);
    harness.set_size(size);
    step_until(&mut harness, Duration::from_secs(120), |app| {
        app.inspecting.is_none()
    });
    harness
}

/// Sets the job panel: which frames, at what size, into which folder.
fn set_up_job(
    harness: &mut Harness<'static, ControllerApp>,
    frames: &str,
    percent: u32,
    out: &Path,
) {
    let app = harness.state_mut();
    let (_, form) = app.scene.as_mut().expect("the job panel is shown");
    form.frames = frames.into();
    form.resolution_percent = percent;
    form.output_dir = out.display().to_string();
    harness.run_steps(2);
}

/// A node window running its node in the background, named
/// `ui-test-node`, on loopback: the background, the node's command sender
/// and the window.
fn node_window(
    blender: PathBuf,
    work_dir: &Path,
    simulate: Option<Duration>,
) -> (
    Background,
    tokio::sync::mpsc::Sender<NodeCommand>,
    Harness<'static, NodeApp>,
) {
    let mut background = Background::new();
    let launch = NodeLaunch {
        blender: Some(blender),
        name: Some("ui-test-node".into()),
        work_dir: Some(work_dir.to_path_buf()),
        cache_size_bytes: 1 << 30,
        threads: Some(1),
        allow_scripts: false,
        frame_timeout: Duration::from_secs(60),
        max_frame_time: None,
        allow: Vec::new(),
        token: None,
        bind: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        port: 0,
        discovery: None,
        simulate,
    };
    let (link, task) = node_launch::launch(
        background.runtime.handle(),
        launch,
        Arc::new(|| {}),
        background.shutdown.clone(),
    );
    background.task = Some(task);
    let commands = link.commands.clone();
    let harness = Harness::builder()
        .with_size(egui::vec2(560.0, 500.0))
        .build_ui_state(
            |ui, app: &mut NodeApp| app.window_ui(ui),
            NodeApp::new(link),
        );
    (background, commands, harness)
}

/// Steps until the frame viewer shows a decoded image.
fn until_viewer_shows_an_image(harness: &mut Harness<'static, ControllerApp>) {
    step_until(harness, Duration::from_secs(30), |app| {
        app.viewer
            .as_ref()
            .is_some_and(|viewer| viewer.image.is_some())
    });
}

/// Steps the window until `done` holds, sleeping between steps so the
/// background gets on; panics after `timeout`.
fn step_until<S>(harness: &mut Harness<'_, S>, timeout: Duration, done: impl Fn(&S) -> bool) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?}");
        harness.step();
        std::thread::sleep(Duration::from_millis(50));
    }
    harness.run_steps(3);
}

#[test]
fn dropping_the_demo_blend_reads_it_with_blender_and_shows_the_job_panel() {
    let config = BridgeConfig {
        blender: Some(PathBuf::from("/usr/bin/blender")),
        local: false,
        discovery_port: None,
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, no_repaint());
    let mut harness = controller_harness(ControllerApp::new(link));
    harness.run();
    harness
        .input_mut()
        .dropped_files
        .push(dropped(&common::demo_blend()));
    harness.step();
    assert!(
        harness.state().inspecting.is_some(),
        "reading starts at once"
    );
    harness.get_by_label_contains("Reading demo.blend with Blender");

    step_until(&mut harness, Duration::from_secs(120), |app| {
        app.inspecting.is_none()
    });
    let app = harness.state();
    assert_eq!(app.message, None);
    let form = app.form().expect("the job panel is shown");
    assert_eq!(form.frames, "1-24");
    assert_eq!(form.resolution_percent, 100);
    assert_eq!(form.samples, Some(16));
    assert!(
        form.output_dir.ends_with("demo_frames"),
        "{}",
        form.output_dir
    );
    harness.get_by_label_contains("frames 1-24 at 24 fps");
    harness.get_by_label_contains("24 frames");
    harness.get_by_label("Start");

    background.stop();
}

#[test]
fn the_node_window_says_when_blender_is_missing() {
    let work_dir = tempfile::tempdir().unwrap();
    let (background, commands, mut harness) =
        node_window(PathBuf::from("/nonexistent/blender"), work_dir.path(), None);
    step_until(&mut harness, Duration::from_secs(20), |app| {
        !matches!(app.phase, NodePhase::Starting)
    });
    assert!(matches!(harness.state().phase, NodePhase::Failed(_)));
    harness.get_by_label("This node cannot start.");
    harness.get_by_label_contains("Blender not found at /nonexistent/blender");
    harness.get_by_label("Locate Blender…");

    // The dialog's answer: the node starts with that Blender.
    commands
        .try_send(NodeCommand::UseBlender {
            path: common::blender(),
            remember: false,
        })
        .unwrap();
    step_until(&mut harness, Duration::from_secs(60), |app| {
        matches!(app.phase, NodePhase::Running(_))
    });
    let blender_line = format!("3.4.1 at {}", common::blender().display());
    harness.get_by_label_contains(&blender_line);
    let NodePhase::Running(running) = &harness.state().phase else {
        unreachable!()
    };
    let url = format!("http://{}/api/v1", running.http);

    // A frame rendered shows its thumbnail in the window.
    let blend = std::fs::read(common::demo_blend()).unwrap();
    let hash = common::sha256(&blend);
    let client = reqwest::Client::new();
    background.runtime.block_on(async {
        let put = client
            .put(format!("{url}/blobs/{hash}"))
            .body(blend)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
        let body = serde_json::json!({
            "blob": hash, "frame": 3, "overrides": {"resolution_percent": 25}
        });
        let post = client
            .post(format!("{url}/renders"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 201);
    });
    step_until(&mut harness, Duration::from_secs(120), |app| {
        app.preview
            .as_ref()
            .is_some_and(|preview| preview.frame == 3)
    });
    harness.get_by_label("Last frame");
    harness.get_by_label("frame 3");
    background.stop();
}

#[test]
fn a_job_started_from_the_window_renders_on_the_local_node() {
    let work_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let config = BridgeConfig {
        blender: Some(PathBuf::from("/usr/bin/blender")),
        local: true,
        work_dir: Some(work_dir.path().to_path_buf()),
        discovery_port: None,
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, no_repaint());
    let mut harness = read_in_window(link, &common::demo_blend(), SIZE);
    set_up_job(&mut harness, "1-2", 25, out_dir.path());
    harness.get_by_label("Start").click();
    harness.step();
    assert!(harness.state().job_running(), "the job starts at once");

    step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.job_running()
    });
    let app = harness.state();
    assert_eq!(app.message, None);
    let summary = app.state.summary.as_ref().expect("the job ended");
    assert_eq!(summary.outcome, herd::controller::engine::Outcome::Complete);
    assert_eq!(summary.frames_done, 2);
    assert!(out_dir.path().join("demo_0001.png").is_file());
    assert!(out_dir.path().join("demo_0002.png").is_file());
    assert_eq!(app.state.frame_counts()[4], 2, "both cells are done");
    let local = app.state.nodes.values().find(|node| node.local).unwrap();
    assert_eq!(local.frames_done, 2);
    harness.get_by_label(&local.name);
    harness.get_by_label_contains("Done: all 2 frames are in");

    // The previews are decoded in the background from the output folder.
    step_until(&mut harness, Duration::from_secs(30), |app| {
        app.thumbnails.frames().len() == 2
    });
    harness.get_by_label("frame 1");
    harness.get_by_label("frame 2");

    // A preview opens its frame whole, at the file's own size.
    let (width, height) = image::image_dimensions(out_dir.path().join("demo_0001.png")).unwrap();
    // Tall enough to show the grid and the previews without scrolling.
    harness.set_size(egui::vec2(800.0, 1000.0));
    harness.run_steps(2);
    harness.get_by_label("Open frame 1").click();
    until_viewer_shows_an_image(&mut harness);
    let viewer = harness.state().viewer.as_ref().unwrap();
    assert_eq!(viewer.frame, 1);
    let texture = viewer.image.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(texture.size(), [width as usize, height as usize]);
    harness.get_by_label("Frame 1");
    harness.get_by_label("Open in image viewer");
    harness.key_press(egui::Key::Escape);
    harness.run_steps(2);
    assert!(harness.state().viewer.is_none(), "Escape closes it");

    // So does a click on a done cell of the grid.
    let cell = harness.state().grid.unwrap().cell(1).center();
    harness
        .input_mut()
        .events
        .push(egui::Event::PointerMoved(cell));
    harness.run_steps(1);
    for pressed in [true, false] {
        harness.input_mut().events.push(egui::Event::PointerButton {
            pos: cell,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: egui::Modifiers::NONE,
        });
        harness.step();
    }
    until_viewer_shows_an_image(&mut harness);
    assert_eq!(harness.state().viewer.as_ref().unwrap().frame, 2);
    harness.get_by_label("Frame 2");

    background.stop();
}

#[test]
fn the_node_window_pauses_resumes_and_stops_its_node() {
    let work_dir = tempfile::tempdir().unwrap();
    // No frame is sent: the simulated renderer is never asked for one.
    let (mut background, _commands, mut harness) = node_window(
        common::blender(),
        work_dir.path(),
        Some(Duration::from_millis(10)),
    );
    step_until(&mut harness, Duration::from_secs(30), |app| {
        !matches!(app.phase, NodePhase::Starting)
    });
    let NodePhase::Running(running) = &harness.state().phase else {
        panic!("the node runs: {:?}", harness.state().phase);
    };
    let node = Arc::clone(&running.node);
    harness.get_by_label("ui-test-node");
    harness.get_by_label("idle: waiting for frames");
    harness.get_by_label_contains("http://127.0.0.1:");

    harness.get_by_label("Pause").click();
    harness.run_steps(2);
    assert_eq!(node.state(), herd::wire::NodeState::Paused);
    harness.get_by_label("paused: takes no new frames");

    harness.get_by_label("Resume").click();
    harness.run_steps(2);
    assert_eq!(node.state(), herd::wire::NodeState::Idle);

    // Escape asks first; "Keep running" keeps it running.
    harness.key_press(egui::Key::Escape);
    harness.run_steps(2);
    harness.get_by_label_contains("Stop this node?");
    harness.get_by_label("Keep running").click();
    harness.run_steps(2);
    assert!(!harness.state().confirm_stop);
    assert!(!node.shutdown.is_cancelled());

    harness.get_by_label("Stop").click();
    step_until(&mut harness, Duration::from_secs(30), |app| {
        matches!(app.phase, NodePhase::Stopped(None))
    });
    harness.get_by_label_contains("The node stopped");
    background.join();
}

#[test]
fn a_server_added_by_address_goes_to_the_background_and_a_bad_one_is_refused() {
    let (link, mut end) = bridge::channel();
    let mut harness = controller_harness(ControllerApp::new(link));
    harness.run();
    type_into(&mut harness, "http://10.0.0.5:8082/");
    harness.get_by_label("Add").click();
    harness.run();
    match next_command(&mut end) {
        Ok(BridgeCommand::AddNode(uri)) => assert_eq!(uri, "http://10.0.0.5:8082"),
        other => panic!("expected AddNode, got {other:?}"),
    }
    type_into(&mut harness, "10.0.0.6");
    harness.get_by_label("Add").click();
    harness.run();
    harness.get_by_label_contains("'10.0.0.6' is not a server address");
    assert!(next_command(&mut end).is_err(), "nothing was sent");
}

/// Types into the "Add a server" field: focus it, then type.
fn type_into(harness: &mut Harness<'static, ControllerApp>, text: &str) {
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Add a server")
        .focus();
    harness.run();
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, "Add a server")
        .type_text(text);
    harness.run();
}

/// A UDP port nobody listens on now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn servers_on_the_lan_show_up_before_a_job_and_one_left_out_gets_frames_only_when_ticked() {
    // Probes and beacons of this process stay on loopback.
    herd::lan::force_loopback_only();
    let discovery_port = free_udp_port();
    let announce = format!("127.0.0.1:{discovery_port}");
    let node = common::NodeProcess::start(&["--name", "lan-node", "--announce-to", &announce]);
    let out_dir = tempfile::tempdir().unwrap();
    let config = BridgeConfig {
        blender: Some(common::blender()),
        local: false,
        discovery_port: Some(discovery_port),
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, no_repaint());
    let mut harness = controller_harness(ControllerApp::new(link));

    // No job yet: the node is heard by its beacon and shown with its state.
    step_until(&mut harness, Duration::from_secs(30), |app| {
        app.state
            .servers
            .iter()
            .any(|row| row.name == "lan-node" && row.status == NodeStatus::Idle)
    });
    assert!(!harness.state().job_running());
    assert_eq!(harness.state().state.servers[0].uri, node.url);
    harness.get_by_label("lan-node");
    harness.get_by_label("idle");
    harness.get_by_label("now");

    // Unticked before the job: it joins the job but gets no frame.
    harness
        .get_by_role_and_label(egui::accesskit::Role::CheckBox, "Use lan-node")
        .click();
    harness.run_steps(2);
    assert!(harness.state().remembered.left_out.contains(&node.url));
    harness.state_mut().open(common::demo_blend());
    step_until(&mut harness, Duration::from_secs(120), |app| {
        app.inspecting.is_none()
    });
    set_up_job(&mut harness, "1", 25, out_dir.path());
    harness.get_by_label("Start").click();
    step_until(&mut harness, Duration::from_secs(30), |app| {
        app.state.nodes.values().any(|row| !row.enabled)
    });
    std::thread::sleep(Duration::from_secs(2));
    harness.run_steps(2);
    assert_eq!(
        harness.state().state.frame_counts()[4],
        0,
        "no frame went to a node left out"
    );

    // Ticked: it is sent the file and renders the frame.
    harness
        .get_by_role_and_label(egui::accesskit::Role::CheckBox, "Use lan-node")
        .click();
    step_until(&mut harness, Duration::from_secs(120), |app| {
        !app.job_running()
    });
    let summary = harness.state().state.summary.clone().unwrap();
    assert_eq!(summary.outcome, herd::controller::engine::Outcome::Complete);
    assert!(out_dir.path().join("demo_0001.png").is_file());
    assert!(!harness.state().remembered.left_out.contains(&node.url));

    // After the job the table shows the LAN again.
    step_until(&mut harness, Duration::from_secs(30), |app| {
        !app.state.servers.is_empty()
    });
    background.stop();
}

#[test]
fn pause_and_resume_go_to_the_job_and_the_window_says_it_is_paused() {
    let (mut harness, mut end) = window_with_job();
    harness.get_by_label("Pause").click();
    harness.run();
    match next_command(&mut end) {
        Ok(BridgeCommand::Engine(EngineCommand::SetPaused(true))) => {}
        other => panic!("expected SetPaused(true), got {other:?}"),
    }
    let mut progress = harness.state().state.progress.clone().unwrap();
    progress.paused = true;
    end.events
        .try_send(BridgeEvent::Engine(EngineEvent::Progress(progress)))
        .unwrap();
    harness.run_steps(2);
    harness.get_by_label_contains("Paused: no new frame starts");
    harness.get_by_label("Resume").click();
    harness.run();
    match next_command(&mut end) {
        Ok(BridgeCommand::Engine(EngineCommand::SetPaused(false))) => {}
        other => panic!("expected SetPaused(false), got {other:?}"),
    }
}

#[test]
fn a_scene_with_a_missing_texture_says_which_and_starts_only_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    common::deps_scene(dir.path(), false);
    std::fs::remove_file(dir.path().join("textures/wood.png")).unwrap();

    let config = BridgeConfig {
        blender: Some(common::blender()),
        local: false,
        discovery_port: None,
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, no_repaint());
    let mut harness = read_in_window(
        link,
        &dir.path().join("shot/scene.blend"),
        egui::vec2(900.0, 900.0),
    );
    harness.get_by_label_contains("Reads 6 files beside the .blend");
    harness.get_by_label_contains("missing image 'wood.png' (//../textures/wood.png)");
    let start = harness.get_by_label("Start");
    assert!(
        start.accesskit_node().is_disabled(),
        "Start waits for a choice"
    );
    harness
        .get_by_label_contains("Render without the 1 missing file(s)")
        .click();
    harness.run_steps(2);
    assert!(harness.state().allow_missing);
    assert!(!harness.get_by_label("Start").accesskit_node().is_disabled());
    background.stop();
}

/// A minimised window: eframe runs no `ui` pass, it calls only `App::logic`
/// (through `Context::run_logic`), and only when the background asked for
/// a repaint. A resumed job of 10,010 frames, 10,000 of them in the output
/// folder already, tells the window of each at once: more events than the
/// channels hold. The job must still hand out its last ten frames to the
/// local node's real Blender and finish them.
#[test]
fn a_minimised_window_never_stalls_a_job() {
    use std::sync::atomic::{AtomicBool, Ordering};

    const ON_DISK: i32 = 10_000;
    const TO_RENDER: i32 = 10;
    let work_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    // The demo at 30 %: 96×54, the size every frame must have.
    // Where the job panel's output folder puts the demo's frames.
    let output = herd::controller::output::OutputPlan {
        dir: out_dir.path().to_path_buf(),
        name: "demo_####".into(),
        format: "PNG".into(),
        use_extension: true,
        file_outputs: Vec::new(),
        movie: None,
        notes: Vec::new(),
    };
    let first = output.frame_path(TO_RENDER + 1);
    image::RgbImage::new(96, 54).save(&first).unwrap();
    for frame in TO_RENDER + 2..=TO_RENDER + ON_DISK {
        std::fs::hard_link(&first, output.frame_path(frame)).unwrap();
    }

    let repaint = Arc::new(AtomicBool::new(false));
    let notify = {
        let repaint = Arc::clone(&repaint);
        Arc::new(move || repaint.store(true, Ordering::SeqCst))
    };
    let config = BridgeConfig {
        blender: Some(common::blender()),
        local: true,
        local_threads: Some(1),
        work_dir: Some(work_dir.path().to_path_buf()),
        discovery_port: None,
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, notify);
    let mut harness = read_in_window(link, &common::demo_blend(), SIZE);
    {
        let app = harness.state_mut();
        let message = app.message.clone();
        let (_, form) = app.scene.as_mut().unwrap_or_else(|| panic!("{message:?}"));
        form.frames = format!("1-{}", TO_RENDER + ON_DISK);
        form.resolution_percent = 30;
        form.samples = Some(1);
        form.output_dir = out_dir.path().display().to_string();
    }
    harness.run_steps(2);
    harness.get_by_label("Start").click();
    harness.step();
    assert!(harness.state().job_running(), "the job starts at once");

    // Minimised from here on: `logic` only, when a repaint was asked for.
    let ctx = harness.ctx.clone();
    let mut frame = eframe::Frame::_new_kittest();
    let start = Instant::now();
    let limit = Duration::from_secs(300);
    while harness.state().job_running() {
        let rendered = (1..=TO_RENDER)
            .filter(|&frame| output.frame_path(frame).is_file())
            .count();
        assert!(
            start.elapsed() < limit,
            "the job stalled behind the minimised window: {rendered} of {TO_RENDER} frames rendered after {limit:?}"
        );
        if repaint.swap(false, Ordering::SeqCst) || ctx.has_requested_repaint() {
            let app = harness.state_mut();
            let _ = ctx.run_logic(&egui::RawInput::default(), |ctx| {
                eframe::App::logic(app, ctx, &mut frame);
            });
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let app = harness.state();
    let summary = app.state.summary.as_ref().expect("the job ended");
    assert_eq!(summary.outcome, herd::controller::engine::Outcome::Complete);
    assert_eq!(summary.frames_skipped, ON_DISK as usize);
    assert_eq!(summary.frames_done, (ON_DISK + TO_RENDER) as usize);
    for frame in 1..=TO_RENDER {
        assert!(output.frame_path(frame).is_file(), "frame {frame} written");
    }
    assert_eq!(
        app.state.frame_counts()[4],
        (ON_DISK + TO_RENDER) as usize,
        "every cell is done"
    );
    let local = app.state.nodes.values().find(|node| node.local).unwrap();
    assert_eq!(local.frames_done, TO_RENDER as u32);
    assert!(
        app.events_taken > ON_DISK as u64,
        "the window took {} events",
        app.events_taken
    );

    background.stop();
}

/// Starts windows fed by channels the test holds, and records which modes
/// were started.
#[derive(Default)]
struct ChannelLauncher {
    started: Arc<std::sync::Mutex<Vec<Mode>>>,
    bridge_ends: Vec<bridge::BridgeEnd>,
    node_ends: Vec<(
        tokio::sync::mpsc::Sender<node_launch::NodeEvent>,
        tokio::sync::mpsc::Receiver<NodeCommand>,
    )>,
}

impl Launcher for ChannelLauncher {
    fn controller(&mut self, remembered: Remembered) -> ControllerApp {
        self.started.lock().unwrap().push(Mode::Controller);
        let (link, end) = bridge::channel();
        self.bridge_ends.push(end);
        ControllerApp::with_remembered(link, remembered)
    }

    fn node(&mut self) -> NodeApp {
        self.started.lock().unwrap().push(Mode::Node);
        let (events_tx, events) = tokio::sync::mpsc::channel(8);
        let (commands, commands_rx) = tokio::sync::mpsc::channel(8);
        self.node_ends.push((events_tx, commands_rx));
        NodeApp::new(node_launch::NodeLink { events, commands })
    }
}

/// `herd`'s window on the mode file `modes`, as `herd` alone opens it, and
/// the modes its launcher started.
fn herd_window(modes: &ModeFile) -> (Harness<'static, HerdApp>, Arc<std::sync::Mutex<Vec<Mode>>>) {
    let launcher = ChannelLauncher::default();
    let started = Arc::clone(&launcher.started);
    let app = HerdApp::new(
        Box::new(launcher),
        modes.clone(),
        Remembered::default(),
        modes.load(),
    );
    let mut harness = Harness::builder()
        .with_size(egui::vec2(560.0, 400.0))
        .wgpu()
        .build_ui_state(|ui, app: &mut HerdApp| app.window_ui(ui), app);
    harness.run_steps(2);
    (harness, started)
}

/// Steps the window until the settings thread has answered every write
/// (the mode file is written off the UI thread).
fn until_settings_written(harness: &mut Harness<'static, HerdApp>) {
    step_until(harness, Duration::from_secs(10), |app| {
        !app.writing_settings()
    });
}

#[test]
fn the_first_run_asks_what_the_machine_is_for_and_remembers_render_node() {
    let dir = tempfile::tempdir().unwrap();
    let modes = ModeFile::at(&dir.path().join("window"));
    let (mut harness, started) = herd_window(&modes);
    assert!(matches!(harness.state().screen, Screen::Choose));
    harness.get_by_label("What is this machine for?");
    harness.get_by_label("Send renders");
    harness.snapshot("first_run");
    harness.get_by_label("Render for the farm").click();
    harness.run_steps(2);

    assert_eq!(harness.state().mode(), Some(Mode::Node));
    assert_eq!(*started.lock().unwrap(), [Mode::Node]);
    harness.get_by_label("herd node");
    harness.get_by_label("Starting: finding Blender and opening the ports…");
    until_settings_written(&mut harness);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("window")).unwrap(),
        "node"
    );

    // The next start follows the choice without asking.
    drop(harness);
    let (harness, started) = herd_window(&modes);
    assert_eq!(harness.state().mode(), Some(Mode::Node));
    assert!(
        harness
            .query_by_label("What is this machine for?")
            .is_none()
    );
    assert_eq!(*started.lock().unwrap(), [Mode::Node]);
}

#[test]
fn the_first_run_can_choose_to_send_renders() {
    let dir = tempfile::tempdir().unwrap();
    let modes = ModeFile::at(&dir.path().join("window"));
    let (mut harness, started) = herd_window(&modes);
    harness.get_by_label("Send renders").click();
    harness.run_steps(2);
    assert_eq!(harness.state().mode(), Some(Mode::Controller));
    assert_eq!(*started.lock().unwrap(), [Mode::Controller]);
    harness.get_by_label("Open…");
    until_settings_written(&mut harness);
    assert_eq!(modes.load(), Some(Mode::Controller));
}

#[test]
fn either_window_switches_to_the_other_and_the_switch_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let modes = ModeFile::at(&dir.path().join("window"));
    modes.save(Mode::Controller).unwrap();
    let (mut harness, started) = herd_window(&modes);
    assert_eq!(harness.state().mode(), Some(Mode::Controller));

    harness.get_by_label("Render for the farm…").click();
    harness.run_steps(2);
    assert_eq!(harness.state().mode(), Some(Mode::Node));
    harness.get_by_label("herd node");
    until_settings_written(&mut harness);
    assert_eq!(modes.load(), Some(Mode::Node));

    harness.get_by_label("Send renders…").click();
    harness.run_steps(2);
    assert_eq!(harness.state().mode(), Some(Mode::Controller));
    harness.get_by_label("Open…");
    until_settings_written(&mut harness);
    assert_eq!(modes.load(), Some(Mode::Controller));
    assert_eq!(
        *started.lock().unwrap(),
        [Mode::Controller, Mode::Node, Mode::Controller]
    );
}

#[test]
fn the_controller_cannot_switch_to_a_node_while_a_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let modes = ModeFile::at(&dir.path().join("window"));
    modes.save(Mode::Controller).unwrap();
    let (mut harness, started) = herd_window(&modes);
    harness.state_mut().controller().unwrap().state.running = true;
    harness.run_steps(2);
    harness.get_by_label("Render for the farm…").click();
    harness.run_steps(2);
    assert_eq!(harness.state().mode(), Some(Mode::Controller));
    assert_eq!(*started.lock().unwrap(), [Mode::Controller]);
}

/// The node's window from `launcher` (which holds its channels' other
/// ends), its "Start at login" box writing the entry under `dir/autostart`
/// (for `/usr/bin/herd`).
fn node_window_with_autostart(
    launcher: &mut ChannelLauncher,
    dir: &Path,
) -> Harness<'static, NodeApp> {
    let autostart =
        herd::autostart::Autostart::at(&dir.join("autostart"), Path::new("/usr/bin/herd"));
    let app = launcher.node().with_autostart(Some(autostart));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(560.0, 500.0))
        .build_ui_state(|ui, app: &mut NodeApp| app.window_ui(ui), app);
    harness.run_steps(2);
    harness
}

/// Clicks "Start at login" and waits until the settings thread has answered.
fn click_start_at_login(harness: &mut Harness<'static, NodeApp>) {
    harness.get_by_label("Start at login").click();
    harness.run_steps(2);
    step_until(harness, Duration::from_secs(10), |app| {
        !app.writing_settings()
    });
}

#[test]
fn the_start_at_login_box_writes_and_removes_the_autostart_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("autostart").join("herd-node.desktop");
    let mut launcher = ChannelLauncher::default();
    let mut harness = node_window_with_autostart(&mut launcher, dir.path());
    assert!(!file.exists());

    click_start_at_login(&mut harness);
    assert!(harness.state().starts_at_login);
    let entry = std::fs::read_to_string(&file).unwrap();
    assert!(
        entry.contains("\nExec=/usr/bin/herd node --minimised\n"),
        "{entry}"
    );

    click_start_at_login(&mut harness);
    assert!(!harness.state().starts_at_login);
    assert!(!file.exists());
}

#[test]
fn a_start_at_login_that_cannot_be_written_says_why_and_unticks_the_box() {
    let dir = tempfile::tempdir().unwrap();
    // The autostart folder is a file: no entry can be written in it.
    std::fs::write(dir.path().join("autostart"), "").unwrap();
    let mut launcher = ChannelLauncher::default();
    let mut harness = node_window_with_autostart(&mut launcher, dir.path());

    click_start_at_login(&mut harness);
    assert!(!harness.state().starts_at_login);
    let error = harness.state().autostart_error.clone().unwrap();
    assert!(
        error.contains("cannot change the autostart entry"),
        "{error}"
    );
    harness.get_by_label(&error);
}

#[test]
fn the_command_typed_in_the_job_panel_gets_the_jobs_summary_when_it_ends() {
    let work_dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let written = work_dir.path().join("summary.json");
    let config = BridgeConfig {
        blender: Some(common::blender()),
        local: true,
        work_dir: Some(work_dir.path().to_path_buf()),
        discovery_port: None,
        ..BridgeConfig::default()
    };
    let (background, link) = Background::bridge(config, no_repaint());
    let mut harness = read_in_window(link, &common::demo_blend(), egui::vec2(900.0, 900.0));
    set_up_job(&mut harness, "1", 25, out_dir.path());
    let field = "When the job ends, run:";
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, field)
        .focus();
    harness.run();
    harness
        .get_by_role_and_label(egui::accesskit::Role::TextInput, field)
        .type_text(&format!("cat > '{}'", written.display()));
    harness.run();
    harness.get_by_label("Start").click();
    harness.step();
    step_until(&mut harness, Duration::from_secs(300), |app| {
        !app.job_running()
    });
    step_until(&mut harness, Duration::from_secs(10), |_| written.is_file());
    // The command may still be writing: wait for the whole document.
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary: serde_json::Value = loop {
        let text = std::fs::read_to_string(&written).unwrap();
        if let Ok(summary) = serde_json::from_str(&text) {
            break summary;
        }
        assert!(Instant::now() < deadline, "not JSON: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(summary["outcome"], "complete");
    assert_eq!(summary["frames_done"], 1);
    assert!(
        harness.state().remembered.on_end.starts_with("cat > "),
        "the command is remembered for the next run"
    );
    background.stop();
}

#[test]
fn a_second_start_brings_the_node_window_back() {
    let mut launcher = ChannelLauncher::default();
    let app = launcher.node().with_autostart(None);
    let (events, _commands) = launcher.node_ends.pop().unwrap();
    let mut harness = Harness::builder()
        .with_size(egui::vec2(560.0, 500.0))
        .build_ui_state(|ui, app: &mut NodeApp| app.window_ui(ui), app);
    harness.run_steps(2);
    events.try_send(node_launch::NodeEvent::Show).unwrap();
    harness.step();
    let commands = &harness.output().viewport_output[&egui::ViewportId::ROOT].commands;
    assert!(
        commands.contains(&egui::ViewportCommand::Minimized(false)),
        "{commands:?}"
    );
    assert!(
        commands.contains(&egui::ViewportCommand::Focus),
        "{commands:?}"
    );
    assert!(!harness.state().show_requested);
}
