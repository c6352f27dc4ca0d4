//! The node window: what this machine's node is doing, with Pause, Resume
//! and Stop. The node runs on the tokio runtime ([`super::node_launch`]);
//! the window reads [`Node::info`] each frame (a short lock, no I/O). The
//! "Start at login" box writes the autostart entry on the settings thread
//! ([`super::settings`]).

use std::sync::Arc;
use std::time::Duration;

use super::node_launch::{NodeCommand, NodeEvent, NodeLink, NodeRunning};
use super::palette;
use super::settings::{SettingsCommand, SettingsEvent, SettingsWriter};
use crate::autostart::Autostart;
use crate::node::Node;
use crate::wire::NodeState;

/// How often the window refreshes while nothing else wakes it, so progress
/// and counters move.
const REFRESH: Duration = Duration::from_millis(250);

/// Where the node is.
#[derive(Debug)]
pub enum NodePhase {
    /// Finding Blender, preparing the work dir, binding the ports.
    Starting,
    /// Serving.
    Running(NodeRunning),
    /// It could not start; the message says why and what to do.
    Failed(String),
    /// It stopped; an error says why.
    Stopped(Option<String>),
}

/// The node window's state.
#[derive(Debug)]
pub struct NodeApp {
    link: NodeLink,
    /// Where the node is.
    pub phase: NodePhase,
    /// The node could not start for want of a working Blender: the window
    /// offers "Locate Blender…".
    pub blender_missing: bool,
    /// Escape was pressed: ask whether to stop the node.
    pub confirm_stop: bool,
    /// The last frame's thumbnail as shown, with its frame number.
    pub preview: Option<LastFrame>,
    /// The user asked to send renders from this machine instead ("Send
    /// renders…"); the window that holds this one
    /// ([`super::shell::HerdApp`]) takes it.
    pub switch_to_controller: bool,
    /// This user's autostart entry ("Start at login"); `None` when there is
    /// no place for one (no HOME).
    pub autostart: Option<Autostart>,
    /// Whether the node starts at login, as the box shows it.
    pub starts_at_login: bool,
    /// Changing the autostart entry failed: why.
    pub autostart_error: Option<String>,
    /// Writes the autostart entry.
    settings: SettingsWriter,
    /// herd was started again on this machine and the window should come
    /// back; [`NodeApp::logic`] does it.
    pub show_requested: bool,
}

/// The thumbnail of the frame the node finished last.
pub struct LastFrame {
    /// Frame number.
    pub frame: i32,
    /// The node's pixels it was made from (to notice a newer frame).
    pixels: Arc<image::RgbImage>,
    /// On the GPU.
    texture: egui::TextureHandle,
}

impl std::fmt::Debug for LastFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastFrame")
            .field("frame", &self.frame)
            .field("size", &self.texture.size())
            .finish()
    }
}

impl NodeApp {
    /// A window following the node that [`super::node_launch::launch`] runs.
    pub fn new(link: NodeLink) -> Self {
        Self {
            link,
            phase: NodePhase::Starting,
            blender_missing: false,
            confirm_stop: false,
            preview: None,
            switch_to_controller: false,
            autostart: None,
            starts_at_login: false,
            autostart_error: None,
            settings: SettingsWriter::default(),
            show_requested: false,
        }
        .with_autostart(Autostart::user().ok())
    }

    /// The window with `autostart` as the entry its "Start at login" box
    /// writes and removes (tests give one in a temporary folder).
    pub fn with_autostart(mut self, autostart: Option<Autostart>) -> Self {
        self.starts_at_login = autostart.as_ref().is_some_and(Autostart::enabled);
        self.autostart = autostart;
        self
    }

    /// Whether a change of the autostart entry has not been answered yet.
    pub fn writing_settings(&self) -> bool {
        self.settings.busy()
    }

    /// Waits for the autostart changes asked for so far (when the window
    /// closes).
    pub fn finish_writes(&mut self) {
        self.settings.finish();
    }

    /// Takes in how the changes of the autostart entry went. While more
    /// are on their way the box keeps the last click; after the last one
    /// it shows what the disk holds.
    fn take_settings_events(&mut self, ctx: &egui::Context) {
        let mut last = None;
        for event in self.settings.poll(ctx) {
            if let SettingsEvent::AutostartSet { enabled, error } = event {
                self.autostart_error = error;
                last = Some(enabled);
            }
        }
        if let Some(enabled) = last
            && !self.settings.busy()
        {
            self.starts_at_login = enabled;
        }
    }

    /// The "Start at login" box. The entry is written or removed on the
    /// settings thread; the box shows the click at once.
    fn autostart_ui(&mut self, ui: &mut egui::Ui) {
        let Some(autostart) = &self.autostart else {
            return;
        };
        let changed = ui
            .checkbox(&mut self.starts_at_login, "Start at login")
            .on_hover_text(format!(
                "Start this node minimised when you log in ({})",
                autostart.file.display()
            ))
            .changed();
        if changed {
            self.settings.send(SettingsCommand::SetAutostart {
                entry: autostart.clone(),
                enabled: self.starts_at_login,
            });
        }
        if let Some(err) = &self.autostart_error {
            ui.colored_label(palette::ERROR, err);
        }
    }

    /// Takes in what the node's background sent since the last frame.
    /// eframe calls it (through `App::logic`) even while the window is
    /// minimised, so the background never waits on the window.
    pub fn drain_events(&mut self) {
        while let Ok(event) = self.link.events.try_recv() {
            if matches!(event, NodeEvent::Show) {
                self.show_requested = true;
                continue;
            }
            self.blender_missing = false;
            self.phase = match event {
                NodeEvent::Starting => NodePhase::Starting,
                NodeEvent::Started(running) => NodePhase::Running(running),
                NodeEvent::Failed { message, blender } => {
                    self.blender_missing = blender;
                    NodePhase::Failed(message)
                }
                NodeEvent::Stopped(result) => NodePhase::Stopped(result.err()),
                NodeEvent::Show => continue,
            };
        }
    }

    /// Takes in the background's events and brings the window back when
    /// herd was started again (eframe calls it while minimised, too).
    pub fn logic(&mut self, ctx: &egui::Context) {
        self.drain_events();
        self.take_settings_events(ctx);
        if std::mem::take(&mut self.show_requested) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(false));
            ctx.send_viewport_cmd(egui::ViewportCommand::Visible(true));
            ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
            ctx.request_repaint();
        }
    }

    /// Asks the background for something; a full channel means a request
    /// is already waiting, so nothing is lost.
    fn send(&self, command: NodeCommand) {
        let _ = self.link.commands.try_send(command);
    }

    /// Draws the whole window.
    pub fn window_ui(&mut self, ui: &mut egui::Ui) {
        self.logic(&ui.ctx().clone());
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("herd node");
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let switch = ui
                        .button("Send renders…")
                        .on_hover_text("Stop this node and open the controller instead");
                    if switch.clicked() {
                        self.switch_to_controller = true;
                    }
                });
            });
            self.autostart_ui(ui);
            ui.add_space(6.0);
            match &self.phase {
                NodePhase::Starting => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Starting: finding Blender and opening the ports…");
                    });
                }
                NodePhase::Failed(err) => {
                    ui.colored_label(palette::ERROR, "This node cannot start.");
                    ui.colored_label(palette::ERROR, err);
                    if self.blender_missing {
                        ui.add_space(8.0);
                        ui.label(
                            "Install Blender from your package manager or blender.org, \
                             or show herd where it is:",
                        );
                        if ui.button("Locate Blender…").clicked() {
                            self.send(NodeCommand::LocateBlender);
                        }
                    }
                }
                NodePhase::Stopped(err) => {
                    ui.label("The node stopped: it takes no more frames. Close the window or start herd again.");
                    if let Some(err) = err {
                        ui.colored_label(palette::ERROR, err);
                    }
                }
                NodePhase::Running(running) => {
                    update_preview(ui.ctx(), &running.node, &mut self.preview);
                    running_ui(ui, running, self.preview.as_ref());
                    if ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                        self.confirm_stop = true;
                    }
                    if self.confirm_stop {
                        confirm_stop_ui(ui, running, &mut self.confirm_stop);
                    }
                    ui.ctx().request_repaint_after(REFRESH);
                }
            }
        });
    }
}

impl eframe::App for NodeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        NodeApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.window_ui(ui);
    }

    fn on_exit(&mut self) {
        self.finish_writes();
    }
}

/// Escape asks before stopping: the machine's owner may have pressed it by
/// mistake, and stopping cancels the frame being rendered.
fn confirm_stop_ui(ui: &mut egui::Ui, running: &NodeRunning, asking: &mut bool) {
    ui.add_space(8.0);
    ui.colored_label(
        palette::ERROR,
        "Stop this node? It cancels the frame it renders and takes no more.",
    );
    ui.horizontal(|ui| {
        if ui.button("Stop the node").clicked() {
            running.node.shutdown.cancel();
            *asking = false;
        }
        if ui.button("Keep running").clicked() {
            *asking = false;
        }
    });
}

/// Takes the node's newest thumbnail onto the GPU when it changed (a copy
/// of at most 256×256 pixels, already decoded by the node).
fn update_preview(ctx: &egui::Context, node: &Node, shown: &mut Option<LastFrame>) {
    let Some((frame, pixels)) = node.last_preview() else {
        return;
    };
    if shown
        .as_ref()
        .is_some_and(|shown| Arc::ptr_eq(&shown.pixels, &pixels))
    {
        return;
    }
    let size = [pixels.width() as usize, pixels.height() as usize];
    let image = egui::ColorImage::from_rgb(size, pixels.as_raw());
    let texture = ctx.load_texture("node_last_frame", image, egui::TextureOptions::LINEAR);
    *shown = Some(LastFrame {
        frame,
        pixels,
        texture,
    });
}

fn running_ui(ui: &mut egui::Ui, running: &NodeRunning, preview: Option<&LastFrame>) {
    let node: &Node = &running.node;
    let info = node.info();
    egui::Grid::new("node_info")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            ui.label("Name");
            ui.strong(&info.name);
            ui.end_row();

            ui.label("Addresses");
            ui.vertical(|ui| {
                if running.addresses.is_empty() {
                    ui.label(format!("http://{}", running.http));
                }
                for address in &running.addresses {
                    ui.label(address);
                }
            });
            ui.end_row();

            ui.label("State");
            let text = match info.state {
                NodeState::Idle => "idle: waiting for frames",
                NodeState::Loading => "loading a scene",
                NodeState::Rendering => "rendering",
                NodeState::Paused => "paused: takes no new frames",
            };
            ui.colored_label(palette::node_state_color(info.state), text);
            ui.end_row();

            ui.label("Frame");
            match &info.current {
                Some(current) => {
                    ui.add(
                        egui::ProgressBar::new(current.progress)
                            .desired_width(240.0)
                            .text(format!(
                                "frame {}: {:.0}%",
                                current.frame,
                                current.progress * 100.0
                            )),
                    );
                }
                None => {
                    ui.weak("–");
                }
            }
            ui.end_row();

            ui.label("Frames rendered");
            ui.label(format!("{} ({} queued)", info.frames_rendered, info.queued));
            ui.end_row();

            ui.label("Blender");
            ui.label(format!(
                "{} at {}",
                info.blender_version,
                running.blender_path.display()
            ));
            ui.end_row();

            ui.label("Cores");
            ui.label(info.cores.to_string());
            ui.end_row();

            if let Some(preview) = preview {
                ui.label("Last frame");
                ui.vertical(|ui| {
                    ui.add(
                        egui::Image::from_texture(egui::load::SizedTexture::from_handle(
                            &preview.texture,
                        ))
                        .max_height(120.0),
                    );
                    ui.weak(format!("frame {}", preview.frame));
                });
                ui.end_row();
            }
        });
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        let paused = info.state == NodeState::Paused;
        if ui
            .add_enabled(!paused, egui::Button::new("Pause"))
            .clicked()
        {
            node.pause();
        }
        if ui
            .add_enabled(paused, egui::Button::new("Resume"))
            .clicked()
        {
            node.resume();
        }
        if ui
            .button("Stop")
            .on_hover_text("Cancel the current frame, end Blender and stop serving")
            .clicked()
        {
            node.shutdown.cancel();
        }
    });
}
