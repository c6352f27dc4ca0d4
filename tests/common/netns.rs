//! A private LAN of network namespaces for tests that cross a network: hosts
//! h1..hN on 10.77.0.0/24 plugged into a bridge in its own namespace, with no
//! way out. Broadcasts stay on the bridge. Needs root; removed on drop.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Lan {
    prefix: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|err| panic!("ip {args:?}: {err} (apt-get install iproute2)"));
    assert!(status.success(), "ip {args:?} failed");
}

impl Lan {
    /// Builds hosts h1..h`hosts` on 10.77.0.0/24.
    pub fn up(hosts: usize) -> Self {
        let prefix = format!(
            "hd{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lan = Self { prefix };
        let bridge = lan.ns("br");
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "set", "lo", "up"]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            lan.plug(&format!("h{i}"), &format!("10.77.0.{i}/24"));
        }
        lan
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Adds a host with an address of the caller's choice, with on-link
    /// routes both ways to 10.77.0.0/24 (e.g. an outsider's subnet).
    pub fn plug(&self, host: &str, cidr: &str) {
        let ns = self.ns(host);
        let bridge = self.ns("br");
        let veth: String = format!("v{}{host}", self.prefix).chars().take(15).collect();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["link", "set", &veth, "netns", &bridge]);
        ip(&["-n", &bridge, "link", "set", &veth, "master", "br0"]);
        ip(&["-n", &bridge, "link", "set", &veth, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", cidr, "brd", "+", "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        if !cidr.starts_with("10.77.0.") {
            ip(&["-n", &ns, "route", "add", "10.77.0.0/24", "dev", "eth0"]);
            let addr = cidr.split('/').next().unwrap_or(cidr);
            for other in self.hosts() {
                if other != ns {
                    ip(&[
                        "-n",
                        &other,
                        "route",
                        "add",
                        &format!("{addr}/32"),
                        "dev",
                        "eth0",
                    ]);
                }
            }
        }
    }

    fn hosts(&self) -> Vec<String> {
        let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(&format!("{}-", self.prefix)))
            .filter(|name| !name.ends_with("-br"))
            .map(str::to_string)
            .collect()
    }

    /// A command that runs `program` inside `host`, with the loopback-only
    /// switch removed: inside the namespace, broadcasts reach only this LAN.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns(host)])
            .arg(program)
            .env_remove("HERD_LOOPBACK_ONLY");
        command
    }

    /// Unplugs `host`'s cable.
    pub fn cut(&self, host: &str) {
        ip(&["-n", &self.ns(host), "link", "set", "eth0", "down"]);
    }

    /// Plugs it back in.
    pub fn heal(&self, host: &str) {
        ip(&["-n", &self.ns(host), "link", "set", "eth0", "up"]);
    }

    /// Limits what `host` sends to `rate` (e.g. `256kbit`), as a slow link.
    pub fn shape(&self, host: &str, rate: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"])
            .args(["rate", rate, "burst", "16kb", "latency", "400ms"])
            .status()
            .unwrap_or_else(|err| panic!("tc: {err} (apt-get install iproute2)"));
        assert!(status.success(), "tc qdisc on {host} failed");
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let mut all = self.hosts();
        all.push(self.ns("br"));
        for ns in all {
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
