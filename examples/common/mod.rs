//! Helpers shared by the benchmarks: the release binary, starting a node on
//! loopback, statistics, and what a process costs (CPU, memory).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The demo scene.
pub fn demo_blend() -> PathBuf {
    root().join("assets/demo/demo.blend")
}

/// `target/release/herd`; benchmarks time the release build.
pub fn release_herd() -> PathBuf {
    root().join("target/release/herd")
}

/// Fails with what to do when the binary is missing.
pub fn require(herd: &Path) {
    assert!(
        herd.is_file(),
        "{} missing: cargo build --release first",
        herd.display()
    );
}

/// Starts `herd node --headless` on loopback (`HERD_LOOPBACK_ONLY=1`, ports
/// chosen by the system) with `work` as its work dir and `args` added;
/// returns the child and the URL it listens on.
pub fn start_node(herd: &Path, work: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(herd)
        .args(["node", "--headless", "--port", "0", "--discovery-port", "0"])
        .args(args)
        .arg("--work-dir")
        .arg(work)
        .env("HERD_LOOPBACK_ONLY", "1")
        .env("HERD_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("the node did not say where it listens: {line:?}"))
        .trim_end_matches(',')
        .to_string();
    (child, url)
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The `fraction` quantile (0 to 1) by the nearest rank.
pub fn quantile(values: &[f64], fraction: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// User + system CPU seconds of a live process.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory of a live process, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
