//! One pooled HTTPS client per library: rustls with the public roots plus
//! the library's extra CA; http/1.1 keep-alive, or h2 when configured and
//! SMH offers it.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::HeaderValue;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::body::Body;

mod connector;
use connector::TlsConnector;

/// Idle pooled connections kept per upstream host; enough for bursts from a
/// gallery page without holding hundreds of sockets open.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;

#[derive(Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for every request, made once: left to the client, it is
    /// formatted afresh per request.
    host: HeaderValue,
    client: Client<TlsConnector, Body>,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            scheme,
            authority,
            host,
            client,
        })
    }

    /// Absolute URI for an upstream path-and-query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }

    /// Absolute URI for an owned path-and-query, without copying it.
    pub fn uri_from(&self, path_and_query: String) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(
            path_and_query,
        ))?);
        Ok(Uri::from_parts(parts)?)
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        req.headers_mut()
            .entry(http::header::HOST)
            .or_insert_with(|| self.host.clone());
        self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                UpstreamError::Connect(error_chain(&e))
            } else {
                UpstreamError::Request(error_chain(&e))
            }
        })
    }
}

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
