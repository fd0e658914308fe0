//! Assembles a running gateway from [`Settings`]: metrics and audit, the
//! admin listener (first, so `/readyz` answers "starting" during start-up),
//! libraries and their upstream clients, sessions, policy, tokens, and the
//! client listener with its stack and reloadable certificate; and reloads
//! (SIGHUP, `POST /admin/v1/reload`) that swap all of it but the sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::sync::Semaphore;

use crate::admin::{self, AdminRevoke, AdminState, Control, Readiness, ReloadReport};
use crate::audit::Audit;
use crate::config::{
    Environment, FixedAtStart, LibrarySettings, RevocationSettings, Settings, UpstreamConfig,
};
use crate::gateway::cors::Cors;
use crate::gateway::{Active, Gateway, Library};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::{OnApplied, Replicator, ReplicatorConfig, RevocationList};
use crate::revoke::{RevokeError, RevokeReport, RevokeRequest, Revoker};
use crate::server::{self, ConnInfo, ConnObserver, Shutdown};
use crate::session::SessionValidator;
use crate::smh::token::{MintTarget, TokenService};
use crate::tls::ReloadableCert;
use crate::upstream::Upstream;

/// Where a reload reads the configuration again.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub env: Environment,
}

/// A started gateway: where it listens and how to stop or reload it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    reloader: Arc<Reloader>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    admin_shutdown: Shutdown,
    admin_task: tokio::task::JoinHandle<()>,
    lame_duck: Duration,
}

impl Running {
    /// The orderly stop (SIGTERM): readiness turns false at once while the
    /// listener keeps accepting for `lame_duck` (HTTP/1.1 answers then say
    /// `Connection: close`), so load balancers stop sending first; then the
    /// listener closes, in-flight requests finish (up to
    /// `limits.drain_timeout_secs`), and this returns.
    pub async fn stop(self) {
        let lame_duck = self.lame_duck;
        self.stop_with(lame_duck).await
    }

    /// [`Running::stop`] with another lame-duck period (`dev` uses none).
    pub async fn stop_with(self, lame_duck: Duration) {
        self.readiness.set_not_ready();
        if lame_duck.is_zero() {
            self.shutdown.trigger_at_once();
        } else {
            self.shutdown.lame_duck();
            tracing::info!(
                seconds = lame_duck.as_secs_f64(),
                "shutting down: readiness false, still accepting (lame duck)"
            );
            tokio::time::sleep(lame_duck).await;
            self.shutdown.trigger();
        }
        tracing::info!("shutting down: listener closed, draining in-flight requests");
        for t in self.tasks {
            let _ = t.await;
        }
        // Records of the last requests are still queued: write them
        // before the process exits.
        self.gateway.audit.flush().await;
        // The last requests' audit records reach the sink before exit.
        self.gateway.audit.flush().await;
        // The admin port answers probes until the drain is over.
        self.admin_shutdown.trigger_at_once();
        let _ = self.admin_task.await;
    }

    /// Reopens the audit file at its configured path (SIGUSR1, after
    /// logrotate moved it).
    pub fn reopen_audit(&self) {
        self.gateway.audit.reopen();
    }

    /// Re-reads the configuration file and swaps in everything a running
    /// process can change (SIGHUP). A file that does not load changes
    /// nothing but a log line and `smh_gateway_config_reloads_total`.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        self.reloader.reload().await
    }
}

/// Reloads, one at a time.
struct Reloader {
    source: Option<ConfigSource>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    cert: Arc<ReloadableCert>,
    state: tokio::sync::Mutex<Loaded>,
}

/// What the running generation was built from.
struct Loaded {
    generation: u64,
    fixed: FixedAtStart,
    libraries: Vec<LibrarySettings>,
    upstream: UpstreamConfig,
}

impl Reloader {
    async fn reload(&self) -> Result<ReloadReport, String> {
        let result = self.try_reload().await;
        match &result {
            Ok(report) => {
                self.metrics.config_reload_ok.inc();
                self.metrics.config_last_reload_success.set(unix_now());
                if report.needs_restart.is_empty() {
                    tracing::info!(
                        generation = report.generation,
                        "configuration reloaded: libraries, sessions, roles, CORS, request limits and certificate swapped in"
                    );
                } else {
                    tracing::warn!(
                        generation = report.generation,
                        needs_restart = %report.needs_restart.join(", "),
                        "configuration reloaded; these changed settings take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                self.metrics.config_reload_failed.inc();
                tracing::error!(error = %e, "configuration reload failed; the running configuration is unchanged");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, String> {
        let Some(source) = &self.source else {
            return Err("this gateway was not started from a file".into());
        };
        let mut state = self.state.lock().await;
        let settings =
            crate::config::load_with(&source.path, &source.env).map_err(|e| e.to_string())?;
        let fixed = settings.fixed();
        let needs_restart = state.fixed.changes(&fixed);
        let previous = self.gateway.active();
        let generation = state.generation + 1;
        let libraries = settings.libraries.clone();
        let upstream = settings.upstream.clone();
        // Built completely before anything is swapped: a failure here
        // leaves the running generation as it was.
        let (active, changed) = build_active(
            settings,
            generation,
            &self.metrics,
            Some(Previous {
                active: &previous,
                libraries: &state.libraries,
                upstream: &state.upstream,
            }),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        let not_after = self
            .cert
            .reload(&active.cert_file, &active.key_file)
            .map_err(|e| e.to_string())?;
        self.metrics.certificate_not_after.set(not_after);
        self.gateway.replace(active.active);
        for id in changed {
            self.gateway.tokens.forget_library(&id);
        }
        // Series of libraries the file no longer names go; a request still
        // holding their handles counts into unexported ones.
        for old in &state.libraries {
            if !libraries.iter().any(|l| l.id == old.id) {
                self.metrics.forget_library(&old.id);
            }
        }
        state.generation = generation;
        state.fixed = fixed;
        state.libraries = libraries;
        state.upstream = upstream;
        Ok(ReloadReport {
            generation,
            needs_restart,
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One generation's request-path settings, and the certificate to serve.
struct Built {
    active: Active,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// What the running generation was built from, for a reload to compare.
struct Previous<'a> {
    active: &'a Active,
    libraries: &'a [LibrarySettings],
    upstream: &'a UpstreamConfig,
}

/// Builds the reloadable settings. With `previous` (a reload), a library
/// whose upstream, CA, secret and `[upstream]` settings are unchanged keeps
/// its client (and pool) and its tokens, an unchanged `[session]` keeps its
/// validator (keys, JWKS, cache), and the ids of libraries that changed or
/// went away are returned so their cached tokens can be dropped.
async fn build_active(
    cfg: Settings,
    generation: u64,
    metrics: &Arc<Metrics>,
    previous: Option<Previous<'_>>,
) -> anyhow::Result<(Built, Vec<String>)> {
    let connect_timeout = Duration::from_secs(cfg.upstream.connect_timeout_secs);
    let pool_idle = Duration::from_secs(cfg.upstream.pool_idle_secs);
    let read_timeout = Duration::from_secs(cfg.upstream.read_timeout_secs);
    let kept_library = |lib: &LibrarySettings| -> Option<&Library> {
        let p = previous.as_ref()?;
        let before = p.libraries.iter().find(|o| o.id == lib.id)?;
        (before.same_upstream(lib) && *p.upstream == cfg.upstream)
            .then(|| p.active.libraries.get(&lib.id))
            .flatten()
    };
    let mut libraries = HashMap::new();
    let mut changed = Vec::new();
    for lib in &cfg.libraries {
        let lib_metrics = metrics.library(&lib.id);
        let (upstream, target) = match kept_library(lib) {
            Some(running) => (running.upstream.clone(), running.mint.generation),
            None => {
                if previous.is_some() {
                    changed.push(lib.id.clone());
                }
                let upstream = Upstream::observed(
                    &lib.upstream_url,
                    &lib.extra_ca,
                    connect_timeout,
                    pool_idle,
                    read_timeout,
                    cfg.upstream.http2,
                    lib_metrics.clone(),
                )
                .with_context(|| format!("library {}: upstream", lib.id))?;
                // New settings, new key space for its tokens.
                (upstream, generation)
            }
        };
        libraries.insert(
            lib.id.clone(),
            Library {
                id: Arc::from(lib.id.as_str()),
                mint: MintTarget {
                    upstream: upstream.clone(),
                    secret: lib.secret.clone(),
                    generation: target,
                    metrics: lib_metrics.clone(),
                },
                upstream,
                metrics: lib_metrics,
            },
        );
    }
    if let Some(p) = &previous {
        changed.extend(
            p.libraries
                .iter()
                .filter(|o| !cfg.libraries.iter().any(|n| n.id == o.id))
                .map(|o| o.id.clone()),
        );
    }
    let policy = Policy::new(cfg.roles);
    let kept_claims = policy.referenced_claims();
    let sessions = match &previous {
        Some(p) if p.active.sessions.built_from(&cfg.session, &kept_claims) => {
            p.active.sessions.clone()
        }
        _ => Arc::new(
            SessionValidator::new(
                cfg.session,
                connect_timeout,
                kept_claims,
                Some(metrics.clone()),
                previous.is_some(),
            )
            .await?,
        ),
    };
    let max_concurrent = cfg.limits.max_concurrent_requests;
    let concurrency = match &previous {
        // Same size: the same permits, so requests in flight across the
        // reload still count against the limit.
        Some(p) if p.active.concurrency_size == max_concurrent => p.active.concurrency.clone(),
        _ => Arc::new(Semaphore::new(max_concurrent)),
    };
    let l = &cfg.limits;
    let active = Active {
        generation,
        libraries,
        sessions,
        policy,
        cors: cfg.cors.as_ref().map(Cors::new),
        limits: crate::gateway::limits::RequestLimits {
            max_uri_bytes: l.max_uri_bytes,
            max_headers: l.max_request_headers,
            max_header_bytes: l.max_request_header_bytes,
            max_body_bytes: l.max_body_bytes,
        },
        replay_body_limit: l.replay_body_limit_bytes,
        request_timeout: Duration::from_secs(l.request_timeout_secs),
        concurrency,
        concurrency_size: max_concurrent,
    };
    Ok((
        Built {
            active,
            cert_file: cfg.listener.cert_file,
            key_file: cfg.listener.key_file,
        },
        changed,
    ))
}

/// The listener's limits from `[limits]`. The default connection cap is
/// lowered to half the process's descriptors (each client connection may
/// need one to SMH as well), so the cap, not `EMFILE`, refuses a flood; a
/// configured cap above that is kept with a warning.
fn listener_limits(cfg: &Settings) -> server::Limits {
    let l = &cfg.limits;
    let descriptors = crate::fdlimit::raise_and_get();
    let half = descriptors.map_or(usize::MAX, |n| {
        usize::try_from(n / 2).unwrap_or(usize::MAX).max(1)
    });
    let max_connections = if l.max_connections == crate::config::DEFAULT_MAX_CONNECTIONS {
        l.max_connections.min(half)
    } else {
        if l.max_connections > half {
            tracing::warn!(
                configured = l.max_connections,
                descriptors = descriptors.unwrap_or_default(),
                "limits.max_connections is above half the descriptor limit; a flood may exhaust descriptors (the listener backs off and recovers)"
            );
        }
        l.max_connections
    };
    server::Limits {
        max_connections,
        header_read_timeout: Duration::from_secs(l.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(l.idle_timeout_secs),
        max_concurrent_streams: l.max_concurrent_streams,
        send_timeout: Duration::from_secs(l.send_timeout_secs),
        drain_timeout: Duration::from_secs(l.drain_timeout_secs),
    }
}

/// Counts open connections by protocol and failed handshakes.
struct ConnMetrics(Arc<Metrics>);

impl ConnObserver for ConnMetrics {
    fn opened(&self, info: &ConnInfo) {
        if info.h2 {
            self.0.connections_h2.inc()
        } else {
            self.0.connections_h1.inc()
        }
    }
    fn closed(&self, info: &ConnInfo) {
        if info.h2 {
            self.0.connections_h2.dec()
        } else {
            self.0.connections_h1.dec()
        }
    }
    fn handshake_failed(&self) {
        self.0.tls_handshake_failures.inc();
    }
    fn refused(&self) {
        self.0.connections_refused.inc();
    }
    fn accept_failed(&self) {
        self.0.accept_failures.inc();
    }
    fn timed_out(&self, why: &'static str) {
        self.0.connection_timeouts.with_label_values(&[why]).inc();
    }
}

/// What the admin routes may ask of the running gateway.
struct AppControl {
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
}

/// How long `/readyz`'s upstream probe waits for an answer.
const UPSTREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

impl Control for AppControl {
    fn libraries(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.gateway.active().libraries.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    async fn token_cache_entries(&self) -> u64 {
        self.gateway.tokens.entry_count().await
    }

    fn session_cache_entries(&self) -> u64 {
        self.gateway.active().sessions.cached()
    }

    fn flush_tokens(&self) {
        self.gateway.tokens.clear();
    }

    async fn reload(&self) -> Result<ReloadReport, String> {
        self.reloader.reload().await
    }

    /// Any HTTP answer from each library's token endpoint (SMH answers 400
    /// to a bare call) proves DNS, TCP, TLS trust and SMH's token API are
    /// there.
    async fn upstreams_reachable(&self) -> Result<(), String> {
        let active = self.gateway.active();
        for lib in active.libraries.values() {
            let uri = lib
                .upstream
                .uri("/api/v1/token")
                .map_err(|e| e.to_string())?;
            let req = http::Request::builder()
                .uri(uri)
                .body(crate::body::empty())
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(UPSTREAM_CHECK_TIMEOUT, lib.upstream.send(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("library {}: {e}", lib.id)),
                Err(_) => return Err(format!("library {}: timed out", lib.id)),
            }
        }
        Ok(())
    }

    fn session_keys_current(&self) -> Result<(), String> {
        self.gateway.active().sessions.keys_current()
    }

    async fn revoke(&self, req: AdminRevoke) -> Result<RevokeReport, RevokeError> {
        let lifetime = self.gateway.active().sessions.revocation_lifetime();
        self.gateway
            .revoker
            .revoke(RevokeRequest {
                user_id: req.user_id,
                client_id: req.client_id,
                session_id: req.session_id,
                reason: req.reason,
                requested_by: match req.requested_by {
                    Some(who) => format!("admin:{who}"),
                    None => "admin".into(),
                },
                lifetime,
            })
            .await
    }

    fn revocations(&self) -> serde_json::Value {
        let r = &self.gateway.revoker;
        serde_json::json!({
            "redis": r.redis_status(),
            "revocations": r.active(),
        })
    }

    fn revocation_store(&self) -> Result<(), (bool, String)> {
        use crate::revocation::RedisState;
        match self.gateway.revoker.redis_state() {
            RedisState::Disabled | RedisState::Connected { .. } => Ok(()),
            RedisState::Connecting { since } => Err((true, format!(
                "redis connecting since {since}: not in sync yet, so revocations made on other replicas before this one started may be unknown here"
            ))),
            RedisState::Degraded { since } => Err((false, format!(
                "redis degraded since {since}: unreachable; serving on the local list, revocations made here are queued"
            ))),
        }
    }

    fn refresh_revocation_metrics(&self) {
        self.gateway.revoker.refresh_metrics();
    }
}

/// The revocation list (pruned in the background) and, with a Redis URL,
/// the replicator that shares it; revocations received from other replicas
/// drop this replica's cached tokens of their scope.
fn start_revocation(
    cfg: &RevocationSettings,
    tokens: &TokenService,
    metrics: &Arc<Metrics>,
    audit: &Audit,
) -> anyhow::Result<Revoker> {
    let list = Arc::new(RevocationList::with_max(cfg.max_entries));
    crate::revocation::spawn_pruner(&list, crate::revocation::PRUNE_INTERVAL);
    let replica_id = cfg.replica_id.clone().unwrap_or_else(default_replica_id);
    let replicator = match &cfg.redis {
        None => None,
        Some(redis) => {
            let mut rc = ReplicatorConfig::new(redis.url.expose(), replica_id.clone());
            rc.root_ca_pem = cfg.redis_ca_pem.clone();
            let (tokens, m) = (tokens.clone(), metrics.clone());
            let on_applied: OnApplied =
                Arc::new(move |rev, info| Revoker::applied_from_replica(&tokens, &m, rev, info));
            let r = Replicator::start(rc, list.clone(), on_applied)?;
            tracing::info!(replica_id = %replica_id, "revocations shared through Redis");
            Some(r)
        }
    };
    if replicator.is_none() {
        tracing::info!("revocations are local to this process (no revocation.redis_url)");
    }
    let revoker = Revoker::new(
        list,
        replicator,
        tokens.clone(),
        replica_id,
        metrics.clone(),
        audit.clone(),
        (crate::revoke::RETRY_INITIAL, crate::revoke::RETRY_MAX),
    );
    revoker.refresh_metrics();
    Ok(revoker)
}

/// This host's name and 8 random hex digits: unique per process, and
/// readable in the `origin` of what it revokes (a pod name on Kubernetes).
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 200 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Starts the admin listener, builds everything, then starts the client
/// listener. Readiness turns true only at the end. `source` is where
/// reloads read the configuration again (none: reloads are refused).
pub async fn start(
    cfg: Settings,
    source: Option<ConfigSource>,
    shutdown: Shutdown,
) -> anyhow::Result<Running> {
    let library_ids: Vec<String> = cfg.libraries.iter().map(|l| l.id.clone()).collect();
    let metrics = Arc::new(Metrics::new(&library_ids));
    let readiness = Readiness::default();
    let admin_state = Arc::new(AdminState::new(
        readiness.clone(),
        metrics.clone(),
        cfg.admin.token.clone(),
        admin::Checks {
            upstreams: cfg.admin.check_upstreams,
            session_keys: cfg.admin.check_session_keys,
            revocations: cfg.admin.check_revocations,
        },
    ));
    let admin_listener = server::bind(cfg.admin.address).await?;
    let admin_addr = admin_listener.local_addr()?;
    // The admin port has its own stop, after the client listener drained.
    let admin_shutdown = Shutdown::default();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        admin_shutdown.clone(),
    ));
    let mut tasks = Vec::new();

    let (cert, not_after) = ReloadableCert::load(&cfg.listener.cert_file, &cfg.listener.key_file)?;
    metrics.certificate_not_after.set(not_after);
    let tls = cert.server_config(crate::tls::ALPN_H2_H1)?;
    let audit = Audit::start(&cfg.audit, metrics.clone())?;
    let fixed = cfg.fixed();
    let limits = listener_limits(&cfg);
    let listen = cfg.listener.address;
    let lame_duck = Duration::from_secs(cfg.limits.lame_duck_secs);
    let libraries = cfg.libraries.clone();
    let upstream = cfg.upstream.clone();
    let t = &cfg.tokens;
    let tokens = TokenService::new(
        crate::smh::token::CacheLimits {
            capacity: t.cache_capacity,
            max_bytes: t.cache_max_bytes,
            max_keys_per_user: t.max_keys_per_user,
            refused_retry: Duration::from_secs(t.refused_retry_secs),
        },
        Duration::from_secs(t.safety_margin_secs),
        Duration::from_secs(t.max_age_secs),
        metrics.clone(),
    );
    let revoker = start_revocation(&cfg.revocation, &tokens, &metrics, &audit)?;
    let (built, _) = build_active(cfg, 1, &metrics, None).await?;
    let gateway = Arc::new(Gateway::new(
        built.active,
        tokens,
        revoker,
        metrics.clone(),
        audit,
    ));
    let reloader = Arc::new(Reloader {
        source,
        gateway: gateway.clone(),
        metrics: metrics.clone(),
        cert: cert.clone(),
        state: tokio::sync::Mutex::new(Loaded {
            generation: 1,
            fixed,
            libraries,
            upstream,
        }),
    });
    admin_state.set_control(Arc::new(AppControl {
        gateway: gateway.clone(),
        reloader: reloader.clone(),
    }));
    let service = gateway.service();
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(server::serve_tls(
        listener,
        Arc::new(tls),
        move |conn: &ConnInfo| service.for_connection(conn),
        Arc::new(ConnMetrics(metrics.clone())),
        shutdown.clone(),
        limits,
    )));
    metrics.config_last_reload_success.set(unix_now());
    readiness.set_ready();
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        metrics,
        readiness,
        shutdown,
        reloader,
        tasks,
        admin_shutdown,
        admin_task,
        lame_duck,
    })
}
