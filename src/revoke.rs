//! Carrying out a revocation (the admin route and caller logout): refuse
//! the scope's sessions here and on every replica, drop its cached SMH
//! tokens, and delete its tokens at SMH in every library, retrying what SMH
//! did not confirm until it does or the revocation expires.
//!
//! The replica that makes a revocation is the one that calls SMH: the
//! others learn of it through Redis and drop their own caches
//! ([`Revoker::applied_from_replica`]); one `DELETE` per library is all SMH
//! needs. If that replica stops before SMH confirmed, nobody retries: the
//! revocation still refuses the sessions everywhere, and SMH's tokens end
//! at their own expiry (`tokens.max_age_secs` at the latest).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::audit::Audit;
use crate::metrics::Metrics;
use crate::revocation::{
    unix_now, AppliedInfo, RedisState, Replicator, Revocation, RevocationError, RevocationList,
};
use crate::smh::delete::{delete_user_tokens, DeleteOutcome, DeleteScope};
use crate::smh::token::{MintTarget, TokenService};

/// First wait before an unconfirmed SMH delete is tried again; doubled up
/// to [`RETRY_MAX`]. The bounded retries inside one attempt already
/// covered a blip, so what is left is an outage: no need to hurry.
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Longest wait between background attempts: an outage of SMH's token API
/// costs one call per library and revocation every five minutes.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long the admin answer waits for Redis to take the revocation before
/// it says `queued` instead of `published`: a healthy Redis answers in
/// milliseconds, and the caller should not wait on an unhealthy one.
pub const SHARE_WAIT: Duration = Duration::from_secs(1);

/// A logout by a user who already has this many revocations in force is
/// widened to all of the user's devices, which supersedes (and so removes)
/// the others: however many sessions a user can get and log out, they hold
/// a bounded share of the list. Real users have a handful of devices.
pub const MAX_LOGOUT_ENTRIES_PER_USER: usize = 16;

/// Who is revoked, and by whom.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub user_id: String,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    pub reason: Option<String>,
    /// `admin` or [`LOGOUT`].
    pub requested_by: String,
    /// How long the revocation lives: the longest session lifetime
    /// accepted, plus the leeway.
    pub lifetime: Duration,
}

/// `requested_by` of a caller's own logout.
pub const LOGOUT: &str = "logout";

/// What SMH said about one library's delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmhDeletion {
    /// `confirmed`, `pending` (retried in the background), `refused` (SMH
    /// refused the call: retrying it unchanged cannot help), `expired`
    /// (never confirmed before the revocation ended) or `abandoned` (the
    /// library was removed from the configuration).
    pub status: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How far the revocation travelled to the other replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shared {
    /// Written to Redis and published.
    Published,
    /// Waiting for Redis; written and published once it is back.
    Queued,
    /// No Redis configured: this process only.
    Local,
    /// A revocation in force already refuses everything this one would
    /// (a user-wide one made no earlier, living no shorter): nothing new
    /// was recorded or shared; SMH's tokens were still deleted.
    Covered,
}

/// The answer to a revocation.
#[derive(Debug, Clone, Serialize)]
pub struct RevokeReport {
    pub revocation: Revocation,
    pub shared: Shared,
    /// By library id.
    pub smh: BTreeMap<String, SmhDeletion>,
}

/// Why a revocation was not made.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request names no valid scope (400).
    #[error("{0}")]
    Invalid(String),
    /// The list is full (503): nothing was applied.
    #[error("{0}")]
    Full(String),
    /// The revocation's task failed (500); whether it was applied is
    /// unknown: list the revocations to see.
    #[error("the revocation failed inside the gateway; GET /admin/v1/revocations shows whether it was applied")]
    Internal,
}

/// A revocation in force, with its SMH outcome where this replica made it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub revocation: Revocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smh: Option<BTreeMap<String, SmhDeletion>>,
}

/// Applies revocations; shared by the admin API and the request path.
#[derive(Clone)]
pub struct Revoker(Arc<Inner>);

struct Inner {
    list: Arc<RevocationList>,
    replicator: Option<Replicator>,
    tokens: TokenService,
    replica_id: String,
    metrics: Arc<Metrics>,
    audit: Audit,
    /// The libraries of the running configuration, by id (a reload
    /// replaces them; background retries use the current ones).
    targets: ArcSwap<HashMap<Arc<str>, MintTarget>>,
    /// SMH outcomes of the revocations made here, by revocation id.
    deletions: Mutex<HashMap<String, BTreeMap<String, SmhDeletion>>>,
    pending: AtomicI64,
    retry: (Duration, Duration),
}

impl Revoker {
    /// `replicator`: none without Redis. `retry`: the first and longest
    /// wait between background attempts ([`RETRY_INITIAL`], [`RETRY_MAX`]).
    pub fn new(
        list: Arc<RevocationList>,
        replicator: Option<Replicator>,
        tokens: TokenService,
        replica_id: String,
        metrics: Arc<Metrics>,
        audit: Audit,
        retry: (Duration, Duration),
    ) -> Self {
        Self(Arc::new(Inner {
            list,
            replicator,
            tokens,
            replica_id,
            metrics,
            audit,
            targets: ArcSwap::from_pointee(HashMap::new()),
            deletions: Mutex::new(HashMap::new()),
            pending: AtomicI64::new(0),
            retry,
        }))
    }

    /// What a revocation received from another replica does here: its
    /// sessions are already refused (the list has it); drop the scope's
    /// cached tokens. The callback the replicator is started with.
    pub fn applied_from_replica(
        tokens: &TokenService,
        metrics: &Metrics,
        rev: &Revocation,
        info: &AppliedInfo,
    ) {
        forget(tokens, rev);
        metrics.revocation.applied_replica.inc();
        if let Some(ms) = info.lag_ms {
            metrics.revocation.redis_lag_seconds.set(ms as f64 / 1000.0);
        }
        tracing::info!(
            revocation = %rev.id,
            user = %rev.user_id,
            origin = %rev.origin,
            "revocation from another replica applied"
        );
    }

    /// The libraries SMH deletes go to (set at start and by every reload).
    pub fn set_libraries(&self, targets: HashMap<Arc<str>, MintTarget>) {
        self.0.targets.store(Arc::new(targets));
    }

    pub fn list(&self) -> &Arc<RevocationList> {
        &self.0.list
    }

    pub fn redis_state(&self) -> RedisState {
        self.0
            .replicator
            .as_ref()
            .map_or(RedisState::Disabled, Replicator::state)
    }

    /// The Redis link as the admin API and `/readyz` show it.
    pub fn redis_status(&self) -> Value {
        let Some(r) = &self.0.replicator else {
            return json!({"state": "disabled"});
        };
        let s = r.stats();
        let since = match s.state {
            RedisState::Connecting { since }
            | RedisState::Connected { since }
            | RedisState::Degraded { since } => Some(since),
            RedisState::Disabled => None,
        };
        json!({
            "state": s.state.name(),
            "since": since,
            "replica_id": r.replica_id(),
            "pending_publish": s.pending,
            "last_sync": s.last_sync_unix,
            "last_error": r.last_error(),
        })
    }

    /// Copies the replicator's figures into the metrics (at scrape time).
    pub fn refresh_metrics(&self) {
        let m = &self.0.metrics.revocation;
        m.active.set(self.0.list.len() as i64);
        m.pending_deletions
            .set(self.0.pending.load(Ordering::Relaxed).max(0));
        m.set_redis_state(self.redis_state().name());
        if let Some(r) = &self.0.replicator {
            m.pending_publish.set(r.pending() as i64);
        }
    }

    /// The revocations in force, newest first.
    pub fn active(&self) -> Vec<Listed> {
        let now = unix_now();
        let mut all = self.0.list.active(now);
        all.sort_by_key(|r| std::cmp::Reverse(r.revoked_at));
        let mut deletions = crate::sync::lock(&self.0.deletions);
        deletions.retain(|id, _| self.0.list.contains(id));
        all.into_iter()
            .map(|revocation| Listed {
                smh: deletions.get(&revocation.id).cloned(),
                revocation,
            })
            .collect()
    }

    /// Makes the revocation: refused here at once, shared with the other
    /// replicas, cached tokens dropped, SMH asked to delete the scope's
    /// tokens in every library (bounded retries; what is not confirmed
    /// is retried in the background). Audited either way.
    pub async fn revoke(&self, req: RevokeRequest) -> Result<RevokeReport, RevokeError> {
        // On its own task: a caller that goes away (a client timeout, a
        // closed connection) must not cancel the SMH deletes, their
        // retries or the audit line half-way.
        let this = self.clone();
        match tokio::spawn(async move { this.revoke_to_end(req).await }).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!(error = %e, "revocation task failed");
                Err(RevokeError::Internal)
            }
        }
    }

    async fn revoke_to_end(&self, mut req: RevokeRequest) -> Result<RevokeReport, RevokeError> {
        let inner = &self.0;
        // The last tenth of the list is for the admin route: when logouts
        // have filled the rest, an operator can still revoke a lost phone.
        let logout_line = inner.list.max() / 10 * 9;
        if req.requested_by == LOGOUT && inner.list.len() >= logout_line {
            inner.list.prune(unix_now());
            if inner.list.len() >= logout_line {
                return Err(self.refused(&req, RevocationError::Full { max: logout_line }));
            }
        }
        if req.requested_by == LOGOUT
            && (req.client_id.is_some() || req.session_id.is_some())
            && inner.list.entries_of(&req.user_id) >= MAX_LOGOUT_ENTRIES_PER_USER
        {
            req.client_id = None;
            req.session_id = None;
            req.reason = Some(format!(
                "logout, widened to all devices ({MAX_LOGOUT_ENTRIES_PER_USER} revocations of this user in force)"
            ));
        }
        let mut rev = Revocation::new(
            req.user_id.clone(),
            req.lifetime.as_secs(),
            req.requested_by.clone(),
            inner.replica_id.clone(),
        );
        rev.client_id = req.client_id.clone();
        rev.session_id = req.session_id.clone();
        rev.reason = req.reason.clone();
        if let Err(e) = rev.validate() {
            return Err(RevokeError::Invalid(e.to_string()));
        }
        check_names(&req)?;
        let now = unix_now();
        let shared = match &inner.replicator {
            None => match inner.list.insert(rev.clone(), now) {
                Ok(true) => Shared::Local,
                Ok(false) => Shared::Covered,
                Err(e) => return Err(self.refused(&req, e)),
            },
            Some(r) => match r.revoke(rev.clone(), now) {
                Ok(true) => self.wait_shared(r).await,
                Ok(false) => Shared::Covered,
                // Applied here; the repair at reconnect writes it.
                Err(RevocationError::PendingFull { max }) => {
                    tracing::warn!(
                        waiting = max,
                        "revocation applied here but not queued for Redis (queue full); it is written at the next reconnect"
                    );
                    Shared::Queued
                }
                Err(e) => return Err(self.refused(&req, e)),
            },
        };
        forget(&inner.tokens, &rev);
        inner.metrics.revocation.applied_local.inc();
        inner.metrics.revocation.active.set(inner.list.len() as i64);
        let smh = self.delete_everywhere(&rev).await;
        crate::sync::lock(&inner.deletions).insert(rev.id.clone(), smh.clone());
        for (library, d) in &smh {
            if d.status == "pending" {
                self.retry_later(rev.clone(), library.clone(), d.attempts);
            }
        }
        let report = RevokeReport {
            revocation: rev,
            shared,
            smh,
        };
        self.audit(&report);
        tracing::info!(
            revocation = %report.revocation.id,
            user = %report.revocation.user_id,
            requested_by = %report.revocation.requested_by,
            shared = ?report.shared,
            "revocation made"
        );
        Ok(report)
    }

    fn refused(&self, req: &RevokeRequest, e: RevocationError) -> RevokeError {
        let mut fields = scope_fields(
            &req.requested_by,
            &req.user_id,
            req.client_id.as_deref(),
            req.session_id.as_deref(),
        );
        fields.insert("outcome".into(), json!("refused"));
        fields.insert("error".into(), json!(e.to_string()));
        self.0.audit.event("revocation", fields);
        tracing::error!(user = %req.user_id, error = %e, "revocation refused");
        match e {
            RevocationError::Invalid(m) => RevokeError::Invalid(m.to_string()),
            other => RevokeError::Full(other.to_string()),
        }
    }

    /// Waits (briefly) for Redis to take everything queued so far, ours
    /// included (the queue is first in, first out).
    async fn wait_shared(&self, r: &Replicator) -> Shared {
        let mut changes = r.changes();
        let taken = tokio::time::timeout(SHARE_WAIT, async {
            while r.pending() > 0 {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        match taken {
            Ok(true) => Shared::Published,
            _ => Shared::Queued,
        }
    }

    /// One delete per library, all at once.
    async fn delete_everywhere(&self, rev: &Revocation) -> BTreeMap<String, SmhDeletion> {
        let targets = self.0.targets.load_full();
        let mut calls = tokio::task::JoinSet::new();
        for (id, target) in targets.iter() {
            let (id, target, rev) = (id.clone(), target.clone(), rev.clone());
            calls.spawn(async move {
                let outcome = delete_user_tokens(&target, &scope(&id, &rev)).await;
                (id, outcome)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(done) = calls.join_next().await {
            let Ok((id, outcome)) = done else { continue };
            let d = self.count(&id, outcome, 0);
            if d.status == "pending" {
                self.0.pending.fetch_add(1, Ordering::Relaxed);
            }
            out.insert(id.to_string(), d);
        }
        self.refresh_metrics();
        out
    }

    /// Turns an outcome into what is shown, and counts it.
    fn count(&self, library: &str, outcome: DeleteOutcome, before: u32) -> SmhDeletion {
        let (result, d) = match outcome {
            DeleteOutcome::Confirmed { attempts } => (
                "confirmed",
                SmhDeletion {
                    status: "confirmed",
                    attempts: before + attempts,
                    error: None,
                },
            ),
            DeleteOutcome::Refused { status, reason } => (
                "refused",
                SmhDeletion {
                    status: "refused",
                    attempts: before + 1,
                    error: Some(if reason.contains(&status.to_string()) {
                        reason
                    } else {
                        format!("SMH answered {status}: {reason}")
                    }),
                },
            ),
            DeleteOutcome::Failed { attempts, reason } => (
                "failed",
                SmhDeletion {
                    status: "pending",
                    attempts: before + attempts,
                    error: Some(reason),
                },
            ),
        };
        self.0
            .metrics
            .revocation
            .deletions
            .with_label_values(&[library, result])
            .inc();
        d
    }

    /// Retries one library's delete in the background until SMH confirms
    /// or refuses it, the revocation expires, or the library goes away.
    fn retry_later(&self, rev: Revocation, library: String, attempts: u32) {
        let this = self.clone();
        tokio::spawn(async move {
            let (mut wait, max) = this.0.retry;
            let mut attempts = attempts;
            let last = loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max);
                if !rev.is_live(unix_now()) {
                    break SmhDeletion {
                        status: "expired",
                        attempts,
                        error: Some("not confirmed before the revocation expired".into()),
                    };
                }
                let Some(target) = this.0.targets.load().get(library.as_str()).cloned() else {
                    break SmhDeletion {
                        status: "abandoned",
                        attempts,
                        error: Some("the library is no longer configured".into()),
                    };
                };
                let outcome = delete_user_tokens(&target, &scope(&library, &rev)).await;
                let d = this.count(&library, outcome, attempts);
                attempts = d.attempts;
                if d.status != "pending" {
                    break d;
                }
                this.set(&rev.id, &library, d);
            };
            tracing::info!(
                revocation = %rev.id,
                library = %library,
                status = last.status,
                attempts = last.attempts,
                "background SMH token delete finished"
            );
            this.set(&rev.id, &library, last);
            this.0.pending.fetch_sub(1, Ordering::Relaxed);
            this.refresh_metrics();
        });
    }

    fn set(&self, id: &str, library: &str, d: SmhDeletion) {
        if let Some(m) = crate::sync::lock(&self.0.deletions).get_mut(id) {
            m.insert(library.to_string(), d);
        }
    }

    fn audit(&self, r: &RevokeReport) {
        let rev = &r.revocation;
        let mut fields = scope_fields(
            &rev.requested_by,
            &rev.user_id,
            rev.client_id.as_deref(),
            rev.session_id.as_deref(),
        );
        fields.insert("outcome".into(), json!("applied"));
        fields.insert("revocation_id".into(), json!(rev.id));
        fields.insert("reason".into(), json!(rev.reason));
        fields.insert("revoked_at".into(), json!(rev.revoked_at));
        fields.insert("expires_at".into(), json!(rev.expires_at));
        fields.insert("shared".into(), json!(r.shared));
        fields.insert("smh".into(), json!(r.smh));
        self.0.audit.event("revocation", fields);
    }
}

/// Ids as SMH takes them (sessions only ever carry such ids, so nothing
/// else could match, and a `,` would name several users in SMH's delete),
/// and no control characters in what goes to the logs.
fn check_names(req: &RevokeRequest) -> Result<(), RevokeError> {
    use crate::smh::{is_identity_value, MAX_CLIENT_ID_BYTES, MAX_USER_ID_BYTES};
    let id_rule = "printable ASCII without spaces or commas";
    if !is_identity_value(&req.user_id, MAX_USER_ID_BYTES) {
        return Err(RevokeError::Invalid(format!(
            "user_id must be 1-{MAX_USER_ID_BYTES} bytes of {id_rule}"
        )));
    }
    for (name, v) in [
        ("client_id", &req.client_id),
        ("session_id", &req.session_id),
    ] {
        if v.as_deref()
            .is_some_and(|v| !is_identity_value(v, MAX_CLIENT_ID_BYTES))
        {
            return Err(RevokeError::Invalid(format!(
                "{name}, when given, must be 1-{MAX_CLIENT_ID_BYTES} bytes of {id_rule}"
            )));
        }
    }
    let printable = |s: &str| !s.chars().any(char::is_control);
    if !printable(&req.requested_by) || req.reason.as_deref().is_some_and(|r| !printable(r)) {
        return Err(RevokeError::Invalid(
            "reason and requested_by must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// The fields every revocation audit line starts with.
fn scope_fields(
    requested_by: &str,
    user: &str,
    client: Option<&str>,
    session: Option<&str>,
) -> Map<String, Value> {
    let scope = match (client, session) {
        (_, Some(_)) => "session",
        (Some(_), None) => "device",
        (None, None) => "user",
    };
    let mut m = Map::new();
    m.insert("requested_by".into(), json!(requested_by));
    m.insert("user_id".into(), json!(user));
    m.insert("client_id".into(), json!(client));
    m.insert("session_id".into(), json!(session));
    m.insert("scope".into(), json!(scope));
    m
}

/// SMH's delete for the revocation's scope in one library. A session
/// scope names the session alone, as [`Revocation::covers`] does: SMH
/// would match a `client_id` sent with it too, and delete nothing if the
/// two disagree.
fn scope<'a>(library: &'a str, rev: &'a Revocation) -> DeleteScope<'a> {
    DeleteScope {
        library,
        user_id: &rev.user_id,
        client_id: match rev.session_id {
            Some(_) => None,
            None => rev.client_id.as_deref(),
        },
        session_id: rev.session_id.as_deref(),
    }
}

/// Drops the scope's cached tokens (connection memos included). A session
/// scope names the session alone, as [`Revocation::covers`] does.
fn forget(tokens: &TokenService, rev: &Revocation) {
    match (&rev.session_id, &rev.client_id) {
        (Some(s), _) => tokens.forget_user(&rev.user_id, None, Some(s)),
        (None, c) => tokens.forget_user(&rev.user_id, c.as_deref(), None),
    }
}
