//! The gateway's configuration: a TOML file, strict about unknown keys,
//! `${ENV}` interpolation in every string value, secrets from the environment
//! or `*_file` paths (never inline), and validation errors that name the file,
//! line and column.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// Where the client listener binds when the file does not say.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// The admin port stays on loopback unless the operator opens it on purpose.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// SMH tokens the gateway asks for live one hour: short enough that a token
/// outliving a failed revocation does little harm, long enough to amortise a
/// mint across thousands of requests (SMH's own default is 24 h).
pub const DEFAULT_TOKEN_PERIOD_SECS: u64 = 3600;
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
/// The longest timeout any duration setting may name.
pub const MAX_DURATION_SECS: u64 = 86_400;
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(default = "default_listen")]
    pub address: Env<SocketAddr>,
    /// PEM certificate chain and key; both required for `run`.
    pub cert_file: Option<Spanned<Env<PathBuf>>>,
    pub key_file: Option<Spanned<Env<PathBuf>>>,
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
    pub address: Env<SocketAddr>,
    /// `/readyz` also checks that each library's SMH endpoint answers over
    /// TLS (cached a few seconds). Off by default: readiness then means the
    /// gateway itself is up.
    #[serde(default)]
    pub check_upstreams: bool,
    /// Bearer token for `/admin/v1/*`: `token = "${VAR}"` or `token_file`.
    /// Without one those routes are disabled.
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<Env<PathBuf>>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: default_admin_listen(),
            check_upstreams: false,
            token: None,
            token_file: None,
        }
    }
}

impl AdminConfig {
    pub fn token_source(&self) -> SecretSource<TokenField> {
        SecretSource::new(&self.token, &self.token_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    /// The LibraryId, as shown in the SMH console.
    pub id: Spanned<String>,
    /// Defaults to `https://<id>.api.tencentsmh.cn`.
    pub upstream: Option<Spanned<Env<String>>>,
    /// Extra PEM CA bundle trusted for this upstream (on top of public roots).
    pub ca_file: Option<Spanned<Env<PathBuf>>>,
    /// The LibrarySecret: `secret = "${VAR}"` or `secret_file = "/path"`.
    pub secret: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<Env<PathBuf>>>,
}

impl LibraryConfig {
    pub fn upstream_url(&self) -> String {
        match &self.upstream {
            Some(u) => u.get_ref().0.trim_end_matches('/').to_string(),
            None => format!("https://{}.api.tencentsmh.cn", self.id.get_ref()),
        }
    }

    pub fn secret_source(&self) -> SecretSource<SecretField> {
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
    /// run their token-refresh callback and fetch a new business session.
    #[serde(default)]
    pub smh_compatible_errors: bool,
    /// Verified sessions kept so the hot path skips signature checks.
    #[serde(default = "default_session_capacity")]
    pub cache_capacity: u64,
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
            smh_compatible_errors: false,
            cache_capacity: DEFAULT_SESSION_CACHE_CAPACITY,
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
    pub hmac_secret_file: Option<Spanned<Env<PathBuf>>>,
    /// PEM public keys (RSA, EC P-256/P-384, Ed25519) for tokens without a `kid`.
    #[serde(default)]
    pub public_key_files: Vec<Spanned<Env<PathBuf>>>,
    /// A JWK Set on disk (`{"keys": [...]}`), looked up by `kid`.
    pub jwks_file: Option<Spanned<Env<PathBuf>>>,
    /// A JWK Set written inline (TOML multi-line string).
    pub jwks: Option<Spanned<String>>,
    /// A JWKS URL, fetched at start, refreshed in the background, re-fetched
    /// (rate limited) when an unknown `kid` arrives, served stale on IdP outages.
    pub jwks_url: Option<Spanned<Env<String>>>,
    /// Extra CA for the JWKS URL (on top of public roots).
    pub jwks_ca_file: Option<Spanned<Env<PathBuf>>>,
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
    pub fn hmac_source(&self) -> SecretSource<HmacField> {
        SecretSource::new(&self.hmac_secret, &self.hmac_secret_file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The business backend's session endpoint. The gateway sends
    /// `GET <url>` with `Authorization: Bearer <credential>`; the backend
    /// answers 200 `{user_id, client_id?, session_id?, roles?, claims?}` or 401.
    pub url: Spanned<Env<String>>,
    pub ca_file: Option<Spanned<Env<PathBuf>>>,
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

/// Where audit records go.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    #[default]
    Stdout,
    File,
    Both,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub sink: AuditSink,
    /// JSON-lines file for `file`/`both`.
    pub file: Option<Spanned<Env<PathBuf>>>,
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Default, Deserialize)]
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

/// The algorithms `session.jwt.algorithms` may name.
pub const KNOWN_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fn default_credentials() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "bearer".to_string())]
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
fn default_listen() -> Env<SocketAddr> {
    Env(DEFAULT_LISTEN.parse().expect("constant address"))
}
fn default_admin_listen() -> Env<SocketAddr> {
    Env(DEFAULT_ADMIN_LISTEN.parse().expect("constant address"))
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

// ---------------------------------------------------------------------------
// Interpolated values and secrets
// ---------------------------------------------------------------------------

/// A string value after `${VAR}` interpolation, parsed into `T`.
/// `$${` writes a literal `${`. A missing variable is an error at its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env<T>(pub T);

impl<'de, T> Deserialize<'de> for Env<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let text = interpolate(&raw).map_err(serde::de::Error::custom)?;
        text.parse::<T>()
            .map(Env)
            .map_err(|e| serde::de::Error::custom(format!("invalid value: {e}")))
    }
}

/// Expands `${NAME}` from the environment.
pub fn interpolate(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated `${` (write `$${` for a literal)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A secret string. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Names the pair of keys a [`SecretSource`] is read from.
pub trait SecretFieldNames {
    const INLINE: &'static str;
    const FILE: &'static str;
}

macro_rules! secret_fields {
    ($ty:ident, $inline:literal, $file:literal) => {
        #[derive(Debug, Default)]
        pub struct $ty;
        impl SecretFieldNames for $ty {
            const INLINE: &'static str = $inline;
            const FILE: &'static str = $file;
        }
    };
}
secret_fields!(SecretField, "secret", "secret_file");
secret_fields!(TokenField, "token", "token_file");
secret_fields!(HmacField, "hmac_secret", "hmac_secret_file");

/// A secret given as `<name> = "${VAR}"` or `<name>_file = "/path"`.
/// Inline values must come from the environment: a literal secret in the
/// file is refused, so config files can be committed and shared.
pub struct SecretSource<N> {
    pub inline: Option<Spanned<String>>,
    pub file: Option<Spanned<Env<PathBuf>>>,
    names: std::marker::PhantomData<N>,
}

impl<N> SecretSource<N> {
    pub fn new(inline: &Option<Spanned<String>>, file: &Option<Spanned<Env<PathBuf>>>) -> Self {
        Self {
            inline: inline.clone(),
            file: file.clone(),
            names: std::marker::PhantomData,
        }
    }
}

impl<N: SecretFieldNames> fmt::Debug for SecretSource<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<N: SecretFieldNames> SecretSource<N> {
    pub fn is_set(&self) -> bool {
        self.inline.is_some() || self.file.is_some()
    }

    /// Where the secret comes from, without its value.
    pub fn describe(&self) -> String {
        match (&self.inline, &self.file) {
            (Some(raw), _) => format!("{} = {} (from environment)", N::INLINE, raw.get_ref()),
            (None, Some(p)) => format!("{} = {}", N::FILE, p.get_ref().0.display()),
            (None, None) => "(not set)".into(),
        }
    }

    /// Reads the secret (environment or file). Trailing newlines of files are
    /// trimmed because editors and `echo` add them.
    pub fn resolve(&self) -> Result<Option<Secret>, String> {
        match (&self.inline, &self.file) {
            (Some(raw), _) => interpolate(raw.get_ref()).map(|s| Some(Secret(s))),
            (None, Some(path)) => {
                let path = &path.get_ref().0;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let value = text.trim_end_matches(['\r', '\n']).to_string();
                if value.is_empty() {
                    return Err(format!("{} is empty", path.display()));
                }
                Ok(Some(Secret(value)))
            }
            (None, None) => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

/// A configuration problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// All problems found in one file (parse errors stop at the first).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn locate(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| locate(text, s.start));
            ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        let config: Config = toml::from_str(text).map_err(|e: toml::de::Error| {
            ConfigErrors(vec![at(e.span(), e.message().trim().to_string())])
        })?;
        let problems: Vec<ConfigError> = config
            .validate()
            .into_iter()
            .map(|(span, msg)| at(span, msg))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Semantic checks serde cannot express. Each problem carries its span.
    fn validate(&self) -> Vec<(Option<Range<usize>>, String)> {
        let mut out = Vec::new();
        if self.libraries.is_empty() {
            out.push((None, "at least one [[library]] is required".to_string()));
        }
        let mut ids = BTreeSet::new();
        for lib in &self.libraries {
            let l = lib.get_ref();
            let id = l.id.get_ref();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                out.push((
                    Some(l.id.span()),
                    "library id must be non-empty ASCII letters, digits, '-' or '_'".into(),
                ));
            }
            if !ids.insert(id.clone()) {
                out.push((Some(l.id.span()), format!("library {id:?} is listed twice")));
            }
            if let Some(u) = &l.upstream {
                let url = &u.get_ref().0;
                if let Err(msg) = check_upstream_url(url) {
                    out.push((Some(u.span()), msg));
                }
            }
            if let Some(ca) = &l.ca_file {
                if !ca.get_ref().0.is_file() {
                    out.push((
                        Some(ca.span()),
                        format!("ca_file {} does not exist", ca.get_ref().0.display()),
                    ));
                }
            }
            check_secret(&l.secret_source(), true, Some(lib.span()), &mut out);
        }
        check_secret(&self.admin.token_source(), false, None, &mut out);
        self.validate_session(&mut out);
        for (field, f) in [
            ("listener.cert_file", &self.listener.cert_file),
            ("listener.key_file", &self.listener.key_file),
        ] {
            if let Some(p) = f {
                if !p.get_ref().0.is_file() {
                    out.push((
                        Some(p.span()),
                        format!("{field} {} does not exist", p.get_ref().0.display()),
                    ));
                }
            }
        }
        if self.listener.cert_file.is_some() != self.listener.key_file.is_some() {
            out.push((
                None,
                "listener.cert_file and listener.key_file must be given together".into(),
            ));
        }
        if matches!(self.audit.sink, AuditSink::File | AuditSink::Both) && self.audit.file.is_none()
        {
            out.push((
                None,
                "audit.file is required when audit.sink is \"file\" or \"both\"".into(),
            ));
        }
        if self.tokens.cache_capacity == 0 {
            out.push((None, "tokens.cache_capacity must be at least 1".into()));
        }
        if self.limits.max_concurrent_requests == 0 {
            out.push((
                None,
                "limits.max_concurrent_requests must be at least 1".into(),
            ));
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_uri_bytes", l.max_uri_bytes as u64),
            ("limits.max_request_headers", l.max_request_headers as u64),
            (
                "limits.max_request_header_bytes",
                l.max_request_header_bytes as u64,
            ),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            (
                "limits.max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
            ),
            ("limits.request_timeout_secs", l.request_timeout_secs),
            ("limits.send_timeout_secs", l.send_timeout_secs),
            ("tokens.cache_max_bytes", self.tokens.cache_max_bytes),
            (
                "tokens.max_keys_per_user",
                self.tokens.max_keys_per_user as u64,
            ),
            (
                "upstream.read_timeout_secs",
                self.upstream.read_timeout_secs,
            ),
        ] {
            if value == 0 {
                out.push((None, format!("{name} must be at least 1")));
            }
        }
        // Durations feed Instant arithmetic: a day is far beyond any use.
        for (name, value) in [
            (
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("limits.idle_timeout_secs", l.idle_timeout_secs),
            ("limits.send_timeout_secs", l.send_timeout_secs),
            ("limits.request_timeout_secs", l.request_timeout_secs),
            ("limits.lame_duck_secs", l.lame_duck_secs),
            ("limits.drain_timeout_secs", l.drain_timeout_secs),
            (
                "upstream.read_timeout_secs",
                self.upstream.read_timeout_secs,
            ),
            ("tokens.refused_retry_secs", self.tokens.refused_retry_secs),
        ] {
            if value > MAX_DURATION_SECS {
                out.push((
                    None,
                    format!("{name} is at most {MAX_DURATION_SECS} (a day)"),
                ));
            }
        }
        // The gateway's own answers (431, 414) need hyper to read the whole
        // head first; its hard backstops sit at these multiples.
        if l.max_uri_bytes > crate::server::MAX_URI_BACKSTOP {
            out.push((
                None,
                format!(
                    "limits.max_uri_bytes is at most {}",
                    crate::server::MAX_URI_BACKSTOP
                ),
            ));
        }
        if l.max_request_headers > crate::server::MAX_HEADERS_BACKSTOP
            || l.max_request_header_bytes > crate::server::MAX_HEADER_BYTES_BACKSTOP
        {
            out.push((
                None,
                format!(
                    "limits.max_request_headers is at most {} and limits.max_request_header_bytes at most {}",
                    crate::server::MAX_HEADERS_BACKSTOP,
                    crate::server::MAX_HEADER_BYTES_BACKSTOP
                ),
            ));
        }
        let mut role_names = BTreeSet::new();
        for role in &self.roles {
            let r = role.get_ref();
            if !role_names.insert(r.name.get_ref().clone()) {
                out.push((
                    Some(r.name.span()),
                    format!("role {:?} is defined twice", r.name.get_ref()),
                ));
            }
            if let Some(p) = &r.period_secs {
                let period = *p.get_ref();
                if period <= self.tokens.safety_margin_secs {
                    out.push((
                        Some(p.span()),
                        format!(
                            "period_secs {period} must exceed tokens.safety_margin_secs ({})",
                            self.tokens.safety_margin_secs
                        ),
                    ));
                }
            }
            if r.spaces.is_empty() {
                out.push((Some(role.span()), "a role needs at least one space".into()));
            }
            for space in &r.spaces {
                match crate::policy::SpacePattern::parse(space.get_ref()) {
                    Err(e) => out.push((span_of(space), e)),
                    Ok(crate::policy::SpacePattern::ClientId)
                        if self.session.mode == SessionMode::Jwt
                            && self.session.client_claim.is_none() =>
                    {
                        out.push((
                            span_of(space),
                            "\"{client_id}\" would let the client choose its space: with session.mode = \"jwt\" and no session.client_claim there is no verified client id (a client_header value is the client's choice and never fills a template); set session.client_claim or remove the template".into(),
                        ))
                    }
                    Ok(_) => {}
                }
            }
            for op in r.operations.iter().flatten() {
                if let Err(e) = crate::policy::OperationPattern::parse(op.get_ref()) {
                    out.push((Some(op.span()), e));
                }
            }
        }
        for name in &self.session.default_roles {
            if !role_names.contains(name) {
                out.push((
                    None,
                    format!("session.default_roles names unknown role {name:?}"),
                ));
            }
        }
        out
    }

    fn validate_session(&self, out: &mut Vec<(Option<Range<usize>>, String)>) {
        let sess = &self.session;
        let jwt = &sess.jwt;
        for c in &sess.credentials {
            if let Err(e) = crate::session::credential::CredentialSource::parse(c.get_ref()) {
                out.push((span_of(c), e));
            }
        }
        if sess.credentials.is_empty() {
            out.push((
                None,
                "session.credentials must name at least one source".into(),
            ));
        }
        check_secret(&jwt.hmac_source(), false, None, out);
        for key in &jwt.public_key_files {
            if !key.get_ref().0.is_file() {
                out.push((
                    Some(key.span()),
                    format!(
                        "public key file {} does not exist",
                        key.get_ref().0.display()
                    ),
                ));
            }
        }
        for (name, f) in [
            ("jwks_file", &jwt.jwks_file),
            ("jwks_ca_file", &jwt.jwks_ca_file),
        ] {
            if let Some(p) = f {
                if !p.get_ref().0.is_file() {
                    out.push((
                        Some(p.span()),
                        format!("{name} {} does not exist", p.get_ref().0.display()),
                    ));
                }
            }
        }
        if let Some(inline) = &jwt.jwks {
            if let Err(e) = crate::session::keys::from_jwks(inline.get_ref().as_bytes()) {
                out.push((Some(inline.span()), format!("jwks: {e}")));
            }
        }
        if let Some(u) = &jwt.jwks_url {
            if let Err(msg) = check_https_url(&u.get_ref().0) {
                out.push((Some(u.span()), msg));
            }
        }
        match sess.mode {
            SessionMode::Jwt => {
                if jwt.algorithms.is_empty() {
                    out.push((
                        None,
                        "session.jwt.algorithms must name at least one algorithm".into(),
                    ));
                }
                let has_public = !jwt.public_key_files.is_empty()
                    || jwt.jwks_file.is_some()
                    || jwt.jwks.is_some()
                    || jwt.jwks_url.is_some();
                for alg in &jwt.algorithms {
                    let a = alg.get_ref().as_str();
                    if !KNOWN_ALGORITHMS.contains(&a) {
                        out.push((
                            span_of(alg),
                            format!(
                                "unknown algorithm {a:?}; expected one of {}",
                                KNOWN_ALGORITHMS.join(", ")
                            ),
                        ));
                    } else if a.starts_with("HS") && !jwt.hmac_source().is_set() {
                        out.push((
                            span_of(alg),
                            format!("{a} needs session.jwt.hmac_secret or hmac_secret_file"),
                        ));
                    } else if !a.starts_with("HS") && !has_public {
                        out.push((
                            span_of(alg),
                            format!("{a} needs public_key_files, jwks, jwks_file or jwks_url"),
                        ));
                    }
                }
            }
            SessionMode::Introspection if sess.introspection.is_none() => out.push((
                None,
                "session.mode = \"introspection\" needs a [session.introspection] table".into(),
            )),
            SessionMode::Introspection => {}
        }
        if let Some(i) = &sess.introspection {
            if let Err(msg) = check_https_url(&i.url.get_ref().0) {
                out.push((Some(i.url.span()), msg));
            }
            if let Some(ca) = &i.ca_file {
                if !ca.get_ref().0.is_file() {
                    out.push((
                        Some(ca.span()),
                        format!("ca_file {} does not exist", ca.get_ref().0.display()),
                    ));
                }
            }
        }
        if let Some(cors) = &self.cors {
            for o in &cors.allowed_origins {
                let v = o.get_ref();
                let ok = v == "*"
                    || ((v.starts_with("https://") || v.starts_with("http://"))
                        && !v.ends_with('/')
                        && v.parse::<http::Uri>().is_ok());
                if !ok {
                    out.push((
                        Some(o.span()),
                        format!("CORS origin {v:?} must be \"*\" or scheme://host[:port] without a path"),
                    ));
                }
                if v == "*" && cors.allow_credentials {
                    out.push((
                        Some(o.span()),
                        "\"*\" cannot be combined with allow_credentials = true".into(),
                    ));
                }
            }
        }
    }

    /// A human summary with every secret replaced by where it comes from.
    pub fn redacted_summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "listener: {}", self.listener.address.0);
        match (&self.listener.cert_file, &self.listener.key_file) {
            (Some(c), Some(k)) => {
                let _ = writeln!(
                    s,
                    "  tls: cert {} key {}",
                    c.get_ref().0.display(),
                    k.get_ref().0.display()
                );
            }
            _ => {
                let _ = writeln!(s, "  tls: not configured (required by `run`)");
            }
        }
        let _ = writeln!(
            s,
            "admin: {} (admin token: {})",
            self.admin.address.0,
            self.admin.token_source().describe()
        );
        for lib in &self.libraries {
            let l = lib.get_ref();
            let _ = writeln!(s, "library {}:", l.id.get_ref());
            let _ = writeln!(s, "  upstream: {}", l.upstream_url());
            if let Some(ca) = &l.ca_file {
                let _ = writeln!(s, "  extra CA: {}", ca.get_ref().0.display());
            }
            let _ = writeln!(s, "  library secret: {}", l.secret_source().describe());
        }
        let _ = writeln!(
            s,
            "tokens: capacity {} margin {}s max age {}s",
            self.tokens.cache_capacity, self.tokens.safety_margin_secs, self.tokens.max_age_secs
        );
        let sess = &self.session;
        let creds: Vec<&str> = sess
            .credentials
            .iter()
            .map(|c| c.get_ref().as_str())
            .collect();
        let _ = writeln!(
            s,
            "session: mode {:?}, credentials [{}], user claim {:?}, roles claim {:?}, smh-compatible errors {}",
            sess.mode,
            creds.join(", "),
            sess.user_claim,
            sess.roles_claim,
            sess.smh_compatible_errors
        );
        match sess.mode {
            SessionMode::Jwt => {
                let algs: Vec<&str> = sess
                    .jwt
                    .algorithms
                    .iter()
                    .map(|a| a.get_ref().as_str())
                    .collect();
                let _ = writeln!(
                    s,
                    "  jwt algorithms [{}], hmac key: {}",
                    algs.join(", "),
                    sess.jwt.hmac_source().describe()
                );
                for k in &sess.jwt.public_key_files {
                    let _ = writeln!(s, "  public key: {}", k.get_ref().0.display());
                }
                if let Some(f) = &sess.jwt.jwks_file {
                    let _ = writeln!(s, "  jwks file: {}", f.get_ref().0.display());
                }
                if let Some(u) = &sess.jwt.jwks_url {
                    let _ = writeln!(
                        s,
                        "  jwks url: {} (refresh {}s)",
                        u.get_ref().0,
                        sess.jwt.jwks_refresh_secs
                    );
                }
            }
            SessionMode::Introspection => {
                if let Some(i) = &sess.introspection {
                    let _ = writeln!(
                        s,
                        "  introspection: {} (ttl {}s, negative {}s)",
                        i.url.get_ref().0,
                        i.cache_ttl_secs,
                        i.negative_cache_ttl_secs
                    );
                }
            }
        }
        for role in &self.roles {
            let r = role.get_ref();
            let _ = writeln!(
                s,
                "role {}: grant [{}] spaces [{}] period {}s",
                r.name.get_ref(),
                r.grant.join(","),
                r.spaces
                    .iter()
                    .map(|s| s.get_ref().as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                r.period_secs
                    .as_ref()
                    .map_or(DEFAULT_TOKEN_PERIOD_SECS, |p| *p.get_ref())
            );
        }
        s
    }
}

/// Spans of defaulted values are empty; report those without a location.
fn span_of<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    let s = v.span();
    (s.start != s.end).then_some(s)
}

fn check_https_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url:?} must use https://"));
    }
    if uri.host().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn check_upstream_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("upstream {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "upstream {url:?} must use https:// (SMH does not serve plain HTTP)"
        ));
    }
    if uri.host().is_none() {
        return Err(format!("upstream {url:?} has no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("upstream {url:?} must not have a path"));
    }
    Ok(())
}

fn check_secret<N: SecretFieldNames>(
    src: &SecretSource<N>,
    required: bool,
    fallback: Option<Range<usize>>,
    out: &mut Vec<(Option<Range<usize>>, String)>,
) {
    match (&src.inline, &src.file) {
        (Some(a), Some(_)) => out.push((
            Some(a.span()),
            format!("give either `{}` or `{}`, not both", N::INLINE, N::FILE),
        )),
        (Some(raw), None) => {
            let v = raw.get_ref();
            let only_env = v.starts_with("${") && v.ends_with('}') && v.matches("${").count() == 1;
            if !only_env {
                out.push((
                    Some(raw.span()),
                    format!(
                        "`{}` must be an environment reference like \"${{SMH_SECRET}}\" (secrets never sit in the file); or use `{}`",
                        N::INLINE,
                        N::FILE
                    ),
                ));
            } else if let Err(e) = interpolate(v) {
                out.push((Some(raw.span()), e));
            }
        }
        (None, Some(path)) => {
            if !path.get_ref().0.is_file() {
                out.push((
                    Some(path.span()),
                    format!("{} {} does not exist", N::FILE, path.get_ref().0.display()),
                ));
            }
        }
        (None, None) if required => out.push((
            fallback,
            format!("`{}` or `{}` is required", N::INLINE, N::FILE),
        )),
        (None, None) => {}
    }
}
