//! One pooled HTTPS client per library: rustls with the public roots plus
//! the library's extra CA, h2 when SMH offers it, http/1.1 otherwise.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::body::Body;

/// Idle pooled connections kept per upstream host; enough for bursts from a
/// gallery page without holding hundreds of sockets open.
pub const POOL_MAX_IDLE_PER_HOST: usize = 256;

#[derive(Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpsConnector<HttpConnector>, Body>,
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
        let tls = crate::tls::client_config(extra_ca, &[])?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        // ALPN offers h2 unless configured off: one multiplexed connection
        // per library, or a pool of http/1.1 keep-alive connections (for
        // upstreams or middleboxes that handle h2 poorly).
        let connector = if http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            scheme,
            authority,
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

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
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
