//! The subcommands, one module each.

pub mod node;
pub mod nodes;
