//! A JWKS URL: fetched at start, refreshed in the background, re-fetched
//! (at most every `min_refetch`) when a token names an unknown `kid`, and
//! served stale while the IdP is down — a brief IdP outage must not log
//! everyone out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::keys::{self, Key};
use crate::body;
use crate::upstream::Upstream;

/// Told the outcome of every fetch of the key set (metrics implement it;
/// this module does not know them).
pub trait JwksObserver: Send + Sync {
    /// A fetch finished: `ok` when it replaced the keys.
    fn fetched(&self, ok: bool);
}

/// A JWK Set is a few KiB; refuse to buffer anything absurd.
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// A JWKS fetch that takes longer than this counts as an outage.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RemoteJwks {
    url: String,
    upstream: Upstream,
    path_and_query: String,
    keys: RwLock<Arc<Vec<Key>>>,
    /// True after the last fetch succeeded; false while the IdP is failing.
    healthy: AtomicBool,
    /// Serialises fetches and remembers when the last one started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
    observer: Option<Arc<dyn JwksObserver>>,
}

impl RemoteJwks {
    pub fn new(
        url: &str,
        upstream: Upstream,
        min_refetch: Duration,
        observer: Option<Arc<dyn JwksObserver>>,
    ) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse()?;
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Self {
            url: url.to_string(),
            upstream,
            path_and_query,
            keys: RwLock::new(Arc::new(Vec::new())),
            healthy: AtomicBool::new(false),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
            observer,
        })
    }

    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.read().expect("jwks lock").clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Fetches now (used at start and by the refresher). Keeps the old keys
    /// on failure.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_locked().await
    }

    /// Re-fetches for an unknown `kid` unless one ran within `min_refetch`;
    /// concurrent callers wait for the one fetch in flight.
    pub async fn refetch_for_unknown_kid(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_locked().await {
            tracing::warn!(url = %self.url, error = %e, "JWKS re-fetch for unknown kid failed");
        }
    }

    async fn fetch_locked(&self) -> Result<usize, String> {
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_once())
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        if let Some(o) = &self.observer {
            o.fetched(result.is_ok());
        }
        match result {
            Ok(new_keys) => {
                let n = new_keys.len();
                *self.keys.write().expect("jwks lock") = Arc::new(new_keys);
                self.healthy.store(true, Ordering::Release);
                tracing::debug!(url = %self.url, keys = n, "JWKS fetched");
                Ok(n)
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    async fn fetch_once(&self) -> Result<Vec<Key>, String> {
        let uri = self
            .upstream
            .uri(&self.path_and_query)
            .map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let resp = self.upstream.send(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("HTTP {}", resp.status()));
        }
        let bytes = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        let (keys, skipped) = keys::from_jwks(&bytes)?;
        for s in skipped {
            tracing::debug!(url = %self.url, key = %s, "JWKS key skipped");
        }
        Ok(keys)
    }

    /// Refreshes every `every` until the process ends.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(jwks) = me.upgrade() else { return };
                if let Err(e) = jwks.refresh().await {
                    tracing::warn!(url = %jwks.url, error = %e, "JWKS refresh failed; keeping the keys we have");
                }
            }
        })
    }
}
