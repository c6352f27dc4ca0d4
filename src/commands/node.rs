//! `herd node`: run a render node until Ctrl-C, SIGTERM or `/api/v1/stop`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use herd::autostart::Autostart;
use herd::node;
use herd::node::instance;
use herd::node::launch::{self, NodeDiscovery, NodeLaunch};
use herd::wire::DEFAULT_PORT;

/// Options of `herd node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Run without a window (on a server, over SSH, in scripts).
    #[arg(long)]
    pub headless: bool,
    /// TCP port of the HTTP API (0: any free port).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on (default: all interfaces; 127.0.0.1 under HERD_LOOPBACK_ONLY).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// UDP port for beacons and probes (0: any free port).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub discovery_port: u16,
    /// Name shown to controllers (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Folder for the node id, cached .blend files and rendered frames
    /// (default: the user's cache dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Size bound of the file cache, e.g. 20GiB or 500MB.
    #[arg(long, default_value = "20GiB")]
    pub cache_size: bytesize::ByteSize,
    /// Blender executable (default: HERD_BLENDER, then `blender` on PATH).
    #[arg(long, env = "HERD_BLENDER")]
    pub blender: Option<PathBuf>,
    /// Render threads passed to Blender's -t (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Let .blend files run their Python scripts and drivers (off by default).
    #[arg(long)]
    pub allow_scripts: bool,
    /// Kill Blender when it shows no sign of life for this many seconds: no
    /// output and no CPU time used (a silent but busy frame is not killed).
    #[arg(long, default_value_t = 600)]
    pub frame_timeout: u64,
    /// Kill Blender when one frame takes longer than this many seconds, busy
    /// or not (default: no cap).
    #[arg(long, value_name = "SECS")]
    pub max_frame_time: Option<u64>,
    /// Also let in this network, e.g. 192.168.50.0/24 (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<ipnet::IpNet>,
    /// Shared secret: every request must send `Authorization: Bearer TOKEN`.
    #[arg(long, env = "HERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Send beacons by unicast to HOST:PORT instead of broadcasting (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub announce_to: Vec<SocketAddr>,
    /// Seconds between beacons.
    #[arg(long, default_value_t = 5.0)]
    pub announce_interval: f64,
    /// Benchmarks and scheduler tests only: replace Blender with a timer of
    /// MS milliseconds per frame and a generated 320x180 image.
    #[arg(long, value_name = "MS")]
    pub simulate_ms: Option<u64>,
    /// Start this node at login (`on`) or not (`off`), then exit: writes or
    /// removes ~/.config/autostart/herd-node.desktop.
    #[arg(long, value_name = "on|off")]
    pub autostart: Option<Toggle>,
    /// Open the node window minimised (what the node does at login).
    #[arg(long, visible_alias = "minimized")]
    pub minimised: bool,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `herd node --autostart on|off`: writes or removes the autostart entry.
pub fn set_autostart(toggle: Toggle) -> Result<()> {
    let autostart = Autostart::user()?;
    let enabled = toggle == Toggle::On;
    autostart.set(enabled)?;
    if enabled {
        println!(
            "herd node will start at login, minimised ({})",
            autostart.file.display()
        );
    } else {
        println!(
            "herd node will not start at login ({} removed)",
            autostart.file.display()
        );
    }
    Ok(())
}

impl NodeArgs {
    /// The node these options describe, for the headless node and the window.
    pub fn to_launch(&self) -> Result<NodeLaunch> {
        if !(0.1..=3600.0).contains(&self.announce_interval) {
            bail!(
                "--announce-interval {} is out of range: use 0.1 to 3600 seconds",
                self.announce_interval
            );
        }
        Ok(NodeLaunch {
            blender: self.blender.clone(),
            name: self.name.clone(),
            work_dir: self.work_dir.clone(),
            cache_size_bytes: self.cache_size.as_u64(),
            threads: self.threads,
            allow_scripts: self.allow_scripts,
            frame_timeout: Duration::from_secs(self.frame_timeout.max(1)),
            max_frame_time: self
                .max_frame_time
                .map(|secs| Duration::from_secs(secs.max(1))),
            allow: self.allow.clone(),
            token: self.token.clone(),
            bind: self.bind,
            port: self.port,
            discovery: Some(NodeDiscovery {
                port: self.discovery_port,
                announce_to: self.announce_to.clone(),
                interval: Duration::from_secs_f64(self.announce_interval),
            }),
            simulate: self.simulate_ms.map(Duration::from_millis),
        })
    }
}

/// Whether a herd node already serves on this machine at `args`'s port;
/// if so it was asked to show its window, and this start says so and
/// leaves (a second node could not take the port anyway).
pub fn raised_running_node(runtime: &tokio::runtime::Runtime, args: &NodeArgs) -> bool {
    if args.port == 0 {
        return false;
    }
    let token = args.token.as_deref().filter(|token| !token.is_empty());
    let Some(info) = runtime.block_on(instance::raise_running(args.port, token)) else {
        return false;
    };
    println!(
        "herd node '{}' already runs on this machine (http://127.0.0.1:{}): its window was asked to show itself",
        info.name, args.port
    );
    true
}

/// Runs `herd node --headless`.
pub async fn run(args: NodeArgs) -> Result<()> {
    let launch = args.to_launch()?;
    let (running, listener, discovery) =
        launch::prepare(&launch).await.map_err(anyhow::Error::msg)?;
    let node = running.node;
    let udp = match &discovery {
        Some((socket, _)) => socket.local_addr()?.port().to_string(),
        None => "off".into(),
    };
    // The one line scripts and tests read: where the API is.
    println!(
        "herd node '{}' ({}) listening on http://{}, discovery on UDP {udp}, Blender {} at {}",
        node.name,
        node.id,
        running.http,
        node.blender_version,
        running.blender_path.display()
    );
    if let Some(ms) = args.simulate_ms {
        tracing::warn!(
            "simulated renderer: every frame is a generated image after {ms} ms, Blender is not used"
        );
    }
    node::serve(node, listener, discovery, shutdown_signal())
        .await
        .context("the node's HTTP server failed")?;
    tracing::info!("node stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM, saying what happens next.
async fn shutdown_signal() {
    super::termination().await;
    tracing::info!("shutting down: cancelling the current frame and ending Blender");
}
