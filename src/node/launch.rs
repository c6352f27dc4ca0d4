//! Starting a node from its options: find Blender, prepare the work dir,
//! bind the API and the discovery socket. Shared by `herd node --headless`
//! and the node window.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{AnnounceConfig, Node, NodeConfig};
use crate::blender::{self, BlenderConfig};
use crate::lan;

/// Where and how the node announces itself.
#[derive(Debug, Clone)]
pub struct NodeDiscovery {
    /// UDP port for beacons and probes (0: any free port).
    pub port: u16,
    /// Unicast targets instead of broadcast.
    pub announce_to: Vec<SocketAddr>,
    /// Time between beacons.
    pub interval: Duration,
}

/// Everything the node window starts a node with (`herd node`'s options).
#[derive(Debug, Clone)]
pub struct NodeLaunch {
    /// Blender executable; `None`: `HERD_BLENDER`, then `PATH`.
    pub blender: Option<PathBuf>,
    /// Name shown to controllers; `None`: the host name.
    pub name: Option<String>,
    /// Work dir; `None`: the user's cache dir.
    pub work_dir: Option<PathBuf>,
    /// Bound of the file cache, in bytes.
    pub cache_size_bytes: u64,
    /// Blender's render threads; `None`: all cores.
    pub threads: Option<u32>,
    /// Let .blend files run their Python.
    pub allow_scripts: bool,
    /// Kill a Blender that shows no sign of life (output, CPU time) this
    /// long.
    pub frame_timeout: Duration,
    /// Kill a Blender whose frame takes longer than this; `None`: no cap.
    pub max_frame_time: Option<Duration>,
    /// Networks let in besides loopback and the node's own subnets.
    pub allow: Vec<ipnet::IpNet>,
    /// Shared secret, if any.
    pub token: Option<String>,
    /// Address to listen on; `None`: all interfaces (loopback under
    /// `HERD_LOOPBACK_ONLY`).
    pub bind: Option<IpAddr>,
    /// TCP port of the API (0: any free port).
    pub port: u16,
    /// Announcements; `None`: the node stays silent.
    pub discovery: Option<NodeDiscovery>,
    /// Simulated renderer time per frame: for tests and benchmarks only.
    pub simulate: Option<Duration>,
}

/// A node that is up.
#[derive(Debug, Clone)]
pub struct NodeRunning {
    /// Its shared state: the window reads [`Node::info`] each frame.
    pub node: Arc<Node>,
    /// Where the API listens.
    pub http: SocketAddr,
    /// Addresses controllers can reach it at, e.g. `eth0 http://10.0.0.5:8082`.
    pub addresses: Vec<String>,
    /// The Blender it drives.
    pub blender_path: PathBuf,
}

/// Why a node could not start, said for the user.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Blender is missing or does not run: choosing another one may help.
    #[error("{0}")]
    Blender(String),
    /// Anything else (ports, work dir, options).
    #[error("{0}")]
    Other(String),
}

impl From<String> for LaunchError {
    fn from(message: String) -> Self {
        Self::Other(message)
    }
}

impl From<&str> for LaunchError {
    fn from(message: &str) -> Self {
        Self::Other(message.to_string())
    }
}

/// A prepared node: what it is, its API listener and its discovery socket.
pub type Prepared = (
    NodeRunning,
    tokio::net::TcpListener,
    Option<(tokio::net::UdpSocket, AnnounceConfig)>,
);

/// Prepares a node from `launch`; the error says what failed and what to do.
pub async fn prepare(launch: &NodeLaunch) -> Result<Prepared, LaunchError> {
    for target in launch.discovery.iter().flat_map(|d| &d.announce_to) {
        lan::check_target(*target)?;
    }
    let blender_path = blender::locate(launch.blender.as_deref())
        .map_err(|err| LaunchError::Blender(err.to_string()))?;
    let blender_version = blender::version(&blender_path)
        .await
        .map_err(|err| LaunchError::Blender(err.to_string()))?;
    let work_dir = match &launch.work_dir {
        Some(dir) => dir.clone(),
        None => directories::ProjectDirs::from("", "", "herd")
            .map(|dirs| dirs.cache_dir().join("node"))
            .ok_or("no cache dir for this user: pass --work-dir")?,
    };
    let name = launch
        .name
        .clone()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let config = NodeConfig {
        name,
        work_dir: work_dir.clone(),
        cache_size_bytes: launch.cache_size_bytes,
        blender: BlenderConfig {
            path: blender_path.clone(),
            threads: launch.threads,
            allow_scripts: launch.allow_scripts,
            frame_timeout: launch.frame_timeout.max(Duration::from_secs(1)),
            max_frame_time: launch.max_frame_time,
            script_dir: work_dir,
        },
        blender_version,
        allow: launch.allow.clone(),
        token: launch.token.clone().filter(|token| !token.is_empty()),
        simulate: launch.simulate,
    };
    let node = Node::new(config).map_err(|err| err.to_string())?;
    let bind = launch.bind.unwrap_or(if lan::loopback_only() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let listener = tokio::net::TcpListener::bind((bind, launch.port))
        .await
        .map_err(|err| {
            format!(
                "cannot listen on {bind}:{}: {err}; is another node running? pick --port",
                launch.port
            )
        })?;
    let http = listener
        .local_addr()
        .map_err(|err| format!("cannot read the API's address: {err}"))?;
    let discovery = match &launch.discovery {
        None => None,
        Some(discovery) => {
            let socket = lan::bind_discovery(discovery.port)
                .and_then(tokio::net::UdpSocket::from_std)
                .map_err(|err| {
                    format!(
                        "cannot bind the discovery port UDP {}: {err}; pick --discovery-port",
                        discovery.port
                    )
                })?;
            let announce = AnnounceConfig {
                targets: discovery.announce_to.clone(),
                discovery_port: discovery.port,
                interval: discovery.interval,
            };
            Some((socket, announce))
        }
    };
    let addresses = if http.ip().is_unspecified() {
        lan::ipv4_interfaces()
            .into_iter()
            .map(|iface| format!("{} http://{}:{}", iface.name, iface.addr, http.port()))
            .collect()
    } else {
        vec![format!("http://{http}")]
    };
    Ok((
        NodeRunning {
            node,
            http,
            addresses,
            blender_path,
        },
        listener,
        discovery,
    ))
}
