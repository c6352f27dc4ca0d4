//! The local network as herd sees it: the machine's interfaces with their real
//! netmasks, who counts as "on the LAN", and the loopback-only switch that
//! keeps every beacon and probe on this machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::RwLock;

use ipnet::{IpNet, Ipv4Net};

/// Environment variable that, set to `1`/`true`/`yes`, keeps every beacon and
/// probe herd sends on loopback, whatever the command line says.
pub const LOOPBACK_ONLY_ENV: &str = "HERD_LOOPBACK_ONLY";

/// Set by [`force_loopback_only`].
static FORCED_LOOPBACK_ONLY: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Keeps every beacon and probe of this process on loopback from now on, as
/// [`LOOPBACK_ONLY_ENV`] does (for tests and programs that embed herd,
/// where changing the environment of a running process is unsound).
pub fn force_loopback_only() {
    FORCED_LOOPBACK_ONLY.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`LOOPBACK_ONLY_ENV`] is set or [`force_loopback_only`] was
/// called.
pub fn loopback_only() -> bool {
    FORCED_LOOPBACK_ONLY.load(std::sync::atomic::Ordering::SeqCst)
        || std::env::var(LOOPBACK_ONLY_ENV)
            .map(|value| matches!(value.trim(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false)
}

/// An IPv4 interface of this machine that is not loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// The interface's address.
    pub addr: Ipv4Addr,
    /// The subnet, from the interface's real netmask.
    pub net: Ipv4Net,
    /// Directed broadcast address, when the interface has one.
    pub broadcast: Option<Ipv4Addr>,
}

/// The machine's IPv4 interfaces, loopback excluded.
pub fn ipv4_interfaces() -> Vec<Interface> {
    let Ok(all) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|iface| !iface.is_loopback())
        .filter_map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) => {
                let net = Ipv4Net::with_netmask(v4.ip, v4.netmask).ok()?.trunc();
                Some(Interface {
                    name: iface.name,
                    addr: v4.ip,
                    net,
                    broadcast: v4.broadcast,
                })
            }
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect()
}

/// Subnets of every interface, IPv6 included, loopback excluded.
fn interface_subnets() -> Vec<IpNet> {
    let Ok(all) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    all.into_iter()
        .filter(|iface| !iface.is_loopback())
        .filter_map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) => Ipv4Net::with_netmask(v4.ip, v4.netmask)
                .ok()
                .map(|net| IpNet::V4(net.trunc())),
            if_addrs::IfAddr::V6(v6) => ipnet::Ipv6Net::with_netmask(v6.ip, v6.netmask)
                .ok()
                .map(|net| IpNet::V6(net.trunc())),
        })
        .collect()
}

/// The local address a peer at `peer` reaches this machine by: loopback for a
/// loopback peer, else the address of the interface whose subnet holds the
/// peer, else the first interface's.
pub fn local_addr_for(peer: Ipv4Addr) -> Ipv4Addr {
    if peer.is_loopback() {
        return Ipv4Addr::LOCALHOST;
    }
    let interfaces = ipv4_interfaces();
    interfaces
        .iter()
        .find(|iface| iface.net.contains(&peer))
        .or(interfaces.first())
        .map_or(Ipv4Addr::LOCALHOST, |iface| iface.addr)
}

/// Who may talk to a node: loopback, the subnets of the node's own interfaces
/// (refreshed as interfaces come and go), and extra networks given with
/// `--allow`.
#[derive(Debug)]
pub struct AccessList {
    extra: Vec<IpNet>,
    local: RwLock<Vec<IpNet>>,
}

impl AccessList {
    /// An access list of the machine's current subnets plus `extra`.
    pub fn new(extra: Vec<IpNet>) -> Self {
        Self {
            extra,
            local: RwLock::new(interface_subnets()),
        }
    }

    /// An access list of exactly `local` plus `extra`, for tests.
    pub fn with_subnets(local: Vec<IpNet>, extra: Vec<IpNet>) -> Self {
        Self {
            extra,
            local: RwLock::new(local),
        }
    }

    /// Reads the machine's interfaces again (a cable plugged in, DHCP).
    pub fn refresh(&self) {
        let subnets = interface_subnets();
        if let Ok(mut local) = self.local.write() {
            *local = subnets;
        }
    }

    /// Whether a request from `peer` is let in.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if peer.is_loopback() || self.extra.iter().any(|net| net.contains(&peer)) {
            return true;
        }
        self.local
            .read()
            .map(|local| local.iter().any(|net| net.contains(&peer)))
            .unwrap_or(false)
    }
}

/// Checks that `target` may receive herd's datagrams under the loopback-only
/// switch; the error says what to do.
pub fn check_target(target: SocketAddr) -> Result<(), String> {
    if loopback_only() && !target.ip().is_loopback() {
        return Err(format!(
            "{target} is not a loopback address and {LOOPBACK_ONLY_ENV} is set: \
             announce to 127.0.0.1:PORT or unset {LOOPBACK_ONLY_ENV}"
        ));
    }
    Ok(())
}

/// Binds the UDP discovery socket on `port` with SO_REUSEADDR (a node and a
/// controller can share a host) and broadcast allowed. Under the
/// loopback-only switch it binds 127.0.0.1, where no broadcast can arrive.
pub fn bind_discovery(port: u16) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_broadcast(!loopback_only())?;
    socket.set_nonblocking(true)?;
    let ip = if loopback_only() {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    socket.bind(&SocketAddr::from((ip, port)).into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_subnets_and_extras_are_allowed() {
        let access = AccessList::with_subnets(
            vec!["10.77.0.0/24".parse().unwrap()],
            vec!["192.0.2.0/28".parse().unwrap()],
        );
        assert!(access.allows("127.0.0.1".parse().unwrap()));
        assert!(access.allows("::1".parse().unwrap()));
        assert!(access.allows("::ffff:10.77.0.9".parse().unwrap()));
        assert!(access.allows("10.77.0.200".parse().unwrap()));
        assert!(access.allows("192.0.2.3".parse().unwrap()));
        assert!(!access.allows("10.77.1.1".parse().unwrap()));
        assert!(!access.allows("192.0.2.16".parse().unwrap()));
        assert!(!access.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn interface_subnets_come_from_real_netmasks() {
        for iface in ipv4_interfaces() {
            assert!(iface.net.contains(&iface.addr), "{iface:?}");
            assert_eq!(iface.net, iface.net.trunc());
        }
    }
}
