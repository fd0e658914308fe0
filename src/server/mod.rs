//! Listeners: TCP accept under a connection cap, rustls handshake, hyper's
//! HTTP/1.1 or HTTP/2 connection as ALPN agreed, per-connection limits and
//! timeouts, and the two-step drain (lame duck, then stop). Shared by the
//! client listener and the emulator.
//!
//! The protocol comes from ALPN alone: `h2` is HTTP/2, anything else
//! (`http/1.1`, or no ALPN at all, as with wrk) is HTTP/1.1. RFC 9113 3.3
//! requires HTTP/2 over TLS to be negotiated with ALPN, so there is no
//! conforming client this turns away, and the connection skips hyper-util's
//! protocol sniffing (a buffering read wrapper and a second state machine
//! around every read).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;

mod h2watch;
pub use h2watch::FrameWatch;
use h2watch::{BlockState, Watched};

/// A client that has not finished its TLS handshake in this long is dropped,
/// so idle half-open sockets cannot pin file descriptors.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's own limits sit behind the gateway's (which answer 431 and 414
/// in SMH's shape): hyper must read a head whole before the gateway can
/// answer it. Past these, hyper answers a bare 431 or 414 itself.
///
/// Header fields: HTTP/2 decodes up to this many into the request for the
/// gateway to judge. HTTP/1.1 keeps hyper's default of 100 slots: hyper
/// initialises every slot for every request head it parses, and 8,192
/// slots cost 78,000 instructions per request under callgrind — more than
/// the whole proxied request. Over HTTP/1.1 more than 100 fields get
/// hyper's own bare 431.
pub const MAX_HEADERS_BACKSTOP: usize = 8192;
pub const H1_MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES_BACKSTOP: usize = 256 * 1024;
/// hyper refuses request targets of 64 KiB and more by itself.
pub const MAX_URI_BACKSTOP: usize = 60 * 1024;
/// An accept that fails for lack of descriptors or memory is retried after
/// this, doubling up to [`ACCEPT_BACKOFF_MAX`]: no busy loop while the
/// process is out of descriptors, and back within a second once it is not.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Open client connections before new ones are closed at once; the
/// process raises its descriptor limit at start and never plans more than
/// half of it for clients (the rest are for SMH, files and the admin port).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// A request head (HTTP/1.1) or header block (HTTP/2) must be complete
/// this long after it starts, and a new connection must send its first
/// request within it (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 15;
/// An HTTP/2 connection with no open stream is closed after this long;
/// HTTP/1.1 keep-alive waits are bounded by the header-read timeout.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Concurrent streams per HTTP/2 connection: the RFC 9113 recommended
/// minimum, what browsers expect.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// A response that makes no progress this long (the client stopped
/// reading, or gives HTTP/2 no flow-control window) drops its connection;
/// nginx's `send_timeout` default.
pub const DEFAULT_SEND_TIMEOUT_SECS: u64 = 60;
/// How long in-flight requests get to finish once the listener closes.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;

/// Connection limits and timeouts of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub send_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            send_timeout: Duration::from_secs(DEFAULT_SEND_TIMEOUT_SECS),
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
        }
    }
}

/// What a service learns about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub h2: bool,
}

/// Where shutdown stands; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Readiness is false and the listener still accepts; HTTP/1.1
    /// responses carry `Connection: close` so keep-alive clients move on.
    LameDuck,
    /// The listener is closed and connections drain.
    Stopping,
}

/// Broadcast shutdown signal: every listener follows its phase.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Phase>>,
    rx: watch::Receiver<Phase>,
    /// Stopping without a lame duck: idle HTTP/1.1 connections are closed
    /// at once instead of at their next answer or header-read timeout.
    at_once: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(Phase::Running);
        Self {
            tx: Arc::new(tx),
            rx,
            at_once: Arc::default(),
        }
    }
}

impl Shutdown {
    fn advance(&self, to: Phase) {
        self.tx.send_if_modified(|p| {
            let moved = *p < to;
            if moved {
                *p = to;
            }
            moved
        });
    }

    /// Starts the lame-duck period.
    pub fn lame_duck(&self) {
        self.advance(Phase::LameDuck);
    }

    /// Stops accepting; connections drain.
    pub fn trigger(&self) {
        self.advance(Phase::Stopping);
    }

    /// Stops accepting and closes idle connections at once (no lame duck:
    /// `dev`, tests, `limits.lame_duck_secs = 0`).
    pub fn trigger_at_once(&self) {
        self.at_once.store(true, Ordering::Release);
        self.advance(Phase::Stopping);
    }

    fn closes_idle_at_once(&self) -> bool {
        self.at_once.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Returns once the listener is to stop.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|p| *p == Phase::Stopping).await;
    }

    pub fn is_triggered(&self) -> bool {
        self.phase() == Phase::Stopping
    }
}

/// Hooks a listener reports connection events to (metrics live elsewhere).
pub trait ConnObserver: Send + Sync + 'static {
    fn opened(&self, _info: &ConnInfo) {}
    fn closed(&self, _info: &ConnInfo) {}
    fn handshake_failed(&self) {}
    /// A connection closed at once because the listener was at its cap.
    fn refused(&self) {}
    /// `accept` failed for lack of descriptors or memory.
    fn accept_failed(&self) {}
    /// A connection closed by a limit: `"idle"`, `"first_request"`,
    /// `"header_block"` or `"send"`.
    fn timed_out(&self, _why: &'static str) {}
}

/// An observer that ignores everything (emulator, admin port).
pub struct NoObserver;
impl ConnObserver for NoObserver {}

/// What a listener serves each connection with: a service whose futures
/// can be polled in place (the stream accounting wraps them unboxed).
pub trait ConnService<B>:
    tower::Service<
        Request<Incoming>,
        Response = Response<B>,
        Error = Infallible,
        Future: Send + Unpin + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnService<B> for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + Unpin + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The response bodies a listener sends.
pub trait ResponseBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// Serves HTTPS on `listener` until `shutdown` stops it, then drains
/// connections for up to `limits.drain_timeout`. `make_service` builds the
/// service for each connection once its handshake is done, so it can carry
/// the connection's facts itself. Generic over the response body so the
/// caller's own body type is not boxed a second time per request.
pub async fn serve_tls<F, S, B>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    make_service: F,
    observer: Arc<dyn ConnObserver>,
    shutdown: Shutdown,
    limits: Limits,
) where
    F: Fn(&ConnInfo) -> S + Send + Sync + 'static,
    S: ConnService<B>,
    B: ResponseBody,
{
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        builders: builders(&limits),
        make_service,
        observer,
        shutdown: shutdown.clone(),
        limits,
        local: listener.local_addr().ok(),
    });
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let observer = &shared.observer;
        let Some((tcp, remote)) = accept(&listener, &shutdown, &mut backoff, || {
            observer.accept_failed()
        })
        .await
        else {
            break;
        };
        // Over the cap the connection is closed at once rather than left in
        // the backlog: the client (or its load balancer) learns now.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.observer.refused();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.connection(tcp, remote).await;
            drop(slot);
        });
    }
    drop(listener);
    // Every slot back means every connection has ended.
    let drained = slots.acquire_many(max as u32);
    if tokio::time::timeout(shared.limits.drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}

/// The next connection on `listener`, or `None` once `shutdown` stops it.
/// An `accept` that fails for lack of descriptors or memory is retried
/// after a back-off that doubles from [`ACCEPT_BACKOFF_MIN`] to
/// [`ACCEPT_BACKOFF_MAX`] (and resets on success), so a process out of
/// descriptors neither spins nor stays down once they free up.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &Shutdown,
    backoff: &mut Duration,
    on_exhausted: impl Fn(),
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(pair) => {
                *backoff = ACCEPT_BACKOFF_MIN;
                return Some(pair);
            }
            Err(e) if out_of_resources(&e) => {
                if *backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(error = %e, "accept failed: out of descriptors or memory; backing off");
                }
                on_exhausted();
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(*backoff) => {}
                }
                *backoff = (*backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
            // A connection reset before it was accepted, and the like.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

fn out_of_resources(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

fn builders(
    limits: &Limits,
) -> (
    hyper::server::conn::http1::Builder,
    hyper::server::conn::http2::Builder<TokioExecutor>,
) {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // hyper times the wait for a request head from its start, so this also
    // bounds how long a keep-alive connection may sit idle.
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES_BACKSTOP)
        .max_buf_size(MAX_HEADER_BYTES_BACKSTOP + 8192)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // h2 counts 32 bytes per field on top of name and value (RFC 9113 6.5.2).
    let list = MAX_HEADER_BYTES_BACKSTOP + 32 * MAX_HEADERS_BACKSTOP;
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(list as u32);
    (h1, h2)
}

/// What every connection task of one listener shares.
struct Shared<F> {
    acceptor: TlsAcceptor,
    builders: (
        hyper::server::conn::http1::Builder,
        hyper::server::conn::http2::Builder<TokioExecutor>,
    ),
    make_service: F,
    observer: Arc<dyn ConnObserver>,
    shutdown: Shutdown,
    limits: Limits,
    local: Option<SocketAddr>,
}

impl<F> Shared<F> {
    async fn connection<S, B>(&self, tcp: tokio::net::TcpStream, remote: SocketAddr)
    where
        F: Fn(&ConnInfo) -> S,
        S: ConnService<B>,
        B: ResponseBody,
    {
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await
        {
            Ok(Ok(tls)) => tls,
            _ => {
                self.observer.handshake_failed();
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let info = ConnInfo {
            remote,
            local: self.local.unwrap_or(remote),
            h2,
        };
        self.observer.opened(&info);
        let epoch = Instant::now();
        let streams = Arc::new(Streams::new(epoch, self.shutdown.clone(), h2));
        let svc = hyper_util::service::TowerToHyperService::new(Tracked {
            inner: (self.make_service)(&info),
            streams: streams.clone(),
        });
        let (h1_builder, h2_builder) = &self.builders;
        let ended = if h2 {
            let block = Arc::new(BlockState::new(epoch));
            let io = TokioIo::new(Watched::new(tls, block.clone()));
            let conn = h2_builder.serve_connection(io, svc);
            self.drive(conn, Some(&block), &streams).await
        } else {
            let conn = h1_builder.serve_connection(TokioIo::new(tls), svc);
            self.drive(conn, None, &streams).await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, %remote, "connection ended with error");
        }
        self.observer.closed(&info);
    }

    /// Runs one connection to its end under its limits: a response that
    /// makes no progress for the send timeout drops the connection (both
    /// protocols); HTTP/2 also gets its idle, first-request and header-block
    /// rules, and GOAWAY when the listener stops. After a lame duck an
    /// HTTP/1.1 connection is never cut between requests: every answer
    /// since the lame duck began closes it, and an idle one ends at its
    /// header-read timeout, so a request already on its way is answered.
    async fn drive<C>(
        &self,
        conn: C,
        block: Option<&BlockState>,
        streams: &Streams,
    ) -> Result<(), C::Error>
    where
        C: GracefulConnection,
    {
        let limits = &self.limits;
        let h2 = block.is_some();
        let mut conn = std::pin::pin!(conn);
        // Set once a graceful close began: when it must be over by.
        let mut closing_by: Option<Instant> = None;
        let mut stop_seen = false;
        loop {
            let deadline = next_deadline(block, streams, limits, closing_by);
            let opened = async {
                match block {
                    Some(b) => b.opened.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = conn.as_mut() => return ended,
                _ = self.shutdown.wait(), if closing_by.is_none() && !stop_seen => {
                    stop_seen = true;
                    // Read now, not when the branch was armed: the flag is
                    // set together with the stop.
                    if h2 || self.shutdown.closes_idle_at_once() {
                        conn.as_mut().graceful_shutdown();
                        closing_by = Some(Instant::now() + limits.drain_timeout);
                    }
                }
                _ = opened => {}
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if closing_by.is_some_and(|by| now >= by) {
                        return Ok(());
                    }
                    if streams.send_deadline(limits).is_some_and(|at| now >= at) {
                        self.observer.timed_out("send");
                        return Ok(());
                    }
                    let Some(b) = block else { continue };
                    if b.open_since().is_some_and(|t| now >= t + limits.header_read_timeout) {
                        self.observer.timed_out("header_block");
                        return Ok(());
                    }
                    if closing_by.is_none() {
                        if let Some((at, why)) = streams.idle_deadline(limits) {
                            if now >= at {
                                self.observer.timed_out(why);
                                conn.as_mut().graceful_shutdown();
                                closing_by = Some(now + limits.header_read_timeout);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The earliest moment a connection's limits need checking; at the latest
/// the idle timeout from now, when they are looked at again.
fn next_deadline(
    block: Option<&BlockState>,
    streams: &Streams,
    limits: &Limits,
    closing_by: Option<Instant>,
) -> Instant {
    let mut at = Instant::now() + limits.idle_timeout.min(limits.send_timeout);
    if let Some(t) = streams.send_deadline(limits) {
        at = at.min(t);
    }
    if let Some(by) = closing_by {
        at = at.min(by);
    }
    if let Some(b) = block {
        if let Some(t) = b.open_since() {
            at = at.min(t + limits.header_read_timeout);
        }
        if closing_by.is_none() {
            if let Some((idle_at, _)) = streams.idle_deadline(limits) {
                at = at.min(idle_at);
            }
        }
    }
    at
}

/// The streams of one connection: how many are open, how many of those
/// are sending their response, and when a stream last ended or a response
/// last made progress (milliseconds after `epoch`, plus one; 0 for never).
struct Streams {
    epoch: Instant,
    active: AtomicUsize,
    sending: AtomicUsize,
    last_end: AtomicU64,
    last_progress: AtomicU64,
    shutdown: Shutdown,
    h2: bool,
}

impl Streams {
    fn new(epoch: Instant, shutdown: Shutdown, h2: bool) -> Self {
        Self {
            epoch,
            active: AtomicUsize::new(0),
            sending: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            last_progress: AtomicU64::new(0),
            shutdown,
            h2,
        }
    }

    fn now_mark(&self) -> u64 {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        ms.saturating_add(1)
    }

    fn at(&self, mark: u64) -> Instant {
        self.epoch + Duration::from_millis(mark.saturating_sub(1))
    }

    fn progress(&self) {
        self.last_progress.store(self.now_mark(), Ordering::Release);
    }

    fn end(&self, was_sending: bool) {
        let mark = self.now_mark();
        self.last_end.store(mark, Ordering::Release);
        self.last_progress.store(mark, Ordering::Release);
        if was_sending {
            self.sending.fetch_sub(1, Ordering::AcqRel);
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// When a response being sent has gone the send timeout without
    /// progress: a client that stops reading (or, over HTTP/2, gives no
    /// flow-control window) must not hold the connection and its SMH
    /// connection for ever.
    fn send_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.sending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mark = self.last_progress.load(Ordering::Acquire);
        Some(self.at(mark) + limits.send_timeout)
    }

    /// When the connection counts as idle too long, if no stream is open:
    /// a connection that never sent a request gets the header-read
    /// timeout, one that did gets the idle timeout.
    fn idle_deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_end.load(Ordering::Acquire) {
            0 => (self.epoch + limits.header_read_timeout, "first_request"),
            mark => (self.at(mark) + limits.idle_timeout, "idle"),
        })
    }
}

/// Counts a stream open from the call until its response body is done
/// (or dropped: client gone, panic), and as sending once its head is out.
struct StreamGuard {
    streams: Arc<Streams>,
    sending: bool,
}

impl StreamGuard {
    fn sending(&mut self) {
        self.sending = true;
        self.streams.sending.fetch_add(1, Ordering::AcqRel);
        self.streams.progress();
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams.end(self.sending);
    }
}

/// The connection's service, counting its streams and, in the lame-duck
/// phase, closing HTTP/1.1 connections after their current response.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    streams: Arc<Streams>,
}

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.streams.active.fetch_add(1, Ordering::AcqRel);
        TrackedFuture {
            inner: self.inner.call(req),
            guard: Some(StreamGuard {
                streams: self.streams.clone(),
                sending: false,
            }),
        }
    }
}

struct TrackedFuture<F> {
    inner: F,
    guard: Option<StreamGuard>,
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Poll::Ready(Ok(mut resp)) = Pin::new(&mut this.inner).poll(cx) else {
            return Poll::Pending;
        };
        let mut guard = this.guard.take();
        if let Some(g) = &mut guard {
            g.sending();
            if !g.streams.h2 && g.streams.shutdown.phase() >= Phase::LameDuck {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }
        Poll::Ready(Ok(resp.map(|inner| TrackedBody { inner, guard })))
    }
}

struct TrackedBody<B> {
    inner: B,
    guard: Option<StreamGuard>,
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.guard = None,
            Poll::Ready(Some(_)) => {
                if let Some(g) = &this.guard {
                    g.streams.progress();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Binds a TCP listener with a clear error naming the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
