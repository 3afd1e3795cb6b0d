//! Interfaces and multicast sockets.
//!
//! Per address family: one socket on port 5353 (shared with other processes
//! through `SO_REUSEADDR`/`SO_REUSEPORT`, joined to the mDNS group on each
//! chosen interface, multicast loop on so processes on one host hear each
//! other) for announcements, goodbyes and answers, and one socket on an
//! ephemeral port for our own queries, so that responders that answer by
//! unicast (go-micro's) reach this process and not another one sharing 5353.
//!
//! All sockets are created in [`Transport::open`], synchronously, on the
//! calling thread: they belong to that thread's network namespace.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use micro_registry::Error;
use nix::net::if_::InterfaceFlags;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

pub(crate) const MDNS_PORT: u16 = 5353;
pub(crate) const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const RECV_BUFFER: usize = 1 << 20;
pub(crate) const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);

/// A network interface mDNS runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// The first IPv4 address: the source of our IPv4 multicast on it.
    pub ipv4: Option<Ipv4Addr>,
    pub has_ipv6: bool,
    pub loopback: bool,
    /// The interface says it can multicast (`IFF_MULTICAST`).
    pub multicast: bool,
}

/// The interfaces of this host (of the calling thread's network namespace)
/// that are up.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        if !entry.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let iface = by_name
            .entry(entry.interface_name.clone())
            .or_insert_with(|| Interface {
                name: entry.interface_name.clone(),
                index: nix::net::if_::if_nametoindex(entry.interface_name.as_str()).unwrap_or(0),
                ipv4: None,
                has_ipv6: false,
                loopback: entry.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                multicast: entry.flags.contains(InterfaceFlags::IFF_MULTICAST),
            });
        if let Some(address) = entry.address {
            if let Some(v4) = address.as_sockaddr_in() {
                iface.ipv4.get_or_insert(v4.ip());
            } else if address.as_sockaddr_in6().is_some() {
                iface.has_ipv6 = true;
            }
        }
    }
    Ok(by_name.into_values().filter(|i| i.index != 0).collect())
}

/// Chooses the interfaces: the named one, or every multicast-capable one;
/// loopback alone when nothing else can multicast (one warning says so).
pub(crate) fn choose(all: Vec<Interface>, wanted: Option<&str>) -> Result<Vec<Interface>, Error> {
    let unavailable = |detail: String| Error::Unavailable {
        registry: "mdns".into(),
        detail,
    };
    if let Some(wanted) = wanted {
        let names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        let Some(found) = all.iter().find(|i| i.name == wanted) else {
            return Err(unavailable(format!(
                "interface {wanted:?} does not exist or is down (up: {})",
                names.join(", ")
            )));
        };
        if !found.multicast && !found.loopback {
            return Err(unavailable(format!(
                "interface {wanted:?} cannot multicast; choose another with --mdns_interface (up: {})",
                names.join(", ")
            )));
        }
        return Ok(vec![found.clone()]);
    }
    let capable: Vec<Interface> = all.iter().filter(|i| i.multicast).cloned().collect();
    if capable.iter().any(|i| !i.loopback) {
        return Ok(capable);
    }
    let loopback: Vec<Interface> = all.into_iter().filter(|i| i.loopback).collect();
    if capable.is_empty() {
        tracing::warn!(
            "Registry [mdns] no network interface can multicast: using loopback only, so services are \
             visible only to processes on this host"
        );
    }
    if loopback.is_empty() {
        return Err(unavailable(
            "no network interface is up, not even loopback".into(),
        ));
    }
    Ok(loopback)
}

/// One address family's pair of sockets.
#[derive(Debug)]
pub(crate) struct Family {
    /// Bound to port 5353, joined to the group.
    pub multicast: UdpSocket,
    /// Bound to an ephemeral port: our queries and their unicast answers.
    pub unicast: UdpSocket,
    /// Interfaces (index, IPv4 source) to send on.
    targets: Vec<(u32, Option<Ipv4Addr>)>,
    /// Serialises "choose interface, send" on a socket.
    send_lock: tokio::sync::Mutex<()>,
}

/// The sockets of one registry.
#[derive(Debug)]
pub(crate) struct Transport {
    pub v4: Option<Family>,
    pub v6: Option<Family>,
    pub interfaces: Vec<Interface>,
}

/// Which socket of a family sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum From {
    /// Port 5353: announcements, goodbyes, multicast answers.
    Mdns,
    /// Ephemeral port: queries.
    Querier,
}

impl Transport {
    /// Opens the sockets on `interfaces`. IPv6 is best effort.
    pub(crate) fn open(interfaces: Vec<Interface>) -> Result<Transport, Error> {
        let v4_targets: Vec<(u32, Option<Ipv4Addr>)> = interfaces
            .iter()
            .filter(|i| i.ipv4.is_some())
            .map(|i| (i.index, i.ipv4))
            .collect();
        let v6_targets: Vec<(u32, Option<Ipv4Addr>)> = interfaces
            .iter()
            .filter(|i| i.has_ipv6)
            .map(|i| (i.index, None))
            .collect();
        let v4 = if v4_targets.is_empty() {
            None
        } else {
            match open_v4(&v4_targets) {
                Ok(family) => Some(family),
                Err(e) => {
                    tracing::warn!("Registry [mdns] IPv4 multicast unavailable: {e}");
                    None
                }
            }
        };
        let v6 = if v6_targets.is_empty() {
            None
        } else {
            match open_v6(&v6_targets) {
                Ok(family) => Some(family),
                Err(e) => {
                    tracing::debug!("Registry [mdns] IPv6 multicast unavailable: {e}");
                    None
                }
            }
        };
        if v4.is_none() && v6.is_none() {
            let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Unavailable {
                registry: "mdns".into(),
                detail: format!(
                    "cannot open multicast sockets on port {MDNS_PORT} (interfaces: {})",
                    names.join(", ")
                ),
            });
        }
        Ok(Transport { v4, v6, interfaces })
    }

    /// Multicasts `bytes` on every interface and family. Returns how many
    /// copies went out.
    pub(crate) async fn multicast(&self, from: From, bytes: &[u8]) -> usize {
        let mut sent = 0;
        if let Some(family) = &self.v4 {
            let socket = family.socket(from);
            let _guard = family.send_lock.lock().await;
            for (_, source) in &family.targets {
                let Some(source) = source else { continue };
                if let Err(e) = SockRef::from(socket).set_multicast_if_v4(source) {
                    tracing::debug!("Registry [mdns] choose interface {source}: {e}");
                    continue;
                }
                match socket
                    .send_to(bytes, SocketAddrV4::new(GROUP_V4, MDNS_PORT))
                    .await
                {
                    Ok(_) => sent += 1,
                    Err(e) => tracing::debug!("Registry [mdns] send via {source}: {e}"),
                }
            }
        }
        if let Some(family) = &self.v6 {
            let socket = family.socket(from);
            for (index, _) in &family.targets {
                let to = SocketAddrV6::new(GROUP_V6, MDNS_PORT, 0, *index);
                match socket.send_to(bytes, to).await {
                    Ok(_) => sent += 1,
                    Err(e) => tracing::debug!("Registry [mdns] send via interface {index}: {e}"),
                }
            }
        }
        sent
    }

    /// The same without waiting, for `Drop`: best effort.
    pub(crate) fn try_multicast(&self, bytes: &[u8]) -> usize {
        let mut sent = 0;
        if let Some(family) = &self.v4 {
            // An async sender may hold the lock; then we take our chance.
            let _guard = family.send_lock.try_lock();
            for (_, source) in &family.targets {
                let Some(source) = source else { continue };
                if SockRef::from(&family.multicast)
                    .set_multicast_if_v4(source)
                    .is_ok()
                    && family
                        .multicast
                        .try_send_to(
                            bytes,
                            SocketAddr::V4(SocketAddrV4::new(GROUP_V4, MDNS_PORT)),
                        )
                        .is_ok()
                {
                    sent += 1;
                }
            }
        }
        if let Some(family) = &self.v6 {
            for (index, _) in &family.targets {
                let to = SocketAddrV6::new(GROUP_V6, MDNS_PORT, 0, *index);
                if family
                    .multicast
                    .try_send_to(bytes, SocketAddr::V6(to))
                    .is_ok()
                {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Unicasts `bytes` to `to` from the port-5353 socket of its family.
    pub(crate) async fn unicast(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let family = match to.ip() {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        };
        let Some(family) = family else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no socket of that family",
            ));
        };
        family.multicast.send_to(bytes, to).await.map(drop)
    }

    /// The sockets to receive on, with what each is for.
    pub(crate) fn receivers(&self) -> Vec<(&UdpSocket, From)> {
        let mut out = Vec::new();
        for family in [&self.v4, &self.v6].into_iter().flatten() {
            out.push((&family.multicast, From::Mdns));
            out.push((&family.unicast, From::Querier));
        }
        out
    }
}

impl Family {
    fn socket(&self, from: From) -> &UdpSocket {
        match from {
            From::Mdns => &self.multicast,
            From::Querier => &self.unicast,
        }
    }
}

fn shared_socket(domain: Domain) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn into_tokio(socket: Socket) -> io::Result<UdpSocket> {
    UdpSocket::from_std(socket.into())
}

fn open_v4(targets: &[(u32, Option<Ipv4Addr>)]) -> io::Result<Family> {
    let multicast = shared_socket(Domain::IPV4)?;
    // Only the groups we join, on the interfaces we chose.
    multicast.set_multicast_all_v4(false)?;
    multicast.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    let mut joined = 0;
    let mut last_error = None;
    for (index, _) in targets {
        match multicast.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(*index)) {
            Ok(()) => joined += 1,
            Err(e) => last_error = Some(e),
        }
    }
    if joined == 0 {
        return Err(last_error.unwrap_or_else(|| io::Error::other("no interface to join")));
    }
    multicast.set_multicast_loop_v4(true)?;
    multicast.set_multicast_ttl_v4(255)?;
    // Room for bursts (many nodes announcing at once); capped by rmem_max.
    let _ = multicast.set_recv_buffer_size(RECV_BUFFER);

    let unicast = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    unicast.set_nonblocking(true)?;
    unicast.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    unicast.set_multicast_loop_v4(true)?;
    unicast.set_multicast_ttl_v4(255)?;
    Ok(Family {
        multicast: into_tokio(multicast)?,
        unicast: into_tokio(unicast)?,
        targets: targets.to_vec(),
        send_lock: tokio::sync::Mutex::new(()),
    })
}

fn open_v6(targets: &[(u32, Option<Ipv4Addr>)]) -> io::Result<Family> {
    let multicast = shared_socket(Domain::IPV6)?;
    multicast.set_only_v6(true)?;
    multicast.set_multicast_all_v6(false)?;
    multicast.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    let mut joined = Vec::new();
    let mut last_error = None;
    for target in targets {
        match multicast.join_multicast_v6(&GROUP_V6, target.0) {
            Ok(()) => joined.push(*target),
            Err(e) => last_error = Some(e),
        }
    }
    if joined.is_empty() {
        return Err(last_error.unwrap_or_else(|| io::Error::other("no interface to join")));
    }
    multicast.set_multicast_loop_v6(true)?;
    multicast.set_multicast_hops_v6(255)?;
    let _ = multicast.set_recv_buffer_size(RECV_BUFFER);

    let unicast = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    unicast.set_only_v6(true)?;
    unicast.set_nonblocking(true)?;
    unicast.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    unicast.set_multicast_loop_v6(true)?;
    unicast.set_multicast_hops_v6(255)?;
    Ok(Family {
        multicast: into_tokio(multicast)?,
        unicast: into_tokio(unicast)?,
        targets: joined,
        send_lock: tokio::sync::Mutex::new(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, loopback: bool, multicast: bool) -> Interface {
        Interface {
            name: name.into(),
            index: 1,
            ipv4: Some(Ipv4Addr::LOCALHOST),
            has_ipv6: false,
            loopback,
            multicast,
        }
    }

    #[test]
    fn choosing_interfaces() {
        let lo = iface("lo", true, false);
        let eth = iface("eth0", false, true);
        let tun = iface("tun0", false, false);
        let all = vec![lo.clone(), eth.clone(), tun.clone()];
        let names = |chosen: Vec<Interface>| -> Vec<String> {
            chosen.into_iter().map(|i| i.name).collect()
        };
        assert_eq!(names(choose(all.clone(), None).expect("default")), ["eth0"]);
        assert_eq!(names(choose(all.clone(), Some("lo")).expect("lo")), ["lo"]);
        assert!(choose(all.clone(), Some("tun0")).is_err());
        assert!(choose(all.clone(), Some("wlan9")).is_err());
        // Offline: loopback only, even without the multicast flag.
        assert_eq!(
            names(choose(vec![lo.clone(), tun.clone()], None).expect("offline")),
            ["lo"]
        );
        // A namespace whose loopback can multicast.
        let lo_mc = iface("lo", true, true);
        assert_eq!(choose(vec![lo_mc.clone()], None).expect("ns"), [lo_mc]);
        assert!(choose(vec![tun], None).is_err());
    }
}
