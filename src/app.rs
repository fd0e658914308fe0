//! Assembles a running gateway from a [`Config`]: libraries and their
//! upstream clients, session validator, policy, token service, the client
//! listener with its stack, and the admin listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::{self, Readiness};
use crate::config::Config;
use crate::gateway::cors::Cors;
use crate::gateway::{Gateway, Library};
use crate::policy::Policy;
use crate::server::{self, NoObserver, Shutdown};
use crate::session::SessionValidator;
use crate::smh::token::{MintTarget, TokenService};
use crate::upstream::Upstream;

/// A started gateway: where it listens and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub readiness: Readiness,
    pub shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests, and returns when done.
    pub async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the listeners end (after a shutdown signal).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Builds the request-path state from the configuration.
pub async fn build_gateway(cfg: &Config) -> anyhow::Result<Gateway> {
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
        let upstream = Upstream::new(&lib.upstream_url(), &extra_ca, connect_timeout, pool_idle)
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
            },
        );
        libraries.insert(id.to_string(), Library { id, upstream });
    }
    let tokens = TokenService::new(
        targets,
        cfg.tokens.cache_capacity,
        Duration::from_secs(cfg.tokens.safety_margin_secs),
        Duration::from_secs(cfg.tokens.max_age_secs),
    );
    Ok(Gateway {
        libraries,
        sessions: SessionValidator::from_config(&cfg.session, connect_timeout).await?,
        policy: Policy::from_config(&cfg.roles),
        tokens,
        replay_body_limit: cfg.limits.replay_body_limit_bytes,
    })
}

/// Starts the client and admin listeners. Readiness turns true once both
/// are bound and the gateway state is built.
pub async fn start(cfg: &Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let readiness = Readiness::default();
    let admin_listener = server::bind(cfg.admin.address.0).await?;
    let admin_addr = admin_listener.local_addr()?;
    let registry = prometheus::Registry::new();
    let mut tasks = vec![tokio::spawn(admin::serve(
        admin_listener,
        readiness.clone(),
        registry,
        shutdown.clone(),
    ))];

    let (cert, key) = match (&cfg.listener.cert_file, &cfg.listener.key_file) {
        (Some(c), Some(k)) => (c.get_ref().0.clone(), k.get_ref().0.clone()),
        _ => anyhow::bail!("listener.cert_file and listener.key_file are required"),
    };
    let tls = crate::tls::server_config(
        crate::tls::load_certs(&cert)?,
        crate::tls::load_key(&key)?,
        crate::tls::ALPN_H2_H1,
    )?;
    let gateway = Arc::new(build_gateway(cfg).await?);
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
        move |_conn| service.clone(),
        Arc::new(NoObserver),
        shutdown.clone(),
    )));
    readiness.set_ready();
    tracing::info!(%addr, %admin_addr, "smh-gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        readiness,
        shutdown,
        tasks,
    })
}
