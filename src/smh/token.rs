//! TokenService: per-user SMH access tokens from a bounded moka cache.
//!
//! A miss mints through SMH's generate endpoint with the LibrarySecret and
//! the operator's user_id/client_id; concurrent misses for one key share one
//! mint (moka's entry API runs one init future per key). Failures are never
//! cached. Entries expire a safety margin before SMH would expire them and
//! slide on every use, as SMH slides the token itself; a hard maximum age
//! bounds how long one token is slid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;

use crate::body;
use crate::config::Secret;
use crate::metrics::{Metrics, MintOutcome};
use crate::smh::wire::{ErrorBody, TokenResponse};
use crate::upstream::{Upstream, UpstreamError};

/// Token API answers are tiny JSON; anything larger is not SMH.
const MAX_TOKEN_RESPONSE_BYTES: usize = 16 * 1024;
/// A mint that takes longer than this is treated as an outage (503), so a
/// hung token API cannot pin every waiting request for the edge timeout.
pub const MINT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may reuse the token it last looked up before it
/// reads the shared cache again. That read is what slides the cached
/// token's idle expiry; doing it at least this often keeps the cache's
/// view of "in use" true for tokens served from a connection's memo, and
/// bounds how late a capacity eviction is noticed. Invalidations do not
/// wait for it: they bump the service's epoch, which every memo checks.
pub const MEMO_RECHECK: Duration = Duration::from_secs(1);

/// What a token is for. Two requests share a token only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub library: Arc<str>,
    /// Comma-joined SpaceIds, empty for a single-tenant/library-level token.
    pub spaces: Arc<str>,
    pub user_id: Arc<str>,
    pub client_id: Arc<str>,
    /// Comma-joined, sorted SMH grants; empty means read-only.
    pub grant: Arc<str>,
    pub period_secs: u64,
}

#[derive(Debug)]
pub struct CachedToken {
    token: Arc<str>,
    minted_at: Instant,
    idle_ttl: Duration,
}

impl CachedToken {
    pub fn token(&self) -> &Arc<str> {
        &self.token
    }
}

/// Whether a request was served from cache or needed a mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    Hit,
    Miss,
    Reminted,
}

impl TokenOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenOutcome::Hit => "hit",
            TokenOutcome::Miss => "miss",
            TokenOutcome::Reminted => "reminted",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// The token API could not be reached or answered 5xx / garbage: an outage.
    #[error("token API unavailable: {0}")]
    Unavailable(String),
    /// The token API answered a 4xx: our configuration is wrong (secret, library).
    #[error("token API refused: {0}")]
    Rejected(String),
}

/// One library's minting credentials.
#[derive(Clone)]
pub struct MintTarget {
    pub upstream: Upstream,
    pub secret: Secret,
    /// Index of the library's metric handles.
    pub metrics_idx: usize,
}

struct TokenExpiry {
    max_age: Duration,
}

impl Expiry<TokenKey, Arc<CachedToken>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<CachedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.idle_ttl.min(self.max_age))
    }

    fn expire_after_read(
        &self,
        _key: &TokenKey,
        value: &Arc<CachedToken>,
        read_at: Instant,
        _current: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        let age = read_at.saturating_duration_since(value.minted_at);
        Some(value.idle_ttl.min(self.max_age.saturating_sub(age)))
    }
}

#[derive(Clone)]
pub struct TokenService {
    cache: Cache<TokenKey, Arc<CachedToken>>,
    targets: Arc<HashMap<Arc<str>, MintTarget>>,
    margin: Duration,
    max_age: Duration,
    mints: Arc<AtomicU64>,
    /// Bumped whenever a token is dropped before its time (SMH rejected it,
    /// or the cache was flushed), so no connection's memo serves it again.
    epoch: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

/// The token one client connection last used, and until when it may use it
/// again without the shared cache (see [`MEMO_RECHECK`]).
#[derive(Default)]
pub struct TokenMemo(Option<Memoized>);

struct Memoized {
    key: TokenKey,
    token: Arc<CachedToken>,
    epoch: u64,
    reuse_until: Instant,
}

impl TokenService {
    pub fn new(
        targets: HashMap<Arc<str>, MintTarget>,
        capacity: u64,
        margin: Duration,
        max_age: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(TokenExpiry { max_age })
            .build();
        Self {
            cache,
            targets: Arc::new(targets),
            margin,
            max_age,
            mints: Arc::new(AtomicU64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// [`TokenService::get`] through the connection's memo: the token the
    /// connection used last, if the key is the same, nothing was
    /// invalidated since, and it is within its recheck interval, idle
    /// lifetime and maximum age (`now` is when the request arrived).
    pub async fn get_memoized(
        &self,
        key: &TokenKey,
        memo: &mut TokenMemo,
        now: Instant,
    ) -> Result<(Arc<CachedToken>, TokenOutcome), MintError> {
        // Read before the lookup: an invalidation racing with it leaves the
        // memo already stale.
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(m) = &memo.0 {
            if now < m.reuse_until && m.epoch == epoch && m.key == *key {
                return Ok((m.token.clone(), TokenOutcome::Hit));
            }
        }
        // Boxed: the cache's insert-or-mint future is large; inline, it
        // would size every request's future, memo hits included.
        let (token, outcome) = Box::pin(self.get(key)).await?;
        // From `now`, not from when the cache answered: never later than
        // the cache's own idle expiry, which counts from that read.
        let reuse_until =
            (now + MEMO_RECHECK.min(token.idle_ttl)).min(token.minted_at + self.max_age);
        memo.0 = Some(Memoized {
            key: key.clone(),
            token: token.clone(),
            epoch,
            reuse_until,
        });
        Ok((token, outcome))
    }

    /// A token for `key`, minting on a miss (one mint per key at a time).
    pub async fn get(&self, key: &TokenKey) -> Result<(Arc<CachedToken>, TokenOutcome), MintError> {
        let entry = self
            .cache
            .entry_by_ref(key)
            .or_try_insert_with(self.mint(key))
            .await
            .map_err(|e: Arc<MintError>| (*e).clone())?;
        let outcome = if entry.is_fresh() {
            TokenOutcome::Miss
        } else {
            TokenOutcome::Hit
        };
        Ok((entry.into_value(), outcome))
    }

    /// Drops the entry for `key` only if it still holds `stale`: a concurrent
    /// request may already have replaced it with a fresh token.
    pub async fn invalidate_if_same(&self, key: &TokenKey, stale: &Arc<str>) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e)
                        if Arc::ptr_eq(e.value().token(), stale) || e.value().token() == stale =>
                    {
                        Op::Remove
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        // Whether or not this request removed it, `stale` is dead at SMH.
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Total successful mints since start.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Entries now, after applying pending evictions (moka counts lazily).
    pub async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Drops every cached token (used by revocation and tests).
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    async fn mint(&self, key: &TokenKey) -> Result<Arc<CachedToken>, MintError> {
        let target = self.targets.get(&key.library).ok_or_else(|| {
            MintError::Rejected(format!("library {} not configured", key.library))
        })?;
        let started = Instant::now();
        let result = tokio::time::timeout(MINT_TIMEOUT, mint_call(target, key))
            .await
            .unwrap_or_else(|_| Err(MintError::Unavailable("token API timed out".into())));
        let outcome = match &result {
            Ok(_) => MintOutcome::Ok,
            Err(MintError::Unavailable(_)) => MintOutcome::Unavailable,
            Err(MintError::Rejected(_)) => MintOutcome::Rejected,
        };
        self.metrics
            .observe_mint(target.metrics_idx, outcome, started.elapsed());
        let resp = result?;
        self.mints.fetch_add(1, Ordering::Relaxed);
        // Never longer than `max_age`, whatever SMH answers: the lifetime
        // feeds Instant arithmetic and the cache's expiry.
        let lifetime = Duration::from_secs(if resp.expires_in > 0 {
            resp.expires_in
        } else {
            key.period_secs
        })
        .min(self.max_age);
        let idle_ttl = if lifetime > self.margin * 2 {
            lifetime - self.margin
        } else {
            lifetime / 2
        };
        tracing::debug!(library = %key.library, user = %key.user_id, elapsed_ms = started.elapsed().as_millis() as u64, "minted SMH token");
        Ok(Arc::new(CachedToken {
            token: Arc::from(resp.access_token),
            minted_at: started,
            idle_ttl,
        }))
    }
}

/// Calls `GET /api/v1/token` for `key`. The secret goes in the query as SMH
/// documents; this URL is never logged.
async fn mint_call(target: &MintTarget, key: &TokenKey) -> Result<TokenResponse, MintError> {
    let mut q = form_urlencoded_pairs();
    q.push("library_id", &key.library);
    q.push("library_secret", target.secret.expose());
    if !key.spaces.is_empty() {
        q.push("space_id", &key.spaces);
    }
    if !key.user_id.is_empty() {
        q.push("user_id", &key.user_id);
    }
    if !key.client_id.is_empty() {
        q.push("client_id", &key.client_id);
    }
    q.push("period", &key.period_secs.to_string());
    if !key.grant.is_empty() {
        q.push("grant", &key.grant);
    }
    let uri = target
        .upstream
        .uri(&format!("/api/v1/token?{}", q.finish()))
        .map_err(|e| MintError::Rejected(format!("bad token URL: {e}")))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(body::empty())
        .map_err(|e| MintError::Rejected(e.to_string()))?;
    let resp = target.upstream.send(req).await.map_err(|e| match e {
        UpstreamError::Connect(m) | UpstreamError::Request(m) => MintError::Unavailable(m),
    })?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| MintError::Unavailable(format!("reading token response: {e}")))?
        .to_bytes();
    read_mint_answer(status, &bytes)
}

/// What the token API's answer means: a token, an outage (5xx, 429,
/// garbage in a 200), or a refusal of our configuration (other 4xx).
/// Fuzzed (`fuzz/`): these are upstream bytes.
pub fn read_mint_answer(status: StatusCode, bytes: &[u8]) -> Result<TokenResponse, MintError> {
    if status == StatusCode::OK {
        return serde_json::from_slice::<TokenResponse>(bytes).map_err(|e| {
            MintError::Unavailable(format!(
                "token response is not {{accessToken, expiresIn}}: {e}"
            ))
        });
    }
    let code = serde_json::from_slice::<ErrorBody>(bytes)
        .map(|b| b.code)
        .unwrap_or_default();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(MintError::Unavailable(format!("HTTP {status} {code}")))
    } else {
        Err(MintError::Rejected(format!("HTTP {status} {code}")))
    }
}

struct QueryBuilder(String);

fn form_urlencoded_pairs() -> QueryBuilder {
    QueryBuilder(String::with_capacity(256))
}

impl QueryBuilder {
    fn push(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(k);
        self.0.push('=');
        self.0
            .extend(percent_encoding::utf8_percent_encode(v, QUERY_VALUE));
    }
    fn finish(self) -> String {
        self.0
    }
}

/// Characters escaped in token-API query values: everything but unreserved
/// and the comma, which SMH uses as its list separator.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b',');
