//! Sessions: find the caller's credential (bearer header, cookie, or the
//! SMH-SDK `access_token` query parameter), validate it (JWT or
//! introspection), and produce the identity the rest of the request path
//! works with. Verified sessions are cached by a hash of the credential
//! until they expire, so the hot path does no signature checks.

pub mod credential;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod keys;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use moka::sync::Cache;
use moka::Expiry;
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::smh::{MAX_CLIENT_ID_BYTES, MAX_USER_ID_BYTES};
use credential::CredentialSource;
use introspect::{IntrospectionSettings, Introspector};
use jwt::{JwtSettings, JwtValidator};

/// A credential longer than this is refused before any parsing: real
/// session JWTs are a few hundred bytes to a few KiB.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Longest a verified session stays in the cache before its credential is
/// verified again, whatever its `exp` says: a day is far longer than any
/// cache hit pattern needs, and bounds the arithmetic on the claim.
pub const MAX_SESSION_CACHE: Duration = Duration::from_secs(24 * 3600);

/// The JWKS and introspection clients read answers within this long; a
/// session backend slower than that is down for the request waiting on it.
pub const BACKEND_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections to the IdP or session backend are kept this long (a
/// JWKS refresh every few minutes reuses one).
pub const BACKEND_POOL_IDLE: Duration = Duration::from_secs(90);

/// What `[session]` says, parsed: the credential sources, the validator's
/// keys or backend, and how identities are read from verified claims.
pub struct SessionSettings {
    pub sources: Vec<CredentialSource>,
    pub validator: ValidatorSettings,
    pub user_claim: String,
    pub client_claim: Option<String>,
    pub client_header: Option<http::HeaderName>,
    pub roles_claim: String,
    pub default_roles: Vec<String>,
    pub smh_compatible_errors: bool,
    pub cache_capacity: u64,
    pub leeway: Duration,
    /// Longest `exp - iat` accepted (`session.max_lifetime_secs`); also
    /// how long a revocation must live.
    pub max_lifetime: Duration,
    /// A digest of all of the above and the key material: equal
    /// fingerprints build equal validators.
    pub fingerprint: [u8; 32],
}

/// How credentials are checked.
pub enum ValidatorSettings {
    Jwt(JwtSettings),
    Introspection(IntrospectionSettings),
}

/// Who is calling, as the business's login system says.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// From the verified credential; printable ASCII without `,`
    /// ([`crate::smh::is_identity_value`]).
    pub user_id: Arc<str>,
    /// The client/device id: from the verified credential, or (only when
    /// `session.client_header` is configured and the credential names none)
    /// from that request header, which `client_id_verified` then says.
    pub client_id: Arc<str>,
    /// Whether `client_id` came from the verified credential. Only then
    /// may it decide anything (a `{client_id}` space template); a
    /// header-supplied id only labels the token and the audit record.
    pub client_id_verified: bool,
    pub session_id: Arc<str>,
    pub roles: Arc<[String]>,
    /// All claims (JWT) or the `claims` object (introspection), for policy
    /// templates such as `{claims.space_id}`.
    pub claims: Arc<Map<String, Value>>,
    pub issued_at: Option<u64>,
    /// When the session ends (`exp`, or the introspection answer's
    /// `expires_in` from when it was checked), if it says.
    pub expires_at: Option<u64>,
}

/// Whether the session came from the cache or needed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Cached,
    Validated,
}

struct CachedSession {
    session: Session,
    valid_until: Instant,
}

/// The session one client connection last presented. Gallery pages send
/// runs of requests with one credential over one connection; for those the
/// memo replaces a SHA-256 of the credential and a shared-cache lookup with
/// a comparison of the credential bytes. It belongs to one connection only
/// and never outlives the session's own validity (sessions have no other
/// revocation: the shared cache also keeps them until they expire).
#[derive(Default)]
pub struct SessionMemo(Option<(Box<str>, Arc<CachedSession>)>);

impl SessionMemo {
    fn get(&self, credential: &str, now: Instant) -> Option<&Session> {
        let (held, entry) = self.0.as_ref()?;
        (same_bytes(held, credential) && entry.valid_until > now).then_some(&entry.session)
    }

    /// `get` checks validity, so an entry that may not be cached at all
    /// (zero lifetime) is simply never answered from.
    fn remember(&mut self, credential: &str, entry: Arc<CachedSession>) {
        match &mut self.0 {
            Some((held, slot)) if same_bytes(held, credential) => *slot = entry,
            _ => self.0 = Some((credential.into(), entry)),
        }
    }
}

struct SessionExpiry;

impl Expiry<[u8; 32], Arc<CachedSession>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedSession>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(created_at))
    }
}

enum Validator {
    Jwt(JwtValidator),
    Introspection(Box<Introspector>),
}

pub struct SessionValidator {
    sources: Vec<CredentialSource>,
    validator: Validator,
    cache: Cache<[u8; 32], Arc<CachedSession>>,
    user_claim: String,
    client_claim: Option<String>,
    client_header: Option<http::HeaderName>,
    roles_claim: String,
    default_roles: Arc<[String]>,
    leeway: Duration,
    max_lifetime: Duration,
    smh_compatible_errors: bool,
    /// Claims policy templates read (`{claims.NAME}`); only these are kept
    /// in cached sessions, so a session costs its ids, not its whole token.
    kept_claims: Vec<String>,
    /// [`SessionSettings::fingerprint`] of what it was built from.
    fingerprint: [u8; 32],
    /// One shared role list per distinct set of roles.
    role_lists: std::sync::RwLock<std::collections::HashMap<Vec<String>, Arc<[String]>>>,
}

/// Distinct role lists interned; beyond this, lists are simply not shared.
const MAX_INTERNED_ROLE_LISTS: usize = 10_000;

impl std::fmt::Debug for SessionValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionValidator")
            .field("sources", &self.sources)
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl SessionValidator {
    /// `kept_claims`: the claim names policy templates use;
    /// `jwks_observer`: told the outcome of every JWKS fetch.
    pub async fn new(
        cfg: SessionSettings,
        connect_timeout: Duration,
        kept_claims: Vec<String>,
        jwks_observer: Option<Arc<dyn jwks::JwksObserver>>,
        require_keys: bool,
    ) -> anyhow::Result<Self> {
        let fingerprint = cfg.fingerprint;
        let validator = match cfg.validator {
            ValidatorSettings::Jwt(jwt) => Validator::Jwt(
                JwtValidator::new(jwt, connect_timeout, jwks_observer, require_keys).await?,
            ),
            ValidatorSettings::Introspection(i) => {
                Validator::Introspection(Box::new(Introspector::new(&i, connect_timeout)?))
            }
        };
        Ok(Self {
            sources: cfg.sources,
            validator,
            cache: Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .expire_after(SessionExpiry)
                .build(),
            user_claim: cfg.user_claim,
            client_claim: cfg.client_claim,
            client_header: cfg.client_header,
            roles_claim: cfg.roles_claim,
            default_roles: cfg.default_roles.into(),
            leeway: cfg.leeway,
            max_lifetime: cfg.max_lifetime,
            smh_compatible_errors: cfg.smh_compatible_errors,
            kept_claims,
            role_lists: Default::default(),
            fingerprint,
        })
    }

    /// Whether this validator was built from `settings` (and keeps the
    /// same claims): a reload then keeps it, with its cache and keys.
    pub fn built_from(&self, settings: &SessionSettings, kept_claims: &[String]) -> bool {
        self.fingerprint == settings.fingerprint && self.kept_claims == kept_claims
    }

    /// Validates the request's credential. Errors are already in the form
    /// the configuration asks for (gateway-style or SMH-SDK-compatible).
    ///
    /// `memo` is the connection's: a request presenting the same credential
    /// as the connection's previous one, while that session is still valid,
    /// is answered from it without the digest and the shared cache.
    pub async fn authenticate(
        &self,
        parts: &Parts,
        memo: &mut SessionMemo,
        now: Instant,
    ) -> Result<(Session, SessionOutcome), GatewayError> {
        self.authenticate_inner(parts, memo, now)
            .await
            .map_err(|e| self.shape(e))
    }

    async fn authenticate_inner(
        &self,
        parts: &Parts,
        memo: &mut SessionMemo,
        now: Instant,
    ) -> Result<(Session, SessionOutcome), GatewayError> {
        let credential = credential::extract(&self.sources, parts)?;
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(GatewayError::InvalidSession("credential too large".into()));
        }
        if let Some(session) = memo.get(&credential, now) {
            return Ok((
                self.with_client_header(session, parts)?,
                SessionOutcome::Cached,
            ));
        }
        let key = digest(&credential);
        let cached = self.cache.get(&key).filter(|hit| hit.valid_until > now);
        let (entry, outcome) = match cached {
            Some(hit) => (hit, SessionOutcome::Cached),
            None => {
                // Boxed: validation (JWKS fetch, introspection call) is a
                // large future, and inline it would make every request's
                // future that large, cache hits included.
                let (session, valid_for) = Box::pin(self.validate(&credential, &key)).await?;
                let entry = Arc::new(CachedSession {
                    session,
                    valid_until: Instant::now()
                        .checked_add(valid_for)
                        .unwrap_or_else(Instant::now),
                });
                if !valid_for.is_zero() {
                    self.cache.insert(key, entry.clone());
                }
                (entry, SessionOutcome::Validated)
            }
        };
        let session = self.with_client_header(&entry.session, parts)?;
        memo.remember(&credential, entry);
        Ok((session, outcome))
    }

    /// Validates without the session cache (benchmarks, diagnostics).
    pub async fn authenticate_uncached(&self, parts: &Parts) -> Result<Session, GatewayError> {
        let credential = credential::extract(&self.sources, parts)?;
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(GatewayError::InvalidSession("credential too large".into()));
        }
        let key = digest(&credential);
        let (session, _) = self.validate(&credential, &key).await?;
        self.with_client_header(&session, parts)
    }

    /// Checks a credential with the configured validator: the session and
    /// how long it may be cached.
    async fn validate(
        &self,
        credential: &str,
        key: &[u8; 32],
    ) -> Result<(Session, Duration), GatewayError> {
        Ok(match &self.validator {
            Validator::Jwt(v) => {
                let verified = v.validate(credential).await?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                self.bounded_lifetime(
                    verified.claims.get("iat").and_then(Value::as_u64),
                    Some(verified.expires_at),
                    now,
                )?;
                // `exp` is the client's number (signed, but any size): the
                // cache keeps the session at most MAX_SESSION_CACHE, after
                // which it is simply verified again.
                let valid_for = Duration::from_secs(verified.expires_at.saturating_sub(now))
                    .saturating_add(self.leeway)
                    .min(MAX_SESSION_CACHE);
                let mut session = self.session_from_claims(verified.claims)?;
                session.expires_at = Some(verified.expires_at);
                (session, valid_for)
            }
            Validator::Introspection(i) => {
                let id = i.check(credential, key).await?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let expires_at = id.expires_in.map(|s| now.saturating_add(s));
                let iat = id
                    .iat
                    .or_else(|| id.claims.get("iat").and_then(Value::as_u64));
                let iat = self.bounded_lifetime(iat, expires_at, now)?;
                // Never cached past the longest lifetime: the backend is
                // asked again, and a revocation outlives what it refuses.
                let left = (iat + self.max_lifetime.as_secs()).saturating_sub(now);
                let ttl = id
                    .expires_in
                    .map_or(i.ttl, |s| i.ttl.min(Duration::from_secs(s)))
                    .min(Duration::from_secs(left));
                let roles = match id.roles {
                    Some(r) if !r.is_empty() => self.intern_roles(r),
                    _ => self.roles_or_default(roles_from(&id.claims, &self.roles_claim)),
                };
                let client_id = checked_id(id.client_id, "client_id", MAX_CLIENT_ID_BYTES)?;
                let session = Session {
                    user_id: checked_user(id.user_id)?.into(),
                    client_id_verified: !client_id.is_empty(),
                    client_id: client_id.into(),
                    session_id: checked_id(id.session_id, "session_id", MAX_CLIENT_ID_BYTES)?
                        .into(),
                    roles,
                    claims: Arc::new(self.keep_claims(id.claims)),
                    issued_at: Some(iat),
                    expires_at,
                };
                (session, ttl)
            }
        })
    }

    fn session_from_claims(&self, claims: Map<String, Value>) -> Result<Session, GatewayError> {
        let user_id = claim_str(&claims, &self.user_claim)
            .filter(|u| !u.is_empty())
            .ok_or(GatewayError::NoUserInSession)?;
        let user_id = checked_user(user_id)?;
        let client_id = checked_id(
            self.client_claim
                .as_deref()
                .and_then(|c| claim_str(&claims, c)),
            "client claim",
            MAX_CLIENT_ID_BYTES,
        )?;
        // `sid` names the session; a `jti` is only a fallback, so one that
        // SMH could not take is dropped rather than refusing the session.
        let session_id = match claim_str(&claims, "sid") {
            Some(sid) => checked_id(Some(sid), "sid", MAX_CLIENT_ID_BYTES)?,
            None => claim_str(&claims, "jti")
                .filter(|j| crate::smh::is_identity_value(j, MAX_CLIENT_ID_BYTES))
                .unwrap_or_default(),
        };
        let roles = roles_from(&claims, &self.roles_claim);
        Ok(Session {
            user_id: user_id.into(),
            client_id_verified: !client_id.is_empty(),
            client_id: client_id.into(),
            session_id: session_id.into(),
            roles: self.roles_or_default(roles),
            issued_at: claims.get("iat").and_then(Value::as_u64),
            expires_at: None,
            claims: Arc::new(self.keep_claims(claims)),
        })
    }

    fn roles_or_default(&self, roles: Vec<String>) -> Arc<[String]> {
        if roles.is_empty() {
            self.default_roles.clone()
        } else {
            self.intern_roles(roles)
        }
    }

    fn intern_roles(&self, roles: Vec<String>) -> Arc<[String]> {
        if let Some(shared) = self
            .role_lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&roles)
        {
            return shared.clone();
        }
        let mut lists = self.role_lists.write().unwrap_or_else(|p| p.into_inner());
        if lists.len() >= MAX_INTERNED_ROLE_LISTS {
            return roles.into();
        }
        lists
            .entry(roles.clone())
            .or_insert_with(|| roles.into())
            .clone()
    }

    fn keep_claims(&self, mut claims: Map<String, Value>) -> Map<String, Value> {
        claims.retain(|k, _| self.kept_claims.iter().any(|c| c == k));
        claims
    }

    /// When `session.client_header` is configured, a session without a
    /// client id from its credential takes the one the request names in
    /// that header (per request, not cached), unverified: it labels the
    /// token and the audit record and decides nothing.
    fn with_client_header(
        &self,
        session: &Session,
        parts: &Parts,
    ) -> Result<Session, GatewayError> {
        let mut s = session.clone();
        let Some(header) = &self.client_header else {
            return Ok(s);
        };
        if s.client_id.is_empty() {
            if let Some(v) = parts.headers.get(header) {
                let v = v.to_str().ok().filter(|v| is_header_client_id(v)).ok_or_else(|| {
                    GatewayError::BadRequest(format!(
                        "{header}: a device id is 1 to {MAX_HEADER_CLIENT_ID_BYTES} ASCII letters, digits, '.', '_', ':' or '-'"
                    ))
                })?;
                s.client_id = v.into();
                s.client_id_verified = false;
            }
        }
        Ok(s)
    }

    /// A revocation must outlive every session issued before it, so a
    /// session's lifetime is bounded: it names when it was issued and
    /// `exp - iat` is at most `session.max_lifetime_secs`.
    fn bounded_lifetime(
        &self,
        issued_at: Option<u64>,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<u64, GatewayError> {
        let max = self.max_lifetime.as_secs();
        let Some(iat) = issued_at else {
            return Err(GatewayError::InvalidSession(
                "session has no iat (issue time; needed to bound its lifetime)".into(),
            ));
        };
        if iat > now + issued_ahead_secs(self.leeway.as_secs()) {
            return Err(GatewayError::InvalidSession("issued in the future".into()));
        }
        if expires_at.is_some_and(|exp| exp.saturating_sub(iat) > max) {
            return Err(GatewayError::InvalidSession(format!(
                "session lifetime (exp - iat) is longer than session.max_lifetime_secs ({max})"
            )));
        }
        if now.saturating_sub(iat) > max + self.leeway.as_secs() {
            return Err(GatewayError::InvalidSession(format!(
                "session was issued longer ago than session.max_lifetime_secs ({max})"
            )));
        }
        Ok(iat)
    }

    /// How long a revocation made now must live: a session it refuses is
    /// stamped at most [`MAX_ISSUED_AHEAD_SECS`] after it (see
    /// [`Self::revocation_iat`]) and accepted at most the longest lifetime
    /// plus the leeway after its stamp; one second more because validity
    /// ends inclusive.
    pub fn revocation_lifetime(&self) -> Duration {
        let ahead = issued_ahead_secs(self.leeway.as_secs());
        self.max_lifetime + self.leeway + Duration::from_secs(ahead + 1)
    }

    /// The issue time a revocation compares: `iat` less how far ahead an
    /// `iat` may be. A session stamped a few seconds after a revocation
    /// may have been issued before it by a fast clock, so it is refused
    /// too; the price is that a new login within those seconds after a
    /// revocation is refused as well (SDKs ask again).
    pub fn revocation_iat(&self, session: &Session) -> Option<u64> {
        let ahead = issued_ahead_secs(self.leeway.as_secs());
        session.issued_at.map(|iat| iat.saturating_sub(ahead))
    }

    /// The answer to a session that was revoked, shaped like any invalid
    /// session (SDKs then refresh and the business issues a new one).
    pub fn revoked(&self) -> GatewayError {
        self.shape(GatewayError::InvalidSession("session revoked".into()))
    }

    fn shape(&self, e: GatewayError) -> GatewayError {
        if !self.smh_compatible_errors {
            return e;
        }
        match e {
            GatewayError::MissingCredential => GatewayError::SmhEmptyAccessToken,
            GatewayError::InvalidSession(m) => GatewayError::SmhInvalidAccessToken(m),
            GatewayError::NoUserInSession => {
                GatewayError::SmhInvalidAccessToken("session names no user".into())
            }
            other => other,
        }
    }

    /// Whether the keys sessions are checked with are current: with a JWKS
    /// URL, its last fetch succeeded (the keys held are served meanwhile).
    pub fn keys_current(&self) -> Result<(), String> {
        match &self.validator {
            Validator::Jwt(j) if !j.remote_healthy() => {
                Err("the last JWKS fetch failed (serving the keys fetched before)".into())
            }
            _ => Ok(()),
        }
    }

    /// Sessions in the cache (for metrics).
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// How far ahead of this gateway's clock a session's `iat` may be: the
/// issuer's clock may run a little fast (NTP keeps clocks well within a
/// second; this allows a sloppy one). It is also how long after a
/// revocation a new session of its scope is still refused: one stamped
/// that far ahead may have been issued before the revocation. At most the
/// configured leeway.
pub const MAX_ISSUED_AHEAD_SECS: u64 = 5;

/// [`MAX_ISSUED_AHEAD_SECS`], or the leeway when that is smaller.
pub fn issued_ahead_secs(leeway: u64) -> u64 {
    MAX_ISSUED_AHEAD_SECS.min(leeway)
}

/// Longest device id taken from the client header: device ids are short
/// (a UUID is 36 bytes), and every distinct one is a token-cache key.
pub const MAX_HEADER_CLIENT_ID_BYTES: usize = 64;

/// The header-supplied device id grammar: narrower than a verified id,
/// since the client picks it.
fn is_header_client_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_HEADER_CLIENT_ID_BYTES
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// A verified user id SMH can take as one `user_id`.
fn checked_user(user_id: String) -> Result<String, GatewayError> {
    if crate::smh::is_identity_value(&user_id, MAX_USER_ID_BYTES) {
        Ok(user_id)
    } else {
        Err(GatewayError::InvalidSession(format!(
            "the session's user id is not usable at SMH: it must be 1 to {MAX_USER_ID_BYTES} bytes of printable ASCII without spaces or ','"
        )))
    }
}

/// An optional verified id (client, session); empty when absent.
fn checked_id(v: Option<String>, what: &str, max: usize) -> Result<String, GatewayError> {
    match v {
        None => Ok(String::new()),
        Some(v) if v.is_empty() || crate::smh::is_identity_value(&v, max) => Ok(v),
        Some(_) => Err(GatewayError::InvalidSession(format!(
            "the session's {what} is not usable at SMH: it must be at most {max} bytes of printable ASCII without spaces or ','"
        ))),
    }
}

/// Compares without stopping at the first difference: a connection shared
/// by several users (a proxy in front of the gateway) must not learn one
/// user's credential from how long a mismatch with another's takes.
fn same_bytes(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

fn digest(credential: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, credential.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A claim as a string; numbers are accepted for ids (`"sub": 42`).
pub fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn roles_from(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}
