//! The desktop window (egui). It never awaits and never blocks: each window
//! drains its background's events once per frame and sends commands over
//! bounded channels; the background runs on the tokio runtime and asks for
//! a repaint after each event it sends.
//!
//! - [`controller`]: the controller window ([`ControllerApp`]): servers
//!   table, job panel, frame grid, progress and log.
//! - [`state`]: the job as the engine's events describe it (pure, tested).
//! - [`job_form`]: the job panel's fields and the [`JobSpec`] they make.
//! - [`bridge`]: the controller's background: inspection, file dialogs, the
//!   engine and the local node.
//! - [`node_window`], [`node_launch`]: the node window and the node it runs.
//! - [`shell`]: the window of `herd` ([`HerdApp`]): the first run's
//!   question, then the controller or the node window, switching between
//!   them, and the remembered mode.
//! - [`settings`]: the thread that writes the mode file and the autostart
//!   entry.
//! - [`thumbnails`]: previews of the latest finished frames.
//! - [`notify`]: desktop notifications (a job's end).
//! - [`palette`]: every status colour.
//!
//! [`JobSpec`]: crate::controller::engine::JobSpec

pub mod bridge;
pub mod controller;
pub mod job_form;
pub mod node_launch;
pub mod node_window;
pub mod notify;
pub mod palette;
pub mod settings;
pub mod shell;
pub mod state;
pub mod thumbnails;

pub use controller::ControllerApp;
pub use node_window::NodeApp;
pub use shell::HerdApp;
