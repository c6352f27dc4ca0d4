//! The node's beacon: announces the node on the LAN by UDP at start-up, on
//! every state change and every few seconds, and answers a controller's probe
//! at once by unicast.
//!
//! By default a beacon is a directed broadcast on every IPv4 interface that
//! has one, advertising the URI reachable on that interface. With
//! `--announce-to` (or under `HERD_LOOPBACK_ONLY`) it is unicast to the given
//! addresses instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::Node;
use crate::lan;
use crate::wire::{Beacon, Datagram, MAX_DATAGRAM_BYTES, NodeState, PROTOCOL_VERSION};

/// Where and how often the node announces itself.
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    /// Unicast targets; empty means directed broadcast per interface.
    pub targets: Vec<SocketAddr>,
    /// UDP port controllers listen on (for broadcasts).
    pub discovery_port: u16,
    /// Period between beacons.
    pub interval: Duration,
}

/// Announces the node until it shuts down.
pub async fn run(node: Arc<Node>, socket: UdpSocket, http_port: u16, config: AnnounceConfig) {
    let mut state = node.subscribe_state();
    let mut ticker = tokio::time::interval(config.interval);
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => break,
            _ = ticker.tick() => {
                node.access.refresh();
                announce(&node, &socket, http_port, &config).await;
            }
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                announce(&node, &socket, http_port, &config).await;
            }
            received = socket.recv_from(&mut buffer) => {
                let Ok((length, from)) = received else { continue };
                let is_probe = matches!(Datagram::parse(&buffer[..length]), Some(Datagram::Probe(_)));
                if is_probe && node.access.allows(from.ip()) {
                    let beacon = beacon_for(&node, reply_addr(from.ip()), http_port);
                    send(&socket, &beacon, from).await;
                }
            }
        }
    }
}

fn reply_addr(peer: IpAddr) -> Ipv4Addr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => lan::local_addr_for(v4),
        IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    }
}

fn beacon_for(node: &Node, addr: Ipv4Addr, http_port: u16) -> Datagram {
    Datagram::Beacon(Beacon {
        herd: PROTOCOL_VERSION,
        id: node.id.clone(),
        name: node.name.clone(),
        uri: format!("http://{addr}:{http_port}"),
        state: node.state(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

async fn send(socket: &UdpSocket, datagram: &Datagram, to: SocketAddr) {
    if let Err(reason) = lan::check_target(to) {
        tracing::warn!("beacon not sent: {reason}");
        return;
    }
    if let Err(err) = socket.send_to(&datagram.to_bytes(), to).await {
        // An interface going down makes sends fail until it returns.
        tracing::debug!("beacon to {to} failed: {err}");
    }
}

async fn announce(node: &Node, socket: &UdpSocket, http_port: u16, config: &AnnounceConfig) {
    let targets: Vec<(Ipv4Addr, SocketAddr)> = if !config.targets.is_empty() {
        config
            .targets
            .iter()
            .map(|target| (reply_addr(target.ip()), *target))
            .collect()
    } else if lan::loopback_only() {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, config.discovery_port));
        vec![(Ipv4Addr::LOCALHOST, target)]
    } else {
        lan::ipv4_interfaces()
            .into_iter()
            .filter_map(|iface| {
                let broadcast = iface.broadcast?;
                Some((
                    iface.addr,
                    SocketAddr::from((broadcast, config.discovery_port)),
                ))
            })
            .collect()
    };
    let state: NodeState = node.state();
    tracing::trace!("announcing {state} to {} targets", targets.len());
    for (addr, target) in targets {
        send(socket, &beacon_for(node, addr, http_port), target).await;
    }
}
