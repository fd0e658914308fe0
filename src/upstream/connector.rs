//! The upstream connector: TCP, then rustls, and nothing else.
//!
//! hyper-util's `HttpConnector` records the socket addresses of every
//! connection and the client copies that record into the extensions of
//! every response (two allocations per proxied request, for data the
//! gateway never reads); this connector reports only what the pool needs:
//! whether ALPN picked h2.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// SMH is HTTPS only; a URL without a port means 443.
const DEFAULT_HTTPS_PORT: u16 = 443;

#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
    /// Bounds DNS, TCP connect and the TLS handshake together.
    connect_timeout: Duration,
}

impl TlsConnector {
    pub fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout,
        }
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = UpstreamConn;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamConn>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let stream = this.connect_stream(&uri).await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(UpstreamConn {
                io: TokioIo::new(stream),
                h2,
            })
        })
    }
}

impl TlsConnector {
    /// A TLS connection to `uri`'s host, within the connect timeout.
    pub async fn connect_stream(&self, uri: &Uri) -> io::Result<TlsStream<TcpStream>> {
        let limit = self.connect_timeout;
        tokio::time::timeout(limit, connect(self.tls.clone(), uri))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {uri} took longer than {limit:?}"),
                ))
            })
    }
}

async fn connect(tls: tokio_rustls::TlsConnector, uri: &Uri) -> io::Result<TlsStream<TcpStream>> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("upstream {uri} is not https"),
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "upstream URI has no host"))?;
    // IPv6 literals come bracketed in URIs; neither DNS nor SNI wants brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(DEFAULT_HTTPS_PORT);
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    // Resolves, then tries each address in turn.
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    tls.connect(server_name, tcp).await
}

/// One TLS connection to SMH.
pub struct UpstreamConn {
    io: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
