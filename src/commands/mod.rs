//! The subcommands, one module each.

pub mod inspect;
pub mod node;
pub mod nodes;
pub mod render;
pub mod window;
