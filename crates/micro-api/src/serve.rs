//! Serving the gateway's router: [`micro_serve::serve`] with the gateway's
//! limits ([`ApiOptions`]), and its open connections counted.

use std::future::Future;

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
    micro_serve::serve(listener, gateway.router(), options, shutdown).await
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
