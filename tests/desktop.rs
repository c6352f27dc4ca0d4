//! herd as a desktop app, through the real binary: `herd node --autostart`
//! writes and removes the login entry in a temporary XDG_CONFIG_HOME, and a
//! second node on the same port raises the first one instead of starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn herd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.env("HERD_LOOPBACK_ONLY", "1");
    command
}

#[test]
fn autostart_on_writes_the_login_entry_and_off_removes_it() {
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("autostart").join("herd-node.desktop");

    let on = herd()
        .args(["node", "--autostart", "on"])
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    assert!(on.status.success(), "{on:?}");
    assert!(String::from_utf8_lossy(&on.stdout).contains("will start at login"));
    let entry = std::fs::read_to_string(&file).unwrap();
    let exec = format!("\nExec={} node --minimised\n", env!("CARGO_BIN_EXE_herd"));
    assert!(entry.contains(&exec), "{entry}");

    let off = herd()
        .args(["node", "--autostart", "off"])
        .env("XDG_CONFIG_HOME", config.path())
        .output()
        .unwrap();
    assert!(off.status.success(), "{off:?}");
    assert!(!file.exists());
}

#[test]
fn a_second_node_start_asks_the_running_node_to_show_its_window_and_exits() {
    let mut first = common::NodeProcess::start(&[]);
    let port = first.url.rsplit(':').next().unwrap().to_string();
    let work_dir = tempfile::tempdir().unwrap();
    // A window start (no --headless): it must not get as far as a window.
    let second = herd()
        .args(["node", "--port", &port, "--discovery-port", "0"])
        .arg("--work-dir")
        .arg(work_dir.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second:?}");
    assert!(stdout.contains("already runs on this machine"), "{stdout}");
    // Headless too: a service started twice does not fight for the port.
    let headless = herd()
        .args([
            "node",
            "--headless",
            "--port",
            &port,
            "--discovery-port",
            "0",
        ])
        .arg("--work-dir")
        .arg(work_dir.path())
        .output()
        .unwrap();
    assert!(headless.status.success(), "{headless:?}");
    assert!(String::from_utf8_lossy(&headless.stdout).contains("already runs on this machine"));
    // The first node serves on, untouched.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let info = runtime.block_on(first.info());
    assert_eq!(info["state"], "idle");
    first.terminate();
}
