//! The node window: what this machine's node is doing, with Pause, Resume
//! and Stop. The node runs on the tokio runtime ([`super::node_launch`]);
//! the window reads [`Node::info`] each frame (a short lock, no I/O).

use std::time::Duration;

use tokio::sync::mpsc;

use super::node_launch::{NodeEvent, NodeRunning};
use super::palette;
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
    events: mpsc::Receiver<NodeEvent>,
    /// Where the node is.
    pub phase: NodePhase,
    /// Escape was pressed: ask whether to stop the node.
    pub confirm_stop: bool,
}

impl NodeApp {
    /// A window following the node that [`super::node_launch::launch`] runs.
    pub fn new(events: mpsc::Receiver<NodeEvent>) -> Self {
        Self {
            events,
            phase: NodePhase::Starting,
            confirm_stop: false,
        }
    }

    /// Takes in what the node's background sent since the last frame.
    pub fn drain_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.phase = match event {
                NodeEvent::Started(running) => NodePhase::Running(running),
                NodeEvent::Failed(err) => NodePhase::Failed(err),
                NodeEvent::Stopped(result) => NodePhase::Stopped(result.err()),
            };
        }
    }

    /// Draws the whole window.
    pub fn window_ui(&mut self, ui: &mut egui::Ui) {
        self.drain_events();
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading("herd node");
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
                }
                NodePhase::Stopped(err) => {
                    ui.label("The node stopped: it takes no more frames. Close the window or start herd again.");
                    if let Some(err) = err {
                        ui.colored_label(palette::ERROR, err);
                    }
                }
                NodePhase::Running(running) => {
                    running_ui(ui, running);
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
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.window_ui(ui);
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

fn running_ui(ui: &mut egui::Ui, running: &NodeRunning) {
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
