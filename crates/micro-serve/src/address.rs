//! Which address to listen on, and which to tell the registry: the rules
//! every listener that registers itself follows (a server's gRPC port, the
//! http broker's inbox).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses a listen address the go way: `:0`, `:8080`, `127.0.0.1:0`,
/// `[::1]:9000`. An empty host means every interface (IPv6 and IPv4).
pub fn parse_listen(address: &str) -> Result<SocketAddr, String> {
    let address = address.trim();
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in listen address {address:?}"))?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    address.parse::<SocketAddr>().map_err(|_| {
        format!("invalid listen address {address:?}: expected host:port with an IP host, or :port")
    })
}

/// Binds `listen`; when it is every IPv6 interface and the host has no
/// IPv6, every IPv4 interface instead.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(listen).await {
        Err(_) if listen.ip().is_unspecified() && listen.is_ipv6() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], listen.port()));
            tokio::net::TcpListener::bind(v4).await
        }
        other => other,
    }
}

/// How the advertised address was chosen, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    Configured,
    Bound,
    Interface(String),
    Loopback,
}

/// The address to register: `advertise` if given (its port defaulting to the
/// bound one), else the bound IP if specific, else the best interface address.
/// Never an unspecified address.
pub fn advertise(advertise: Option<&str>, bound: SocketAddr) -> Result<(String, Chosen), String> {
    if let Some(text) = advertise.map(str::trim).filter(|t| !t.is_empty()) {
        let (host, port) = split_host_port(text)
            .ok_or_else(|| format!("invalid advertise address {text:?}: expected host[:port]"))?;
        let port = port.unwrap_or(bound.port());
        if port == 0 {
            return Err(format!("invalid advertise address {text:?}: port 0"));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && ip.is_unspecified()
        {
            return Err(format!(
                "invalid advertise address {text:?}: {ip} is not reachable; give the host or IP peers should dial"
            ));
        }
        return Ok((join(host, port), Chosen::Configured));
    }
    if !bound.ip().is_unspecified() {
        return Ok((bound.to_string(), Chosen::Bound));
    }
    match pick_interface(bound.ip().is_ipv6()) {
        Some((name, ip)) => Ok((
            SocketAddr::new(ip, bound.port()).to_string(),
            Chosen::Interface(name),
        )),
        None => Ok((
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port()).to_string(),
            Chosen::Loopback,
        )),
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((text, None)),
    }
}

/// Interfaces that are usually not how peers reach this host: container
/// bridges, VPN tunnels, virtual machine networks. go-micro picked the first
/// private address and often advertised one of these by mistake.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker", "br-", "veth", "virbr", "vboxnet", "vmnet", "cni", "flannel", "cali", "tun", "tap",
    "wg", "zt", "utun", "lxc", "lxd", "podman",
];

/// The best non-loopback address: IPv4 before IPv6, physical-looking
/// interfaces before virtual ones, private ranges before public.
fn pick_interface(allow_v6: bool) -> Option<(String, IpAddr)> {
    let interfaces = if_addrs::get_if_addrs().ok()?;
    interfaces
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter(|i| match i.ip() {
            IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
            IpAddr::V6(v6) => allow_v6 && !v6.is_unspecified() && !v6.is_unicast_link_local(),
        })
        .min_by_key(|i| {
            let is_virtual = VIRTUAL_PREFIXES.iter().any(|p| i.name.starts_with(p));
            let is_v6 = i.ip().is_ipv6();
            let is_public = match i.ip() {
                IpAddr::V4(v4) => !v4.is_private(),
                IpAddr::V6(_) => true,
            };
            (is_v6, is_virtual, is_public, i.name.clone())
        })
        .map(|i| (i.name.clone(), i.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_the_go_way() {
        assert_eq!(parse_listen(":0").expect("ok").to_string(), "[::]:0");
        assert_eq!(parse_listen(":8080").expect("ok").port(), 8080);
        assert_eq!(
            parse_listen("127.0.0.1:0").expect("ok").to_string(),
            "127.0.0.1:0"
        );
        assert_eq!(parse_listen("[::1]:9").expect("ok").to_string(), "[::1]:9");
        for bad in ["", ":", ":x", "localhost", "1.2.3.4", ":70000"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn advertise_prefers_configuration_then_the_bound_ip() {
        let bound: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        assert_eq!(
            advertise(Some("10.0.0.5"), bound).expect("ok"),
            ("10.0.0.5:4000".into(), Chosen::Configured)
        );
        assert_eq!(
            advertise(Some("svc.example:9"), bound).expect("ok").0,
            "svc.example:9"
        );
        assert_eq!(
            advertise(Some("[fe80::1]"), bound).expect("ok").0,
            "[fe80::1]:4000"
        );
        assert_eq!(advertise(Some("::1"), bound).expect("ok").0, "[::1]:4000");
        assert_eq!(
            advertise(None, bound).expect("ok"),
            ("127.0.0.1:4000".into(), Chosen::Bound)
        );
    }

    #[test]
    fn advertise_never_names_an_unspecified_address() {
        let bound: SocketAddr = "[::]:4000".parse().expect("addr");
        assert!(advertise(Some("0.0.0.0"), bound).is_err());
        assert!(advertise(Some("[::]:5"), bound).is_err());
        assert!(advertise(Some("host:0"), "0.0.0.0:0".parse().expect("addr")).is_err());
        let (address, _) = advertise(None, bound).expect("ok");
        let ip: SocketAddr = address.parse().expect("socket addr");
        assert!(!ip.ip().is_unspecified(), "{address}");
        assert_eq!(ip.port(), 4000);
    }
}
