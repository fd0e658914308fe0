//! The admin listener, on its own address so it can stay private:
//! `/healthz` (process alive), `/readyz` (start-up finished: listeners,
//! config and upstream trust up; optionally each library's SMH endpoint
//! reachable), `/metrics` (Prometheus text), and `/admin/v1/*` behind a
//! bearer admin token.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::config::Secret;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::server::Shutdown;

/// How long an upstream reachability result is reused by `/readyz`, so
/// frequent probes do not turn into a stream of calls to SMH.
const UPSTREAM_CHECK_TTL: Duration = Duration::from_secs(5);
/// An upstream that does not answer within this long counts as unreachable.
const UPSTREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Set once start-up has finished, cleared when draining; read by `/readyz`.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What the admin routes read. The gateway is filled in once built, so the
/// admin port can answer (not ready) while start-up is still running.
pub struct AdminState {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub gateway: OnceLock<Arc<Gateway>>,
    pub token: Option<Secret>,
    pub check_upstreams: bool,
    upstream_check: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl AdminState {
    pub fn new(
        readiness: Readiness,
        metrics: Arc<Metrics>,
        token: Option<Secret>,
        check_upstreams: bool,
    ) -> Self {
        Self {
            readiness,
            metrics,
            gateway: OnceLock::new(),
            token,
            check_upstreams,
            upstream_check: Mutex::new(None),
        }
    }
}

/// Admin connections open at once: probes and a scraper need a handful;
/// more are closed at once so the admin port cannot pin descriptors.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin request head must arrive within this (slowloris), which also
/// ends idle keep-alive connections.
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves the admin routes over plain HTTP (loopback by default).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: Shutdown) {
    // HTTP/1.1 only: probes and scrapers speak it, and hyper's header-read
    // timeout then covers a connection from its first byte (protocol
    // sniffing would wait for that byte without one).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut backoff = crate::server::ACCEPT_BACKOFF_MIN;
    loop {
        let Some((tcp, _)) = crate::server::accept(&listener, &shutdown, &mut backoff, || {
            state.metrics.accept_failures.inc()
        })
        .await
        else {
            return;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

async fn route(req: Request<Incoming>, state: &AdminState) -> Response<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/admin/v1/") {
        return admin_api(&req, rest, state).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state).await,
        "/metrics" => {
            refresh_sampled_gauges(state).await;
            match state.metrics.render() {
                Ok(out) => Response::builder()
                    .header(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)
                    .body(body::full(out))
                    .expect("static response"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn readyz(state: &AdminState) -> Response<Body> {
    if !state.readiness.is_ready() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting or draining\n");
    }
    if state.check_upstreams {
        if let Err(e) = upstreams_reachable(state).await {
            return text(StatusCode::SERVICE_UNAVAILABLE, &format!("upstream: {e}\n"));
        }
    }
    text(StatusCode::OK, "ready\n")
}

/// Any HTTP answer from each library's token endpoint (SMH answers 400 to
/// a bare call) proves DNS, TCP, TLS trust and SMH itself are there.
async fn upstreams_reachable(state: &AdminState) -> Result<(), String> {
    if let Some((at, r)) = &*state
        .upstream_check
        .lock()
        .unwrap_or_else(|p| p.into_inner())
    {
        if at.elapsed() < UPSTREAM_CHECK_TTL {
            return r.clone();
        }
    }
    let Some(gw) = state.gateway.get() else {
        return Err("not built".into());
    };
    let mut result = Ok(());
    for lib in gw.libraries.values() {
        let uri = lib
            .upstream
            .uri("/api/v1/token")
            .map_err(|e| e.to_string())?;
        let req = Request::builder()
            .uri(uri)
            .body(body::empty())
            .map_err(|e| e.to_string())?;
        let answered = tokio::time::timeout(UPSTREAM_CHECK_TIMEOUT, lib.upstream.send(req)).await;
        match answered {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => result = Err(format!("library {}: {e}", lib.id)),
            Err(_) => result = Err(format!("library {}: timed out", lib.id)),
        }
    }
    *state
        .upstream_check
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), result.clone()));
    result
}

async fn refresh_sampled_gauges(state: &AdminState) {
    if let Some(gw) = state.gateway.get() {
        state
            .metrics
            .token_cache_entries
            .set(gw.tokens.entry_count().await as i64);
        state
            .metrics
            .session_cache_entries
            .set(gw.sessions.cached() as i64);
    }
}

/// `/admin/v1/*`: disabled without a configured token; constant-time check.
async fn admin_api(req: &Request<Incoming>, rest: &str, state: &AdminState) -> Response<Body> {
    let Some(expected) = &state.token else {
        return text(
            StatusCode::NOT_FOUND,
            "admin API disabled: set [admin] token or token_file\n",
        );
    };
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Comparing digests keeps the comparison's timing independent of where
    // the presented token first differs from the real one.
    let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    if digest(presented.as_bytes()).as_ref() != digest(expected.expose().as_bytes()).as_ref() {
        return text(StatusCode::UNAUTHORIZED, "admin token required\n");
    }
    let Some(gw) = state.gateway.get() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    };
    match (req.method(), rest) {
        (&Method::GET, "status") => {
            let mut libraries: Vec<&str> = gw.libraries.keys().map(String::as_str).collect();
            libraries.sort_unstable();
            body::json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "ready": state.readiness.is_ready(),
                    "libraries": libraries,
                    "token_cache_entries": gw.tokens.entry_count().await,
                    "session_cache_entries": gw.sessions.cached(),
                }),
            )
        }
        (&Method::POST, "tokens/flush") => {
            gw.tokens.clear();
            tracing::info!("admin: token cache flushed");
            body::json_response(StatusCode::OK, &serde_json::json!({"flushed": true}))
        }
        _ => text(StatusCode::NOT_FOUND, "no such admin route\n"),
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(msg.to_string()))
        .expect("static response")
}
