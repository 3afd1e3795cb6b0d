//! Where a login comes from, for throttling: the caller's address, or the
//! client address a trusted proxy forwards.
//!
//! user-api passes on the address the gateway saw (`micro-remote-ip`), and
//! other proxies send `x-forwarded-for`. Anyone can send those, so they are
//! believed only from peers in `--trusted_proxies` (CIDR list, default
//! loopback only: user-api on the same host). From any other peer, the
//! source is the peer's own address, so a direct caller cannot pick a new
//! source for every guess.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use tonic::Request;

/// The peers whose forwarded addresses are believed.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Loopback only: `127.0.0.0/8,::1/128`.
    pub const DEFAULT: &'static str = "127.0.0.0/8,::1/128";

    /// No peer is trusted: the source is always the peer's address.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl Default for TrustedProxies {
    /// Loopback only ([`DEFAULT`](Self::DEFAULT)).
    fn default() -> Self {
        TrustedProxies(vec![
            IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
            IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ])
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs or addresses (`10.0.0.0/8,192.168.1.5`);
    /// empty or `none`: trust no one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(TrustedProxies::none());
        }
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .map(|net| net.trunc())
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{part:?} is not an address or CIDR (e.g. 10.0.0.0/8)"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

/// The source of `request`: the forwarded client address when the peer is
/// a trusted proxy (`micro-remote-ip`, else the nearest `x-forwarded-for`
/// hop that is not itself a trusted proxy), else the peer's address.
pub fn source_of<T>(request: &Request<T>, trusted: &TrustedProxies) -> String {
    let Some(peer) = request.remote_addr().map(|a| a.ip().to_canonical()) else {
        return "unknown".to_string();
    };
    if !trusted.contains(peer) {
        return peer.to_string();
    }
    let metadata = request.metadata();
    let header = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(ip) = header("micro-remote-ip") {
        return ip.to_string();
    }
    if let Some(forwarded) = header("x-forwarded-for") {
        let hops: Vec<&str> = forwarded
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let client = hops
            .iter()
            .rev()
            .find(|hop| !hop.parse::<IpAddr>().is_ok_and(|ip| trusted.contains(ip)))
            .or(hops.first());
        if let Some(client) = client {
            return client.to_string();
        }
    }
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_addresses() {
        let list: TrustedProxies = "10.0.0.0/8, 192.168.1.5 ,::1".parse().expect("parse");
        assert!(list.contains("10.200.1.1".parse().expect("ip")));
        assert!(list.contains("192.168.1.5".parse().expect("ip")));
        assert!(!list.contains("192.168.1.6".parse().expect("ip")));
        assert!(list.contains("::1".parse().expect("ip")));
        assert_eq!(list.to_string(), "10.0.0.0/8,192.168.1.5/32,::1/128");
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
        assert_eq!("none".parse::<TrustedProxies>(), Ok(TrustedProxies::none()));
        let default = TrustedProxies::default();
        assert_eq!(default.to_string(), "127.0.0.0/8,::1/128");
        assert_eq!(
            TrustedProxies::DEFAULT.parse::<TrustedProxies>(),
            Ok(default.clone())
        );
        assert!(default.contains("127.9.9.9".parse().expect("ip")));
        assert!(
            default.contains("::ffff:127.0.0.1".parse().expect("ip")),
            "v4-mapped"
        );
        assert!(!default.contains("10.0.0.1".parse().expect("ip")));
    }
}
