//! Desktop notifications against a real notification service: a private
//! D-Bus session bus (`dbus-daemon --session`), dunst on it drawing on an
//! Xvfb display, and herd's notification sent to that bus. Needs the
//! Debian packages dbus-daemon, dunst and xvfb (CI installs them); without
//! them the test says it is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::display::{Killed, Xvfb, installed};

/// Set in the child process that sends the notification.
const HELPER_ENV: &str = "HERD_TEST_NOTIFY_HELPER";

/// `dunstctl count KIND` on `bus`.
fn dunst_count(bus: &str, kind: &str) -> Option<u32> {
    let output = Command::new("dunstctl")
        .args(["count", kind])
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Not a test on its own: the child process of
/// [`a_job_end_notification_reaches_a_real_notification_service`], run
/// with the private bus in its environment.
#[test]
fn notify_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    herd::ui::notify::show("herd: the job is done", "24 of 24 frames in /renders/shot").unwrap();
}

#[test]
fn a_job_end_notification_reaches_a_real_notification_service() {
    let missing: Vec<&str> = ["dbus-daemon", "dunst", "dunstctl", "Xvfb"]
        .into_iter()
        .filter(|program| !installed(program))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not installed (apt-get install dbus-daemon dunst xvfb)",
            missing.join(", ")
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xvfb = Xvfb::start();
    let display = xvfb.display.clone();
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--print-address", "--nofork"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let _bus = Killed(bus);
    let address = address.trim().to_string();
    assert!(address.starts_with("unix:"), "{address:?}");

    let config = dir.path().join("dunstrc");
    std::fs::write(&config, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut dunst: Option<Killed> = None;
    while dunst_count(&address, "displayed").is_none() {
        assert!(
            Instant::now() < deadline,
            "dunst did not come up on {address}"
        );
        // A dunst that exits early (the bus not ready yet): start it again.
        let running = dunst
            .as_mut()
            .is_some_and(|dunst| matches!(dunst.0.try_wait(), Ok(None)));
        if !running {
            let started = Command::new("dunst")
                .arg("-config")
                .arg(&config)
                .env("DISPLAY", &display)
                .env("DBUS_SESSION_BUS_ADDRESS", &address)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            dunst = Some(Killed(started));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dunst_count(&address, "displayed"), Some(0));

    let helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "notify_helper", "--nocapture"])
        .env(HELPER_ENV, "1")
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .output()
        .unwrap();
    assert!(helper.status.success(), "{helper:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while dunst_count(&address, "displayed") != Some(1) {
        assert!(Instant::now() < deadline, "dunst shows no notification");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What it shows is herd's: close it and read it from the history.
    let closed = Command::new("dunstctl")
        .arg("close")
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .status()
        .unwrap();
    assert!(closed.success());
    let history = Command::new("dunstctl")
        .arg("history")
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("herd: the job is done"), "{history}");
    assert!(
        history.contains("24 of 24 frames in /renders/shot"),
        "{history}"
    );
    drop(dunst);
}
