//! TokenService: per-user SMH access tokens from a bounded moka cache.
//!
//! A miss mints through SMH's generate endpoint with the LibrarySecret and
//! the operator's user_id/client_id; concurrent misses for one key share one
//! mint (moka's entry API runs one init future per key). Entries expire a
//! safety margin before SMH would expire them and slide on every use, as SMH
//! slides the token itself; a hard maximum age bounds how long one token is
//! slid.
//!
//! Bounded three ways: entries weigh their bytes, so the cache holds at
//! most `tokens.cache_capacity` entries and about `tokens.cache_max_bytes`;
//! one user holds at most `tokens.max_keys_per_user` keys (devices x grants
//! x libraries), so one session cannot make SMH mint without end; and a
//! mint SMH refused (our configuration is wrong) is remembered for
//! `tokens.refused_retry_secs` rather than asked again on every request.
//! Outages (5xx, timeouts) are never remembered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::Expiry;

use crate::sync::lock;

use crate::body;
use crate::secret::Secret;
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

impl TokenKey {
    /// The bytes of its strings, for the cache's weigher.
    fn bytes(&self) -> u64 {
        (self.library.len()
            + self.spaces.len()
            + self.user_id.len()
            + self.client_id.len()
            + self.session_id.len()
            + self.grant.len()) as u64
    }
}

/// What a token is for. Two requests share a token only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub library: Arc<str>,
    /// Comma-joined SpaceIds, empty for a single-tenant/library-level token.
    pub spaces: Arc<str>,
    pub user_id: Arc<str>,
    pub client_id: Arc<str>,
    /// The session the token is minted for (SMH's `session_id`), so
    /// SMH's per-session delete reaches exactly it; empty when the
    /// session names none.
    pub session_id: Arc<str>,
    /// Comma-joined, sorted SMH grants; empty means read-only.
    pub grant: Arc<str>,
    pub period_secs: u64,
    /// [`MintTarget::generation`] of the settings it was minted with: a
    /// mint begun before a reload changed the library's secret or upstream
    /// lands under its own key, which no later request asks for.
    pub target: u64,
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
    /// The user already holds this many token keys.
    #[error("the user holds {0} token keys (tokens.max_keys_per_user)")]
    TooManyKeys(usize),
}

/// What bounds the token cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub capacity: u64,
    pub max_bytes: u64,
    pub max_keys_per_user: usize,
    pub refused_retry: Duration,
}

/// What one entry costs beyond its strings: moka's entry and node, the
/// key's six `Arc` headers, the `CachedToken` (measured roughly; it only
/// needs to keep the byte bound honest, not exact).
const ENTRY_OVERHEAD_BYTES: u64 = 256;
/// Refused mints remembered at once; a refusal is per key, and the
/// per-user key bound keeps one user from filling this.
const REFUSED_CAPACITY: u64 = 10_000;

/// The keys each user holds in the cache, each with the number of cache
/// entries (or mints under way) holding it: taken before a mint (a
/// reservation), given back when the entry leaves the cache for any reason,
/// replacement included. A key re-minted while its expired entry still
/// waits for removal is briefly held twice and still counts once, so a
/// user at the bound is never refused a key they already hold.
struct UserKeys {
    held: std::sync::Mutex<HashMap<Arc<str>, HashMap<TokenKey, u32>>>,
    max: usize,
}

impl UserKeys {
    fn reserve(self: &Arc<Self>, key: &TokenKey) -> Option<Reservation> {
        let mut held = lock(&self.held);
        let keys = held.entry(key.user_id.clone()).or_default();
        if let Some(n) = keys.get_mut(key) {
            *n += 1;
        } else if keys.len() >= self.max {
            return None;
        } else {
            keys.insert(key.clone(), 1);
        }
        Some(Reservation {
            keys: self.clone(),
            key: key.clone(),
            kept: false,
        })
    }

    fn release(&self, key: &TokenKey) {
        let mut held = lock(&self.held);
        let Some(keys) = held.get_mut(&key.user_id) else {
            return;
        };
        if let Some(n) = keys.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                keys.remove(key);
            }
        }
        if keys.is_empty() {
            held.remove(&key.user_id);
        }
    }
}

/// A held key; given back unless the mint it was for succeeded (the
/// entry's removal gives it back then).
struct Reservation {
    keys: Arc<UserKeys>,
    key: TokenKey,
    kept: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept {
            self.keys.release(&self.key);
        }
    }
}

/// How often a refused key may make the cache process pending removals.
const PENDING_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Lets something happen at most once per interval.
struct Throttle {
    epoch: Instant,
    interval: Duration,
    /// Milliseconds after `epoch` when it may happen again.
    next: AtomicU64,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval,
            next: AtomicU64::new(0),
        }
    }

    fn due(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        let after =
            now.saturating_add(u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX));
        now >= next
            && self
                .next
                .compare_exchange(next, after, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

/// How one mint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintOutcome {
    Ok = 0,
    Unavailable = 1,
    Rejected = 2,
}

/// Told of every mint of one library (its metrics implement it, so the
/// token service does not import them).
pub trait MintObserver: Send + Sync {
    fn minted(&self, outcome: MintOutcome, elapsed: Duration);
}

/// Told of requests the token service answered without asking SMH.
pub trait TokenObserver: Send + Sync {
    /// Answered from the memory of a refused mint.
    fn refusal_remembered(&self);
    /// Refused: the user holds `tokens.max_keys_per_user` keys.
    fn keys_refused(&self);
}

/// One library's minting credentials.
#[derive(Clone)]
pub struct MintTarget {
    pub upstream: Upstream,
    pub secret: Secret,
    /// Changes whenever the library's upstream or secret does (reload).
    pub generation: u64,
    /// The library's metric handles.
    pub metrics: Arc<dyn MintObserver>,
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
    refused: moka::sync::Cache<TokenKey, MintError>,
    users: Arc<UserKeys>,
    pending_flush: Arc<Throttle>,
    margin: Duration,
    max_age: Duration,
    mints: Arc<AtomicU64>,
    /// Bumped whenever a token is dropped before its time (SMH rejected it,
    /// or the cache was flushed), so no connection's memo serves it again.
    epoch: Arc<AtomicU64>,
    metrics: Arc<dyn TokenObserver>,
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
        limits: CacheLimits,
        margin: Duration,
        max_age: Duration,
        metrics: Arc<dyn TokenObserver>,
    ) -> Self {
        let users = Arc::new(UserKeys {
            held: Default::default(),
            max: limits.max_keys_per_user,
        });
        let released = users.clone();
        // Weight in units of the average byte budget per entry: the total
        // weight is the entry count, and an entry weighs at least its bytes
        // over the unit, so both bounds hold.
        let unit = (limits.max_bytes / limits.capacity.max(1)).max(1);
        let cache = Cache::builder()
            .max_capacity(limits.capacity)
            .weigher(move |k: &TokenKey, v: &Arc<CachedToken>| {
                let bytes = ENTRY_OVERHEAD_BYTES + k.bytes() + v.token.len() as u64;
                u32::try_from(bytes.div_ceil(unit)).unwrap_or(u32::MAX)
            })
            // Every removal, replacement included: each entry holds one.
            .eviction_listener(move |k: Arc<TokenKey>, _v, _cause: RemovalCause| {
                released.release(&k);
            })
            .expire_after(TokenExpiry { max_age })
            // A reload that points a library elsewhere drops its tokens.
            .support_invalidation_closures()
            .build();
        let refused = moka::sync::Cache::builder()
            .max_capacity(REFUSED_CAPACITY)
            .time_to_live(limits.refused_retry)
            .build();
        Self {
            cache,
            refused,
            users,
            pending_flush: Arc::new(Throttle::new(PENDING_FLUSH_INTERVAL)),
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
        target: &MintTarget,
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
        let (token, outcome) = Box::pin(self.get(key, target)).await?;
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
    pub async fn get(
        &self,
        key: &TokenKey,
        target: &MintTarget,
    ) -> Result<(Arc<CachedToken>, TokenOutcome), MintError> {
        let entry = self
            .cache
            .entry_by_ref(key)
            .or_try_insert_with(self.mint_bounded(key, target))
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

    /// Drops the cached tokens of `user_id` (of one device or one session
    /// when given), connection memos included (revocation, logout).
    pub fn forget_user(&self, user_id: &str, client_id: Option<&str>, session_id: Option<&str>) {
        let (user, client, session): (Arc<str>, Option<Arc<str>>, Option<Arc<str>>) = (
            Arc::from(user_id),
            client_id.map(Arc::from),
            session_id.map(Arc::from),
        );
        // Only fails when closures are not enabled, which `new` does.
        let _ = self.cache.invalidate_entries_if(move |k, _| {
            k.user_id == user
                && client.as_ref().is_none_or(|c| k.client_id == *c)
                && session.as_ref().is_none_or(|s| k.session_id == *s)
        });
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops the tokens of one library (a reload changed or removed it),
    /// and every remembered refusal (the reload may have fixed the secret).
    /// A mint still in flight under the old settings lands under its old
    /// [`TokenKey::target`], which no new request asks for.
    pub fn forget_library(&self, library: &str) {
        let library: Arc<str> = Arc::from(library);
        // Only fails when closures are not enabled, which `new` does.
        let _ = self
            .cache
            .invalidate_entries_if(move |k, _| k.library == library);
        self.refused.invalidate_all();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// [`Self::mint`] within the user's key bound, remembering a refusal.
    async fn mint_bounded(
        &self,
        key: &TokenKey,
        target: &MintTarget,
    ) -> Result<Arc<CachedToken>, MintError> {
        // Checked on the miss path only: hits never pay for it.
        if let Some(refused) = self.refused.get(key) {
            self.metrics.refusal_remembered();
            return Err(refused);
        }
        let reservation = match self.users.reserve(key) {
            Some(r) => r,
            None => {
                // Expired entries give their keys back when moka processes
                // them; have it do so, at most once a second (it is
                // cache-wide work), before refusing.
                if self.pending_flush.due() {
                    self.cache.run_pending_tasks().await;
                }
                self.users.reserve(key).ok_or_else(|| {
                    self.metrics.keys_refused();
                    MintError::TooManyKeys(self.users.max)
                })?
            }
        };
        let minted = self.mint(key, target).await;
        match &minted {
            Ok(_) => {
                let mut reservation = reservation;
                reservation.kept = true;
            }
            Err(e @ MintError::Rejected(m)) => {
                tracing::error!(
                    library = %key.library,
                    user = %key.user_id,
                    error = %m,
                    retry_secs = self.refused.policy().time_to_live().map_or(0, |d| d.as_secs()),
                    "SMH refused to mint a token; check the library id and secret (answered from memory until the retry)"
                );
                self.refused.insert(key.clone(), e.clone());
            }
            Err(_) => {}
        }
        minted
    }

    async fn mint(
        &self,
        key: &TokenKey,
        target: &MintTarget,
    ) -> Result<Arc<CachedToken>, MintError> {
        let started = Instant::now();
        let result = tokio::time::timeout(MINT_TIMEOUT, mint_call(target, key))
            .await
            .unwrap_or_else(|_| Err(MintError::Unavailable("token API timed out".into())));
        let outcome = match &result {
            Ok(_) => MintOutcome::Ok,
            Err(MintError::Unavailable(_)) => MintOutcome::Unavailable,
            Err(MintError::Rejected(_) | MintError::TooManyKeys(_)) => MintOutcome::Rejected,
        };
        target.metrics.minted(outcome, started.elapsed());
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
    if !key.session_id.is_empty() {
        q.push("session_id", &key.session_id);
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
    let resp = target
        .upstream
        .send(req)
        .await
        .map_err(|e: UpstreamError| MintError::Unavailable(e.to_string()))?;
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

/// Token-API query pairs (also the delete call's).
pub(super) struct QueryBuilder(String);

pub(super) fn form_urlencoded_pairs() -> QueryBuilder {
    QueryBuilder(String::with_capacity(256))
}

impl QueryBuilder {
    pub(super) fn push(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(k);
        self.0.push('=');
        self.0
            .extend(percent_encoding::utf8_percent_encode(v, QUERY_VALUE));
    }
    pub(super) fn finish(self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, device: &str) -> TokenKey {
        TokenKey {
            library: Arc::from("lib"),
            spaces: Arc::from(""),
            user_id: Arc::from(user),
            client_id: Arc::from(device),
            session_id: Arc::from(""),
            grant: Arc::from(""),
            period_secs: 60,
            target: 0,
        }
    }

    fn keep(r: Option<Reservation>) {
        let mut r = r.expect("reserved");
        r.kept = true;
    }

    #[test]
    fn a_user_holds_distinct_keys_up_to_the_bound_and_gets_them_back() {
        let keys = Arc::new(UserKeys {
            held: Default::default(),
            max: 2,
        });
        keep(keys.reserve(&key("alice", "a")));
        keep(keys.reserve(&key("alice", "b")));
        assert!(keys.reserve(&key("alice", "c")).is_none(), "a third key");
        assert!(
            keys.reserve(&key("bob", "a")).is_some(),
            "others unaffected"
        );
        // A key re-minted while its expired entry waits for removal (moka
        // then reports the old entry Replaced or Expired): held twice,
        // counted once, and the user is not refused it.
        keep(keys.reserve(&key("alice", "a")));
        keys.release(&key("alice", "a"));
        assert!(keys.reserve(&key("alice", "c")).is_none());
        // A failed mint gives its reservation back.
        drop(keys.reserve(&key("alice", "b")));
        keys.release(&key("alice", "a"));
        keep(keys.reserve(&key("alice", "c")));
        keys.release(&key("alice", "b"));
        keys.release(&key("alice", "c"));
        assert!(lock(&keys.held).is_empty(), "nothing leaks");
    }
}
