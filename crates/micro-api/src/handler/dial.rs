//! How the `http` handler's proxy dials a node: plain TCP for `http://`,
//! TLS for `https://` (nodes registered `secure=true`), with the client's
//! TLS settings (`--client_tls_ca`, a certificate for mutual TLS,
//! `--client_tls_server_name`). The certificate must chain to the CA and
//! name the node's address (or the configured name), as for gRPC nodes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use micro_client::ClientTls;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Dials nodes for the proxy's HTTP/1 client.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    tcp: HttpConnector,
    /// `Err`: TLS was asked for but its settings are unusable (why).
    tls: Option<Result<Tls, Arc<str>>>,
}

#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    pub(crate) fn new(dial_timeout: Duration, tls: Option<&ClientTls>) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(dial_timeout));
        tcp.set_nodelay(true);
        // `https` URIs are ours to handle.
        tcp.enforce_http(false);
        let tls = tls.map(|tls| {
            let made = tls_config(tls);
            if let Err(reason) = &made {
                tracing::error!("the proxy cannot dial TLS nodes: {reason}");
            }
            made.map_err(Arc::from)
        });
        Dialer { tcp, tls }
    }
}

fn tls_config(tls: &ClientTls) -> Result<Tls, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls.ca.der() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{}: {e}", tls.ca.path().display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(micro_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match &tls.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.der().to_vec(), key.der())
            .map_err(|e| format!("{}: {e}", chain.path().display()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = tls
        .server_name
        .as_deref()
        .map(|name| {
            ServerName::try_from(name.to_string())
                .map_err(|e| format!("--client_tls_server_name {name}: {e}"))
        })
        .transpose()?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

impl tower::Service<Uri> for Dialer {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let secure = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = self.tls.clone();
        let tcp = self.tcp.call(uri.clone());
        Box::pin(async move {
            let tcp = tcp.await.map_err(io::Error::other)?;
            if !secure {
                return Ok(Stream::Plain(tcp));
            }
            let tls = match tls {
                Some(Ok(tls)) => tls,
                Some(Err(reason)) => {
                    return Err(io::Error::other(format!(
                        "the proxy's TLS settings are unusable: {reason}"
                    )));
                }
                None => {
                    return Err(io::Error::other(
                        "the node serves TLS (registered secure=true) and the gateway has no \
                         client TLS; set --client_tls_ca (MICRO_CLIENT_TLS_CA)",
                    ));
                }
            };
            let name = match tls.server_name {
                Some(name) => name,
                None => {
                    let host = uri.host().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    ServerName::try_from(host.to_string()).map_err(io::Error::other)?
                }
            };
            let stream = tls.connector.connect(name, tcp.into_inner()).await?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to a node.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => tls.inner().get_ref().0.connected(),
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
