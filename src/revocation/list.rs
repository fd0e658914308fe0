//! The in-memory revocation list the request path consults.
//!
//! Reads never lock and never wait: an atomic count says whether there is
//! anything at all (the common case is nothing, and then a check costs one
//! `Acquire` load of one word); otherwise the user's shard (a cheap FNV-1a
//! hash of the user id picks one of [`SHARDS`]) is read through
//! [`ArcSwap`] (no lock, no reference-count write on the shared `Arc`:
//! arc-swap's per-thread debt slots), the user's entries are found with
//! one hash lookup, then scanned (a user has a handful).
//!
//! Writes (revocations are rare: admin calls, logouts, messages from other
//! replicas) take a mutex among themselves and publish a new copy of each
//! shard they touch: copy-on-write of that shard's map, whose values are
//! `Arc`s, so a write costs one pointer copy and reference-count bump per
//! user in the shard and never delays a reader. A batch
//! ([`RevocationList::insert_many`], used for a reload from Redis) copies
//! each touched shard once.
//!
//! Measured (`cargo bench --bench revocation`, 2-core machine, profiling
//! build; benches/README.md): a check is ~7 ns on an empty list and
//! ~35-45 ns on a full one (100 000 users); an insert into the full list
//! is ~130 us, where one unsharded map took 6 ms, hence the shards.

use super::{Revocation, RevocationError};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Default bound on the entries held (live or not yet pruned). Why this
/// number: an entry is a few hundred bytes (ids, reason, map slot), so the
/// bound keeps the list under ~50 MB, and a write's copy of the outer map
/// stays in the low milliseconds; a deployment revoking more than this
/// within one session lifetime should shorten that lifetime or raise the
/// bound knowingly ([`RevocationList::with_max`]). Past the bound new
/// revocations are refused with [`RevocationError::Full`] (after expired
/// entries are pruned); none is ever dropped to make room, since dropping
/// one would silently re-admit revoked sessions.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;

/// How often [`spawn_pruner`] drops expired entries. Expired entries refuse
/// nothing (checks compare `expires_at` with `now`), so pruning only frees
/// memory and room under the bound; a minute is plenty, and a prune with
/// nothing expired returns after one comparison.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Shards of the user map. Why this number: a write copies one shard, so
/// at the default bound a shard holds ~1 600 users (a copy well under a
/// millisecond), while 64 empty maps cost nothing to keep.
pub const SHARDS: usize = 64;

type UserEntries = Arc<[Arc<Revocation>]>;
type UserAdditions = (Arc<str>, Vec<Arc<Revocation>>);

#[derive(Default)]
struct Snapshot {
    by_user: HashMap<Arc<str>, UserEntries>,
}

struct Writer {
    ids: HashSet<Arc<str>>,
    /// The smallest `expires_at` held (`u64::MAX` when empty): a prune
    /// before it has nothing to do.
    next_expiry: u64,
}

/// The revocations this replica knows. Share it as `Arc<RevocationList>`.
pub struct RevocationList {
    /// Entries in the shards; stored (Release) after the shards are, so a
    /// reader that sees 0 may skip them. Changed only under `writer`.
    count: AtomicUsize,
    shards: Box<[ArcSwap<Snapshot>]>,
    writer: Mutex<Writer>,
    max: usize,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList")
            .field("len", &self.len())
            .field("max", &self.max)
            .finish()
    }
}

impl RevocationList {
    /// An empty list bounded by [`DEFAULT_MAX_REVOCATIONS`].
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX_REVOCATIONS)
    }

    /// An empty list bounded by `max` entries (at least 1).
    pub fn with_max(max: usize) -> Self {
        Self {
            count: AtomicUsize::new(0),
            shards: (0..SHARDS)
                .map(|_| ArcSwap::from_pointee(Snapshot::default()))
                .collect(),
            writer: Mutex::new(Writer {
                ids: HashSet::new(),
                next_expiry: u64::MAX,
            }),
            max: max.max(1),
        }
    }

    /// The bound on entries.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Entries held, expired ones not yet pruned included.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an entry with this id is held.
    pub fn contains(&self, id: &str) -> bool {
        crate::sync::lock(&self.writer).ids.contains(id)
    }

    /// Adds `rev`. `Ok(true)`: it is new here and now refuses sessions;
    /// `Ok(false)`: nothing changed (an entry with that id is already held,
    /// or `rev` has expired at `now`), so inserting the same revocation
    /// again, from any path, is harmless. Refused when invalid, or when the
    /// list is full even after pruning (never by dropping another entry).
    pub fn insert(&self, rev: Revocation, now: u64) -> Result<bool, RevocationError> {
        self.insert_many(vec![rev], now).pop().unwrap_or(Ok(false))
    }

    /// [`Self::insert`] for many entries at once, copying each touched shard
    /// once;
    /// the answers are in the order of `revs`.
    pub fn insert_many(
        &self,
        revs: Vec<Revocation>,
        now: u64,
    ) -> Vec<Result<bool, RevocationError>> {
        let mut answers = Vec::with_capacity(revs.len());
        let mut w = crate::sync::lock(&self.writer);
        let mut len = self.count.load(Ordering::Acquire);
        if len.saturating_add(revs.len()) > self.max {
            // Make room from expired entries only (never live ones).
            len -= self.prune_locked(&mut w, now);
        }
        let mut added: HashMap<Arc<str>, Vec<Arc<Revocation>>> = HashMap::new();
        for rev in revs {
            if let Err(e) = rev.validate() {
                answers.push(Err(e));
                continue;
            }
            if rev.revoked_at > now.saturating_add(super::MAX_CLOCK_SKEW_SECS) {
                answers.push(Err(RevocationError::Invalid(
                    "revoked_at is further in the future than clocks differ",
                )));
                continue;
            }
            if !rev.is_live(now) || w.ids.contains(rev.id.as_str()) {
                answers.push(Ok(false));
                continue;
            }
            // Already refused in whole by a held entry: nothing to add.
            if self
                .with_user(&rev.user_id, |e| e.iter().any(|u| supersedes(u, &rev)))
                .unwrap_or(false)
            {
                answers.push(Ok(false));
                continue;
            }
            if len >= self.max {
                answers.push(Err(RevocationError::Full { max: self.max }));
                continue;
            }
            len += 1;
            w.ids.insert(rev.id.as_str().into());
            w.next_expiry = w.next_expiry.min(rev.expires_at);
            added
                .entry(rev.user_id.as_str().into())
                .or_default()
                .push(Arc::new(rev));
            answers.push(Ok(true));
        }
        if !added.is_empty() {
            let mut per_shard: HashMap<usize, Vec<UserAdditions>> = HashMap::new();
            for (user, new) in added {
                per_shard
                    .entry(shard_of(&user))
                    .or_default()
                    .push((user, new));
            }
            for (shard, users) in per_shard {
                let mut by_user = self.shards[shard].load().by_user.clone();
                for (user, new) in users {
                    let entries = by_user.entry(user).or_insert_with(|| Arc::from([]));
                    let all: Vec<Arc<Revocation>> = entries.iter().cloned().chain(new).collect();
                    // A user-wide entry makes the user's older, shorter
                    // entries redundant: dropping them keeps a user's
                    // entries few however often they log out.
                    let kept: Vec<Arc<Revocation>> = all
                        .iter()
                        .filter(|e| {
                            let redundant = all.iter().any(|u| supersedes(u, e));
                            if redundant {
                                w.ids.remove(e.id.as_str());
                                len -= 1;
                            }
                            !redundant
                        })
                        .cloned()
                        .collect();
                    *entries = Arc::from(kept);
                }
                self.shards[shard].store(Arc::new(Snapshot { by_user }));
            }
            self.count.store(len, Ordering::Release);
        }
        answers
    }

    /// The entry that refuses a session of `user_id`, if any, at `now`.
    ///
    /// - `client_id`: the session's device, `None` when the credential does
    ///   not name one (or it came from an unverified header). A session
    ///   whose device is unknown is in the scope of every device
    ///   revocation of its user: it cannot be told apart from the revoked
    ///   device, so the safe answer is "revoked".
    /// - `session_id`: `None` when the session has no id; such a session is
    ///   never the one a session revocation names.
    /// - `issued_at`: the session's `iat`. Sessions issued at or before the
    ///   entry's `revoked_at` are refused. `None` (no `iat`, e.g. an
    ///   introspected session): its issue time is unknown, so any matching
    ///   live entry refuses it until the entry expires.
    ///
    /// Never blocks or waits on I/O; with no entries it is one atomic load.
    pub fn matching(
        &self,
        user_id: &str,
        client_id: Option<&str>,
        session_id: Option<&str>,
        issued_at: Option<u64>,
        now: u64,
    ) -> Option<Arc<Revocation>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.with_user(user_id, |entries| {
            entries
                .iter()
                .find(|r| {
                    r.is_live(now)
                        && issued_at.is_none_or(|iat| iat <= r.revoked_at)
                        && r.covers(client_id, session_id)
                })
                .cloned()
        })
        .flatten()
    }

    /// `f` over the user's entries, read from its shard without a lock or
    /// a reference-count write; `None` when the user has none.
    fn with_user<R>(&self, user_id: &str, f: impl FnOnce(&[Arc<Revocation>]) -> R) -> Option<R> {
        let snapshot = self.shards[shard_of(user_id)].load();
        snapshot.by_user.get(user_id).map(|e| f(e))
    }

    /// How many entries the user has (live or not yet pruned).
    pub fn entries_of(&self, user_id: &str) -> usize {
        if self.count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.with_user(user_id, <[_]>::len).unwrap_or(0)
    }

    /// Whether a session is refused; see [`Self::matching`].
    pub fn is_revoked(
        &self,
        user_id: &str,
        client_id: Option<&str>,
        session_id: Option<&str>,
        issued_at: Option<u64>,
        now: u64,
    ) -> bool {
        self.matching(user_id, client_id, session_id, issued_at, now)
            .is_some()
    }

    /// The entries live at `now`, oldest first (then by id).
    pub fn active(&self, now: u64) -> Vec<Revocation> {
        self.active_shared(now)
            .into_iter()
            .map(|r| (*r).clone())
            .collect()
    }

    pub(crate) fn active_shared(&self, now: u64) -> Vec<Arc<Revocation>> {
        let mut out: Vec<Arc<Revocation>> = Vec::new();
        for shard in self.shards.iter() {
            let snapshot = shard.load();
            out.extend(
                snapshot
                    .by_user
                    .values()
                    .flat_map(|e| e.iter())
                    .filter(|r| r.is_live(now))
                    .cloned(),
            );
        }
        out.sort_by(|a, b| (a.revoked_at, &a.id).cmp(&(b.revoked_at, &b.id)));
        out
    }

    /// Drops the entries expired at `now`; returns how many. Cheap when
    /// none has expired yet.
    pub fn prune(&self, now: u64) -> usize {
        let mut w = crate::sync::lock(&self.writer);
        self.prune_locked(&mut w, now)
    }

    fn prune_locked(&self, w: &mut Writer, now: u64) -> usize {
        if now < w.next_expiry {
            return 0;
        }
        let mut removed = 0;
        let mut next_expiry = u64::MAX;
        for shard in self.shards.iter() {
            let old = shard.load_full();
            let mut expired_here = false;
            for r in old.by_user.values().flat_map(|e| e.iter()) {
                if r.is_live(now) {
                    next_expiry = next_expiry.min(r.expires_at);
                } else {
                    expired_here = true;
                }
            }
            if !expired_here {
                continue;
            }
            let mut by_user = HashMap::with_capacity(old.by_user.len());
            for (user, entries) in &old.by_user {
                let live: Vec<Arc<Revocation>> = entries
                    .iter()
                    .filter(|r| {
                        let keep = r.is_live(now);
                        if !keep {
                            w.ids.remove(r.id.as_str());
                            removed += 1;
                        }
                        keep
                    })
                    .cloned()
                    .collect();
                if !live.is_empty() {
                    by_user.insert(user.clone(), Arc::from(live));
                }
            }
            shard.store(Arc::new(Snapshot { by_user }));
        }
        w.next_expiry = next_expiry;
        if removed > 0 {
            let left = self.count.load(Ordering::Acquire) - removed;
            self.count.store(left, Ordering::Release);
        }
        removed
    }
}

/// Whether `user_wide` refuses everything `other` does, as long as
/// `other` would: it names the whole user, was made no earlier and lives
/// no shorter. (Ties between two user-wide entries go to the larger id, so
/// exactly one of two equal entries is dropped.)
fn supersedes(user_wide: &Revocation, other: &Revocation) -> bool {
    user_wide.client_id.is_none()
        && user_wide.session_id.is_none()
        && user_wide.id != other.id
        && other.revoked_at <= user_wide.revoked_at
        && other.expires_at <= user_wide.expires_at
        && (other.client_id.is_some()
            || other.session_id.is_some()
            || other.revoked_at < user_wide.revoked_at
            || other.expires_at < user_wide.expires_at
            || other.id < user_wide.id)
}

/// The shard of a user: FNV-1a of the id. Not keyed: a caller who picks
/// user ids to crowd one shard only makes writes to it slower (one bigger
/// copy); reads and the other shards are unaffected.
fn shard_of(user_id: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// Prunes `list` every `every` until the list is dropped. Needs a tokio
/// runtime; the task holds only a weak reference.
pub fn spawn_pruner(list: &Arc<RevocationList>, every: Duration) -> tokio::task::JoinHandle<()> {
    let weak: Weak<RevocationList> = Arc::downgrade(list);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(list) = weak.upgrade() else { return };
            list.prune(super::unix_now());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn rev(user: &str) -> Revocation {
        let mut r = Revocation::new(user, 3600, "admin", "a");
        r.revoked_at = NOW;
        r.expires_at = NOW + 3600;
        r
    }

    #[test]
    fn a_user_wide_entry_supersedes_the_users_older_narrower_ones() {
        let l = RevocationList::new();
        for i in 0..10 {
            assert!(l.insert(rev("u").session(format!("s{i}")), NOW).unwrap());
        }
        let keep_later = {
            let mut r = rev("u").device("phone");
            r.revoked_at = NOW + 10;
            r.expires_at = NOW + 3610;
            r
        };
        assert!(l.insert(keep_later.clone(), NOW).unwrap());
        l.insert(rev("other").device("phone"), NOW).unwrap();
        assert_eq!(l.len(), 12);
        let wide = rev("u");
        assert!(l.insert(wide.clone(), NOW).unwrap());
        // The ten session entries are inside it; the later device entry is
        // not (it refuses sessions issued up to NOW + 10); other users stay.
        assert_eq!(l.len(), 3, "{:?}", l.active(NOW));
        assert!(l.contains(&wide.id) && l.contains(&keep_later.id));
        assert!(l.is_revoked("u", None, Some("s3"), Some(NOW), NOW));
        assert!(l.is_revoked("u", Some("phone"), None, Some(NOW + 10), NOW));
        assert!(!l.is_revoked("u", Some("laptop"), None, Some(NOW + 10), NOW));
        // A narrower entry it already covers is not added again (a reload
        // from Redis brings the dropped ones back).
        assert!(!l.insert(rev("u").session("s99"), NOW).unwrap());
        assert_eq!(l.len(), 3);
        // Of two equal user-wide entries one stays.
        let mut twin = wide.clone();
        twin.id = crate::revocation::new_id();
        l.insert(twin, NOW).unwrap();
        assert_eq!(l.len(), 3);
        assert!(l.is_revoked("u", None, None, Some(NOW), NOW));
    }

    #[test]
    fn empty_list_refuses_nothing() {
        let l = RevocationList::new();
        assert!(l.is_empty());
        assert!(!l.is_revoked("u", Some("c"), Some("s"), Some(0), NOW));
        assert!(!l.is_revoked("u", None, None, None, NOW));
    }

    #[test]
    fn user_scope_matches_every_device_and_session_of_that_user_only() {
        let l = RevocationList::new();
        assert_eq!(l.insert(rev("u"), NOW), Ok(true));
        for (c, s) in [
            (Some("phone"), Some("s1")),
            (Some("laptop"), Some("s2")),
            (None, None),
        ] {
            assert!(l.is_revoked("u", c, s, Some(NOW - 10), NOW + 1));
        }
        assert!(!l.is_revoked("v", Some("phone"), Some("s1"), Some(NOW - 10), NOW));
        assert!(!l.is_revoked("U", None, None, None, NOW), "ids are exact");
    }

    #[test]
    fn device_scope_matches_only_that_client_id() {
        let l = RevocationList::new();
        l.insert(rev("u").device("phone"), NOW).unwrap();
        assert!(l.is_revoked("u", Some("phone"), Some("s1"), Some(NOW), NOW));
        assert!(l.is_revoked("u", Some("phone"), None, Some(NOW), NOW));
        assert!(!l.is_revoked("u", Some("laptop"), Some("s1"), Some(NOW), NOW));
        // A session that cannot prove its device is any device.
        assert!(l.is_revoked("u", None, Some("s9"), Some(NOW), NOW));
    }

    #[test]
    fn session_scope_matches_only_that_session_id() {
        let l = RevocationList::new();
        l.insert(rev("u").device("phone").session("s1"), NOW)
            .unwrap();
        assert!(l.is_revoked("u", Some("phone"), Some("s1"), Some(NOW), NOW));
        assert!(l.is_revoked("u", None, Some("s1"), Some(NOW), NOW));
        assert!(!l.is_revoked("u", Some("phone"), Some("s2"), Some(NOW), NOW));
        assert!(!l.is_revoked("u", Some("phone"), None, Some(NOW), NOW));
    }

    #[test]
    fn sessions_issued_after_the_revocation_pass() {
        let l = RevocationList::new();
        l.insert(rev("u"), NOW).unwrap();
        assert!(l.is_revoked("u", None, None, Some(NOW - 1), NOW + 5));
        assert!(
            l.is_revoked("u", None, None, Some(NOW), NOW + 5),
            "same second"
        );
        assert!(!l.is_revoked("u", None, None, Some(NOW + 1), NOW + 5));
        // Unknown issue time: refused while the entry lives.
        assert!(l.is_revoked("u", None, None, None, NOW + 5));
    }

    #[test]
    fn expired_entries_refuse_nothing_and_are_pruned() {
        let l = RevocationList::new();
        let r = rev("u");
        let id = r.id.clone();
        l.insert(r, NOW).unwrap();
        let mut later = rev("v");
        later.expires_at = NOW + 7200;
        l.insert(later, NOW).unwrap();
        assert!(l.is_revoked("u", None, None, None, NOW + 3599));
        assert!(!l.is_revoked("u", None, None, None, NOW + 3600));
        assert_eq!(l.active(NOW + 3600).len(), 1);
        assert_eq!(l.prune(NOW + 3599), 0);
        assert_eq!(l.len(), 2);
        assert_eq!(l.prune(NOW + 3600), 1);
        assert_eq!(l.len(), 1);
        assert!(!l.contains(&id));
        assert!(l.is_revoked("v", None, None, None, NOW + 3600));
        assert_eq!(l.prune(NOW + 7200), 1);
        assert!(l.is_empty());
        // An entry already expired is not taken.
        assert_eq!(l.insert(rev("w"), NOW + 3600), Ok(false));
        assert!(l.is_empty());
    }

    #[test]
    fn insert_is_idempotent_by_id() {
        let l = RevocationList::new();
        let r = rev("u");
        assert_eq!(l.insert(r.clone(), NOW), Ok(true));
        assert_eq!(l.insert(r.clone(), NOW), Ok(false));
        let answers = l.insert_many(vec![r.clone(), rev("v"), rev("w")], NOW);
        assert_eq!(answers, vec![Ok(false), Ok(true), Ok(true)]);
        assert_eq!(l.len(), 3);
        assert_eq!(l.active(NOW).len(), 3);
    }

    #[test]
    fn invalid_entries_are_refused() {
        let l = RevocationList::new();
        let mut r = rev("u");
        r.user_id.clear();
        assert!(matches!(l.insert(r, NOW), Err(RevocationError::Invalid(_))));
        assert!(l.is_empty());
    }

    #[test]
    fn a_full_list_refuses_new_entries_and_keeps_the_old_ones() {
        let l = RevocationList::with_max(2);
        l.insert(rev("a"), NOW).unwrap();
        l.insert(rev("b"), NOW).unwrap();
        assert_eq!(
            l.insert(rev("c"), NOW),
            Err(RevocationError::Full { max: 2 })
        );
        assert!(l.is_revoked("a", None, None, None, NOW));
        assert!(l.is_revoked("b", None, None, None, NOW));
        assert!(!l.is_revoked("c", None, None, None, NOW));
        // Expired entries make room.
        let mut fresh = rev("c");
        fresh.expires_at = NOW + 7200;
        assert_eq!(l.insert(fresh, NOW + 3600), Ok(true));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn active_lists_live_entries_oldest_first() {
        let l = RevocationList::new();
        let mut old = rev("u");
        old.revoked_at = NOW - 100;
        let new = rev("v");
        l.insert_many(vec![new.clone(), old.clone()], NOW);
        assert_eq!(l.active(NOW), vec![old, new]);
    }

    #[test]
    fn many_users_across_shards() {
        let l = RevocationList::new();
        let batch: Vec<Revocation> = (0..1000)
            .map(|i| {
                let mut r = rev(&format!("user-{i}"));
                // Odd users' entries expire an hour before even users'.
                r.expires_at = NOW + 3600 * (1 + (i % 2 == 0) as u64);
                r
            })
            .collect();
        assert!(l.insert_many(batch, NOW).iter().all(|a| a == &Ok(true)));
        assert_eq!(l.len(), 1000);
        let used: HashSet<usize> = (0..1000).map(|i| shard_of(&format!("user-{i}"))).collect();
        assert_eq!(used.len(), SHARDS, "ids spread over every shard");
        assert_eq!(l.prune(NOW + 3600), 500);
        assert_eq!(l.len(), 500);
        assert_eq!(l.active(NOW + 3600).len(), 500);
        for i in 0..1000 {
            let revoked = l.is_revoked(&format!("user-{i}"), None, None, None, NOW + 3600);
            assert_eq!(revoked, i % 2 == 0, "user-{i}");
        }
        assert_eq!(l.prune(NOW + 7200), 500);
        assert!(l.is_empty());
        assert!(l.active(NOW).is_empty());
    }

    #[tokio::test]
    async fn pruner_stops_when_the_list_is_dropped() {
        let l = Arc::new(RevocationList::new());
        let task = spawn_pruner(&l, Duration::from_millis(1));
        drop(l);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("pruner ends once the list is gone")
            .unwrap();
    }
}
