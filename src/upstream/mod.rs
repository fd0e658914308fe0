//! One pooled HTTPS client per library: rustls with the public roots plus
//! the library's extra CA; http/1.1 keep-alive through hyper's client
//! connection on our own pool, or h2 when configured and SMH offers it.
//!
//! Every byte to and from SMH goes through hyper: its client re-sends a
//! request only when it was provably never written, frames strictly
//! (RFC 9112), and watches an idle connection for the upstream closing
//! it. A hand-written exchange for bodiless requests saved about a tenth
//! of the instructions per request and was removed for not keeping those
//! guarantees (see the README's "Upstream client").

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::HeaderValue;
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::body::Body;

mod connector;
mod pool;
use connector::TlsConnector;
use pool::{H1Pool, HyperBody};

/// Idle pooled connections kept per upstream host; enough for bursts from a
/// gallery page without holding hundreds of sockets open.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;

#[derive(Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for every HTTP/1.1 request through the pool, made once.
    host: HeaderValue,
    transport: Transport,
    /// How long SMH may send nothing: for the response head of a request
    /// sent whole, and between response body chunks.
    read_timeout: Duration,
    observer: Option<Arc<dyn UpstreamObserver>>,
}

#[derive(Clone)]
enum Transport {
    /// The default, HTTP/1.1 keep-alive with origin-form URIs through
    /// hyper's client connections on our own pool (`pool.rs`).
    H1(Arc<H1Pool>),
    /// `upstream.http2`: hyper-util's client, which multiplexes h2 (and
    /// falls back to http/1.1 when SMH does not offer h2); absolute URIs.
    Negotiated(Duration, Box<Client<TlsConnector, Body>>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}://{})", self.scheme, self.authority)
    }
}

/// Why a call to an upstream failed, as `smh_gateway_upstream_failures_total`
/// labels it: a fixed set, so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamFailure {
    /// No connection: DNS, TCP refused or unreachable, or not established
    /// within `upstream.connect_timeout_secs`.
    Connect,
    /// The TLS handshake failed (an untrusted certificate, a peer that
    /// does not speak TLS).
    Tls,
    /// SMH accepted the request and sent nothing for
    /// `upstream.read_timeout_secs` (no response head, or a stalled body).
    Timeout,
    /// The connection was closed or reset under a request or response.
    Reset,
    /// SMH's bytes are not HTTP the client accepts (a malformed or
    /// oversized head, broken framing).
    Protocol,
}

impl UpstreamFailure {
    /// Every cause, in the order metrics index them.
    pub const ALL: [UpstreamFailure; 5] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Tls,
        UpstreamFailure::Timeout,
        UpstreamFailure::Reset,
        UpstreamFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Protocol => "protocol",
        }
    }

    /// Position in [`UpstreamFailure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an upstream reports about itself. Metrics implement it; the
/// upstream knows nothing of them (the layers point one way).
pub trait UpstreamObserver: Send + Sync {
    /// A call failed (sending, or reading the response body) for `cause`.
    fn failed(&self, cause: UpstreamFailure);
    /// The HTTP/1.1 pool now holds `n` idle connections.
    fn idle_connections(&self, _n: usize) {}
}

/// A failed call: its classified cause (`None` when the request's own body
/// failed: the client's doing, not the upstream's) and the error chain for
/// the log.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    cause: Option<UpstreamFailure>,
    message: String,
}

impl UpstreamError {
    pub fn cause(&self) -> Option<UpstreamFailure> {
        self.cause
    }

    /// A failure to get a connection (dial, TLS, HTTP handshake).
    pub(crate) fn connecting(e: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            cause: classify(Phase::Connect, e),
            message: format!("cannot reach upstream: {}", error_chain(e)),
        }
    }

    /// A failure once a connection was there (writing the request,
    /// reading the response head).
    pub(crate) fn exchanging(e: &(dyn std::error::Error + 'static)) -> Self {
        Self {
            cause: classify(Phase::Exchange, e),
            message: format!("upstream request failed: {}", error_chain(e)),
        }
    }
}

/// Where in a call an error happened: the same I/O error means a different
/// thing before the request could be sent than after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connect,
    Exchange,
}

/// The cause of an upstream error, read from its source chain: the first
/// link that says what happened decides (rustls -> tls; a reset, broken
/// pipe or early EOF -> reset; a timeout; hyper's parse errors -> protocol);
/// a chain that says nothing specific is a connect failure before the
/// request was sent and a protocol failure after. `None`: hyper reports the
/// request's own body failing (the client's stream), which is not the
/// upstream's doing.
pub(crate) fn classify(
    phase: Phase,
    err: &(dyn std::error::Error + 'static),
) -> Option<UpstreamFailure> {
    use std::io::ErrorKind;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return None;
            }
            if h.is_parse() || h.is_parse_status() {
                return Some(UpstreamFailure::Protocol);
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return Some(UpstreamFailure::Reset);
            }
        }
        if e.is::<rustls::Error>() {
            return Some(UpstreamFailure::Tls);
        }
        if e.is::<pool::ReadTimeout>() || e.is::<HeadTimeout>() {
            return Some(UpstreamFailure::Timeout);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return Some(UpstreamFailure::Reset),
                // Before a connection exists a timeout is the connect
                // timeout: SMH could not be reached.
                ErrorKind::TimedOut if phase == Phase::Connect => {
                    return Some(UpstreamFailure::Connect)
                }
                ErrorKind::TimedOut => return Some(UpstreamFailure::Timeout),
                _ => {}
            }
            // `io::Error::source` skips the error it wraps (tokio-rustls
            // wraps rustls' errors this way): look at that error itself.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = e.source();
    }
    Some(match phase {
        Phase::Connect => UpstreamFailure::Connect,
        Phase::Exchange => UpstreamFailure::Protocol,
    })
}

/// The error a request ends with when SMH sends no response head in time.
#[derive(Debug, thiserror::Error)]
#[error("SMH sent no response head for {0:?} (upstream.read_timeout_secs)")]
pub struct HeadTimeout(Duration);

impl Upstream {
    pub fn new(
        base_url: &str,
        extra_ca: &[CertificateDer<'static>],
        connect_timeout: Duration,
        pool_idle: Duration,
        read_timeout: Duration,
        http2: bool,
    ) -> anyhow::Result<Self> {
        Self::build(
            base_url,
            extra_ca,
            connect_timeout,
            pool_idle,
            read_timeout,
            http2,
            None,
        )
    }

    /// [`Upstream::new`] reporting failures and the pool's size to `observer`.
    pub fn observed(
        base_url: &str,
        extra_ca: &[CertificateDer<'static>],
        connect_timeout: Duration,
        pool_idle: Duration,
        read_timeout: Duration,
        http2: bool,
        observer: Arc<dyn UpstreamObserver>,
    ) -> anyhow::Result<Self> {
        Self::build(
            base_url,
            extra_ca,
            connect_timeout,
            pool_idle,
            read_timeout,
            http2,
            Some(observer),
        )
    }

    fn build(
        base_url: &str,
        extra_ca: &[CertificateDer<'static>],
        connect_timeout: Duration,
        pool_idle: Duration,
        read_timeout: Duration,
        http2: bool,
        observer: Option<Arc<dyn UpstreamObserver>>,
    ) -> anyhow::Result<Self> {
        let uri: Uri = base_url.parse()?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("upstream {base_url} has no host"))?;
        if scheme != Scheme::HTTPS {
            anyhow::bail!("upstream {base_url} must be https");
        }
        // ALPN offers h2 only when configured: one multiplexed connection per
        // library, or (the default) a pool of http/1.1 keep-alive connections.
        let alpn: &[&[u8]] = if http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let tls = crate::tls::client_config(extra_ca, alpn)?;
        let connector = TlsConnector::new(tls, connect_timeout);
        let host = HeaderValue::from_str(authority.as_str())?;
        let transport = if http2 {
            Transport::Negotiated(
                read_timeout,
                Box::new(
                    Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .pool_idle_timeout(pool_idle)
                        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                        .timer(TokioTimer::new())
                        .build(connector),
                ),
            )
        } else {
            let target = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()?;
            Transport::H1(Arc::new(H1Pool::new(
                connector,
                target,
                POOL_MAX_IDLE_PER_HOST,
                pool_idle,
                read_timeout,
                observer.clone(),
            )))
        };
        Ok(Self {
            scheme,
            authority,
            host,
            transport,
            read_timeout,
            observer,
        })
    }

    /// The request URI for an upstream path-and-query, in the form the
    /// transport sends.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        self.uri_from(path_and_query.to_owned())
    }

    /// The same for an owned path-and-query, without copying it.
    pub fn uri_from(&self, path_and_query: String) -> Result<Uri, http::Error> {
        let pq = PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query))?;
        let mut parts = http::uri::Parts::default();
        if matches!(self.transport, Transport::Negotiated(..)) {
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query = Some(pq);
        Ok(Uri::from_parts(parts)?)
    }

    /// Sends `req`. A request whose body is whole in memory (every request
    /// but a streamed upload) gets its response head within the read
    /// timeout or fails with [`UpstreamFailure::Timeout`]; a streamed upload
    /// is bounded by the gateway's request timeout instead, since SMH
    /// answers only once the client has sent it all. Failures are reported
    /// to the observer.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let whole = http_body::Body::size_hint(req.body()).exact().is_some();
        let result = if whole {
            match tokio::time::timeout(self.read_timeout, self.send_now(req)).await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::exchanging(&HeadTimeout(self.read_timeout))),
            }
        } else {
            self.send_now(req).await
        };
        if let (Err(e), Some(obs)) = (&result, &self.observer) {
            if let Some(cause) = e.cause() {
                obs.failed(cause);
            }
        }
        result
    }

    async fn send_now(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match &self.transport {
            Transport::H1(pool) => {
                // hyper sends no length for an empty body; a POST or PUT
                // without one is 411 at servers that require it (RFC 9110
                // 8.6: a user agent should send `Content-Length: 0`).
                let needs_zero_length = http_body::Body::is_end_stream(req.body())
                    && (req.method() == http::Method::POST || req.method() == http::Method::PUT);
                let headers = req.headers_mut();
                headers
                    .entry(http::header::HOST)
                    .or_insert_with(|| self.host.clone());
                if needs_zero_length {
                    headers
                        .entry(http::header::CONTENT_LENGTH)
                        .or_insert(HeaderValue::from_static("0"));
                }
                pool.send(req).await
            }
            // hyper-util derives `Host` (h1) or `:authority` (h2) from the
            // absolute URI; an explicit `Host` next to `:authority` is a
            // 400 at nginx-fronted h2 servers.
            // Boxed: the pooled HTTP/1.1 path is the default and the hot
            // one; this arm inline would double the size of every send.
            Transport::Negotiated(read_timeout, client) => {
                match Box::pin(client.request(req)).await {
                    Ok(resp) => {
                        Ok(resp
                            .map(|b| HyperBody::unpooled(b, *read_timeout, self.observer.clone())))
                    }
                    Err(e) if e.is_connect() => Err(UpstreamError::connecting(&e)),
                    Err(e) => Err(UpstreamError::exchanging(&e)),
                }
            }
        }
    }
}

/// An upstream response body: hyper's, returning its connection to the
/// pool at its end.
pub type UpstreamBody = HyperBody;

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
