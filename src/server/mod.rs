//! Listeners: TCP accept, rustls handshake, hyper's HTTP/1.1 or HTTP/2
//! connection as ALPN agreed, per-connection limits and graceful drain.
//! Shared by the client listener and the emulator.
//!
//! The protocol comes from ALPN alone: `h2` is HTTP/2, anything else
//! (`http/1.1`, or no ALPN at all, as with wrk) is HTTP/1.1. RFC 9113 3.3
//! requires HTTP/2 over TLS to be negotiated with ALPN, so there is no
//! conforming client this turns away, and the connection skips hyper-util's
//! protocol sniffing (a buffering read wrapper and a second state machine
//! around every read).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;

/// A client that has not finished its TLS handshake in this long is dropped,
/// so idle half-open sockets cannot pin file descriptors.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1 request headers must arrive within this long (slowloris guard).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Request header block limit (h2). Above hyper's 16 KiB default so an
/// oversized credential reaches the session layer and gets a clear 401 in
/// SMH's shape instead of a bare protocol error; far below anything abusive.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// How long graceful shutdown waits for in-flight requests before giving up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a service learns about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub h2: bool,
}

/// Broadcast shutdown signal: `trigger` once, every listener drains.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|down| *down).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Hooks a listener reports connection events to (metrics live elsewhere).
pub trait ConnObserver: Send + Sync + 'static {
    fn opened(&self, _info: &ConnInfo) {}
    fn closed(&self, _info: &ConnInfo) {}
    fn handshake_failed(&self) {}
}

/// An observer that ignores everything (emulator, admin port).
pub struct NoObserver;
impl ConnObserver for NoObserver {}

/// Serves HTTPS on `listener` until `shutdown`, then drains in-flight
/// connections for up to [`DRAIN_TIMEOUT`]. `make_service` builds the
/// service for each connection once its handshake is done, so it can carry
/// the connection's facts itself. Generic over the response body so the
/// caller's own body type is not boxed a second time per request.
pub async fn serve_tls<F, S, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    make_service: F,
    observer: Arc<dyn ConnObserver>,
    shutdown: Shutdown,
) where
    F: Fn(&ConnInfo) -> S + Send + Sync + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let make_service = Arc::new(make_service);
    let acceptor = TlsAcceptor::from(tls);
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
    let builders = Arc::new((h1, h2));
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();

    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builders = builders.clone();
        let observer = observer.clone();
        let local = local.unwrap_or(remote);
        let watcher = graceful.watcher();
        let make_service = make_service.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                _ => {
                    observer.handshake_failed();
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let info = ConnInfo { remote, local, h2 };
            observer.opened(&info);
            let svc = hyper_util::service::TowerToHyperService::new(make_service(&info));
            let io = TokioIo::new(tls);
            let (h1_builder, h2_builder) = &*builders;
            let ended = if h2 {
                watcher.watch(h2_builder.serve_connection(io, svc)).await
            } else {
                watcher.watch(h1_builder.serve_connection(io, svc)).await
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %remote, "connection ended with error");
            }
            observer.closed(&info);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
    }
}

/// Binds a TCP listener with a clear error naming the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
