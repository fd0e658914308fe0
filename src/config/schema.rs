//! The configuration file as written: serde structs, strict about unknown
//! keys, with the position of every value that a later check may refuse.
//! Strings that may hold `${ENV}` references stay raw text here; turning
//! them into typed settings is `build`'s job.

use serde::Deserialize;
use toml::Spanned;

use super::secret::{HmacField, RedisUrlField, SecretField, SecretSource, TokenField};

/// A string value as written, with its position; may hold `${ENV}`.
pub type Text = Spanned<String>;

/// Where the client listener binds when the file does not say.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// The admin port stays on loopback unless the operator opens it on
/// purpose. 9902, not 9090: Prometheus itself listens on 9090 (and Envoy's
/// admin on 9901, node_exporter on 9100), and a gateway scraped by a
/// Prometheus on the same host must not collide with it.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9902";
pub use crate::policy::DEFAULT_TOKEN_PERIOD_SECS;
/// Cached tokens are dropped this long before SMH would expire them, so a
/// token is never used in the last moments of its life (clock skew, latency).
pub const DEFAULT_TOKEN_SAFETY_MARGIN_SECS: u64 = 60;
/// Even a constantly used token is re-minted after this long: SMH may cap how
/// far a token can be slid (smh-api.md open question 2), and this bounds it.
pub const DEFAULT_TOKEN_MAX_AGE_SECS: u64 = 12 * 3600;
/// 100k cached tokens is a few tens of MiB at most and covers a large tenant.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 100_000;
/// Clock skew tolerated on session `exp`/`nbf`/`iat`.
pub const DEFAULT_SESSION_LEEWAY_SECS: u64 = 30;
/// Longest session lifetime (`exp - iat`) accepted: a week covers a web
/// or app login that is remembered for days, and every revocation is kept
/// this long (it must outlive every session issued before it).
pub const DEFAULT_SESSION_MAX_LIFETIME_SECS: u64 = 7 * 86_400;
/// Upper bound for `session.max_lifetime_secs`: revocations live that
/// long in memory and in Redis; a quarter is already longer than any
/// sensible session.
pub const MAX_SESSION_LIFETIME_SECS: u64 = 90 * 86_400;
/// Whole-request deadline at the edge; SMH API calls are small JSON calls.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// In-flight requests per process before new ones are refused with 503.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 10_000;
/// Request bodies up to this size are kept for a replay after
/// `InvalidAccessToken`; SMH API bodies are small JSON, file bytes go to COS.
pub const DEFAULT_REPLAY_BODY_LIMIT: usize = 64 * 1024;
/// SMH API bodies are small JSON (file bytes go to COS): a body larger
/// than this is refused with 413 before it is read.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// SMH paths are a library, a space and a file path (names of at most 255
/// bytes per segment); 8 KiB is nginx's default request-line limit.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Headers per request: hyper's own default; SDKs and browsers send ~20.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// The request head's header bytes: room for a large JWT (a few KiB) and
/// cookies, like nginx's 4 x 8 KiB header buffers.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;
// The listener's own defaults live with the listener (src/server).
pub use crate::server::{
    DEFAULT_DRAIN_TIMEOUT_SECS, DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_SEND_TIMEOUT_SECS,
};
/// After SIGTERM `/readyz` answers 503 while the listener keeps accepting
/// this long, so load balancers stop sending before connections are
/// refused (a few health-check intervals).
pub const DEFAULT_LAME_DUCK_SECS: u64 = 5;
/// Distinct token keys (library x device x grant) one user may hold in
/// the cache; another is refused with 429 until one expires.
pub const DEFAULT_MAX_TOKEN_KEYS_PER_USER: usize = 32;
/// The token cache's memory bound: entries weigh their bytes.
pub const DEFAULT_TOKEN_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// A mint SMH refused (wrong secret, bad library) is answered from memory
/// this long instead of asking SMH again on every request.
pub const DEFAULT_TOKEN_REFUSED_RETRY_SECS: u64 = 10;
/// A response body from SMH that sends nothing for this long is cut off.
pub const DEFAULT_UPSTREAM_READ_TIMEOUT_SECS: u64 = 30;
/// Connecting to SMH should take well under this on any sane network.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Idle upstream connections are kept this long for reuse.
pub const DEFAULT_UPSTREAM_POOL_IDLE_SECS: u64 = 90;
/// The JWT claim that names the operator, unless configured otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// The claim listing the session's roles.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
/// 100k verified sessions: a few tens of MiB, covers a large active user base.
pub const DEFAULT_SESSION_CACHE_CAPACITY: u64 = 100_000;
/// IdPs rotate keys rarely and publish new ones ahead of use; 5 min keeps
/// the gateway current without hammering the IdP.
pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
/// An unknown `kid` triggers a re-fetch at most this often, so forged
/// tokens with random kids cannot turn the gateway against the IdP.
pub const DEFAULT_JWKS_MIN_REFETCH_SECS: u64 = 30;
/// The session backend is on the request path; answer 503 rather than hang.
pub const DEFAULT_INTROSPECTION_TIMEOUT_SECS: u64 = 3;
/// Positive introspection answers are reused for a minute.
pub const DEFAULT_INTROSPECTION_TTL_SECS: u64 = 60;
/// Negative answers are reused briefly (absorbs retries of a bad credential).
pub const DEFAULT_INTROSPECTION_NEGATIVE_TTL_SECS: u64 = 5;
/// Audit files rotate at 100 MiB: a day of busy traffic, easy to ship.
pub const DEFAULT_AUDIT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Rotated audit files kept besides the live one.
pub const DEFAULT_AUDIT_MAX_FILES: u32 = 5;
/// Records queued for the writer before new ones are dropped (and counted):
/// seconds of peak traffic, a few tens of MiB at most.
pub const DEFAULT_AUDIT_QUEUE_CAPACITY: usize = 65_536;
/// Browsers cache a preflight this long.
pub const DEFAULT_CORS_MAX_AGE_SECS: u64 = 600;

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listener: ListenerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[[library]]` tables: one per SMH media library the gateway fronts.
    #[serde(rename = "library", default)]
    pub libraries: Vec<Spanned<LibraryConfig>>,
    #[serde(default)]
    pub tokens: TokenConfig,
    #[serde(default)]
    pub session: SessionConfig,
    /// `[[role]]` tables: what each session role may ask SMH for.
    #[serde(rename = "role", default)]
    pub roles: Vec<Spanned<RoleConfig>>,
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub revocation: RevocationConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_listen")]
    pub address: Text,
    /// PEM certificate chain and key; both required for `run`.
    pub cert_file: Option<Text>,
    pub key_file: Option<Text>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: default_listen(),
            cert_file: None,
            key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub address: Text,
    /// `/readyz` also checks that each library's SMH endpoint answers over
    /// TLS (cached a few seconds). Off by default: readiness then means the
    /// gateway itself is up.
    #[serde(default)]
    pub check_upstreams: bool,
    /// `/readyz` also requires the session keys to be current: with a
    /// `jwks_url`, a successful fetch within three refresh periods. Off by
    /// default: an IdP outage then degrades (cached keys keep working)
    /// instead of taking every replica out of the load balancer at once.
    #[serde(default)]
    pub check_session_keys: bool,
    /// `/readyz` also requires the revocation list to have been loaded from
    /// Redis once since start (with `[revocation] redis_url`): a replica
    /// started during a Redis outage then stays out of the load balancer
    /// rather than serve sessions revoked on other replicas. Off by
    /// default: during such an outage no replica that restarts would come
    /// back. A replica that was in sync and lost Redis stays ready either way.
    #[serde(default)]
    pub check_revocations: bool,
    /// Bearer token for `/admin/v1/*`: `token = "${VAR}"` or `token_file`.
    /// Without one those routes are disabled.
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Text>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: default_admin_listen(),
            check_upstreams: false,
            check_session_keys: false,
            check_revocations: false,
            token: None,
            token_file: None,
        }
    }
}

impl AdminConfig {
    pub fn token_source(&self) -> SecretSource<'_, TokenField> {
        SecretSource::new(&self.token, &self.token_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    /// The LibraryId, as shown in the SMH console.
    pub id: Spanned<String>,
    /// Defaults to `https://<id>.api.tencentsmh.cn`.
    pub upstream: Option<Text>,
    /// Extra PEM CA bundle trusted for this upstream (on top of public roots).
    pub ca_file: Option<Text>,
    /// The LibrarySecret: `secret = "${VAR}"` or `secret_file = "/path"`.
    pub secret: Option<Spanned<String>>,
    pub secret_file: Option<Text>,
}

impl LibraryConfig {
    pub fn secret_source(&self) -> SecretSource<'_, SecretField> {
        SecretSource::new(&self.secret, &self.secret_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
pub struct TokenConfig {
    #[serde(default = "default_token_capacity")]
    pub cache_capacity: u64,
    pub cache_max_bytes: u64,
    pub max_keys_per_user: usize,
    pub refused_retry_secs: u64,
    #[serde(default = "default_token_margin")]
    pub safety_margin_secs: u64,
    #[serde(default = "default_token_max_age")]
    pub max_age_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
            cache_max_bytes: DEFAULT_TOKEN_CACHE_MAX_BYTES,
            max_keys_per_user: DEFAULT_MAX_TOKEN_KEYS_PER_USER,
            refused_retry_secs: DEFAULT_TOKEN_REFUSED_RETRY_SECS,
            safety_margin_secs: DEFAULT_TOKEN_SAFETY_MARGIN_SECS,
            max_age_secs: DEFAULT_TOKEN_MAX_AGE_SECS,
        }
    }
}

/// How a session credential is validated.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// Signed JWTs, verified locally (static keys or JWKS).
    #[default]
    Jwt,
    /// Opaque credentials, checked by calling the business backend.
    Introspection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    #[serde(default)]
    pub mode: SessionMode,
    /// Where the credential is looked for, in order: `"bearer"`
    /// (Authorization header), `"cookie:<name>"`, `"query"` (the
    /// `access_token` query parameter, as SMH SDKs send it).
    #[serde(default = "default_credentials")]
    pub credentials: Vec<Spanned<String>>,
    /// Claim naming the operator recorded by SMH.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim naming the client/device (verified; may fill `{client_id}`).
    pub client_claim: Option<String>,
    /// Optional request header naming the device when the session has no
    /// client claim. Unset by default: the client picks that value, so it
    /// labels tokens and audit records only and never decides anything.
    pub client_header: Option<String>,
    /// Claim carrying the role list (array of strings or space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Roles given to a session whose token names none.
    #[serde(default)]
    pub default_roles: Vec<String>,
    /// Answer a missing/invalid/expired session the way SMH answers a bad
    /// token (400 `EmptyAccessToken` / 403 `InvalidAccessToken`), so SMH SDKs
    /// run their token-refresh callback (they refresh on nothing else) and
    /// fetch a new business session. On by default so an SDK works
    /// unmodified; the trade-off is that other clients see 403, not 401,
    /// for an expired session. `false` answers 401 `MissingSession` /
    /// `InvalidSession`.
    #[serde(default = "default_true")]
    pub smh_compatible_errors: bool,
    /// Verified sessions kept so the hot path skips signature checks.
    #[serde(default = "default_session_capacity")]
    pub cache_capacity: u64,
    /// Longest lifetime (`exp - iat`) a session may have; JWT sessions
    /// must carry both claims. Revocations live this long.
    #[serde(default = "default_session_max_lifetime")]
    pub max_lifetime_secs: u64,
    #[serde(default)]
    pub jwt: JwtConfig,
    pub introspection: Option<IntrospectionConfig>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            mode: SessionMode::default(),
            credentials: default_credentials(),
            user_claim: default_user_claim(),
            client_claim: None,
            client_header: None,
            roles_claim: default_roles_claim(),
            default_roles: Vec::new(),
            smh_compatible_errors: true,
            cache_capacity: DEFAULT_SESSION_CACHE_CAPACITY,
            max_lifetime_secs: DEFAULT_SESSION_MAX_LIFETIME_SECS,
            jwt: JwtConfig::default(),
            introspection: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms, pinned: a token claiming any other `alg` is
    /// refused before key lookup (no `none`, no HS/RS confusion).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Spanned<String>>,
    /// HMAC key for HS256/384/512: `hmac_secret = "${VAR}"` or `hmac_secret_file`.
    pub hmac_secret: Option<Spanned<String>>,
    pub hmac_secret_file: Option<Text>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519) for tokens without a `kid`.
    #[serde(default)]
    pub public_key_files: Vec<Text>,
    /// A JWK Set on disk (`{"keys": [...]}`), looked up by `kid`.
    pub jwks_file: Option<Text>,
    /// A JWK Set written inline (TOML multi-line string).
    pub jwks: Option<Spanned<String>>,
    /// A JWKS URL, fetched at start, refreshed in the background, re-fetched
    /// (rate limited) when an unknown `kid` arrives, served stale on IdP outages.
    pub jwks_url: Option<Text>,
    /// Extra CA for the JWKS URL (on top of public roots).
    pub jwks_ca_file: Option<Text>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: default_algorithms(),
            hmac_secret: None,
            hmac_secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            jwks: None,
            jwks_url: None,
            jwks_ca_file: None,
            jwks_refresh_secs: DEFAULT_JWKS_REFRESH_SECS,
            jwks_min_refetch_secs: DEFAULT_JWKS_MIN_REFETCH_SECS,
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_SESSION_LEEWAY_SECS,
        }
    }
}

impl JwtConfig {
    pub fn hmac_source(&self) -> SecretSource<'_, HmacField> {
        SecretSource::new(&self.hmac_secret, &self.hmac_secret_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The business backend's session endpoint. The gateway sends
    /// `GET <url>` with `Authorization: Bearer <credential>`; the backend
    /// answers 200 `{user_id, client_id?, session_id?, roles?, claims?}` or 401.
    pub url: Text,
    pub ca_file: Option<Text>,
    #[serde(default = "default_introspection_timeout")]
    pub timeout_secs: u64,
    /// How long a positive answer is reused.
    #[serde(default = "default_introspection_ttl")]
    pub cache_ttl_secs: u64,
    /// How long a 401 answer is reused (short: a user who just logged in
    /// should not wait long).
    #[serde(default = "default_introspection_negative_ttl")]
    pub negative_cache_ttl_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: Spanned<String>,
    /// SMH grant names (`smh-api.md` 3.2); empty = read-only.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Tenant spaces this role reaches: literal ids, `-` for single-tenant,
    /// `*` for any, or templates `{user_id}`, `{client_id}`, `{claims.NAME}`.
    #[serde(default = "default_spaces")]
    pub spaces: Vec<Spanned<String>>,
    /// Lifetime (and sliding extension) of SMH tokens minted for this role.
    pub period_secs: Option<Spanned<u64>>,
    /// Optional allow-list checked at the gateway, entries like
    /// `"GET directory"`, `"PUT file"`, `"POST file?confirm"`, `"* *"`.
    /// Absent: every operation (SMH's grants still apply).
    pub operations: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or `"*"`.
    pub allowed_origins: Vec<Spanned<String>>,
    #[serde(default = "default_cors_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a page may send; an entry ending in `*` is a prefix.
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read.
    #[serde(default = "default_cors_exposed")]
    pub exposed_headers: Vec<String>,
    /// Needed for cookie sessions (`credentials: "include"`); then origins
    /// are echoed, never `*`.
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_cors_max_age")]
    pub max_age_secs: u64,
}

pub use crate::audit::AuditSink;

/// `[revocation]`: where replicas share revocations. Without a Redis URL
/// revocation is local to the process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// `redis://host:port[/db]` or `rediss://` (TLS). A password may come
    /// only from `${VAR}` or `redis_url_file`, never written in the file.
    pub redis_url: Option<Text>,
    pub redis_url_file: Option<Text>,
    /// PEM roots for `rediss://` with a private CA (managed Redis).
    pub redis_ca_file: Option<Text>,
    /// Names this replica in the revocations it makes; must differ between
    /// replicas. Default: the host name and 8 random hex digits.
    pub replica_id: Option<Text>,
    /// Revocations held at most (the list refuses new ones beyond, never
    /// dropping one); logouts may use 90% of it, the rest is kept for the
    /// admin route.
    #[serde(default = "default_max_revocations")]
    pub max_entries: usize,
}

fn default_max_revocations() -> usize {
    crate::revocation::DEFAULT_MAX_REVOCATIONS
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_url_file: None,
            redis_ca_file: None,
            replica_id: None,
            max_entries: default_max_revocations(),
        }
    }
}

impl RevocationConfig {
    pub fn url_source(&self) -> SecretSource<'_, RedisUrlField> {
        SecretSource::new(&self.redis_url, &self.redis_url_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub sink: AuditSink,
    /// JSON-lines file for `file`/`both`.
    pub file: Option<Text>,
    #[serde(default = "default_audit_max_bytes")]
    pub max_file_bytes: u64,
    #[serde(default = "default_audit_max_files")]
    pub max_files: u32,
    #[serde(default = "default_audit_queue")]
    pub queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: AuditSink::default(),
            file: None,
            max_file_bytes: DEFAULT_AUDIT_MAX_FILE_BYTES,
            max_files: DEFAULT_AUDIT_MAX_FILES,
            queue_capacity: DEFAULT_AUDIT_QUEUE_CAPACITY,
        }
    }
}

fn default_audit_max_bytes() -> u64 {
    DEFAULT_AUDIT_MAX_FILE_BYTES
}
fn default_audit_max_files() -> u32 {
    DEFAULT_AUDIT_MAX_FILES
}
fn default_audit_queue() -> usize {
    DEFAULT_AUDIT_QUEUE_CAPACITY
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub request_timeout_secs: u64,
    pub max_concurrent_requests: usize,
    pub replay_body_limit_bytes: usize,
    pub max_body_bytes: u64,
    pub max_uri_bytes: usize,
    pub max_request_headers: usize,
    pub max_request_header_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_concurrent_streams: u32,
    pub send_timeout_secs: u64,
    pub lame_duck_secs: u64,
    pub drain_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            replay_body_limit_bytes: DEFAULT_REPLAY_BODY_LIMIT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            send_timeout_secs: DEFAULT_SEND_TIMEOUT_SECS,
            lame_duck_secs: DEFAULT_LAME_DUCK_SECS,
            drain_timeout_secs: DEFAULT_DRAIN_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_secs: u64,
    /// Offer HTTP/2 to SMH (one multiplexed connection per library) instead
    /// of the HTTP/1.1 keep-alive pool. Off by default: measured on loopback
    /// the two cost the same CPU per proxied request (h2 spends ~15% more
    /// instructions in HPACK and stream bookkeeping, and saves them again by
    /// coalescing writes of concurrent streams), while the pool keeps one
    /// slow or lost response from stalling every other request on a shared
    /// connection, and is what the nginx baseline does. Turn it on when the
    /// number of sockets to SMH matters more.
    #[serde(default)]
    pub http2: bool,
    #[serde(default = "default_upstream_read_timeout")]
    pub read_timeout_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS,
            pool_idle_secs: DEFAULT_UPSTREAM_POOL_IDLE_SECS,
            http2: false,
            read_timeout_secs: DEFAULT_UPSTREAM_READ_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `smh_gateway=debug`; `RUST_LOG` wins.
    pub level: Option<String>,
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Bearer first, then the `access_token` query parameter: SMH's SDKs put
/// their token there (every SDK, every call), so an unmodified SDK works.
/// The trade-off is a session in URLs, which intermediaries and browser
/// history may keep; `credentials = ["bearer"]` turns it off.
fn default_credentials() -> Vec<Spanned<String>> {
    ["bearer", "query"]
        .map(|c| Spanned::new(0..0, c.to_string()))
        .to_vec()
}
fn default_true() -> bool {
    true
}
fn default_session_max_lifetime() -> u64 {
    DEFAULT_SESSION_MAX_LIFETIME_SECS
}
fn default_algorithms() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "HS256".to_string())]
}
fn default_session_capacity() -> u64 {
    DEFAULT_SESSION_CACHE_CAPACITY
}
fn default_jwks_refresh() -> u64 {
    DEFAULT_JWKS_REFRESH_SECS
}
fn default_jwks_min_refetch() -> u64 {
    DEFAULT_JWKS_MIN_REFETCH_SECS
}
fn default_introspection_timeout() -> u64 {
    DEFAULT_INTROSPECTION_TIMEOUT_SECS
}
fn default_introspection_ttl() -> u64 {
    DEFAULT_INTROSPECTION_TTL_SECS
}
fn default_introspection_negative_ttl() -> u64 {
    DEFAULT_INTROSPECTION_NEGATIVE_TTL_SECS
}
fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "POST", "DELETE"]
        .map(String::from)
        .to_vec()
}
fn default_cors_headers() -> Vec<String> {
    [
        "authorization",
        "content-type",
        "x-client-id",
        "x-request-id",
        "range",
        "x-smh-meta-*",
        // SMH's TypeScript SDK sends `Client-Version: smh-js-sdk/<v>` on
        // every call; a later version plans `X-SMH-SDK-Version`.
        "client-version",
        "x-smh-sdk-version",
    ]
    .map(String::from)
    .to_vec()
}
fn default_cors_exposed() -> Vec<String> {
    [
        "x-request-id",
        "x-smh-request-id",
        "location",
        "content-range",
        "x-smh-type",
        "x-smh-size",
        "x-smh-etag",
        "x-smh-crc64",
        "x-smh-content-type",
        "x-smh-creation-time",
    ]
    .map(String::from)
    .to_vec()
}
fn default_cors_max_age() -> u64 {
    DEFAULT_CORS_MAX_AGE_SECS
}
fn default_listen() -> Text {
    Spanned::new(0..0, DEFAULT_LISTEN.to_string())
}
fn default_admin_listen() -> Text {
    Spanned::new(0..0, DEFAULT_ADMIN_LISTEN.to_string())
}
fn default_token_capacity() -> u64 {
    DEFAULT_TOKEN_CACHE_CAPACITY
}
fn default_token_margin() -> u64 {
    DEFAULT_TOKEN_SAFETY_MARGIN_SECS
}
fn default_token_max_age() -> u64 {
    DEFAULT_TOKEN_MAX_AGE_SECS
}
fn default_user_claim() -> String {
    DEFAULT_USER_CLAIM.into()
}
fn default_roles_claim() -> String {
    DEFAULT_ROLES_CLAIM.into()
}
fn default_leeway() -> u64 {
    DEFAULT_SESSION_LEEWAY_SECS
}
fn default_spaces() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "-".to_string())]
}
fn default_upstream_read_timeout() -> u64 {
    DEFAULT_UPSTREAM_READ_TIMEOUT_SECS
}
fn default_connect_timeout() -> u64 {
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS
}
fn default_pool_idle() -> u64 {
    DEFAULT_UPSTREAM_POOL_IDLE_SECS
}
