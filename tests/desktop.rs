//! herd as a desktop app, through the real binary: `herd node --autostart`
//! writes and removes the login entry in a temporary XDG_CONFIG_HOME, the
//! command that entry runs starts a node (with its window, on Xvfb) that
//! renders a job with the real Blender, and a second node on the same port
//! raises the first one instead of starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::display::{Killed, Xvfb, installed};

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

/// Runs `command`, a second start of a node on a port where a herd node
/// already serves: it must say so, ask that node to show its window and
/// exit 0 at once, without starting another node.
fn assert_second_start_leaves_the_running_node(mut command: Command) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stdout}{stderr}");
    assert!(
        stdout.contains("already runs on this machine"),
        "{stdout}{stderr}"
    );
    assert!(!stderr.contains("did not show its window"), "{stderr}");
}

#[test]
fn a_second_node_start_asks_the_running_node_to_show_its_window_and_exits() {
    let mut first = common::NodeProcess::start(&[]);
    let port = first.url.rsplit(':').next().unwrap().to_string();
    let work_dir = tempfile::tempdir().unwrap();
    // A window start (no --headless): it must not get as far as a window.
    let mut second = herd();
    second
        .args(["node", "--port", &port, "--discovery-port", "0"])
        .arg("--work-dir")
        .arg(work_dir.path())
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    assert_second_start_leaves_the_running_node(second);
    // Headless too: a service started twice does not fight for the port.
    let mut headless = herd();
    headless
        .args([
            "node",
            "--headless",
            "--port",
            &port,
            "--discovery-port",
            "0",
        ])
        .arg("--work-dir")
        .arg(work_dir.path());
    assert_second_start_leaves_the_running_node(headless);
    // The first node serves on, untouched.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let info = runtime.block_on(first.info());
    assert_eq!(info["state"], "idle");
    first.terminate();
}

/// The arguments of a desktop entry's `Exec` key: the string value's
/// escapes undone, then split into arguments, double quotes grouping and
/// `\` escaping inside them (Desktop Entry Specification, "The Exec
/// key"; the entry herd writes has no field codes).
fn exec_args(entry: &str) -> Vec<String> {
    let value = entry
        .lines()
        .find_map(|line| line.strip_prefix("Exec="))
        .unwrap_or_else(|| panic!("no Exec line in {entry}"))
        .replace("\\\\", "\\");
    let mut args = Vec::new();
    let mut arg: Option<String> = None;
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                arg.get_or_insert_default();
            }
            '\\' if quoted => arg.get_or_insert_default().extend(chars.next()),
            '%' => {
                assert_eq!(chars.next(), Some('%'), "a field code in {value:?}");
                arg.get_or_insert_default().push('%');
            }
            ' ' if !quoted => args.extend(arg.take()),
            _ => arg.get_or_insert_default().push(c),
        }
    }
    args.extend(arg);
    args
}

#[test]
fn the_exec_line_is_read_back_as_the_arguments_written() {
    let entry = herd::autostart::Autostart::at(Path::new("/x"), Path::new("/opt/my $apps/herd"));
    assert_eq!(
        exec_args(&entry.entry()),
        ["/opt/my $apps/herd", "node", "--minimised"]
    );
}

/// A TCP port nothing listens on now.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a herd node answers on `url`, or panics when `node` exits
/// first or `limit` passes.
fn wait_for_node(node: &mut Killed, url: &str, limit: Duration) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            panic!("the login node exited before it served: {status}");
        }
        let info = runtime.block_on(async {
            let response = client.get(format!("{url}/api/v1/node")).send().await.ok()?;
            response.json::<serde_json::Value>().await.ok()
        });
        if let Some(info) = info {
            return info;
        }
        assert!(
            started.elapsed() < limit,
            "no node on {url} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_node_started_at_login_renders_a_job_and_a_second_start_leaves_it_alone() {
    // At login the node opens its window (minimised): it needs a display.
    if !installed("Xvfb") {
        eprintln!(
            "skipped: the node started at login opens a window and Xvfb is not installed \
             (apt-get install xvfb)"
        );
        return;
    }
    common::blender();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    let runtime_dir = home.path().join("runtime");
    std::fs::create_dir(&runtime_dir).unwrap();
    std::fs::set_permissions(
        &runtime_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();

    // The entry, as the "Start at login" setting writes it.
    let on = herd()
        .args(["node", "--autostart", "on"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert!(on.status.success(), "{on:?}");
    let entry =
        std::fs::read_to_string(config.join("autostart").join("herd-node.desktop")).unwrap();
    let exec = exec_args(&entry);
    // It names the herd that wrote it: this test's build.
    assert_eq!(exec[0], env!("CARGO_BIN_EXE_herd"), "{entry}");
    assert_eq!(exec[1..], ["node", "--minimised"], "{entry}");

    // What the desktop runs at login, with the test's ports, work dir and
    // a single render thread added, in a session of its own: a temporary
    // home and Xvfb's display.
    let xvfb = Xvfb::start();
    let port = free_tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    let beacons = UdpSocket::bind("127.0.0.1:0").unwrap();
    beacons
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let beacon_to = beacons.local_addr().unwrap().to_string();
    let work_dir = tempfile::tempdir().unwrap();
    let login_command = || {
        let mut command = Command::new(&exec[0]);
        command
            .args(&exec[1..])
            .args(["--port", &port.to_string(), "--discovery-port", "0"])
            .args(["--announce-to", &beacon_to, "--announce-interval", "1"])
            .args(["--name", "login-node", "--threads", "1"])
            .arg("--work-dir")
            .arg(work_dir.path())
            .env("HERD_LOOPBACK_ONLY", "1")
            .env("HERD_LOG", "herd=warn")
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", &config)
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("DISPLAY", &xvfb.display)
            .env_remove("WAYLAND_DISPLAY");
        command
    };
    let mut node = Killed(
        login_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let info = wait_for_node(&mut node, &url, Duration::from_secs(120));
    assert_eq!(info["name"], "login-node");
    // It is the window's node: the window remembered this machine's mode.
    let mode_file = config.join("herd").join("window");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&mode_file).ok().as_deref() != Some("node") {
        assert!(Instant::now() < deadline, "no mode file at {mode_file:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // It announces itself, so controllers on the LAN find it.
    let mut buffer = [0u8; 2048];
    let (length, _) = beacons.recv_from(&mut buffer).unwrap();
    let beacon: serde_json::Value = serde_json::from_slice(&buffer[..length]).unwrap();
    assert_eq!(beacon["kind"], "beacon");
    assert_eq!(beacon["uri"].as_str(), Some(url.as_str()));

    // The same command again (herd started again at a second login, say)
    // leaves the running node alone and asks its window to show.
    assert_second_start_leaves_the_running_node(login_command());

    // It renders a job.
    let out = tempfile::tempdir().unwrap();
    let controller_work = tempfile::tempdir().unwrap();
    let (ok, events) = common::render(
        out.path(),
        controller_work.path(),
        &[&url],
        &["--frames", "1-3", "--no-local"],
        |_| {},
    );
    assert!(ok, "{events:?}");
    let summary = common::finished(&events);
    assert_eq!(summary["outcome"], "complete", "{summary}");
    assert_eq!(summary["frames_done"], 3, "{summary}");
    let nodes = summary["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["name"], "login-node");
    assert_eq!(nodes[0]["frames"], 3);
    for frame in 1..=3 {
        let path = out.path().join(format!("demo_{frame:04}.png"));
        let image = image::open(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(image.width() > 0 && image.height() > 0);
    }

    // Logging out ends it (SIGTERM): the window closes and the node stops.
    let pid = node.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = common::wait_exit(&mut node.0, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
