//! `herd node`: run a render node until Ctrl-C, SIGTERM or `/api/v1/stop`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use herd::blender::{self, BlenderConfig};
use herd::lan;
use herd::node::{self, AnnounceConfig, Node, NodeConfig};
use herd::wire::DEFAULT_PORT;

/// Options of `herd node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Run without a window (the node is headless today either way).
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
    /// Kill Blender when it prints nothing for this many seconds.
    #[arg(long, default_value_t = 600)]
    pub frame_timeout: u64,
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
}

/// Runs `herd node`.
pub async fn run(args: NodeArgs) -> Result<()> {
    if !args.headless {
        tracing::info!("the node window is not part of this build yet; running headless");
    }
    if !(0.1..=3600.0).contains(&args.announce_interval) {
        bail!(
            "--announce-interval {} is out of range: use 0.1 to 3600 seconds",
            args.announce_interval
        );
    }
    for target in &args.announce_to {
        lan::check_target(*target).map_err(anyhow::Error::msg)?;
    }
    let blender_path = blender::locate(args.blender.as_deref())?;
    let blender_version = blender::version(&blender_path).await?;
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => directories::ProjectDirs::from("", "", "herd")
            .map(|dirs| dirs.cache_dir().join("node"))
            .context("no cache dir for this user: pass --work-dir")?,
    };
    let name = args
        .name
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let config = NodeConfig {
        name,
        work_dir: work_dir.clone(),
        cache_size_bytes: args.cache_size.as_u64(),
        blender: BlenderConfig {
            path: blender_path.clone(),
            threads: args.threads,
            allow_scripts: args.allow_scripts,
            frame_timeout: Duration::from_secs(args.frame_timeout.max(1)),
            script_dir: work_dir.clone(),
        },
        blender_version: blender_version.clone(),
        allow: args.allow,
        token: args.token.filter(|token| !token.is_empty()),
        simulate: args.simulate_ms.map(Duration::from_millis),
    };
    let node = Node::new(config)?;

    let bind = args.bind.unwrap_or(if lan::loopback_only() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let listener = tokio::net::TcpListener::bind((bind, args.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {bind}:{}: is another node running? pick --port",
                args.port
            )
        })?;
    let discovery = lan::bind_discovery(args.discovery_port)
        .and_then(tokio::net::UdpSocket::from_std)
        .with_context(|| {
            format!(
                "cannot bind the discovery port UDP {}: pick --discovery-port",
                args.discovery_port
            )
        })?;
    let announce = AnnounceConfig {
        targets: args.announce_to,
        discovery_port: args.discovery_port,
        interval: Duration::from_secs_f64(args.announce_interval),
    };
    let http = listener.local_addr()?;
    let udp = discovery.local_addr()?;
    // The one line scripts and tests read: where the API is.
    println!(
        "herd node '{}' ({}) listening on http://{http}, discovery on UDP {}, Blender {blender_version} at {}",
        node.name,
        node.id,
        udp.port(),
        blender_path.display()
    );
    tracing::info!("work dir {}", work_dir.display());
    if let Some(ms) = args.simulate_ms {
        tracing::warn!(
            "simulated renderer: every frame is a generated image after {ms} ms, Blender is not used"
        );
    }
    node::serve(
        node,
        listener,
        Some((discovery, announce)),
        shutdown_signal(),
    )
    .await
    .context("the node's HTTP server failed")?;
    tracing::info!("node stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: cancelling the current frame and ending Blender");
}
