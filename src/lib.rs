//! herd: a render farm for Blender on a local network.
//!
//! - [`wire`]: datagrams and API bodies shared by node and controller.
//! - [`lan`]: interfaces, subnets, who may connect, the loopback-only switch.
//! - [`blender`]: Blender kept loaded in a child process.
//! - [`node`]: the render node (HTTP API, renderer, beacon).
//! - [`controller`]: finding nodes on the LAN.
//! - [`autostart`]: starting the node at login (XDG autostart).
//! - `ui` (feature `gui`, on by default): the desktop window (egui) for
//!   controller and node.

pub mod autostart;
pub mod blender;
pub mod controller;
pub mod lan;
pub mod node;
#[cfg(feature = "gui")]
pub mod ui;
pub mod wire;
