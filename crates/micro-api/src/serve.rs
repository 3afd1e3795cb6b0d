//! Serving the gateway: [`micro_serve::serve`] with the gateway's
//! limits ([`ApiOptions`]), and its open connections counted.

use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;

use tokio::net::TcpListener;

pub use micro_serve::RemoteAddr;
use micro_serve::ServeOptions;

use crate::{ApiOptions, Gateway};

pub(crate) async fn serve(
    gateway: &Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let options = serve_options(gateway.options());
    micro_serve::serve(listener, gateway.service(), options, shutdown).await
}

/// The listener limits of the gateway's options.
fn serve_options(options: &ApiOptions) -> ServeOptions {
    ServeOptions {
        max_connections: options.max_connections,
        max_connections_per_ip: options.max_connections_per_ip,
        header_read_timeout: options.header_read_timeout,
        idle_timeout: options.idle_timeout,
        max_headers: options.max_headers,
        max_header_bytes: options.max_header_bytes,
        http2: true,
        tls: options.tls.clone(),
        shutdown_grace: options.shutdown_grace,
        on_connection: Some(|| Box::new(micro_telemetry::api::OpenConnection::new())),
        ..ServeOptions::new("http")
    }
}

/// Room for any IP address as text (IPv6 with an embedded IPv4 is 45 bytes).
pub(crate) const IP_TEXT_LEN: usize = 64;

/// The peer's `ip` as text in `buf`, as `Display` writes it; IPv4 without `fmt` (this
/// runs twice on every api handler request).
pub(crate) fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_LEN]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let (hundreds, tens, ones) = (octet / 100, octet / 10 % 10, octet % 10);
                if hundreds > 0 {
                    buf[len] = b'0' + hundreds;
                    len += 1;
                }
                if hundreds > 0 || tens > 0 {
                    buf[len] = b'0' + tens;
                    len += 1;
                }
                buf[len] = b'0' + ones;
                len += 1;
            }
            len
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // At most 45 bytes: it always fits.
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::{IP_TEXT_LEN, ip_text};
    use std::net::IpAddr;

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut buf = [0u8; IP_TEXT_LEN];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.199",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.168.100.200",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("an IP");
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }
}
