//! The window commands in a build without the `gui` feature: `herd`,
//! `herd controller` and `herd node` without `--headless` say there is no
//! window and what to use instead.

use anyhow::{Result, anyhow};

use super::ControllerArgs;
use super::node::NodeArgs;

/// `herd` alone: there is no window to open.
pub fn run_last(_runtime: &tokio::runtime::Runtime) -> Result<()> {
    Err(no_window(
        "herd",
        "use `herd render FILE.blend` to render or `herd node --headless` to run a node",
    ))
}

/// `herd FILE.blend`: there is no window to open.
pub fn open_file(_runtime: &tokio::runtime::Runtime, _file: std::path::PathBuf) -> Result<()> {
    Err(no_window(
        "herd FILE.blend",
        "use `herd render FILE.blend` instead",
    ))
}

/// `herd controller`: there is no window to open.
pub fn run_controller(_runtime: &tokio::runtime::Runtime, _args: ControllerArgs) -> Result<()> {
    Err(no_window(
        "herd controller",
        "use `herd render FILE.blend` instead",
    ))
}

/// `herd node` without `--headless`: there is no window to open.
pub fn run_node(_runtime: &tokio::runtime::Runtime, _args: NodeArgs) -> Result<()> {
    Err(no_window("herd node", "use `herd node --headless`"))
}

/// The error of a window command in this build.
fn no_window(command: &str, instead: &str) -> anyhow::Error {
    anyhow!(
        "`{command}` opens a window, and this build of herd has none (built without the \
         `gui` feature): {instead}, or build herd with the `gui` feature \
         (`cargo install --path . --features gui`)"
    )
}
