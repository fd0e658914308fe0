//! Test hooks: the injectable clock, counters, fault injection and the
//! request/operation logs tests read while the emulator runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sync::lock;
use std::time::{Duration, SystemTime};

use super::tokens::{TokenRecord, TokenStore};

/// One successful mutating operation, with the operator SMH would record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    /// One of the names in [`super::op`].
    pub operation: String,
    pub library_id: String,
    /// Empty for library-level operations (token deletes, space creation).
    pub space_id: String,
    /// Decoded path inside the space; for token operations, empty.
    pub path: String,
    /// The token's user id, or the `user_id` query parameter when an admin
    /// token without a user id acts on behalf of a user.
    pub user_id: String,
    pub client_id: String,
}

/// A request as it reached the SMH API surface, before any interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    /// Raw path, exactly as received (percent-encoding untouched).
    pub path: String,
    /// Raw query, exactly as received, or `None` when the URI had no `?`.
    pub query: Option<String>,
    /// Header names are lowercase (as hyper stores them); values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
}

impl SeenRequest {
    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Thread-safe switches and observations; shared by the running emulator and
/// the test that drives it.
pub struct Hooks {
    clock_offset: Mutex<Duration>,
    tokens: Arc<Mutex<TokenStore>>,
    mints: AtomicU64,
    renews: AtomicU64,
    deletes: AtomicU64,
    data_requests: AtomicU64,
    body_bytes: AtomicU64,
    token_uses: Mutex<HashMap<String, u64>>,
    fail_token: Mutex<HashMap<String, u32>>,
    fail_any_token: Mutex<u32>,
    fail_data: Mutex<(u32, u16)>,
    latency: Mutex<Duration>,
    token_api_latency: Mutex<Duration>,
    token_api_down: AtomicBool,
    secret_rotated: AtomicBool,
    token_api_calls: AtomicU64,
    operations: Mutex<Vec<OperationRecord>>,
    requests: Mutex<Vec<SeenRequest>>,
}

impl Hooks {
    pub(crate) fn new(tokens: Arc<Mutex<TokenStore>>) -> Self {
        Self {
            clock_offset: Mutex::new(Duration::ZERO),
            tokens,
            mints: AtomicU64::new(0),
            renews: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            data_requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            token_uses: Mutex::new(HashMap::new()),
            fail_token: Mutex::new(HashMap::new()),
            fail_any_token: Mutex::new(0),
            fail_data: Mutex::new((0, 500)),
            latency: Mutex::new(Duration::ZERO),
            token_api_latency: Mutex::new(Duration::ZERO),
            token_api_down: AtomicBool::new(false),
            secret_rotated: AtomicBool::new(false),
            token_api_calls: AtomicU64::new(0),
            operations: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        }
    }

    // ---- clock ----

    /// Moves the emulator's "now" forward; every expiry (tokens, upload
    /// targets, signed URLs) is judged against this clock.
    pub fn advance(&self, by: Duration) {
        *lock(&self.clock_offset) += by;
    }

    /// The emulator's current time: wall clock plus everything advanced.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + *lock(&self.clock_offset)
    }

    // ---- counters ----

    /// Successful token generations.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Successful token renewals.
    pub fn renews(&self) -> u64 {
        self.renews.load(Ordering::Relaxed)
    }

    /// Accepted delete-one and delete-user-tokens calls.
    pub fn deletes(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }

    /// Data requests (directory/file/space API) that carried this token
    /// string, whether accepted, forced to fail or refused.
    pub fn token_uses(&self, token: &str) -> u64 {
        lock(&self.token_uses).get(token).copied().unwrap_or(0)
    }

    /// Every request to the directory/file/space API.
    pub fn data_requests(&self) -> u64 {
        self.data_requests.load(Ordering::Relaxed)
    }

    /// Total request body bytes read on the SMH API surface.
    pub fn body_bytes_received(&self) -> u64 {
        self.body_bytes.load(Ordering::Relaxed)
    }

    // ---- token store views ----

    /// Snapshot of the tokens that are live at the emulator's "now".
    pub fn tokens(&self) -> Vec<TokenRecord> {
        let now = self.now();
        lock(&self.tokens).snapshot(now)
    }

    pub fn tokens_for_user(&self, user_id: &str) -> Vec<TokenRecord> {
        self.tokens()
            .into_iter()
            .filter(|t| t.user_id == user_id)
            .collect()
    }

    // ---- fault injection ----

    /// The next `n` data requests carrying `token` answer 403
    /// `InvalidAccessToken`; the token itself stays valid.
    pub fn fail_next_uses(&self, token: &str, n: u32) {
        lock(&self.fail_token).insert(token.to_string(), n);
    }

    /// The next `n` data requests with any valid token answer 403
    /// `InvalidAccessToken`.
    pub fn fail_next_any_token(&self, n: u32) {
        *lock(&self.fail_any_token) = n;
    }

    /// Delay applied to every request (both surfaces) before it is handled.
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.latency) = d;
    }

    /// Extra delay for `/api/v1/token*` only.
    pub fn set_token_api_latency(&self, d: Duration) {
        *lock(&self.token_api_latency) = d;
    }

    /// While down, token endpoints answer 503 `ServerOverloaded`.
    /// The LibrarySecret was changed at SMH (console rotation): the secret
    /// the gateway holds is now wrong and every mint is refused as SMH
    /// refuses a wrong secret.
    pub fn rotate_library_secret(&self) {
        self.secret_rotated.store(true, Ordering::Relaxed);
    }

    /// Calls to the token API (mints, renewals, deletes), answered or not.
    pub fn token_api_calls(&self) -> u64 {
        self.token_api_calls.load(Ordering::Relaxed)
    }

    pub fn set_token_api_down(&self, down: bool) {
        self.token_api_down.store(down, Ordering::Relaxed);
    }

    /// The next `n` data requests answer `status` (a 5xx) before any
    /// authentication happens.
    pub fn fail_next_data_requests(&self, n: u32, status: u16) {
        *lock(&self.fail_data) = (n, status);
    }

    // ---- logs ----

    pub fn operations(&self) -> Vec<OperationRecord> {
        lock(&self.operations).clone()
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.requests).clone()
    }

    /// Forgets recorded requests and operations (counters are kept), so a
    /// test can look at just the traffic of its next step.
    pub fn clear_logs(&self) {
        lock(&self.requests).clear();
        lock(&self.operations).clear();
    }

    // ---- used by the emulator ----

    pub(crate) fn token_store(&self) -> MutexGuard<'_, TokenStore> {
        lock(&self.tokens)
    }

    pub(crate) fn count_mint(&self) {
        self.mints.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_renew(&self) {
        self.renews.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_delete(&self) {
        self.deletes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_data_request(&self) {
        self.data_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_body_bytes(&self, n: u64) {
        self.body_bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_token_use(&self, token: &str) {
        *lock(&self.token_uses).entry(token.to_string()).or_insert(0) += 1;
    }

    /// Consumes one forced failure for this token, if any is pending.
    pub(crate) fn take_token_failure(&self, token: &str) -> bool {
        let mut map = lock(&self.fail_token);
        match map.get_mut(token) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    map.remove(token);
                }
                true
            }
            _ => false,
        }
    }

    pub(crate) fn take_any_token_failure(&self) -> bool {
        let mut n = lock(&self.fail_any_token);
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    }

    /// Consumes one forced 5xx, returning its status.
    pub(crate) fn take_data_failure(&self) -> Option<u16> {
        let mut f = lock(&self.fail_data);
        if f.0 > 0 {
            f.0 -= 1;
            Some(f.1)
        } else {
            None
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    pub(crate) fn token_api_latency(&self) -> Duration {
        *lock(&self.token_api_latency)
    }

    pub(crate) fn secret_rotated(&self) -> bool {
        self.secret_rotated.load(Ordering::Relaxed)
    }

    pub(crate) fn count_token_api_call(&self) {
        self.token_api_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn token_api_is_down(&self) -> bool {
        self.token_api_down.load(Ordering::Relaxed)
    }

    pub(crate) fn record_operation(&self, rec: OperationRecord) {
        lock(&self.operations).push(rec);
    }

    pub(crate) fn record_request(&self, req: SeenRequest) {
        lock(&self.requests).push(req);
    }
}
