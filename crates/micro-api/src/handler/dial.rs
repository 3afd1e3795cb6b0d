//! How the `http` handler's proxy dials a node: plain TCP for `http://`,
//! TLS for `https://` (nodes registered `secure=true`), with the client's
//! TLS settings (`--client_tls_ca`, a certificate for mutual TLS,
//! `--client_tls_server_name`). The certificate must chain to the CA and
//! name the node's address (or the configured name), as for gRPC nodes.
//! The TLS settings are [`ClientTls`]'s, shared with the gRPC client: read
//! again on SIGHUP, taken afresh by each new connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use micro_client::ClientTls;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Dials nodes for the proxy's HTTP/1 client.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    tcp: HttpConnector,
    /// The client's TLS settings, read again on SIGHUP: each connection
    /// takes the current ones.
    tls: Option<ClientTls>,
}

impl Dialer {
    pub(crate) fn new(dial_timeout: Duration, tls: Option<&ClientTls>) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(dial_timeout));
        tcp.set_nodelay(true);
        // `https` URIs are ours to handle.
        tcp.enforce_http(false);
        Dialer {
            tcp,
            tls: tls.cloned(),
        }
    }
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
            let Some(tls) = tls else {
                return Err(io::Error::other(
                    "the node serves TLS (registered secure=true) and the gateway has no \
                     client TLS; set --client_tls_ca (MICRO_CLIENT_TLS_CA)",
                ));
            };
            let host = uri.host().unwrap_or_default();
            let stream = tls.connect(host, tcp.into_inner(), b"http/1.1").await?;
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
