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
/// Connecting to SMH should take well under this on any sane network.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Idle upstream connections are kept this long for reuse.
pub const DEFAULT_UPSTREAM_POOL_IDLE_SECS: u64 = 90;
/// The JWT claim that names the operator, unless configured otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// The header a client may use to name its device when the session has no claim for it.
pub const DEFAULT_CLIENT_HEADER: &str = "x-client-id";
/// The claim listing the session's roles.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct Config {
    pub listener: ListenerConfig,
    pub admin: AdminConfig,
    /// `[[library]]` tables: one per SMH media library the gateway fronts.
    pub libraries: Vec<Spanned<LibraryConfig>>,
    pub tokens: TokenConfig,
    pub session: SessionConfig,
    /// `[[role]]` tables: what each session role may ask SMH for.
    pub roles: Vec<Spanned<RoleConfig>>,
    pub limits: LimitsConfig,
    pub upstream: UpstreamConfig,
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

#[derive(Debug)]
pub struct AdminConfig {
    pub address: Env<SocketAddr>,
    /// Bearer token for `/admin/v1/*`; without one those routes are disabled.
    pub token: SecretSource<TokenField>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: default_admin_listen(),
            token: SecretSource::default(),
        }
    }
}

#[derive(Debug)]
pub struct LibraryConfig {
    /// The LibraryId, as shown in the SMH console.
    pub id: Spanned<String>,
    /// Defaults to `https://<id>.api.tencentsmh.cn`.
    pub upstream: Option<Spanned<Env<String>>>,
    /// Extra PEM CA bundle trusted for this upstream (on top of public roots).
    pub ca_file: Option<Spanned<Env<PathBuf>>>,
    /// The LibrarySecret: `secret = "${VAR}"` or `secret_file = "/path"`.
    pub secret: SecretSource<SecretField>,
}

impl LibraryConfig {
    pub fn upstream_url(&self) -> String {
        match &self.upstream {
            Some(u) => u.get_ref().0.trim_end_matches('/').to_string(),
            None => format!("https://{}.api.tencentsmh.cn", self.id.get_ref()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    #[serde(default = "default_token_capacity")]
    pub cache_capacity: u64,
    #[serde(default = "default_token_margin")]
    pub safety_margin_secs: u64,
    #[serde(default = "default_token_max_age")]
    pub max_age_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
            safety_margin_secs: DEFAULT_TOKEN_SAFETY_MARGIN_SECS,
            max_age_secs: DEFAULT_TOKEN_MAX_AGE_SECS,
        }
    }
}

#[derive(Debug)]
pub struct SessionConfig {
    /// Claim naming the operator recorded by SMH.
    pub user_claim: String,
    /// Claim naming the client/device; when absent the `client_header` is used.
    pub client_claim: Option<String>,
    pub client_header: String,
    /// Claim carrying the role list (array of strings or space-separated string).
    pub roles_claim: String,
    /// Roles given to a session whose token names none.
    pub default_roles: Vec<String>,
    pub jwt: JwtConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            user_claim: default_user_claim(),
            client_claim: None,
            client_header: default_client_header(),
            roles_claim: default_roles_claim(),
            default_roles: Vec::new(),
            jwt: JwtConfig::default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct JwtConfig {
    /// HMAC key for HS256 sessions: `hs256_secret = "${VAR}"` or `hs256_secret_file`.
    pub hs256: SecretSource<Hs256Field>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: Spanned<String>,
    /// SMH grant names (`smh-api.md` 3.2); empty = read-only.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Tenant spaces this role reaches: literal ids, `-` for single-tenant,
    /// `*` for any, or templates such as `{user_id}`.
    #[serde(default = "default_spaces")]
    pub spaces: Vec<String>,
    /// Lifetime (and sliding extension) of SMH tokens minted for this role.
    pub period_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    #[serde(default = "default_replay_limit")]
    pub replay_body_limit_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            replay_body_limit_bytes: DEFAULT_REPLAY_BODY_LIMIT,
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
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_SECS,
            pool_idle_secs: DEFAULT_UPSTREAM_POOL_IDLE_SECS,
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
fn default_client_header() -> String {
    DEFAULT_CLIENT_HEADER.into()
}
fn default_roles_claim() -> String {
    DEFAULT_ROLES_CLAIM.into()
}
fn default_leeway() -> u64 {
    DEFAULT_SESSION_LEEWAY_SECS
}
fn default_spaces() -> Vec<String> {
    vec!["-".into()]
}
fn default_request_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}
fn default_max_concurrent() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}
fn default_replay_limit() -> usize {
    DEFAULT_REPLAY_BODY_LIMIT
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
secret_fields!(Hs256Field, "hs256_secret", "hs256_secret_file");

/// A secret given as `<name> = "${VAR}"` or `<name>_file = "/path"`.
/// Inline values must come from the environment: a literal secret in the
/// file is refused, so config files can be committed and shared.
pub struct SecretSource<N> {
    pub inline: Option<Spanned<String>>,
    pub file: Option<Spanned<Env<PathBuf>>>,
    names: std::marker::PhantomData<N>,
}

impl<N> Default for SecretSource<N> {
    fn default() -> Self {
        Self {
            inline: None,
            file: None,
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
        let config: Config = raw::parse(text)
            .map_err(|e| ConfigErrors(vec![at(e.span(), e.message().trim().to_string())]))?;
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
            check_secret(&l.secret, true, Some(lib.span()), &mut out);
        }
        check_secret(&self.admin.token, false, None, &mut out);
        check_secret(&self.session.jwt.hs256, false, None, &mut out);
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
        if self.tokens.cache_capacity == 0 {
            out.push((None, "tokens.cache_capacity must be at least 1".into()));
        }
        if self.limits.max_concurrent_requests == 0 {
            out.push((
                None,
                "limits.max_concurrent_requests must be at least 1".into(),
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
            self.admin.token.describe()
        );
        for lib in &self.libraries {
            let l = lib.get_ref();
            let _ = writeln!(s, "library {}:", l.id.get_ref());
            let _ = writeln!(s, "  upstream: {}", l.upstream_url());
            if let Some(ca) = &l.ca_file {
                let _ = writeln!(s, "  extra CA: {}", ca.get_ref().0.display());
            }
            let _ = writeln!(s, "  library secret: {}", l.secret.describe());
        }
        let _ = writeln!(
            s,
            "tokens: capacity {} margin {}s max age {}s",
            self.tokens.cache_capacity, self.tokens.safety_margin_secs, self.tokens.max_age_secs
        );
        let _ = writeln!(
            s,
            "session: user claim {:?}, roles claim {:?}, HS256 key: {}",
            self.session.user_claim,
            self.session.roles_claim,
            self.session.jwt.hs256.describe()
        );
        for role in &self.roles {
            let r = role.get_ref();
            let _ = writeln!(
                s,
                "role {}: grant [{}] spaces [{}] period {}s",
                r.name.get_ref(),
                r.grant.join(","),
                r.spaces.join(","),
                r.period_secs
                    .as_ref()
                    .map_or(DEFAULT_TOKEN_PERIOD_SECS, |p| *p.get_ref())
            );
        }
        s
    }
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

/// serde's `flatten` cannot be combined with `deny_unknown_fields`, so the
/// tables holding secrets are read through these mirror structs, which list
/// the secret keys explicitly and then convert.
mod raw {
    use super::*;

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        let raw: RawConfig = toml::from_str(text)?;
        Ok(raw.into())
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawConfig {
        #[serde(default)]
        listener: ListenerConfig,
        #[serde(default)]
        admin: RawAdmin,
        #[serde(rename = "library", default)]
        libraries: Vec<Spanned<RawLibrary>>,
        #[serde(default)]
        tokens: TokenConfig,
        #[serde(default)]
        session: RawSession,
        #[serde(rename = "role", default)]
        roles: Vec<Spanned<RoleConfig>>,
        #[serde(default)]
        limits: LimitsConfig,
        #[serde(default)]
        upstream: UpstreamConfig,
        #[serde(default)]
        log: LogConfig,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawAdmin {
        #[serde(default = "default_admin_listen")]
        address: Env<SocketAddr>,
        token: Option<Spanned<String>>,
        token_file: Option<Spanned<Env<PathBuf>>>,
    }

    impl Default for RawAdmin {
        fn default() -> Self {
            Self {
                address: default_admin_listen(),
                token: None,
                token_file: None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawLibrary {
        id: Spanned<String>,
        upstream: Option<Spanned<Env<String>>>,
        ca_file: Option<Spanned<Env<PathBuf>>>,
        secret: Option<Spanned<String>>,
        secret_file: Option<Spanned<Env<PathBuf>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawSession {
        #[serde(default = "default_user_claim")]
        user_claim: String,
        client_claim: Option<String>,
        #[serde(default = "default_client_header")]
        client_header: String,
        #[serde(default = "default_roles_claim")]
        roles_claim: String,
        #[serde(default)]
        default_roles: Vec<String>,
        #[serde(default)]
        jwt: RawJwt,
    }

    impl Default for RawSession {
        fn default() -> Self {
            Self {
                user_claim: default_user_claim(),
                client_claim: None,
                client_header: default_client_header(),
                roles_claim: default_roles_claim(),
                default_roles: Vec::new(),
                jwt: RawJwt::default(),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawJwt {
        hs256_secret: Option<Spanned<String>>,
        hs256_secret_file: Option<Spanned<Env<PathBuf>>>,
        issuer: Option<String>,
        audience: Option<String>,
        #[serde(default = "default_leeway")]
        leeway_secs: u64,
    }

    impl Default for RawJwt {
        fn default() -> Self {
            Self {
                hs256_secret: None,
                hs256_secret_file: None,
                issuer: None,
                audience: None,
                leeway_secs: DEFAULT_SESSION_LEEWAY_SECS,
            }
        }
    }

    fn source<N>(
        inline: Option<Spanned<String>>,
        file: Option<Spanned<Env<PathBuf>>>,
    ) -> SecretSource<N> {
        SecretSource {
            inline,
            file,
            names: std::marker::PhantomData,
        }
    }

    impl From<RawConfig> for Config {
        fn from(r: RawConfig) -> Self {
            Config {
                listener: r.listener,
                admin: AdminConfig {
                    address: r.admin.address,
                    token: source(r.admin.token, r.admin.token_file),
                },
                libraries: r
                    .libraries
                    .into_iter()
                    .map(|l| {
                        let span = l.span();
                        let l = l.into_inner();
                        Spanned::new(
                            span,
                            LibraryConfig {
                                id: l.id,
                                upstream: l.upstream,
                                ca_file: l.ca_file,
                                secret: source(l.secret, l.secret_file),
                            },
                        )
                    })
                    .collect(),
                tokens: r.tokens,
                session: SessionConfig {
                    user_claim: r.session.user_claim,
                    client_claim: r.session.client_claim,
                    client_header: r.session.client_header,
                    roles_claim: r.session.roles_claim,
                    default_roles: r.session.default_roles,
                    jwt: JwtConfig {
                        hs256: source(r.session.jwt.hs256_secret, r.session.jwt.hs256_secret_file),
                        issuer: r.session.jwt.issuer,
                        audience: r.session.jwt.audience,
                        leeway_secs: r.session.jwt.leeway_secs,
                    },
                },
                roles: r.roles,
                limits: r.limits,
                upstream: r.upstream,
                log: r.log,
            }
        }
    }
}
