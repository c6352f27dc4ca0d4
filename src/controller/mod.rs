//! Controller mode: finds nodes on the LAN and drives a render job across
//! them.
//!
//! - [`scheduler`]: the pure scheduling core (no I/O).
//! - [`engine`]: the async driver around it, a library for CLI and window.
//! - [`remote`]: one task per node (upload, render, poll, download).
//! - [`discovery`]: probe, beacons, confirming nodes.
//! - [`output`], [`journal`]: the output folder and the resume log.
//! - [`watch`]: the servers on the LAN between jobs.
//! - [`frames`]: frame lists like `1-24,30,40-50x2`.
//! - [`deps`]: a scene's external files and their place on the nodes.
//! - [`inspect`]: reading a .blend (header version, scene settings).
//! - [`job_end`]: the user's command and the notification at a job's end.

pub mod bake;
pub mod client;
pub mod deps;
pub mod discovery;
pub mod engine;
pub mod frames;
pub mod inspect;
pub mod job_end;
pub mod journal;
pub mod movie;
pub mod output;
pub mod pool;
pub mod remote;
pub mod scheduler;
pub mod session;
pub mod step;
pub mod watch;
