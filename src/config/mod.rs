//! The gateway's configuration: one TOML file, parsed once into the typed
//! [`Settings`] everything else runs on. `check-config`, `run` and a
//! reload all go through [`load`], so they accept and refuse the same
//! files.
//!
//!  schema:  the file as written (serde, unknown keys refused, positions kept)
//!  env:     `${NAME}` from an injectable environment
//!  secret:  secrets from the environment or `*_file`, never inline
//!  build:   schema -> settings: every value parsed and checked, or refused
//!           with file:line:column
//!  summary: what `check-config` prints, secrets replaced by their origin
//!  errors:  problems at their place in the file

mod build;
pub mod env;
pub mod errors;
pub mod schema;
mod secret;
mod summary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;

pub use build::{KNOWN_ALGORITHMS, MAX_DURATION_SECS};
pub use env::Environment;
pub use errors::{ConfigError, ConfigErrors};
pub use schema::*;

use crate::gateway::cors::CorsSettings;
use crate::policy::RoleSpec;
use crate::secret::Secret;
use crate::session::SessionSettings;

/// Shown for a secret the file does not set.
const SUMMARY_NOT_SET: &str = "(not set)";

/// A whole, checked configuration.
pub struct Settings {
    pub listener: ListenerSettings,
    pub admin: AdminSettings,
    pub libraries: Vec<LibrarySettings>,
    pub tokens: TokenConfig,
    pub session: SessionSettings,
    pub roles: Vec<RoleSpec>,
    pub cors: Option<CorsSettings>,
    pub audit: AuditSettings,
    pub limits: LimitsConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub revocation: RevocationSettings,
}

/// `[revocation]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    /// Where replicas share revocations; none: local to the process.
    pub redis: Option<RedisUrl>,
    /// PEM roots for `rediss://` instead of the public ones.
    pub redis_ca_pem: Option<Vec<u8>>,
    pub replica_id: Option<String>,
    pub max_entries: usize,
}

/// A Redis URL, which may hold a password (never shown), and where it
/// came from (for the summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub url: Secret,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    /// PEM chain and key, checked to make a working TLS configuration.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub address: SocketAddr,
    pub check_upstreams: bool,
    pub check_session_keys: bool,
    pub check_revocations: bool,
    /// `/admin/v1/*` is disabled without one.
    pub token: Option<Secret>,
    /// Where the token comes from, for the summary.
    pub token_origin: String,
}

#[derive(Debug, Clone)]
pub struct LibrarySettings {
    pub id: String,
    /// `https://host[:port]` without a trailing slash.
    pub upstream_url: String,
    pub ca_file: Option<PathBuf>,
    pub extra_ca: Vec<CertificateDer<'static>>,
    pub secret: Secret,
    pub secret_origin: String,
}

impl LibrarySettings {
    /// Whether two libraries reach the same SMH the same way (a reload
    /// keeps the running upstream client and its cached tokens then).
    pub fn same_upstream(&self, other: &Self) -> bool {
        self.id == other.id
            && self.upstream_url == other.upstream_url
            && self.extra_ca == other.extra_ca
            && self.secret == other.secret
    }
}

pub use crate::audit::AuditSettings;

/// Reads and checks `path` with the process environment.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    load_with(path, &Environment::process())
}

/// Reads and checks `path`, taking `${NAME}` values from `env`.
pub fn load_with(path: &Path, env: &Environment) -> Result<Settings, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(&file, format!("cannot read: {e}")))?;
    parse(&text, &file, env)
}

/// Checks `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str, env: &Environment) -> Result<Settings, ConfigErrors> {
    let raw = parse_schema(text, file)?;
    let mut problems = errors::Problems::default();
    match build::settings(raw, env, &mut problems) {
        Some(settings) if problems.is_empty() => Ok(settings),
        _ => Err(problems.into_errors(text, file)),
    }
}

/// The file as written, before any value is checked (`dev` merges a
/// fragment at this level).
pub fn parse_schema(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((0, 0), |s| errors::locate(text, s.start));
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }])
    })
}

impl Settings {
    /// What `check-config` prints: every secret replaced by where it
    /// comes from.
    pub fn redacted_summary(&self) -> String {
        summary::render(self)
    }

    /// The settings a running process keeps until it restarts.
    pub fn fixed(&self) -> FixedAtStart {
        let (t, l) = (&self.tokens, &self.limits);
        FixedAtStart {
            listener_address: self.listener.address,
            admin_address: self.admin.address,
            admin_token: self.admin.token.clone(),
            admin_checks: [
                self.admin.check_upstreams,
                self.admin.check_session_keys,
                self.admin.check_revocations,
            ],
            audit: self.audit.clone(),
            log: self.log.clone(),
            revocation: self.revocation.clone(),
            tokens: [
                t.cache_capacity,
                t.cache_max_bytes,
                t.max_keys_per_user as u64,
                t.refused_retry_secs,
                t.safety_margin_secs,
                t.max_age_secs,
            ],
            max_connections: l.max_connections,
            connection_limits: [
                l.header_read_timeout_secs,
                l.idle_timeout_secs,
                u64::from(l.max_concurrent_streams),
                l.send_timeout_secs,
                l.lame_duck_secs,
                l.drain_timeout_secs,
            ],
        }
    }
}

/// What a reload cannot change in a running process: the sockets it
/// listens on, the audit sink and logging it set up, the token cache it
/// sized, and the listener's per-connection limits. Everything else
/// (libraries, sessions, roles, CORS, request limits, the certificate)
/// a reload swaps in.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedAtStart {
    listener_address: SocketAddr,
    admin_address: SocketAddr,
    admin_token: Option<Secret>,
    admin_checks: [bool; 3],
    audit: AuditSettings,
    log: LogConfig,
    revocation: RevocationSettings,
    tokens: [u64; 6],
    max_connections: usize,
    connection_limits: [u64; 6],
}

impl FixedAtStart {
    /// The names of the settings that differ in `next` (they take effect
    /// on the next restart).
    pub fn changes(&self, next: &FixedAtStart) -> Vec<&'static str> {
        let mut changed = Vec::new();
        for (name, same) in [
            ("listener.address", self.listener_address == next.listener_address),
            ("admin.address", self.admin_address == next.admin_address),
            ("admin.token", self.admin_token == next.admin_token),
            (
                "admin.check_upstreams, admin.check_session_keys, admin.check_revocations",
                self.admin_checks == next.admin_checks,
            ),
            ("audit", self.audit == next.audit),
            ("log", self.log == next.log),
            ("revocation", self.revocation == next.revocation),
            ("tokens", self.tokens == next.tokens),
            ("limits.max_connections", self.max_connections == next.max_connections),
            (
                "limits.{header_read,idle,send}_timeout_secs, max_concurrent_streams, lame_duck_secs, drain_timeout_secs",
                self.connection_limits == next.connection_limits,
            ),
        ] {
            if !same {
                changed.push(name);
            }
        }
        changed
    }
}
