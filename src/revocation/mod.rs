//! Revocations: "refuse the sessions of this user (device, session) that
//! were issued before now", kept in memory on every replica and shared
//! between replicas through Redis.
//!
//! # The model
//!
//! A [`Revocation`] names a user and optionally one device (`client_id`) or
//! one session (`session_id`), and a time `revoked_at`. A session of that
//! scope whose `iat` is at or before `revoked_at` is refused; a session
//! issued later is not, so a user who logs in again simply works and no
//! "un-revoke" is ever needed.
//!
//! - **Per replica**: the [`RevocationList`] the request path consults. It
//!   is a plain in-memory lookup that never waits on I/O (one atomic load
//!   when the list is empty, the common case; one map lookup by user
//!   otherwise). Each replica also keeps its own caches (sessions, SMH
//!   tokens), which the code that applies a revocation drops.
//! - **Shared**: the revocations themselves, through Redis (the
//!   [`Replicator`]): each one is stored under its own key
//!   (`smh-gateway:revocation:<id>`, `SET ... EX`) so that a replica that
//!   starts later or reconnects loads it, and published on the channel
//!   `smh-gateway:revocations` so that running replicas apply it at once.
//!   Without a Redis URL no replicator runs and revocation is local to the
//!   process.
//! - **Lifetime**: an entry lives until `expires_at`, which the caller sets
//!   to `revoked_at` plus the longest session lifetime the gateway accepts
//!   (sessions whose `exp` is further away are refused at validation), plus
//!   the validation leeway. After that, no session issued before
//!   `revoked_at` can still be valid, so the entry is useless: Redis expires
//!   the key by itself, the list ignores it and [`RevocationList::prune`]
//!   drops it.
//! - **Redis down**: nothing on the request path awaits Redis; serving goes
//!   on with the local list. A revocation made meanwhile is applied locally
//!   at once and queued (bounded, [`MAX_PENDING`]); the replicator
//!   reconnects with capped exponential back-off and, on every
//!   (re)connect, subscribes first, then reloads the whole store (so
//!   messages missed while away are applied), then writes back any live
//!   local entry the store lacks (a Redis restarted without persistence
//!   gets them again) and flushes its queue. [`Replicator::state`] says
//!   which of this is happening, for `/readyz` and metrics.
//!
//! # Ordering and consistency
//!
//! - A writer sends `SET` then `PUBLISH` on one connection; a reader
//!   `SUBSCRIBE`s before it `SCAN`s. So a reader misses nothing: a message
//!   published before its subscription belongs to a key set before its
//!   scan started, and `SCAN` returns every key that exists for its whole
//!   duration.
//! - Delivery is at least once (a message, a reload, a repair may all carry
//!   one entry); [`RevocationList::insert`] is idempotent by id, so the
//!   effects (the `on_applied` callback) happen once per replica.
//! - Order between revocations does not matter: each one only ever adds a
//!   refusal, and no message removes one.
//! - Replicas compare their own clocks: `issued_at` (the session's `iat`,
//!   set by the session issuer), `revoked_at` (the clock of the replica that
//!   made the revocation) and `now` (the checking replica's clock). Skew
//!   between them shifts the boundary by that much; a session issued in the
//!   same second as the revocation is refused ("at or before").
//! - Anyone who can write to the Redis channel or keys can revoke sessions
//!   (a denial of service, not an escalation): nothing read from Redis can
//!   allow what the local list refuses. Entries read from Redis are
//!   validated and size-bounded like any input.

mod list;
mod replicator;
#[doc(hidden)]
pub mod test_support;

#[cfg(test)]
mod redis_tests;

pub use list::{spawn_pruner, RevocationList, DEFAULT_MAX_REVOCATIONS, PRUNE_INTERVAL, SHARDS};
pub use replicator::{
    AppliedFrom, AppliedInfo, OnApplied, RedisState, Replicator, ReplicatorConfig, ReplicatorStats,
    StartError, BACKOFF_INITIAL, BACKOFF_MAX, CHANNEL, COMMAND_TIMEOUT, CONNECT_TIMEOUT,
    KEY_PREFIX, MAX_MESSAGE_BYTES, MAX_PENDING, PING_INTERVAL,
};

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest `user_id`, `client_id`, `session_id`, `requested_by` and
/// `origin` accepted, in bytes: the SMH user id bound (256), which is also
/// larger than the client and session id bound (128).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest `reason`, in bytes: a sentence for the operator, not a document;
/// it is kept in memory and in Redis for the whole life of the entry.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest life of a revocation (`expires_at - revoked_at`): the longest
/// session lifetime the configuration allows (90 days) and twice the
/// longest leeway (a day), plus a second. An entry from Redis claiming
/// longer is refused: it would refuse sessions for longer than any could
/// live, and its TTL could not be written back.
pub const MAX_LIFETIME_SECS: u64 = 90 * 86_400 + 2 * 86_400 + 1;
/// How far in the future `revoked_at` may be, by this replica's clock:
/// replicas' clocks differ by seconds, not minutes. Further would refuse
/// sessions not issued yet.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Longest revocation id, in bytes. Ids made here are 32 hex digits; a
/// little room for ids made by another tool.
pub const MAX_ID_BYTES: usize = 64;

/// One revocation. JSON on the wire, in Redis and in the admin API.
///
/// Unknown fields are ignored when reading, so replicas of different
/// versions can share one Redis during a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Random (128 bits, hex); the identity that makes replication
    /// idempotent.
    pub id: String,
    pub user_id: String,
    /// One device of the user; `None` (and no `session_id`): all devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// One session of the user. When given, it alone decides the match;
    /// a `client_id` given with it is informational (SMH's token delete
    /// takes both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds: sessions of the scope issued at or before this are
    /// refused.
    pub revoked_at: u64,
    /// Unix seconds: from this moment the entry no longer refuses anything
    /// and is dropped (no session issued before `revoked_at` can still be
    /// valid).
    pub expires_at: u64,
    /// Who asked, e.g. `admin` or `logout:<user>`.
    pub requested_by: String,
    /// The replica id that made it.
    pub origin: String,
}

/// Why a revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The list holds its maximum of live entries. A new revocation is
    /// refused rather than an old one dropped: dropping would silently
    /// re-admit sessions that were revoked.
    #[error("the revocation list is full ({max} live entries); the revocation was not applied")]
    Full { max: usize },
    /// [`MAX_PENDING`] revocations already wait for Redis: this one is
    /// not queued for sharing (it still applies wherever it was inserted,
    /// and the repair at reconnect writes every live local entry).
    #[error(
        "{max} revocations already wait for Redis; this one is not queued for the other replicas"
    )]
    PendingFull { max: usize },
    #[error("invalid revocation: {0}")]
    Invalid(&'static str),
}

impl Revocation {
    /// A revocation of all of `user_id`'s devices, made now by `origin` at
    /// the request of `requested_by`, that lives `lifetime_secs` (the
    /// longest session lifetime accepted, plus leeway). Narrow it with
    /// [`Self::device`] or [`Self::session`].
    pub fn new(
        user_id: impl Into<String>,
        lifetime_secs: u64,
        requested_by: impl Into<String>,
        origin: impl Into<String>,
    ) -> Self {
        let now = unix_now();
        Self {
            id: new_id(),
            user_id: user_id.into(),
            client_id: None,
            session_id: None,
            reason: None,
            revoked_at: now,
            expires_at: now.saturating_add(lifetime_secs.max(1)),
            requested_by: requested_by.into(),
            origin: origin.into(),
        }
    }

    /// Narrows the scope to one device.
    pub fn device(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Narrows the scope to one session.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Whether the entry still refuses anything at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// Whether a session of `client_id`/`session_id` falls in this entry's
    /// scope (the user is matched by the caller). See
    /// [`RevocationList::is_revoked`] for what `None` means.
    pub fn covers(&self, client_id: Option<&str>, session_id: Option<&str>) -> bool {
        match (&self.client_id, &self.session_id) {
            (_, Some(s)) => session_id == Some(s.as_str()),
            // A device the session cannot prove is any device.
            (Some(c), None) => client_id.is_none_or(|id| id == c),
            (None, None) => true,
        }
    }

    /// Checks the bounds every entry must meet, whether made here or read
    /// from Redis.
    pub fn validate(&self) -> Result<(), RevocationError> {
        use RevocationError::Invalid;
        if self.id.is_empty()
            || self.id.len() > MAX_ID_BYTES
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Invalid("id must be 1-64 letters, digits, '-' or '_'"));
        }
        if !name_ok(&self.user_id) {
            return Err(Invalid("user_id must be 1-256 bytes"));
        }
        if self.client_id.as_deref().is_some_and(|c| !name_ok(c)) {
            return Err(Invalid("client_id, when given, must be 1-256 bytes"));
        }
        if self.session_id.as_deref().is_some_and(|s| !name_ok(s)) {
            return Err(Invalid("session_id, when given, must be 1-256 bytes"));
        }
        if self
            .reason
            .as_deref()
            .is_some_and(|r| r.len() > MAX_REASON_BYTES)
        {
            return Err(Invalid("reason is longer than 1024 bytes"));
        }
        if !name_ok(&self.requested_by) || !name_ok(&self.origin) {
            return Err(Invalid("requested_by and origin must be 1-256 bytes"));
        }
        if self.expires_at <= self.revoked_at {
            return Err(Invalid("expires_at must be after revoked_at"));
        }
        if self.expires_at - self.revoked_at > MAX_LIFETIME_SECS {
            return Err(Invalid("lives longer than any session can (92 days)"));
        }
        Ok(())
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES
}

/// A fresh revocation id: 128 random bits from the thread's CSPRNG, hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The current Unix time in seconds (0 before 1970, which no clock here
/// shows).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev() -> Revocation {
        Revocation::new("u1", 3600, "admin", "replica-a")
    }

    #[test]
    fn ids_are_128_bit_hex_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn json_round_trip_and_unknown_fields_ignored() {
        let r = rev().device("phone").reason("lost");
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("session_id"), "{text}");
        let back: Revocation = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let extra = text.replace("{\"id\"", "{\"admin\":true,\"id\"");
        assert_eq!(serde_json::from_str::<Revocation>(&extra).unwrap(), r);
    }

    #[test]
    fn validation_bounds_every_field() {
        assert_eq!(rev().validate(), Ok(()));
        let mut r = rev();
        r.id = "a/b".into();
        assert!(r.validate().is_err());
        let mut r = rev();
        r.user_id.clear();
        assert!(r.validate().is_err());
        assert!(rev().device("").validate().is_err());
        assert!(rev().session("x".repeat(257)).validate().is_err());
        assert!(rev().reason("x".repeat(1025)).validate().is_err());
        let mut r = rev();
        r.origin.clear();
        assert!(r.validate().is_err());
        let mut r = rev();
        r.expires_at = r.revoked_at;
        assert!(r.validate().is_err());
        // What a hostile Redis might carry: an entry that never ends.
        let mut r = rev();
        r.expires_at = u64::MAX;
        assert!(r.validate().is_err());
        r.expires_at = r.revoked_at + MAX_LIFETIME_SECS;
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn the_list_refuses_revocations_from_the_future() {
        let list = RevocationList::new();
        let now = unix_now();
        let mut r = rev();
        r.revoked_at = now + MAX_CLOCK_SKEW_SECS + 1;
        r.expires_at = r.revoked_at + 3600;
        assert!(list.insert(r.clone(), now).is_err());
        r.revoked_at = now + MAX_CLOCK_SKEW_SECS;
        assert_eq!(list.insert(r, now), Ok(true));
    }

    #[test]
    fn scope_matching() {
        let user = rev();
        assert!(user.covers(Some("phone"), Some("s1")));
        assert!(user.covers(None, None));
        let device = rev().device("phone");
        assert!(device.covers(Some("phone"), Some("s1")));
        assert!(!device.covers(Some("laptop"), Some("s1")));
        assert!(device.covers(None, Some("s1")), "unproven device");
        let session = rev().device("phone").session("s1");
        assert!(session.covers(Some("phone"), Some("s1")));
        assert!(session.covers(Some("laptop"), Some("s1")));
        assert!(!session.covers(Some("phone"), Some("s2")));
        assert!(!session.covers(Some("phone"), None));
    }
}
