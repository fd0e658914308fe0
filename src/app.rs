//! Assembles a running gateway from a [`Config`]: metrics and audit, the
//! admin listener (first, so `/readyz` answers "starting" during start-up),
//! libraries and their upstream clients, sessions, policy, tokens, and the
//! client listener with its stack and reloadable certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::admin::{self, AdminState, Readiness};
use crate::audit::Audit;
use crate::config::Config;
use crate::gateway::cors::Cors;
use crate::gateway::{Gateway, Library};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::server::{self, ConnInfo, ConnObserver, Shutdown};
use crate::session::SessionValidator;
use crate::smh::token::{MintTarget, TokenService};
use crate::tls::ReloadableCert;
use crate::upstream::Upstream;

/// A started gateway: where it listens and how to stop or reload it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    cert: Arc<ReloadableCert>,
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
        // The admin port answers probes until the drain is over.
        self.admin_shutdown.trigger_at_once();
        let _ = self.admin_task.await;
    }

    /// Reopens the audit file at its configured path (SIGUSR1, after
    /// logrotate moved it).
    pub fn reopen_audit(&self) {
        self.gateway.audit.reopen();
    }

    /// Re-reads the configuration file and swaps in the listener
    /// certificate (SIGHUP). Other settings need a restart; a failed reload
    /// keeps everything as it was.
    pub fn reload(&self, config_path: &std::path::Path) -> anyhow::Result<()> {
        let result = Config::load(config_path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|cfg| {
                let (cert, key) = tls_paths(&cfg)?;
                Ok(self.cert.reload(&cert, &key)?)
            });
        match result {
            Ok(not_after) => {
                self.metrics.config_reload_ok.inc();
                self.metrics.config_last_reload_success.set(unix_now());
                self.metrics.certificate_not_after.set(not_after);
                tracing::info!("configuration reloaded: listener certificate replaced (other settings apply on restart)");
                Ok(())
            }
            Err(e) => {
                self.metrics.config_reload_failed.inc();
                tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
                Err(e)
            }
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn tls_paths(cfg: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&cfg.listener.cert_file, &cfg.listener.key_file) {
        (Some(c), Some(k)) => Ok((c.get_ref().0.clone(), k.get_ref().0.clone())),
        _ => anyhow::bail!("listener.cert_file and listener.key_file are required"),
    }
}

/// Builds the request-path state from the configuration.
pub async fn build_gateway(
    cfg: &Config,
    metrics: Arc<Metrics>,
    audit: Audit,
) -> anyhow::Result<Gateway> {
    let connect_timeout = Duration::from_secs(cfg.upstream.connect_timeout_secs);
    let pool_idle = Duration::from_secs(cfg.upstream.pool_idle_secs);
    let mut libraries = HashMap::new();
    let mut targets = HashMap::new();
    for lib in &cfg.libraries {
        let lib = lib.get_ref();
        let id = lib.id.get_ref().clone();
        let extra_ca = match &lib.ca_file {
            Some(p) => crate::tls::load_certs(&p.get_ref().0)?,
            None => Vec::new(),
        };
        let lib_metrics = metrics.library(&id);
        let upstream = Upstream::observed(
            &lib.upstream_url(),
            &extra_ca,
            connect_timeout,
            pool_idle,
            Duration::from_secs(cfg.upstream.read_timeout_secs),
            cfg.upstream.http2,
            lib_metrics.clone(),
        )
        .with_context(|| format!("library {id}: upstream"))?;
        let secret = lib
            .secret_source()
            .resolve()
            .map_err(|e| anyhow::anyhow!("library {id}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("library {id}: no secret configured"))?;
        let id: Arc<str> = Arc::from(id.as_str());
        targets.insert(
            id.clone(),
            MintTarget {
                upstream: upstream.clone(),
                secret,
                metrics: lib_metrics.clone(),
            },
        );
        libraries.insert(
            id.to_string(),
            Library {
                id,
                upstream,
                metrics: lib_metrics,
            },
        );
    }
    let tokens = TokenService::new(
        targets,
        crate::smh::token::CacheLimits {
            capacity: cfg.tokens.cache_capacity,
            max_bytes: cfg.tokens.cache_max_bytes,
            max_keys_per_user: cfg.tokens.max_keys_per_user,
            refused_retry: Duration::from_secs(cfg.tokens.refused_retry_secs),
        },
        Duration::from_secs(cfg.tokens.safety_margin_secs),
        Duration::from_secs(cfg.tokens.max_age_secs),
        metrics.clone(),
    );
    Ok(Gateway {
        libraries,
        sessions: SessionValidator::from_config(
            &cfg.session,
            connect_timeout,
            crate::policy::referenced_claims(&cfg.roles),
            Some(metrics.clone()),
        )
        .await?,
        policy: Policy::from_config(&cfg.roles).map_err(anyhow::Error::msg)?,
        tokens,
        replay_body_limit: cfg.limits.replay_body_limit_bytes,
        limits: crate::gateway::limits::RequestLimits {
            max_uri_bytes: cfg.limits.max_uri_bytes,
            max_headers: cfg.limits.max_request_headers,
            max_header_bytes: cfg.limits.max_request_header_bytes,
            max_body_bytes: cfg.limits.max_body_bytes,
        },
        metrics,
        audit,
    })
}

/// The listener's limits from `[limits]`. The default connection cap is
/// lowered to half the process's descriptors (each client connection may
/// need one to SMH as well), so the cap, not `EMFILE`, refuses a flood; a
/// configured cap above that is kept with a warning.
fn listener_limits(cfg: &Config) -> server::Limits {
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

/// Starts the admin listener, builds everything, then starts the client
/// listener. Readiness turns true only at the end.
pub async fn start(cfg: &Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let library_ids: Vec<String> = cfg
        .libraries
        .iter()
        .map(|l| l.get_ref().id.get_ref().clone())
        .collect();
    let metrics = Arc::new(Metrics::new(&library_ids));
    let readiness = Readiness::default();
    let admin_token = cfg
        .admin
        .token_source()
        .resolve()
        .map_err(|e| anyhow::anyhow!("admin token: {e}"))?;
    let admin_state = Arc::new(AdminState::new(
        readiness.clone(),
        metrics.clone(),
        admin_token,
        cfg.admin.check_upstreams,
    ));
    let admin_listener = server::bind(cfg.admin.address.0).await?;
    let admin_addr = admin_listener.local_addr()?;
    // The admin port has its own stop, after the client listener drained.
    let admin_shutdown = Shutdown::default();
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        admin_shutdown.clone(),
    ));
    let mut tasks = Vec::new();

    let (cert_path, key_path) = tls_paths(cfg)?;
    let (cert, not_after) = ReloadableCert::load(&cert_path, &key_path)?;
    metrics.certificate_not_after.set(not_after);
    let tls = cert.server_config(crate::tls::ALPN_H2_H1)?;
    let audit = Audit::start(&cfg.audit, metrics.clone())?;
    let gateway = Arc::new(build_gateway(cfg, metrics.clone(), audit).await?);
    let _ = admin_state.gateway.set(gateway.clone());
    let cors = match &cfg.cors {
        Some(c) => Some(Arc::new(Cors::from_config(c)?)),
        None => None,
    };
    let service = gateway.service(
        Duration::from_secs(cfg.limits.request_timeout_secs),
        cfg.limits.max_concurrent_requests,
        cors,
    );
    let listener = server::bind(cfg.listener.address.0).await?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(server::serve_tls(
        listener,
        Arc::new(tls),
        move |conn: &ConnInfo| service.for_connection(conn),
        Arc::new(ConnMetrics(metrics.clone())),
        shutdown.clone(),
        listener_limits(cfg),
    )));
    metrics.config_last_reload_success.set(unix_now());
    readiness.set_ready();
    tracing::info!(%addr, %admin_addr, "smh-gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        metrics,
        readiness,
        shutdown,
        cert,
        tasks,
        admin_shutdown,
        admin_task,
        lame_duck: Duration::from_secs(cfg.limits.lame_duck_secs),
    })
}
