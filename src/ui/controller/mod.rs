//! The controller window: drop a .blend, set up the job, watch the servers
//! and every frame. It reacts to [`BridgeEvent`]s and reads the job's
//! latest snapshot (both in [`ControllerApp::logic`], which eframe calls
//! even while the window is minimised, so a job never waits for the
//! window) and sends [`BridgeCommand`]s; what a job looks like lives in
//! [`ControllerState`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use egui::{Color32, Pos2, Rect, Sense, Vec2};
use egui_extras::{Column, TableBuilder};

use super::bridge::{BridgeCommand, BridgeEvent, BridgeLink, ImageSize};
use super::job_form::{FORMATS, JobForm, is_blend, scene_frames};
use super::palette;
use super::state::ControllerState;
use super::thumbnails::Thumbnails;
use crate::controller::engine::{
    EngineCommand, EngineEvent, JobProgress, NodeStatus, NodeView, Outcome,
};
use crate::controller::inspect::SceneInfo;
use crate::controller::output::OutputPlan;
use crate::controller::scheduler::{FrameIndex, FrameState};

mod frames;
mod job_panel;
mod servers;

pub use frames::{FrameViewer, GridLayout};

/// Events taken from the bridge in one frame; more wait for the next.
const EVENTS_PER_FRAME: usize = 20_000;

/// How a message to the user reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Something went wrong; the text says what to do.
    Error,
    /// Worth knowing.
    Info,
}

/// Job panels remembered, one per .blend, the newest last.
pub const REMEMBERED_FILES: usize = 50;

/// What the controller window remembers between runs (eframe's storage):
/// the job panel of every file rendered lately and the servers the user
/// added or left out.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Remembered {
    /// The job panel last started for each file, the newest last.
    pub forms: Vec<(PathBuf, JobForm)>,
    /// Servers added by address.
    pub servers: Vec<String>,
    /// Addresses of the servers left out of jobs.
    pub left_out: BTreeSet<String>,
    /// The shell command run when a job ends, with the job's summary as
    /// JSON on its stdin; empty for none.
    pub on_end: String,
}

impl Remembered {
    /// The key eframe's storage keeps it under.
    pub const KEY: &'static str = "herd_controller";

    /// The job panel last used for `file`.
    pub fn form(&self, file: &Path) -> Option<&JobForm> {
        self.forms
            .iter()
            .rev()
            .find(|(path, _)| path == file)
            .map(|(_, form)| form)
    }

    /// Remembers `form` as the one for `file`, forgetting the oldest files
    /// past [`REMEMBERED_FILES`].
    pub fn remember_form(&mut self, file: &Path, form: JobForm) {
        self.forms.retain(|(path, _)| path != file);
        self.forms.push((file.to_path_buf(), form));
        let excess = self.forms.len().saturating_sub(REMEMBERED_FILES);
        self.forms.drain(..excess);
    }
}

/// The controller window's state.
#[derive(Debug)]
pub struct ControllerApp {
    link: BridgeLink,
    /// The current or last job, as the engine told it.
    pub state: ControllerState,
    /// The file being read, with a spinner.
    pub inspecting: Option<PathBuf>,
    /// The file read last and the job panel's fields for it.
    pub scene: Option<(SceneInfo, JobForm)>,
    /// The message shown above everything, if any.
    pub message: Option<(MessageKind, String)>,
    /// Where the frame grid was drawn last.
    pub grid: Option<GridLayout>,
    /// Previews of the latest finished frames.
    pub thumbnails: Thumbnails,
    /// The frame shown on its own, if one was clicked.
    pub viewer: Option<FrameViewer>,
    /// The .blend and format of the job started from this window, to name
    /// its frame files.
    job_files: Option<OutputPlan>,
    /// Where the open scene's files cannot go as it says, said in its panel.
    output_notes: Vec<String>,
    /// A step around the job (baking before, encoding a movie after): what,
    /// frames done, of all.
    encoding: Option<(&'static str, usize, usize)>,
    /// Start the job as soon as the file being read is read.
    start_when_read: bool,
    /// The address typed into "Add a server".
    new_node: String,
    /// What is kept between runs.
    pub remembered: Remembered,
    /// The user chose to render although files the scene reads are missing.
    pub allow_missing: bool,
    /// The running (or last) job's snapshots.
    job_progress: Option<tokio::sync::watch::Receiver<JobProgress>>,
    /// Events taken from the background so far.
    pub events_taken: u64,
    /// The user asked to make this machine a render node instead ("Make
    /// this machine a render node"); the window that holds this one
    /// ([`super::shell::HerdApp`]) takes it.
    pub switch_to_node: bool,
    /// The window's focus as last told to the background.
    focus_told: Option<bool>,
}

impl ControllerApp {
    /// A window talking to the background through `link` (see
    /// [`super::bridge::spawn`], or [`super::bridge::channel`] in tests).
    pub fn new(link: BridgeLink) -> Self {
        Self {
            link,
            state: ControllerState::default(),
            inspecting: None,
            scene: None,
            message: None,
            grid: None,
            thumbnails: Thumbnails::default(),
            viewer: None,
            job_files: None,
            output_notes: Vec::new(),
            encoding: None,
            start_when_read: false,
            new_node: String::new(),
            remembered: Remembered::default(),
            allow_missing: false,
            job_progress: None,
            events_taken: 0,
            switch_to_node: false,
            focus_told: None,
        }
    }

    /// A window that starts with what an earlier run remembered: its
    /// servers are added and those left out stay out.
    pub fn with_remembered(link: BridgeLink, remembered: Remembered) -> Self {
        let mut app = Self::new(link);
        for uri in &remembered.servers {
            app.send(BridgeCommand::AddNode(uri.clone()));
        }
        if !remembered.left_out.is_empty() {
            app.send(BridgeCommand::LeaveOut(remembered.left_out.clone()));
        }
        app.remembered = remembered;
        app
    }

    /// Reads `path` in the background and starts its job with the file's
    /// own settings as soon as it is read (`herd controller FILE --start`).
    pub fn open_and_start(&mut self, path: PathBuf) {
        self.start_when_read = true;
        self.open(path);
    }

    /// Reads `path` in the background, as if it had been dropped.
    pub fn open(&mut self, path: PathBuf) {
        if !is_blend(&path) {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            self.message = Some((
                MessageKind::Error,
                format!("{name} is not a .blend file: drop a Blender scene (.blend) to render it"),
            ));
            return;
        }
        if self.job_running() {
            self.message = Some((
                MessageKind::Error,
                "a job is running: cancel it or wait for it to end before opening another file"
                    .into(),
            ));
            return;
        }
        self.message = None;
        self.inspect(path, None);
    }

    /// Reads `scene` of the .blend at `path` (its active scene when `None`).
    fn inspect(&mut self, path: PathBuf, scene: Option<String>) {
        self.inspecting = Some(path.clone());
        self.send(BridgeCommand::Inspect { path, scene });
    }

    /// Whether a job is under way.
    pub fn job_running(&self) -> bool {
        self.state.running
    }

    /// The job panel's fields, once a file was read.
    pub fn form(&self) -> Option<&JobForm> {
        self.scene.as_ref().map(|(_, form)| form)
    }

    /// Queues a command for the background; a full or closed channel is
    /// told to the user rather than waited on.
    fn send(&mut self, command: BridgeCommand) {
        if let Err(err) = self.link.commands.try_send(command) {
            self.message = Some((
                MessageKind::Error,
                format!("the background worker is not answering ({err}); restart herd"),
            ));
        }
    }

    /// Takes in what the background sent since the last frame, and the
    /// job's latest snapshot. eframe calls this (through `App::logic`)
    /// whenever the background asks for a repaint, even while the window
    /// is minimised, so the background never waits on the window.
    pub fn logic(&mut self, ctx: &egui::Context) {
        self.drain_events(ctx);
        // The background notifies the desktop at a job's end only while
        // the window is not the one the user looks at.
        let focused = ctx.input(|input| input.focused);
        if self.focus_told != Some(focused) {
            self.focus_told = Some(focused);
            self.send(BridgeCommand::WindowFocused(focused));
        }
    }

    /// Takes in what the background sent since the last frame.
    pub fn drain_events(&mut self, ctx: &egui::Context) {
        for taken in 0..=EVENTS_PER_FRAME {
            if taken == EVENTS_PER_FRAME {
                // More are waiting: take them next frame, without waiting for
                // the background's next repaint request.
                ctx.request_repaint();
                break;
            }
            match self.link.events.try_recv() {
                Ok(event) => {
                    self.events_taken += 1;
                    self.handle(ctx, event);
                }
                Err(_) => break,
            }
        }
        self.take_progress();
        self.request_thumbnails();
    }

    /// Reads the job's snapshot if it changed since the last look.
    fn take_progress(&mut self) {
        let Some(receiver) = &mut self.job_progress else {
            return;
        };
        match receiver.has_changed() {
            Ok(true) => {
                let snapshot = receiver.borrow_and_update().clone();
                self.state.apply_progress(&snapshot);
            }
            Ok(false) => {}
            // The job ended; its channel still holds its last snapshot.
            Err(_) => {
                let snapshot = receiver.borrow().clone();
                self.state.apply_progress(&snapshot);
                self.job_progress = None;
            }
        }
    }

    /// The file of `frame` in the job's output folder.
    fn frame_path(&self, frame: i32) -> Option<PathBuf> {
        Some(self.job_files.as_ref()?.frame_path(frame))
    }

    /// Asks the background for the previews of newly finished frames. A
    /// full channel skips them: previews are a nicety, not worth an error.
    fn request_thumbnails(&mut self) {
        for frame in self.thumbnails.take_wanted() {
            let Some(path) = self.frame_path(frame) else {
                return;
            };
            let _ = self.link.commands.try_send(BridgeCommand::Decode {
                frame,
                path,
                size: ImageSize::Preview,
            });
        }
    }

    /// Shows finished `frame` on its own, decoded in the background.
    pub fn view_frame(&mut self, frame: i32) {
        let Some(path) = self.frame_path(frame) else {
            return;
        };
        self.viewer = Some(FrameViewer {
            frame,
            path: path.clone(),
            image: None,
        });
        self.send(BridgeCommand::Decode {
            frame,
            path,
            size: ImageSize::Full,
        });
    }

    /// Takes in one event from the background.
    pub fn handle(&mut self, ctx: &egui::Context, event: BridgeEvent) {
        match event {
            BridgeEvent::Inspected { path, result } => {
                if self.inspecting.as_deref() != Some(path.as_path()) {
                    return;
                }
                self.inspecting = None;
                match result {
                    Ok(scene) => {
                        let mut form = self
                            .remembered
                            .form(&scene.file)
                            .cloned()
                            .unwrap_or_else(|| JobForm::from_scene(&scene));
                        if let Some(wanted) = form.scene.clone()
                            && wanted != scene.scene
                            && scene.scenes.contains(&wanted)
                        {
                            // The remembered panel was for another scene.
                            self.inspect(path, Some(wanted));
                            return;
                        }
                        if form
                            .scene
                            .as_ref()
                            .is_some_and(|wanted| *wanted != scene.scene)
                        {
                            form = JobForm::from_scene(&scene);
                        }
                        // Read once: the plan looks at the disk (mounts).
                        self.output_notes = OutputPlan::for_scene(&scene, None, None).notes;
                        self.scene = Some((*scene, form));
                        self.allow_missing = false;
                        if std::mem::take(&mut self.start_when_read) {
                            self.start_job();
                        }
                    }
                    Err(err) => self.message = Some((MessageKind::Error, err)),
                }
            }
            BridgeEvent::PickedBlend(path) => self.open(path),
            BridgeEvent::PickedOutputDir(path) => {
                if let Some((_, form)) = &mut self.scene {
                    form.output_dir = path.display().to_string();
                }
            }
            BridgeEvent::Engine(event) => {
                if let EngineEvent::Frame(view) = &event
                    && view.state == FrameState::Done
                {
                    self.thumbnails.want(view.frame);
                }
                self.state.apply(event);
            }
            BridgeEvent::JobProgress(receiver) => {
                self.job_progress = Some(receiver);
                self.take_progress();
            }
            BridgeEvent::Servers(rows) => {
                if !self.job_running() {
                    self.state.servers = rows;
                }
            }
            BridgeEvent::Decoded {
                frame,
                size: ImageSize::Preview,
                image,
            } => match image {
                Ok(image) => self.thumbnails.insert(ctx, frame, image),
                Err(err) => self
                    .state
                    .push_log(format!("no preview of frame {frame}: {err}")),
            },
            BridgeEvent::Decoded {
                frame,
                size: ImageSize::Full,
                image,
            } => {
                if let Some(viewer) = self.viewer.as_mut().filter(|v| v.frame == frame) {
                    viewer.image = Some(image.map(|image| {
                        ctx.load_texture("frame_full", image, egui::TextureOptions::LINEAR)
                    }));
                }
            }
            BridgeEvent::Encoding(done, total) => {
                self.encoding = Some(("encoding the movie", done, total));
            }
            BridgeEvent::Baking(done, total) => {
                self.encoding = Some(("baking the simulations", done, total));
            }
            BridgeEvent::JobEnded(result) => {
                self.encoding = None;
                self.state.end_job();
                if let Err(err) = result {
                    self.message =
                        Some((MessageKind::Error, format!("the job could not run: {err}")));
                }
            }
            BridgeEvent::Message(text) => {
                self.state.push_log(text.clone());
                self.message = Some((MessageKind::Error, text));
            }
        }
    }

    /// Starts the job the panel describes, or says what to fix.
    fn start_job(&mut self) {
        let Some((scene, form)) = &self.scene else {
            return;
        };
        let missing = scene.missing().len();
        if missing > 0 && !self.allow_missing {
            self.message = Some((
                MessageKind::Error,
                format!(
                    "{missing} file(s) the scene reads are missing (see the warnings): put them back, or tick \"Render without the missing files\""
                ),
            ));
            return;
        }
        match form.to_spec(scene) {
            Ok(spec) => {
                self.remembered.remember_form(&scene.file, form.clone());
                self.message = None;
                self.state.begin_job(&spec.frames);
                self.thumbnails.clear();
                self.job_files = Some(spec.output.clone());
                let bake = crate::controller::bake::needs_bake(scene) && !spec.in_order;
                let on_end = self.remembered.on_end.trim();
                self.send(BridgeCommand::Start {
                    spec: Box::new(spec),
                    bake,
                    on_end: (!on_end.is_empty()).then(|| on_end.to_string()),
                });
            }
            Err(err) => self.message = Some((MessageKind::Error, err)),
        }
    }

    /// Opens the first dropped file.
    fn take_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        if let Some(file) = dropped.first() {
            self.open(file.path().to_path_buf());
        }
    }

    /// Draws the whole window. It takes in the background's news first
    /// too: eframe calls [`Self::logic`] before, but a harness that only
    /// draws does not.
    pub fn window_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.logic(&ctx);
        self.take_dropped_files(&ctx);
        egui::Panel::top("herd_toolbar").show(ui, |ui| self.toolbar_ui(ui));
        egui::Panel::bottom("herd_log").show(ui, |ui| self.log_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    self.message_ui(ui);
                    self.job_ui(ui);
                    ui.add_space(6.0);
                    self.servers_ui(ui);
                    ui.add_space(6.0);
                    self.frames_ui(ui);
                });
        });
        self.viewer_ui(&ctx);
        drop_veil_ui(&ctx);
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.strong("herd");
            let open = ui.add_enabled(!self.job_running(), egui::Button::new("Open…"));
            if open.clicked() {
                self.send(BridgeCommand::PickBlend);
            }
            ui.weak("or drop a .blend anywhere in this window");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                // Not during a job: switching ends this window's background.
                let switch = ui
                    .add_enabled(
                        !self.job_running(),
                        egui::Button::new("Render for the farm…"),
                    )
                    .on_hover_text("Make this machine a render node instead")
                    .on_disabled_hover_text("Not while a job runs");
                if switch.clicked() {
                    self.switch_to_node = true;
                }
                let count = self
                    .state
                    .table_rows()
                    .iter()
                    .filter(|row| row.status != NodeStatus::Lost)
                    .count();
                ui.label(match count {
                    1 => "1 server".to_string(),
                    _ => format!("{count} servers"),
                });
            });
        });
    }

    fn message_ui(&mut self, ui: &mut egui::Ui) {
        let Some((kind, text)) = &self.message else {
            return;
        };
        let color = match kind {
            MessageKind::Error => palette::ERROR,
            MessageKind::Info => ui.visuals().text_color(),
        };
        let mut dismiss = false;
        ui.horizontal(|ui| {
            ui.colored_label(color, text);
            if ui.small_button("Dismiss").clicked() {
                dismiss = true;
            }
        });
        if dismiss {
            self.message = None;
        }
        ui.add_space(4.0);
    }

    /// The file being read, the job panel, or the running job's progress.
    fn job_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(path) = &self.inspecting {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("Reading {} with Blender…", display_name(path)));
            });
            return;
        }
        if self.job_running() || self.state.summary.is_some() {
            self.progress_ui(ui);
        }
        if !self.job_running() && self.scene.is_some() {
            self.job_panel_ui(ui);
        }
        if self.scene.is_none() && self.state.frames.is_empty() {
            ui.label("No job yet: drop a .blend anywhere in this window, or press Open….");
        }
    }

    fn log_ui(&mut self, ui: &mut egui::Ui) {
        egui::CollapsingHeader::new(format!("Log ({})", self.state.log.len()))
            .id_salt("log")
            .default_open(false)
            .show(ui, |ui| {
                let row_height = ui.text_style_height(&egui::TextStyle::Body);
                egui::ScrollArea::vertical()
                    .max_height(160.0)
                    .auto_shrink([false, true])
                    .stick_to_bottom(true)
                    .show_rows(ui, row_height, self.state.log.len(), |ui, range| {
                        for line in self.state.log.range(range) {
                            ui.label(line);
                        }
                    });
            });
    }
}

impl eframe::App for ControllerApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        ControllerApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.window_ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, Remembered::KEY, &self.remembered);
    }
}

/// Veils the window while a file is dragged over it.
fn drop_veil_ui(ctx: &egui::Context) {
    let hovered = ctx.input(|i| i.raw.hovered_files.clone());
    if hovered.is_empty() {
        return;
    }
    let text = match hovered.first().and_then(|file| file.path.as_deref()) {
        Some(path) if !is_blend(path) => format!("{} is not a .blend file", display_name(path)),
        _ => "Drop the .blend to render it".to_string(),
    };
    let painter = ctx.layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop_veil"),
    ));
    let screen = ctx.content_rect();
    painter.rect_filled(screen, 0.0, palette::DROP_VEIL);
    painter.rect_stroke(
        screen.shrink(4.0),
        6.0,
        egui::Stroke::new(3.0, palette::DROP_OUTLINE),
        egui::StrokeKind::Inside,
    );
    painter.text(
        screen.center(),
        egui::Align2::CENTER_CENTER,
        text,
        egui::FontId::proportional(24.0),
        Color32::WHITE,
    );
}

/// A file's name, or its whole path when it has none.
fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Seconds as h:mm:ss.
pub fn clock(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_cells_and_points_agree() {
        let layout = GridLayout {
            origin: Pos2::new(10.0, 20.0),
            columns: 5,
        };
        for index in [0, 4, 5, 12] {
            let center = layout.cell(index).center();
            assert_eq!(layout.index_at(center), Some(index));
        }
        assert_eq!(layout.index_at(Pos2::new(5.0, 25.0)), None);
        assert_eq!(
            layout.index_at(Pos2::new(10.0 + 5.0 * 16.0 + 1.0, 25.0)),
            None
        );
    }

    #[test]
    fn a_file_read_again_gets_the_panel_it_was_started_with() {
        let ctx = egui::Context::default();
        let scene = crate::ui::job_form::tests::scene();
        let mut remembered = Remembered {
            servers: vec!["http://10.0.0.5:8082".into()],
            left_out: BTreeSet::from(["http://10.0.0.6:8082".to_string()]),
            ..Remembered::default()
        };
        let mut form = JobForm::from_scene(&scene);
        form.frames = "3-7".into();
        form.format = Some(crate::wire::ImageFormat::Jpeg);
        remembered.remember_form(&scene.file, form.clone());
        // Through storage and back, as eframe keeps it.
        let text = serde_json::to_string(&remembered).unwrap();
        let remembered: Remembered = serde_json::from_str(&text).unwrap();

        let (link, mut end) = super::super::bridge::channel();
        let mut app = ControllerApp::with_remembered(link, remembered);
        match end.commands.try_recv() {
            Ok(BridgeCommand::AddNode(uri)) => assert_eq!(uri, "http://10.0.0.5:8082"),
            other => panic!("expected AddNode, got {other:?}"),
        }
        match end.commands.try_recv() {
            Ok(BridgeCommand::LeaveOut(set)) => assert!(set.contains("http://10.0.0.6:8082")),
            other => panic!("expected LeaveOut, got {other:?}"),
        }
        app.open(scene.file.clone());
        app.handle(
            &ctx,
            BridgeEvent::Inspected {
                path: scene.file.clone(),
                result: Ok(Box::new(scene.clone())),
            },
        );
        assert_eq!(app.form(), Some(&form));

        // Another file gets its own scene's values.
        let mut other = scene.clone();
        other.file = "/work/shots/other.blend".into();
        app.open(other.file.clone());
        app.handle(
            &ctx,
            BridgeEvent::Inspected {
                path: other.file.clone(),
                result: Ok(Box::new(other.clone())),
            },
        );
        assert_eq!(app.form(), Some(&JobForm::from_scene(&other)));
    }

    #[test]
    fn only_the_latest_files_are_remembered() {
        let form = JobForm::from_scene(&crate::ui::job_form::tests::scene());
        let mut remembered = Remembered::default();
        for n in 0..REMEMBERED_FILES + 5 {
            remembered.remember_form(Path::new(&format!("/shots/{n}.blend")), form.clone());
        }
        remembered.remember_form(Path::new("/shots/10.blend"), form.clone());
        assert_eq!(remembered.forms.len(), REMEMBERED_FILES);
        assert!(remembered.form(Path::new("/shots/0.blend")).is_none());
        assert_eq!(
            remembered.forms.last().unwrap().0,
            Path::new("/shots/10.blend")
        );
    }

    #[test]
    fn clock_reads_hours_minutes_seconds() {
        assert_eq!(clock(3725.4), "1:02:05");
        assert_eq!(clock(-3.0), "0:00:00");
    }
}
