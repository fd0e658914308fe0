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

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach upstream: {0}")]
    Connect(String),
    #[error("upstream request failed: {0}")]
    Request(String),
}

impl Upstream {
    pub fn new(
        base_url: &str,
        extra_ca: &[CertificateDer<'static>],
        connect_timeout: Duration,
        pool_idle: Duration,
        read_timeout: Duration,
        http2: bool,
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
            )))
        };
        Ok(Self {
            scheme,
            authority,
            host,
            transport,
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

    pub async fn send(
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
                    Ok(resp) => Ok(resp.map(|b| HyperBody::unpooled(b, *read_timeout))),
                    Err(e) if e.is_connect() => Err(UpstreamError::Connect(error_chain(&e))),
                    Err(e) => Err(UpstreamError::Request(error_chain(&e))),
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
