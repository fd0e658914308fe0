//! The admin listener, on its own address so it can stay private:
//! `/healthz` (process alive), `/readyz` (start-up finished: listeners,
//! config and upstream trust up; optionally each library's SMH endpoint
//! reachable), `/metrics` (Prometheus text), and `/admin/v1/*` behind a
//! bearer admin token.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::metrics::Metrics;
use crate::revoke::{RevokeError, RevokeReport};
use crate::secret::Secret;
use crate::server::Shutdown;

/// How long an upstream reachability result is reused by `/readyz`, so
/// frequent probes do not turn into a stream of calls to SMH.
const UPSTREAM_CHECK_TTL: Duration = Duration::from_secs(5);

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

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    /// Settings that differ in the file but apply only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Everything the admin routes may ask of the gateway; the admin server
/// sees nothing else of it.
pub trait Control: Send + Sync + 'static {
    fn libraries(&self) -> Vec<String>;
    fn token_cache_entries(&self) -> impl Future<Output = u64> + Send;
    fn session_cache_entries(&self) -> u64;
    fn flush_tokens(&self);
    fn reload(&self) -> impl Future<Output = Result<ReloadReport, String>> + Send;
    /// Whether every library's SMH endpoint answers.
    fn upstreams_reachable(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether the session keys are current (JWKS fetched).
    fn session_keys_current(&self) -> Result<(), String>;
    /// `POST /admin/v1/revoke`.
    fn revoke(
        &self,
        req: AdminRevoke,
    ) -> impl Future<Output = Result<RevokeReport, RevokeError>> + Send;
    /// `GET /admin/v1/revocations`: the Redis link and the revocations in force.
    fn revocations(&self) -> serde_json::Value;
    /// Whether revocations reach this replica from the others (Redis in
    /// sync, or no Redis configured); shown by `/readyz`. `Err(true)`:
    /// never in sync since start; `Err(false)`: was, and lost Redis.
    fn revocation_store(&self) -> Result<(), (bool, String)>;
    /// Copies revocation figures into the metrics before a scrape.
    fn refresh_revocation_metrics(&self);
}

/// The body of `POST /admin/v1/revoke`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRevoke {
    pub user_id: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Who asks (an operator's name, a ticket): recorded as
    /// `admin:<requested_by>` in the revocation and the audit line.
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// An admin request body is a small JSON object.
const MAX_ADMIN_BODY_BYTES: usize = 16 * 1024;

/// What `/readyz` checks besides start-up having finished.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// Each library's SMH token endpoint answers over TLS.
    pub upstreams: bool,
    /// The JWKS (if any) was fetched successfully last time.
    pub session_keys: bool,
    /// The revocation list was loaded from Redis once (if configured).
    pub revocations: bool,
}

/// What the admin routes read. The control is filled in once the gateway
/// is built, so the admin port can answer (not ready) while start-up is
/// still running.
pub struct AdminState<C> {
    readiness: Readiness,
    metrics: Arc<Metrics>,
    control: OnceLock<Arc<C>>,
    token: Option<Secret>,
    checks: Checks,
    upstream_check: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl<C: Control> AdminState<C> {
    pub fn new(
        readiness: Readiness,
        metrics: Arc<Metrics>,
        token: Option<Secret>,
        checks: Checks,
    ) -> Self {
        Self {
            readiness,
            metrics,
            control: OnceLock::new(),
            token,
            checks,
            upstream_check: Mutex::new(None),
        }
    }

    pub fn set_control(&self, control: Arc<C>) {
        let _ = self.control.set(control);
    }
}

/// Admin connections open at once: probes and a scraper need a handful;
/// more are closed at once so the admin port cannot pin descriptors.
const MAX_ADMIN_CONNECTIONS: usize = 64;
/// An admin request head must arrive within this (slowloris), which also
/// ends idle keep-alive connections.
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves the admin routes over plain HTTP (loopback by default).
pub async fn serve<C: Control>(
    listener: TcpListener,
    state: Arc<AdminState<C>>,
    shutdown: Shutdown,
) {
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

async fn route<C: Control>(req: Request<Incoming>, state: &AdminState<C>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/admin/v1/") {
        let rest = rest.to_string();
        return admin_api(req, &rest, state).await;
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

async fn readyz<C: Control>(state: &AdminState<C>) -> Response<Body> {
    let Some(control) = state.control.get().filter(|_| state.readiness.is_ready()) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting or draining\n");
    };
    if state.checks.session_keys {
        if let Err(e) = control.session_keys_current() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("session keys: {e}\n"),
            );
        }
    }
    if state.checks.upstreams {
        if let Err(e) = upstreams_reachable(state, control).await {
            return text(StatusCode::SERVICE_UNAVAILABLE, &format!("upstream: {e}\n"));
        }
    }
    // Redis trouble never fails readiness: every replica would go out of
    // the load balancer at once, for a fault that does not stop serving.
    match control.revocation_store() {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err((true, e)) if state.checks.revocations => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("revocations: {e}\n"),
        ),
        Err((_, e)) => text(StatusCode::OK, &format!("ready (revocations: {e})\n")),
    }
}

/// The control's probe, its result reused for [`UPSTREAM_CHECK_TTL`].
async fn upstreams_reachable<C: Control>(state: &AdminState<C>, control: &C) -> Result<(), String> {
    if let Some((at, r)) = &*crate::sync::lock(&state.upstream_check) {
        if at.elapsed() < UPSTREAM_CHECK_TTL {
            return r.clone();
        }
    }
    let result = control.upstreams_reachable().await;
    *crate::sync::lock(&state.upstream_check) = Some((Instant::now(), result.clone()));
    result
}

async fn refresh_sampled_gauges<C: Control>(state: &AdminState<C>) {
    if let Some(control) = state.control.get() {
        state
            .metrics
            .token_cache_entries
            .set(control.token_cache_entries().await as i64);
        state
            .metrics
            .session_cache_entries
            .set(control.session_cache_entries() as i64);
        control.refresh_revocation_metrics();
    }
}

/// `/admin/v1/*`: disabled without a configured token; constant-time check.
async fn admin_api<C: Control>(
    req: Request<Incoming>,
    rest: &str,
    state: &AdminState<C>,
) -> Response<Body> {
    let Some(expected) = &state.token else {
        return json_error(
            StatusCode::NOT_FOUND,
            "admin API disabled: set [admin] token or token_file",
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
        let mut resp = json_error(StatusCode::UNAUTHORIZED, "admin token required");
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    let Some(control) = state.control.get() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "starting");
    };
    match (req.method(), rest) {
        (&Method::GET, "status") => body::json_response(
            StatusCode::OK,
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "ready": state.readiness.is_ready(),
                "libraries": control.libraries(),
                "token_cache_entries": control.token_cache_entries().await,
                "session_cache_entries": control.session_cache_entries(),
            }),
        ),
        (&Method::POST, "tokens/flush") => {
            control.flush_tokens();
            tracing::info!("admin: token cache flushed");
            body::json_response(StatusCode::OK, &serde_json::json!({"flushed": true}))
        }
        (&Method::POST, "reload") => match control.reload().await {
            Ok(report) => body::json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "reloaded": true,
                    "generation": report.generation,
                    "needs_restart": report.needs_restart,
                }),
            ),
            // The file is the operator's: what is wrong with it is theirs
            // to read (it names places in the file, never secret values).
            Err(e) => body::json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({"reloaded": false, "error": e}),
            ),
        },
        (&Method::POST, "revoke") => {
            let body = match read_json::<AdminRevoke>(req).await {
                Ok(b) => b,
                Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
            };
            match control.revoke(body).await {
                Ok(report) => body::json_response(StatusCode::OK, &report),
                Err(RevokeError::Invalid(e)) => json_error(StatusCode::BAD_REQUEST, &e),
                Err(RevokeError::Full(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
                Err(e @ RevokeError::Internal) => {
                    json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
                }
            }
        }
        (&Method::GET, "revocations") => {
            body::json_response(StatusCode::OK, &control.revocations())
        }
        (_, route @ ("status" | "tokens/flush" | "reload" | "revoke" | "revocations")) => {
            let allow = if matches!(route, "status" | "revocations") {
                "GET"
            } else {
                "POST"
            };
            let mut resp = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            resp
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such admin route"),
    }
}

/// Reads a JSON body of at most [`MAX_ADMIN_BODY_BYTES`], refusing
/// unknown fields (a typo must not silently widen a revocation).
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(req.into_body(), MAX_ADMIN_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| format!("the body must be JSON of at most {MAX_ADMIN_BODY_BYTES} bytes"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

fn json_error(status: StatusCode, msg: &str) -> Response<Body> {
    body::json_response(status, &serde_json::json!({"error": msg}))
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(msg.to_string()))
        .expect("static response")
}
