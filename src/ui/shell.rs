//! The one window `herd` opens. The first time on a machine it asks what
//! the machine is for ("Render for the farm" or "Send renders"); after that
//! it shows the node or the controller window, and each has a button that
//! switches to the other. The choice is remembered in a small file in the
//! user's config dir ([`ModeFile`]), which `herd` alone follows.
//!
//! Starting a mode's background (the node, or the controller's bridge) is
//! the [`Launcher`]'s job, so the window itself never awaits and tests give
//! it windows fed by their own channels. The mode file is written on the
//! settings thread ([`super::settings`]), so the window never waits on the
//! disk either.

use std::path::{Path, PathBuf};

use super::controller::Remembered;
use super::settings::{SettingsCommand, SettingsEvent, SettingsWriter};
use super::{ControllerApp, NodeApp};

/// What this machine is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send renders (and render some here): the controller window.
    Controller,
    /// Render for the farm: the node window.
    Node,
}

impl Mode {
    /// The word the mode file holds.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Node => "node",
        }
    }

    /// The mode a mode file's text names, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "controller" => Some(Self::Controller),
            "node" => Some(Self::Node),
            _ => None,
        }
    }

    /// The window's title in this mode.
    pub fn title(self) -> &'static str {
        match self {
            Self::Controller => "herd",
            Self::Node => "herd node",
        }
    }
}

/// Why the mode could not be remembered.
#[derive(Debug, thiserror::Error)]
pub enum ModeFileError {
    /// The user has no config dir (no home).
    #[error("there is no config dir to remember this machine's mode in (is HOME set?)")]
    NoConfigDir,
    /// Writing the file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The mode file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The file that remembers what this machine is for.
#[derive(Debug, Clone)]
pub struct ModeFile {
    path: Option<PathBuf>,
}

impl ModeFile {
    /// The user's: `window` in herd's config dir (`~/.config/herd/window`
    /// on Linux).
    pub fn user() -> Self {
        Self {
            path: directories::ProjectDirs::from("", "", "herd")
                .map(|dirs| dirs.config_dir().join("window")),
        }
    }

    /// The mode file at `path` (tests).
    pub fn at(path: &Path) -> Self {
        Self {
            path: Some(path.to_path_buf()),
        }
    }

    /// The remembered mode; `None` on a machine where none was chosen.
    pub fn load(&self) -> Option<Mode> {
        let text = std::fs::read_to_string(self.path.as_ref()?).ok()?;
        Mode::parse(&text)
    }

    /// Remembers `mode`.
    pub fn save(&self, mode: Mode) -> Result<(), ModeFileError> {
        let path = self.path.as_ref().ok_or(ModeFileError::NoConfigDir)?;
        let write = || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, mode.as_str())
        };
        write().map_err(|source| ModeFileError::Write {
            path: path.clone(),
            source,
        })
    }
}

/// Starts a mode's background and returns its window. Starting one mode
/// ends the other's background.
pub trait Launcher {
    /// Starts the controller's background (with what the last controller
    /// window remembered) and returns its window.
    fn controller(&mut self, remembered: Remembered) -> ControllerApp;
    /// Starts this machine's node and returns its window.
    fn node(&mut self) -> NodeApp;
}

/// What the window shows.
#[derive(Debug)]
pub enum Screen {
    /// The first run: what is this machine for?
    Choose,
    /// The controller window.
    Controller(Box<ControllerApp>),
    /// The node window.
    Node(Box<NodeApp>),
}

/// The window of `herd`: the choice, the controller or the node.
pub struct HerdApp {
    /// What it shows.
    pub screen: Screen,
    launcher: Box<dyn Launcher>,
    modes: ModeFile,
    /// Writes the mode file.
    settings: SettingsWriter,
    /// What the controller window keeps between runs, carried over when
    /// the window switches away from it and back.
    remembered: Remembered,
    /// Remembering the mode failed: said on the next screen.
    pub warning: Option<String>,
}

impl std::fmt::Debug for HerdApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HerdApp")
            .field("screen", &self.screen)
            .field("modes", &self.modes)
            .finish_non_exhaustive()
    }
}

impl HerdApp {
    /// A window that starts in `mode`, or asks when `None` (the first run
    /// on this machine). A mode given here is remembered too.
    pub fn new(
        launcher: Box<dyn Launcher>,
        modes: ModeFile,
        remembered: Remembered,
        mode: Option<Mode>,
    ) -> Self {
        let mut app = Self {
            screen: Screen::Choose,
            launcher,
            modes,
            settings: SettingsWriter::default(),
            remembered,
            warning: None,
        };
        if let Some(mode) = mode {
            app.start(mode);
        }
        app
    }

    /// The controller window, when that is what it shows.
    pub fn controller(&mut self) -> Option<&mut ControllerApp> {
        match &mut self.screen {
            Screen::Controller(app) => Some(app),
            _ => None,
        }
    }

    /// The mode shown, `None` while asking.
    pub fn mode(&self) -> Option<Mode> {
        match self.screen {
            Screen::Choose => None,
            Screen::Controller(_) => Some(Mode::Controller),
            Screen::Node(_) => Some(Mode::Node),
        }
    }

    /// Shows `mode`'s window, starting its background and ending the other
    /// one's, and remembers it (on the settings thread; a failure comes
    /// back as [`Self::warning`]).
    pub fn start(&mut self, mode: Mode) {
        if let Screen::Controller(app) = &self.screen {
            self.remembered = app.remembered.clone();
        }
        self.screen = match mode {
            Mode::Controller => {
                Screen::Controller(Box::new(self.launcher.controller(self.remembered.clone())))
            }
            Mode::Node => Screen::Node(Box::new(self.launcher.node())),
        };
        self.settings.send(SettingsCommand::SaveMode {
            file: self.modes.clone(),
            mode,
        });
    }

    /// Whether a mode file write has not been answered yet.
    pub fn writing_settings(&self) -> bool {
        self.settings.busy()
    }

    /// Waits for the files asked for so far, this window's and the node
    /// window's (when the window closes).
    pub fn finish_writes(&mut self) {
        self.settings.finish();
        if let Screen::Node(app) = &mut self.screen {
            app.finish_writes();
        }
    }

    /// Takes in how remembering the mode went.
    fn take_settings_events(&mut self, ctx: &egui::Context) {
        for event in self.settings.poll(ctx) {
            if let SettingsEvent::ModeSaved(saved) = event {
                self.warning = saved
                    .err()
                    .map(|err| format!("herd will ask again next time: {err}"));
                if let Some(warning) = &self.warning {
                    tracing::warn!("{warning}");
                }
            }
        }
    }

    /// Takes in the background's events; eframe calls it even while the
    /// window is minimised.
    pub fn logic(&mut self, ctx: &egui::Context) {
        self.take_settings_events(ctx);
        match &mut self.screen {
            Screen::Choose => {}
            Screen::Controller(app) => app.logic(ctx),
            Screen::Node(app) => app.logic(ctx),
        }
    }

    /// Draws the whole window, and switches mode when asked.
    pub fn window_ui(&mut self, ui: &mut egui::Ui) {
        self.take_settings_events(&ui.ctx().clone());
        if let Some(warning) = &self.warning {
            egui::Panel::bottom("herd_mode_warning")
                .show(ui, |ui| ui.colored_label(super::palette::ERROR, warning));
        }
        let switch = match &mut self.screen {
            Screen::Choose => choose_ui(ui),
            Screen::Controller(app) => {
                app.window_ui(ui);
                std::mem::take(&mut app.switch_to_node).then_some(Mode::Node)
            }
            Screen::Node(app) => {
                app.window_ui(ui);
                std::mem::take(&mut app.switch_to_controller).then_some(Mode::Controller)
            }
        };
        if let Some(mode) = switch {
            self.start(mode);
            ui.ctx()
                .send_viewport_cmd(egui::ViewportCommand::Title(mode.title().into()));
            ui.ctx().request_repaint();
        }
    }
}

/// The first run's question; the answer, once clicked.
fn choose_ui(ui: &mut egui::Ui) -> Option<Mode> {
    let mut chosen = None;
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            ui.heading("What is this machine for?");
            ui.add_space(6.0);
            ui.label("You can change it later from either window.");
            ui.add_space(18.0);
            let big = egui::vec2(260.0, 44.0);
            if ui
                .add(egui::Button::new("Render for the farm").min_size(big))
                .clicked()
            {
                chosen = Some(Mode::Node);
            }
            ui.weak("Other machines send frames here; this one renders them.");
            ui.add_space(14.0);
            if ui
                .add(egui::Button::new("Send renders").min_size(big))
                .clicked()
            {
                chosen = Some(Mode::Controller);
            }
            ui.weak("Drop a .blend here and render it on the farm (this machine renders too).");
        });
    });
    chosen
}

impl eframe::App for HerdApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        HerdApp::logic(self, ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.window_ui(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let Screen::Controller(app) = &self.screen {
            self.remembered = app.remembered.clone();
        }
        eframe::set_value(storage, Remembered::KEY, &self.remembered);
    }

    fn on_exit(&mut self) {
        self.finish_writes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_file_is_empty_at_first_and_keeps_the_last_choice() {
        let dir = tempfile::tempdir().unwrap();
        let modes = ModeFile::at(&dir.path().join("herd").join("window"));
        assert_eq!(modes.load(), None);
        modes.save(Mode::Node).unwrap();
        assert_eq!(modes.load(), Some(Mode::Node));
        modes.save(Mode::Controller).unwrap();
        assert_eq!(modes.load(), Some(Mode::Controller));
        std::fs::write(dir.path().join("herd").join("window"), "garbage").unwrap();
        assert_eq!(modes.load(), None);
    }
}
