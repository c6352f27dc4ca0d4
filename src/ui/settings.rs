//! The window's own small files, the remembered mode ([`ModeFile`]) and
//! the autostart entry ([`Autostart`]), written on a thread of their own
//! (`herd-settings`) so the window never waits on the disk: the window
//! sends a [`SettingsCommand`] and takes the [`SettingsEvent`] that answers
//! it on a later frame (the thread asks for a repaint after each). One
//! thread writes them in the order asked, so the last click wins.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use super::shell::{Mode, ModeFile};
use crate::autostart::Autostart;

/// How many writes may wait for the thread; clicks come far slower than
/// these files are written, so a full queue means the disk is stuck.
const QUEUE_LEN: usize = 16;

/// A file to write.
#[derive(Debug)]
pub enum SettingsCommand {
    /// Remember `mode` in `file`.
    SaveMode {
        /// The mode file.
        file: ModeFile,
        /// What this machine is for.
        mode: Mode,
    },
    /// Write (`enabled`) or remove the autostart entry.
    SetAutostart {
        /// The entry.
        entry: Autostart,
        /// Whether the node should start at login.
        enabled: bool,
    },
}

/// How a [`SettingsCommand`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsEvent {
    /// The mode was remembered, or why not.
    ModeSaved(Result<(), String>),
    /// The autostart entry was changed, or why not.
    AutostartSet {
        /// Whether the node starts at login now (read back from the disk
        /// when the change failed).
        enabled: bool,
        /// Why the change failed.
        error: Option<String>,
    },
}

impl SettingsCommand {
    /// Writes the file (on the settings thread).
    fn run(self) -> SettingsEvent {
        match self {
            Self::SaveMode { file, mode } => {
                SettingsEvent::ModeSaved(file.save(mode).map_err(|err| err.to_string()))
            }
            Self::SetAutostart { entry, enabled } => match entry.set(enabled) {
                Ok(()) => SettingsEvent::AutostartSet {
                    enabled,
                    error: None,
                },
                Err(err) => SettingsEvent::AutostartSet {
                    enabled: entry.enabled(),
                    error: Some(err.to_string()),
                },
            },
        }
    }

    /// The answer when the command could not even reach the thread: the
    /// file is as it was.
    fn refused(self, why: &str) -> SettingsEvent {
        match self {
            Self::SaveMode { .. } => {
                SettingsEvent::ModeSaved(Err(format!("cannot remember this machine's mode: {why}")))
            }
            Self::SetAutostart { entry, enabled } => SettingsEvent::AutostartSet {
                enabled: !enabled,
                error: Some(format!(
                    "cannot change the autostart entry {}: {why}",
                    entry.file.display()
                )),
            },
        }
    }
}

/// The window's end of the settings thread, started on the first write.
#[derive(Debug, Default)]
pub struct SettingsWriter {
    worker: Option<Worker>,
    /// Answers from the thread.
    events: Option<mpsc::Receiver<SettingsEvent>>,
    /// Answers not taken yet that are not in `events`: to commands that
    /// never reached the thread, and those of a finished thread.
    waiting: VecDeque<SettingsEvent>,
    /// The window to repaint after each answer, once known.
    repaint: Arc<OnceLock<egui::Context>>,
    /// Commands sent whose answers have not been taken yet.
    pending: usize,
}

#[derive(Debug)]
struct Worker {
    commands: mpsc::SyncSender<SettingsCommand>,
    thread: JoinHandle<()>,
}

impl SettingsWriter {
    /// Asks for `command`; its answer comes from [`Self::poll`].
    pub fn send(&mut self, command: SettingsCommand) {
        self.pending += 1;
        if self.pending > QUEUE_LEN {
            let refused = command.refused("earlier changes are still being written");
            self.waiting.push_back(refused);
            return;
        }
        let commands = match &self.worker {
            Some(worker) => worker.commands.clone(),
            None => match self.start() {
                Ok(commands) => commands,
                Err(err) => {
                    let why = format!("cannot start the thread that writes it: {err}");
                    self.waiting.push_back(command.refused(&why));
                    return;
                }
            },
        };
        // Never full (at most QUEUE_LEN pending) and never closed while the
        // worker is kept, but answered all the same.
        if let Err(err) = commands.try_send(command) {
            let command = match err {
                mpsc::TrySendError::Full(command) | mpsc::TrySendError::Disconnected(command) => {
                    command
                }
            };
            self.waiting
                .push_back(command.refused("the thread that writes it has stopped"));
        }
    }

    /// Starts the thread.
    fn start(&mut self) -> std::io::Result<mpsc::SyncSender<SettingsCommand>> {
        let (commands, commands_rx) = mpsc::sync_channel::<SettingsCommand>(QUEUE_LEN);
        // At most QUEUE_LEN answers are ever waiting, so the thread never
        // blocks on a window that does not drain them.
        let (events_tx, events) = mpsc::sync_channel(QUEUE_LEN);
        let repaint = Arc::clone(&self.repaint);
        let thread = std::thread::Builder::new()
            .name("herd-settings".into())
            .spawn(move || {
                for command in commands_rx {
                    // A window switched away no longer listens; the files
                    // asked for are written all the same.
                    let _ = events_tx.send(command.run());
                    if let Some(ctx) = repaint.get() {
                        ctx.request_repaint();
                    }
                }
            })?;
        self.worker = Some(Worker {
            commands: commands.clone(),
            thread,
        });
        self.events = Some(events);
        Ok(commands)
    }

    /// The answers that came since the last call, oldest first; `ctx` is
    /// the window the thread repaints from now on.
    pub fn poll(&mut self, ctx: &egui::Context) -> Vec<SettingsEvent> {
        let _ = self.repaint.set(ctx.clone());
        let mut answers: Vec<SettingsEvent> = self.waiting.drain(..).collect();
        if let Some(events) = &self.events {
            answers.extend(events.try_iter());
        }
        self.pending = self.pending.saturating_sub(answers.len());
        answers
    }

    /// Whether some command has not been answered yet.
    pub fn busy(&self) -> bool {
        self.pending > 0
    }

    /// Waits for the writes asked for so far and ends the thread (when the
    /// window closes; a window dropped without it leaves the thread to
    /// finish them on its own).
    pub fn finish(&mut self) {
        if let Some(Worker { commands, thread }) = self.worker.take() {
            drop(commands);
            if thread.join().is_err() {
                tracing::warn!("the thread that writes herd's settings panicked");
            }
        }
        if let Some(events) = self.events.take() {
            self.waiting.extend(events.try_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// Polls until every command is answered.
    fn answers(writer: &mut SettingsWriter) -> Vec<SettingsEvent> {
        let ctx = egui::Context::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while writer.busy() {
            assert!(Instant::now() < deadline, "no answer from the thread");
            all.extend(writer.poll(&ctx));
            std::thread::sleep(Duration::from_millis(5));
        }
        all
    }

    #[test]
    fn writes_happen_in_the_order_asked_and_each_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let file = ModeFile::at(&dir.path().join("herd").join("window"));
        let entry = Autostart::at(&dir.path().join("autostart"), Path::new("/usr/bin/herd"));
        let mut writer = SettingsWriter::default();
        for mode in [Mode::Node, Mode::Controller, Mode::Node] {
            writer.send(SettingsCommand::SaveMode {
                file: file.clone(),
                mode,
            });
        }
        for enabled in [true, false, true] {
            writer.send(SettingsCommand::SetAutostart {
                entry: entry.clone(),
                enabled,
            });
        }
        let answers = answers(&mut writer);
        assert_eq!(answers.len(), 6);
        assert!(
            answers[..3]
                .iter()
                .all(|a| *a == SettingsEvent::ModeSaved(Ok(())))
        );
        assert_eq!(
            answers[5],
            SettingsEvent::AutostartSet {
                enabled: true,
                error: None
            }
        );
        assert_eq!(file.load(), Some(Mode::Node));
        assert!(entry.enabled());
        writer.finish();
    }

    #[test]
    fn a_failed_write_says_why_and_what_the_disk_holds() {
        let dir = tempfile::tempdir().unwrap();
        // The autostart folder is a file: the entry cannot be written.
        std::fs::write(dir.path().join("autostart"), "").unwrap();
        let entry = Autostart::at(&dir.path().join("autostart"), Path::new("/usr/bin/herd"));
        let mut writer = SettingsWriter::default();
        writer.send(SettingsCommand::SetAutostart {
            entry,
            enabled: true,
        });
        let answers = answers(&mut writer);
        let [SettingsEvent::AutostartSet { enabled, error }] = answers.as_slice() else {
            panic!("{answers:?}");
        };
        assert!(!enabled);
        assert!(
            error
                .as_deref()
                .is_some_and(|error| error.contains("autostart")),
            "{error:?}"
        );
    }

    #[test]
    fn finish_waits_for_the_writes_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let file = ModeFile::at(&dir.path().join("window"));
        let mut writer = SettingsWriter::default();
        writer.send(SettingsCommand::SaveMode {
            file: file.clone(),
            mode: Mode::Controller,
        });
        writer.finish();
        assert_eq!(file.load(), Some(Mode::Controller));
        // Its answer is still there to take.
        let answers = writer.poll(&egui::Context::default());
        assert_eq!(answers, [SettingsEvent::ModeSaved(Ok(()))]);
        assert!(!writer.busy());
    }
}
