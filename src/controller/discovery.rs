//! Finding nodes: send a "who is there" probe (a directed broadcast on every
//! interface, or loopback under `HERD_LOOPBACK_ONLY`), hear beacons, and
//! confirm each node with `GET /api/v1/node`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::lan;
use crate::wire::{Beacon, Datagram, MAX_DATAGRAM_BYTES, NodeInfo, PROTOCOL_VERSION, Probe};

/// How long a node's API may take to confirm it.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors confirming a node.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The node's API could not be reached.
    #[error("cannot reach {uri}: {reason}")]
    Unreachable {
        /// The node's base URI.
        uri: String,
        /// What failed.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{uri} answered {status}: {message}")]
    Refused {
        /// The node's base URI.
        uri: String,
        /// HTTP status.
        status: u16,
        /// The error the node gave.
        message: String,
    },
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

/// Collects beacons for `duration`, newest per node id. Anything that is not
/// a beacon is ignored.
pub async fn listen(socket: &UdpSocket, duration: Duration) -> BTreeMap<String, Beacon> {
    let mut heard = BTreeMap::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    let deadline = tokio::time::Instant::now() + duration;
    while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await
    {
        let Ok((length, from)) = received else {
            continue;
        };
        if let Some(beacon) = beacon_from(&buffer[..length], from) {
            heard.insert(beacon.id.clone(), beacon);
        }
    }
    heard
}

/// Asks a node for its identity at `uri` (e.g. `http://10.77.0.2:8082`).
pub async fn confirm(
    client: &reqwest::Client,
    uri: &str,
    token: Option<&str>,
) -> Result<NodeInfo, DiscoveryError> {
    let uri = uri.trim_end_matches('/');
    let unreachable = |reason: String| DiscoveryError::Unreachable {
        uri: uri.to_string(),
        reason,
    };
    let mut request = client
        .get(format!("{uri}/api/v1/node"))
        .timeout(CONFIRM_TIMEOUT);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(DiscoveryError::Refused {
            uri: uri.to_string(),
            status: status.as_u16(),
            message: body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string(),
        });
    }
    response
        .json()
        .await
        .map_err(|err| unreachable(format!("not a herd node: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
