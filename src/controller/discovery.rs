//! Finding nodes: send a "who is there" probe (a directed broadcast on every
//! interface, or loopback under `HERD_LOOPBACK_ONLY`), hear beacons, and
//! confirm each node with `GET /api/v1/node`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, broadcast};

use super::client::{ClientError, NodeClient};
use crate::lan;
use crate::wire::{Beacon, Datagram, MAX_DATAGRAM_BYTES, NodeInfo, PROTOCOL_VERSION, Probe};

/// How long a node's API may take to confirm it.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// The controller's ear on the LAN: one UDP socket, bound once for the
/// life of the process (of `herd render`, of the window), that every part
/// needing discovery shares. The standing watch of the servers and a
/// running job's engine each [`subscribe`](Self::subscribe) to the beacons
/// heard and may ask for a [`probe`](Self::probe); nothing hands a socket
/// around, and no beacon is missed between one listener and the next.
/// Clones share the socket; it closes when the last one is dropped.
#[derive(Clone, Debug)]
pub struct Listener {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    port: u16,
    beacons: broadcast::Sender<Beacon>,
    probe: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The discovery port cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for nodes on UDP {port}: {source}; pick another --discovery-port, add nodes with --node, or use --no-discovery"
)]
pub struct ListenError {
    /// The port.
    pub port: u16,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl Listener {
    /// Binds UDP `port` (loopback only under `HERD_LOOPBACK_ONLY`) and
    /// starts hearing beacons on the current tokio runtime.
    pub fn bind(port: u16) -> Result<Self, ListenError> {
        let socket = lan::bind_discovery(port)
            .and_then(UdpSocket::from_std)
            .map_err(|source| ListenError { port, source })?;
        let (beacons, _) = broadcast::channel(256);
        let probe = Arc::new(Notify::new());
        let task = tokio::spawn(listen_for_ever(
            socket,
            probe_targets(port),
            beacons.clone(),
            Arc::clone(&probe),
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                port,
                beacons,
                probe,
                task,
            }),
        })
    }

    /// The UDP port it listens on.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Every beacon heard from now on (a receiver that falls behind skips
    /// the oldest: nodes beacon again every few seconds).
    pub fn subscribe(&self) -> Beacons {
        Beacons(self.shared.beacons.subscribe())
    }

    /// Asks every node to announce itself now; requests made while one is
    /// being sent share it.
    pub fn probe(&self) {
        self.shared.probe.notify_one();
    }
}

/// Beacons heard by a [`Listener`].
#[derive(Debug)]
pub struct Beacons(broadcast::Receiver<Beacon>);

impl Beacons {
    /// The next beacon; waits for ever once the listener is gone.
    pub async fn next(&mut self) -> Beacon {
        loop {
            match self.0.recv().await {
                Ok(beacon) => return beacon,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// The next beacon of `beacons`, or never without them.
pub async fn next_beacon(beacons: Option<&mut Beacons>) -> Beacon {
    match beacons {
        Some(beacons) => beacons.next().await,
        None => std::future::pending().await,
    }
}

async fn listen_for_ever(
    socket: UdpSocket,
    targets: Vec<SocketAddr>,
    beacons: broadcast::Sender<Beacon>,
    probe_wanted: Arc<Notify>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                if let Ok((length, from)) = received
                    && let Some(beacon) = beacon_from(&buffer[..length], from)
                {
                    // No subscriber now is fine: the beacon comes again.
                    let _ = beacons.send(beacon);
                }
            }
            () = probe_wanted.notified() => probe(&socket, &targets).await,
        }
    }
}

/// Where probes go: the directed broadcast address of every IPv4 interface,
/// or 127.0.0.1 only under the loopback-only switch.
pub fn probe_targets(discovery_port: u16) -> Vec<SocketAddr> {
    if lan::loopback_only() {
        return vec![SocketAddr::from((Ipv4Addr::LOCALHOST, discovery_port))];
    }
    lan::ipv4_interfaces()
        .into_iter()
        .filter_map(|iface| iface.broadcast)
        .map(|broadcast| SocketAddr::from((broadcast, discovery_port)))
        .collect()
}

/// Sends a probe to every target that the loopback-only switch allows.
pub async fn probe(socket: &UdpSocket, targets: &[SocketAddr]) {
    let datagram = Datagram::Probe(Probe {
        herd: PROTOCOL_VERSION,
    })
    .to_bytes();
    for target in targets {
        if let Err(reason) = lan::check_target(*target) {
            tracing::warn!("probe not sent: {reason}");
            continue;
        }
        if let Err(err) = socket.send_to(&datagram, target).await {
            tracing::debug!("probe to {target} failed: {err}");
        }
    }
}

/// The beacon in a datagram from `from`, if it is one and names an address
/// on the host that sent it: a beacon cannot send the controller to another
/// machine (a spoofed beacon pointing at some server on the network is
/// ignored).
pub fn beacon_from(bytes: &[u8], from: SocketAddr) -> Option<Beacon> {
    let Some(Datagram::Beacon(beacon)) = Datagram::parse(bytes) else {
        return None;
    };
    let host = beacon.uri.strip_prefix("http://")?.rsplit_once(':')?.0;
    let host: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let canonical = |ip: std::net::IpAddr| ip.to_canonical();
    if canonical(host) == canonical(from.ip()) {
        Some(beacon)
    } else {
        tracing::debug!("beacon from {from} names {}: ignored", beacon.uri);
        None
    }
}

/// Asks a node for its identity at `uri` (e.g. `http://10.77.0.2:8082`).
pub async fn confirm(
    client: &reqwest::Client,
    uri: &str,
    token: Option<&str>,
) -> Result<NodeInfo, ClientError> {
    let api = NodeClient::new(
        client.clone(),
        uri,
        token.map(str::to_string),
        CONFIRM_TIMEOUT,
    );
    api.info().await.map_err(|err| match err {
        ClientError::Answer { uri, reason } => ClientError::Answer {
            uri,
            reason: format!("not a herd node ({reason})"),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_listener_passes_every_beacon_to_every_subscriber() {
        // Only loopback, whatever the environment says.
        crate::lan::force_loopback_only();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = Listener::bind(port).unwrap();
        assert_eq!(listener.port(), port);
        let (mut first, mut second) = (listener.subscribe(), listener.subscribe());
        // A node's beacon, sent to the listener.
        let node = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let node_port = node.local_addr().unwrap().port();
        let to_listener = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let datagram = beacon(&format!("http://127.0.0.1:{node_port}"));
        node.send_to(&datagram, to_listener).await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), first.next())
            .await
            .unwrap();
        assert_eq!(heard.uri, format!("http://127.0.0.1:{node_port}"));
        let heard = tokio::time::timeout(Duration::from_secs(5), second.next())
            .await
            .unwrap();
        assert_eq!(heard.uri, format!("http://127.0.0.1:{node_port}"));
        // A beacon naming another host than its sender's is not passed on.
        node.send_to(&beacon("http://10.0.0.9:8082"), to_listener)
            .await
            .unwrap();
        node.send_to(&datagram, to_listener).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), first.next())
            .await
            .unwrap();
        assert_eq!(next.uri, format!("http://127.0.0.1:{node_port}"));
    }

    fn beacon(uri: &str) -> Vec<u8> {
        Datagram::Beacon(Beacon {
            herd: PROTOCOL_VERSION,
            id: "n".into(),
            name: "n".into(),
            uri: uri.into(),
            state: crate::wire::NodeState::Idle,
            version: "0".into(),
        })
        .to_bytes()
    }

    #[test]
    fn beacons_must_name_the_host_that_sent_them() {
        let from: SocketAddr = "10.0.0.5:8082".parse().unwrap();
        assert!(beacon_from(&beacon("http://10.0.0.5:8082"), from).is_some());
        assert!(beacon_from(&beacon("http://10.0.0.5:9000"), from).is_some());
        assert!(beacon_from(&beacon("http://10.0.0.9:8082"), from).is_none());
        assert!(beacon_from(&beacon("http://example.com:80"), from).is_none());
        assert!(beacon_from(&beacon("http://169.254.169.254:80"), from).is_none());
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:8082".parse().unwrap();
        assert!(beacon_from(&beacon("http://10.0.0.5:8082"), mapped).is_some());
        assert!(beacon_from(b"garbage", from).is_none());
    }
}
