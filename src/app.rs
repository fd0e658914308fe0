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
}

impl Running {
    /// Stops accepting, drains in-flight requests, and returns when done.
    pub async fn stop(self) {
        self.readiness.set_not_ready();
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
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
        let upstream = Upstream::new(
            &lib.upstream_url(),
            &extra_ca,
            connect_timeout,
            pool_idle,
            cfg.upstream.http2,
        )
        .with_context(|| format!("library {id}: upstream"))?;
        let secret = lib
            .secret_source()
            .resolve()
            .map_err(|e| anyhow::anyhow!("library {id}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("library {id}: no secret configured"))?;
        let metrics_idx = metrics.library_index(&id);
        let id: Arc<str> = Arc::from(id.as_str());
        targets.insert(
            id.clone(),
            MintTarget {
                upstream: upstream.clone(),
                secret,
                metrics_idx,
            },
        );
        libraries.insert(
            id.to_string(),
            Library {
                id,
                upstream,
                metrics_idx,
            },
        );
    }
    let tokens = TokenService::new(
        targets,
        cfg.tokens.cache_capacity,
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
        )
        .await?,
        policy: Policy::from_config(&cfg.roles).map_err(anyhow::Error::msg)?,
        tokens,
        replay_body_limit: cfg.limits.replay_body_limit_bytes,
        metrics,
        audit,
    })
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
    let mut tasks = vec![tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        shutdown.clone(),
    ))];

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
    })
}
