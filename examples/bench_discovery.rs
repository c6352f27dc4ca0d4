//! Benchmark (not a test) of discovery and loss detection, on loopback:
//! a `herd render` controller waits for nodes (HERD_LOOPBACK_ONLY=1, nodes
//! announce with `--announce-to` its discovery port); then, several times,
//! a node is started and the time until the controller reports it joined is
//! taken, and the node is killed (SIGKILL) while it renders and the time until
//! the controller reports it lost (its frame requeued) is taken. The nodes use
//! the simulated renderer so the job never ends first.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_discovery -- [--reps 5]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = match args.as_slice() {
        [flag, value] if flag == "--reps" => value.parse().unwrap(),
        _ => 5,
    };
    let herd = common::release_herd();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tempfile::tempdir().unwrap();
    let mut controller = Command::new(&herd)
        .arg("render")
        .arg(common::demo_blend())
        .args([
            "--frames",
            "1-100000",
            "--no-local",
            "--json",
            "--resolution-percent",
            "10",
        ])
        .args(["--discovery-port", &port.to_string()])
        .arg("--out")
        .arg(out.path())
        .env("HERD_LOOPBACK_ONLY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<(Instant, String)>();
    let stdout = controller.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> Instant {
        loop {
            let (at, line) = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("controller went quiet");
            if line.contains(needle) {
                return at;
            }
        }
    };
    // The controller reads the .blend first; nodes start once it listens.
    wait_for(r#""event":"started""#);
    let (mut joins, mut losses) = (Vec::new(), Vec::new());
    for rep in 1..=reps {
        let work = tempfile::tempdir().unwrap();
        let name = format!("bench-{rep}");
        let started = Instant::now();
        let mut node = Command::new(&herd)
            .args(["node", "--headless", "--port", "0", "--discovery-port", "0"])
            .args(["--simulate-ms", "100", "--name", &name])
            .args(["--announce-to", &format!("127.0.0.1:{port}")])
            .arg("--work-dir")
            .arg(work.path())
            .env("HERD_LOOPBACK_ONLY", "1")
            .env("HERD_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let joined = wait_for(&format!("node {name} joined"));
        let join_secs = joined.duration_since(started).as_secs_f64();
        // Let it render a while, then kill it mid-frame.
        std::thread::sleep(Duration::from_millis(700));
        let killed = Instant::now();
        node.kill().unwrap();
        let _ = node.wait();
        let lost = wait_for("node lost");
        let loss_secs = lost.duration_since(killed).as_secs_f64();
        eprintln!(
            "rep {rep}: joined {join_secs:.3} s after start, lost {loss_secs:.3} s after kill -9"
        );
        joins.push(join_secs);
        losses.push(loss_secs);
    }
    let _ = controller.kill();
    let _ = controller.wait();
    println!("{reps} repetitions on loopback (medians):");
    println!("| what | median (s) | max (s) | target (s) |");
    println!("|---|---|---|---|");
    println!(
        "| node start → in the controller's pool | {:.3} | {:.3} | ≤ 1 |",
        common::median(&joins),
        joins.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "| node killed → its frame requeued | {:.3} | {:.3} | ≤ 3 |",
        common::median(&losses),
        losses.iter().copied().fold(0.0, f64::max)
    );
}
