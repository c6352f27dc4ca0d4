//! A private X display (Xvfb) for tests that open herd's window or run a
//! notification service that draws on one. Needs Debian's xvfb (CI
//! installs it); callers check [`installed`] and say when they skip.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills a process when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `program` is on PATH.
pub fn installed(program: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(program).is_file())
}

/// An Xvfb server, killed on drop.
pub struct Xvfb {
    /// Its display, e.g. `:3`, for `DISPLAY`.
    pub display: String,
    _server: Killed,
}

impl Xvfb {
    /// Starts Xvfb on a display number it finds free itself and returns
    /// once it takes clients (`-displayfd` prints the number then).
    pub fn start() -> Self {
        let mut server = Command::new("Xvfb")
            .args(["-displayfd", "1", "-nolisten", "tcp"])
            .args(["-screen", "0", "1280x1024x24"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = server.stdout.take().unwrap();
        let server = Killed(server);
        let mut number = String::new();
        BufReader::new(stdout).read_line(&mut number).unwrap();
        let number: u32 = number
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb did not say its display: {number:?}"));
        Self {
            display: format!(":{number}"),
            _server: server,
        }
    }
}
