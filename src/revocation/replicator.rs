//! Sharing revocations between replicas through Redis.
//!
//! # Data layout
//!
//! - One key per revocation, `smh-gateway:revocation:<id>`, holding the
//!   [`Revocation`] as JSON, written with `SETEX` for `expires_at - now`
//!   seconds. Chosen over a hash plus a sorted set by expiry because Redis
//!   then expires entries itself: no replica has to prune the store, no
//!   clean-up has to be coordinated, a write is one idempotent command, and
//!   it works on any Redis from 2.x on (managed ones included). The cost is
//!   that a reload walks the keyspace with `SCAN MATCH` and reads each page
//!   with pipelined `GETRANGE` (so no value larger than
//!   [`MAX_MESSAGE_BYTES`] is read whole), which is fine for a store of at
//!   most tens of thousands of small keys read only at (re)connect.
//! - The channel `smh-gateway:revocations` carries
//!   `{"published_at_ms": <u64>, "revocation": {...}}`; the publish time
//!   gives the lag between a write on one replica and its application on
//!   another.
//!
//! # Task model
//!
//! [`Replicator::start`] spawns one tokio task that owns two connections:
//! a RESP2 pub/sub connection (`SUBSCRIBE`, plus a `PING` every
//! [`PING_INTERVAL`] so a silent network failure is noticed) and a
//! multiplexed command connection (`SCAN`, `GETRANGE`, `SETEX`, `PUBLISH`),
//! both with connect and response timeouts. Any failure on either drops
//! both and reconnects with capped, jittered exponential back-off. The
//! request path never touches this task: it reads the
//! [`RevocationList`], and [`Replicator::publish`] only pushes onto a
//! bounded queue and wakes the task.

use super::{unix_now, unix_now_ms, Revocation, RevocationError, RevocationList, MAX_ID_BYTES};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Prefix of the per-revocation keys (`<prefix><id>`).
pub const KEY_PREFIX: &str = "smh-gateway:revocation:";
/// The pub/sub channel every replica subscribes to.
pub const CHANNEL: &str = "smh-gateway:revocations";
/// Revocations waiting for Redis, at most. Why this number: a revocation is
/// an operator's or a user's deliberate act; ten thousand of them during
/// one Redis outage on one replica is far beyond any real outage, and the
/// queue then holds at most ~20 MB. Past it [`Replicator::publish`] refuses
/// (the entry still applies locally, and the repair after reconnect still
/// writes every live local entry the store lacks).
pub const MAX_PENDING: usize = 10_000;
/// Largest message or stored value read from Redis, in bytes. An entry's
/// fields are bounded (ids 256 bytes, reason 1 KiB), so a real one is well
/// under 2 KiB; anything larger is refused before it is parsed.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Time to open a connection (TCP, TLS, AUTH). Redis sits next to the
/// gateway; longer than this means it is not answering.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one command or pipeline to answer; past it the connection is
/// treated as broken and replaced.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscription is pinged. A closed socket is seen at once;
/// this bounds how long a silently broken one (a dropped route, a frozen
/// server) can hide missed messages.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// First reconnect delay: short, since most drops are a restart or a
/// fail-over that is over quickly.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay: a Redis that comes back is used within this
/// (plus jitter below it), while a Redis that stays away costs one attempt
/// per replica every few seconds.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Keys asked for per `SCAN` step (and values read per pipeline) during a
/// reload.
const SCAN_COUNT: usize = 1000;
/// Entries written per pipeline when flushing or repairing.
const WRITE_BATCH: usize = 100;

/// Where the replicator connects and who it is.
#[derive(Clone)]
pub struct ReplicatorConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://...` for TLS;
    /// `redis://user:password@...` for an ACL user. It may hold a
    /// password: it is never shown in `Debug`, logs or errors.
    pub url: String,
    /// PEM roots to trust for `rediss://` instead of the compiled-in
    /// public roots (a private CA, as managed Redis services often use).
    pub root_ca_pem: Option<Vec<u8>>,
    /// This replica's id, written into the `origin` of what it makes.
    pub replica_id: String,
    /// How often the subscription is pinged ([`PING_INTERVAL`] unless a
    /// test wants it faster).
    pub ping_interval: Duration,
}

impl ReplicatorConfig {
    /// `url` with the compiled-in roots and the default ping interval.
    pub fn new(url: impl Into<String>, replica_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            root_ca_pem: None,
            replica_id: replica_id.into(),
            ping_interval: PING_INTERVAL,
        }
    }
}

impl fmt::Debug for ReplicatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatorConfig")
            .field("url", &redact_url(&self.url))
            .field("root_ca_pem", &self.root_ca_pem.as_ref().map(|p| p.len()))
            .field("replica_id", &self.replica_id)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

/// The replicator could not be set up (nothing was started).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("revocation Redis URL {url}: {reason}")]
    Url { url: String, reason: String },
}

/// The Redis side as this replica sees it. Times are Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// No Redis configured: revocation is local to this process. Never
    /// reported by a [`Replicator`] (none runs then); for the caller's
    /// `/readyz` and metrics.
    Disabled,
    /// Not yet in sync since start: the store has not been loaded, so
    /// revocations made elsewhere before this replica started may be
    /// unknown here.
    Connecting { since: u64 },
    /// Subscribed and reloaded: this replica has everything Redis has.
    Connected { since: u64 },
    /// Was in sync, lost Redis at `since`; serving on the local list,
    /// queueing what is made here, reconnecting.
    Degraded { since: u64 },
}

impl RedisState {
    /// A stable name for metrics and `/readyz`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Connecting { .. } => "connecting",
            Self::Connected { .. } => "connected",
            Self::Degraded { .. } => "degraded",
        }
    }
}

/// How an entry new to this replica reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedFrom {
    /// A pub/sub message.
    Message,
    /// The reload of the store at (re)connect.
    Reload,
}

/// What the `on_applied` callback is told besides the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedInfo {
    pub from: AppliedFrom,
    /// Milliseconds from the publishing replica's `PUBLISH` to this
    /// replica's application (messages only; the two clocks' skew is in
    /// it, and it is clamped at 0).
    pub lag_ms: Option<u64>,
}

/// Called on the replicator task for every entry from Redis that is new to
/// this replica (already inserted in the list when called); the place to
/// drop that user's cached tokens and sessions. It must return quickly and
/// never block (spawn for anything slow). A panic in it is caught and
/// logged. Entries this replica made itself come back from Redis but are
/// not new, so the callback does not see them.
pub type OnApplied = Arc<dyn Fn(&Revocation, &AppliedInfo) + Send + Sync>;

/// Counters and gauges for metrics, read at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatorStats {
    pub state: RedisState,
    /// Revocations made here waiting to be written to Redis.
    pub pending: usize,
    /// Unix seconds of the last moment this replica was known to be in
    /// sync (a reload finished, a ping or write answered); `None` before
    /// the first.
    pub last_sync_unix: Option<u64>,
    /// Messages read from the channel and handled (own echoes and
    /// duplicates included).
    pub received: u64,
    /// Entries from Redis (messages or reloads) new to this replica.
    pub applied: u64,
    /// Entries from Redis refused: oversized, unparsable, invalid, or the
    /// list was full (an alert: this replica then refuses less than
    /// others).
    pub refused: u64,
    /// Entries written to Redis (pending flushes and repairs).
    pub written: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts (or sessions) that failed.
    pub failures: u64,
    /// Subscription pings answered.
    pub pings: u64,
    /// Lag of the last applied message, see [`AppliedInfo::lag_ms`].
    pub last_lag_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Message {
    published_at_ms: u64,
    revocation: Revocation,
}

const NONE: u64 = u64::MAX;

struct Shared {
    list: Arc<RevocationList>,
    replica_id: String,
    on_applied: OnApplied,
    ping_interval: Duration,
    /// The password from the URL, to scrub from error texts.
    password: Option<String>,
    /// Where Redis is, without credentials, for logs.
    addr: String,
    pending: Mutex<VecDeque<Revocation>>,
    pending_len: AtomicUsize,
    wake: Notify,
    state: watch::Sender<RedisState>,
    /// Bumped on every change a test or an exporter may wait for.
    events: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
    last_sync: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    refused: AtomicU64,
    written: AtomicU64,
    reconnects: AtomicU64,
    failures: AtomicU64,
    pings: AtomicU64,
    last_lag_ms: AtomicU64,
}

impl Shared {
    fn bump(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn set_state(&self, s: RedisState) {
        self.state.send_replace(s);
        self.bump();
    }

    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "<redacted>"),
            _ => text,
        }
    }
}

/// The running replication of one [`RevocationList`] through Redis.
/// Dropping it stops the task (nothing is flushed).
pub struct Replicator {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Replicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicator")
            .field("redis", &self.shared.addr)
            .field("replica_id", &self.shared.replica_id)
            .field("state", &self.state())
            .field("pending", &self.pending())
            .finish()
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Replicator {
    /// Parses the URL and spawns the replication task on the current tokio
    /// runtime; returns at once (connecting happens in the background, see
    /// [`Self::state`]). Fails only for a URL or CA that cannot be used.
    pub fn start(
        config: ReplicatorConfig,
        list: Arc<RevocationList>,
        on_applied: OnApplied,
    ) -> Result<Self, StartError> {
        let bad = |reason: String| StartError::Url {
            url: redact_url(&config.url),
            reason,
        };
        let client = match &config.root_ca_pem {
            None => Client::open(config.url.as_str()),
            Some(pem) => Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        };
        let password = url_password(&config.url);
        let scrub = |e: RedisError| match &password {
            Some(p) if !p.is_empty() => e.to_string().replace(p.as_str(), "<redacted>"),
            _ => e.to_string(),
        };
        let client = client.map_err(|e| bad(scrub(e)))?;
        let info = client.get_connection_info();
        let password = info
            .redis_settings()
            .password()
            .map(str::to_owned)
            .or(password);
        let now = unix_now();
        let shared = Arc::new(Shared {
            list,
            replica_id: config.replica_id,
            on_applied,
            ping_interval: config.ping_interval.max(Duration::from_millis(1)),
            password,
            addr: info.addr().to_string(),
            pending: Mutex::new(VecDeque::new()),
            pending_len: AtomicUsize::new(0),
            wake: Notify::new(),
            state: watch::channel(RedisState::Connecting { since: now }).0,
            events: watch::channel(0).0,
            last_error: Mutex::new(None),
            last_sync: AtomicU64::new(NONE),
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            written: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            last_lag_ms: AtomicU64::new(NONE),
        });
        let task = tokio::spawn(run(shared.clone(), client));
        Ok(Self {
            shared,
            task: Some(task),
        })
    }

    /// Queues `rev` for Redis (store, then publish) and returns at once;
    /// it does not touch the local list (see [`Self::revoke`]). While Redis
    /// is away the entry waits (in order) and is written once it is back.
    /// Refused when invalid or when [`MAX_PENDING`] entries already wait.
    pub fn publish(&self, rev: Revocation) -> Result<(), RevocationError> {
        rev.validate()?;
        {
            let mut q = crate::sync::lock(&self.shared.pending);
            if q.len() >= MAX_PENDING {
                return Err(RevocationError::PendingFull { max: MAX_PENDING });
            }
            q.push_back(rev);
            self.shared.pending_len.store(q.len(), Ordering::Release);
        }
        self.shared.wake.notify_one();
        self.shared.bump();
        Ok(())
    }

    /// The origin's whole act: inserts `rev` in the local list (so this
    /// replica refuses at once) and, if it is new, publishes it. `Ok(true)`
    /// when it was new. A full queue after a successful insert is returned
    /// as the error: the entry applies here but is not (yet) shared.
    pub fn revoke(&self, rev: Revocation, now: u64) -> Result<bool, RevocationError> {
        if !self.shared.list.insert(rev.clone(), now)? {
            return Ok(false);
        }
        self.publish(rev)?;
        Ok(true)
    }

    pub fn list(&self) -> &Arc<RevocationList> {
        &self.shared.list
    }

    pub fn replica_id(&self) -> &str {
        &self.shared.replica_id
    }

    pub fn state(&self) -> RedisState {
        *self.shared.state.borrow()
    }

    /// Follows [`Self::state`] (for a `/readyz` that pushes, or a gauge).
    pub fn state_changes(&self) -> watch::Receiver<RedisState> {
        self.shared.state.subscribe()
    }

    /// Changes whenever a state, counter or the queue changes: wait on it
    /// (with a timeout) instead of sleeping.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.events.subscribe()
    }

    pub fn pending(&self) -> usize {
        self.shared.pending_len.load(Ordering::Acquire)
    }

    /// The last connection or command error, credentials scrubbed.
    pub fn last_error(&self) -> Option<String> {
        crate::sync::lock(&self.shared.last_error).clone()
    }

    pub fn stats(&self) -> ReplicatorStats {
        let s = &self.shared;
        let opt = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|v| *v != NONE);
        ReplicatorStats {
            state: self.state(),
            pending: self.pending(),
            last_sync_unix: opt(&s.last_sync),
            received: s.received.load(Ordering::Acquire),
            applied: s.applied.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            pings: s.pings.load(Ordering::Relaxed),
            last_lag_ms: opt(&s.last_lag_ms),
        }
    }

    /// Stops the task and waits for it to end.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The replication loop: connect, serve, back off, again, until aborted.
async fn run(shared: Arc<Shared>, client: Client) {
    let mut backoff = BACKOFF_INITIAL;
    let mut ever_connected = false;
    loop {
        let mut reached = false;
        let err = serve(&shared, &client, &mut reached, ever_connected).await;
        shared.failures.fetch_add(1, Ordering::Relaxed);
        let text = shared.scrub(err.to_string());
        let now = unix_now();
        let repeated = crate::sync::lock(&shared.last_error).as_deref() == Some(text.as_str());
        match *shared.state.borrow() {
            RedisState::Connected { .. } => {
                tracing::warn!(redis = %shared.addr, error = %text,
                    "revocation Redis lost; serving on the local list and reconnecting");
            }
            // Each new reason once; the same one again at every back-off
            // step would only fill the log.
            _ if !repeated => tracing::warn!(redis = %shared.addr, error = %text,
                "revocation Redis unavailable; serving on the local list and retrying"),
            _ => tracing::debug!(redis = %shared.addr, error = %text,
                "revocation Redis connection attempt failed"),
        }
        *crate::sync::lock(&shared.last_error) = Some(text);
        if reached {
            ever_connected = true;
            backoff = BACKOFF_INITIAL;
        }
        let next = match *shared.state.borrow() {
            RedisState::Connected { .. } => Some(RedisState::Degraded { since: now }),
            _ => None,
        };
        match next {
            Some(s) => shared.set_state(s),
            None => shared.bump(),
        }
        // Full jitter in the upper half, so replicas that lost Redis
        // together do not come back in lock step.
        let half = backoff / 2;
        let jitter = Duration::from_millis(rand::random::<u64>() % (half.as_millis() as u64 + 1));
        tokio::time::sleep(half + jitter).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn timed_out() -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "timed out"))
}

async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// One connected session; returns the error that ended it. `reached` is
/// set once the replica is in sync.
async fn serve(
    shared: &Shared,
    client: &Client,
    reached: &mut bool,
    ever_connected: bool,
) -> RedisError {
    match serve_inner(shared, client, reached, ever_connected).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

async fn serve_inner(
    shared: &Shared,
    client: &Client,
    reached: &mut bool,
    ever_connected: bool,
) -> Result<Never, RedisError> {
    // Subscribe first, so nothing published from here on is missed ...
    let pubsub = within(CONNECT_TIMEOUT, client.get_async_pubsub()).await?;
    let (mut sink, mut stream) = pubsub.split();
    within(COMMAND_TIMEOUT, sink.subscribe(CHANNEL)).await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    let mut conn = within(
        CONNECT_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    // ... then load what was stored before (and while we were away) ...
    let now = unix_now();
    let local: Vec<Arc<Revocation>> = shared.list.active_shared(now);
    let mut missing: HashSet<Arc<str>> = local.iter().map(|r| r.id.as_str().into()).collect();
    reload(shared, &mut conn, &mut missing).await?;
    // ... give the store back what only this replica still has (a Redis
    // restarted without persistence, a fail-over that lost writes) ...
    let repair: Vec<Revocation> = local
        .iter()
        .filter(|r| missing.contains(r.id.as_str()))
        .map(|r| (**r).clone())
        .collect();
    for chunk in repair.chunks(WRITE_BATCH) {
        write(shared, &mut conn, chunk).await?;
    }
    {
        // Every live local entry is now in the store; queued ones among
        // them need no second write.
        let stored: HashSet<&str> = local.iter().map(|r| r.id.as_str()).collect();
        let mut q = crate::sync::lock(&shared.pending);
        q.retain(|r| !stored.contains(r.id.as_str()));
        shared.pending_len.store(q.len(), Ordering::Release);
    }
    *reached = true;
    if ever_connected {
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    let now = unix_now();
    shared.last_sync.store(now, Ordering::Relaxed);
    *crate::sync::lock(&shared.last_error) = None;
    shared.set_state(RedisState::Connected { since: now });
    tracing::info!(redis = %shared.addr, "revocation Redis connected and in sync");
    // ... and only then flush what was made here meanwhile.
    flush(shared, &mut conn).await?;

    let mut ping = tokio::time::interval(shared.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => on_message(shared, msg.get_payload_bytes()),
                None => {
                    return Err(RedisError::from((
                        redis::ErrorKind::Io,
                        "subscription connection closed",
                    )))
                }
            },
            () = shared.wake.notified() => flush(shared, &mut conn).await?,
            _ = ping.tick() => {
                within(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await?;
                shared.last_sync.store(unix_now(), Ordering::Relaxed);
                shared.pings.fetch_add(1, Ordering::Relaxed);
                shared.bump();
                // A wake-up lost in a race is caught here at the latest.
                flush(shared, &mut conn).await?;
            }
        }
    }
}

/// Loads every stored entry into the list; removes the ids it saw from
/// `missing`.
async fn reload(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    missing: &mut HashSet<Arc<str>>,
) -> Result<(), RedisError> {
    let pattern = format!("{KEY_PREFIX}*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = within(
            COMMAND_TIMEOUT,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn),
        )
        .await?;
        // A key longer than any we write is not ours (nor is it read).
        let (keys, odd): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| k.len() <= KEY_PREFIX.len() + MAX_ID_BYTES);
        for key in &odd {
            refuse_stored(shared, key);
        }
        if !keys.is_empty() {
            // GETRANGE rather than MGET: at most MAX_MESSAGE_BYTES + 1 bytes
            // of each value cross the wire, whatever the store holds.
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(MAX_MESSAGE_BYTES);
            }
            let values: Vec<Vec<u8>> = within(COMMAND_TIMEOUT, pipe.query_async(conn)).await?;
            let mut batch = Vec::with_capacity(keys.len());
            for (key, value) in keys.iter().zip(values) {
                // Empty: gone between SCAN and GETRANGE (expired, deleted).
                if value.is_empty() {
                    continue;
                }
                match parse_stored(key, &value) {
                    Some(rev) => {
                        missing.remove(rev.id.as_str());
                        batch.push(rev);
                    }
                    None => refuse_stored(shared, key),
                }
            }
            let now = unix_now();
            let answers = shared.list.insert_many(batch.clone(), now);
            for (rev, answer) in batch.iter().zip(answers) {
                applied(
                    shared,
                    rev,
                    answer,
                    AppliedInfo {
                        from: AppliedFrom::Reload,
                        lag_ms: None,
                    },
                );
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn refuse_stored(shared: &Shared, key: &str) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let shown: String = key.chars().take(KEY_PREFIX.len() + MAX_ID_BYTES).collect();
    tracing::warn!(key = %shown.escape_debug(), "unusable revocation in Redis ignored");
}

fn parse_stored(key: &str, value: &[u8]) -> Option<Revocation> {
    if value.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let rev: Revocation = serde_json::from_slice(value).ok()?;
    // The key names the entry; a body under another id is not ours.
    (key.strip_prefix(KEY_PREFIX) == Some(rev.id.as_str())).then_some(rev)
}

fn on_message(shared: &Shared, payload: &[u8]) {
    // `received` counts a message once it is handled, so a reader who sees
    // it counted also sees its effect.
    let msg = (payload.len() <= MAX_MESSAGE_BYTES)
        .then(|| serde_json::from_slice::<Message>(payload).ok())
        .flatten();
    let Some(msg) = msg else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bytes = payload.len(), "unusable revocation message ignored");
        shared.received.fetch_add(1, Ordering::Release);
        shared.bump();
        return;
    };
    let lag_ms = unix_now_ms().saturating_sub(msg.published_at_ms);
    let answer = shared.list.insert(msg.revocation.clone(), unix_now());
    if matches!(answer, Ok(true)) {
        shared.last_lag_ms.store(lag_ms, Ordering::Relaxed);
    }
    applied(
        shared,
        &msg.revocation,
        answer,
        AppliedInfo {
            from: AppliedFrom::Message,
            lag_ms: Some(lag_ms),
        },
    );
    shared.received.fetch_add(1, Ordering::Release);
    shared.bump();
}

fn applied(
    shared: &Shared,
    rev: &Revocation,
    answer: Result<bool, RevocationError>,
    info: AppliedInfo,
) {
    match answer {
        Ok(true) => {
            shared.applied.fetch_add(1, Ordering::Relaxed);
            let cb = &shared.on_applied;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(rev, &info)));
            if run.is_err() {
                tracing::error!(revocation = %rev.id, "the on_applied callback panicked");
            }
        }
        Ok(false) => {}
        Err(e) => {
            // Logged for the first and then every 1000th: a full list
            // during a reload would otherwise log every entry.
            if shared
                .refused
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                tracing::error!(revocation = %rev.id.escape_debug(), error = %e,
                    "revocation from Redis not applied on this replica");
            }
        }
    }
}

/// Writes the queued entries, oldest first, until the queue is empty.
async fn flush(shared: &Shared, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
    loop {
        let batch: Vec<Revocation> = crate::sync::lock(&shared.pending)
            .iter()
            .take(WRITE_BATCH)
            .cloned()
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        write(shared, conn, &batch).await?;
        // Only this task removes entries, and `publish` only appends: the
        // front `batch.len()` entries are the ones just written.
        let mut q = crate::sync::lock(&shared.pending);
        let written = batch.len().min(q.len());
        q.drain(..written);
        shared.pending_len.store(q.len(), Ordering::Release);
        drop(q);
        shared.bump();
    }
}

/// Stores then publishes `revs` in one pipeline (store before publish, on
/// one connection: see the ordering argument in the module docs).
async fn write(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    revs: &[Revocation],
) -> Result<(), RedisError> {
    let now = unix_now();
    let mut pipe = redis::pipe();
    let mut n = 0u64;
    for rev in revs {
        let ttl = rev.expires_at.saturating_sub(now);
        if ttl == 0 {
            continue; // expired while waiting: nothing left to share
        }
        let stored = serde_json::to_string(rev).map_err(json_error)?;
        let message = serde_json::to_string(&Message {
            published_at_ms: unix_now_ms(),
            revocation: rev.clone(),
        })
        .map_err(json_error)?;
        pipe.set_ex(format!("{KEY_PREFIX}{}", rev.id), stored, ttl)
            .ignore()
            .publish(CHANNEL, message)
            .ignore();
        n += 1;
    }
    if n > 0 {
        within(COMMAND_TIMEOUT, pipe.exec_async(conn)).await?;
        shared.written.fetch_add(n, Ordering::Relaxed);
    }
    shared.last_sync.store(unix_now(), Ordering::Relaxed);
    Ok(())
}

fn json_error(e: serde_json::Error) -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "revocation JSON", e.to_string()))
}

/// The URL without its user-info, for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = tail.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}{tail}")
}

/// The password in the URL's user-info, raw as written.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _) = rest[..end].rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://:s3cret@cache:6380/2"),
            "redis://cache:6380/2"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@host/?protocol=resp3"),
            "rediss://host/"
        );
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
        assert_eq!(redact_url("host:1"), "<unparsable>");
        assert_eq!(
            url_password("redis://:s3cret@h:1/").as_deref(),
            Some("s3cret")
        );
        assert_eq!(url_password("redis://u:p@ss@h").as_deref(), Some("p@ss"));
        assert_eq!(url_password("redis://h:1/"), None);
        let c = ReplicatorConfig::new("redis://:s3cret@h:1/", "a");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn stored_values_must_match_their_key() {
        let r = Revocation::new("u", 60, "admin", "a");
        let json = serde_json::to_vec(&r).unwrap();
        let key = format!("{KEY_PREFIX}{}", r.id);
        assert_eq!(parse_stored(&key, &json), Some(r));
        assert_eq!(parse_stored("smh-gateway:revocation:other", &json), None);
        assert_eq!(parse_stored(&key, b"not json"), None);
        assert_eq!(parse_stored(&key, &vec![b' '; MAX_MESSAGE_BYTES + 1]), None);
    }
}
