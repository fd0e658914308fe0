//! The request path, top to bottom in one place (`Gateway::handle`), and the
//! tower stack that wraps it (`Gateway::service`).
//!
//!  edge:      request id, tracing span, CORS preflight, load shedding at
//!             the concurrency limit, whole-request timeout, errors ->
//!             SMH-shaped responses, one audit record + metrics per request
//!             (`EdgeService`)
//!  0 own:     `POST /gateway/v1/logout`: the caller's session (as in 3)
//!             revokes its own device or all its devices; 204
//!  1 route:   /api/v1/<resource>/<LibraryId>[/<SpaceId>][/rest] placed in
//!             SMH's resource table, and the query's one operation flag;
//!             anything ambiguous is refused before anything else runs
//!  2 library: known LibraryId or 404
//!  3 session: credential -> Session, or 401 (503 if the IdP is down);
//!             the connection's memo first, then the shared cache; then
//!             refused if revoked (a local lookup)
//!  4 body:    kept whole when small (replay, and the operation SMH picks
//!             from a flag-less PUT body), streamed otherwise
//!  5 operation + policy: the one judged operation; roles -> grant, space,
//!             period, allowed operation, or 403
//!  6 token:   per-user SMH token from the connection's memo or the cache
//!             (single-flight mint), or 503
//!  7 forward: rebuild the query and headers from what is allowed, inject
//!             the token, stream; on InvalidAccessToken drop that token,
//!             mint, replay once

pub mod cors;
pub mod forward;
pub mod limits;
mod logout;
pub mod query;
pub mod record;
pub mod rewrite;
pub mod route;

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::Service;
use tracing::Instrument;

use crate::audit::{Audit, Target};
use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::{LibraryMetrics, Metrics};
use crate::policy::{Operation, Policy};
use crate::request_id::{RequestId, REQUEST_ID};
use crate::revoke::Revoker;
use crate::server::ConnInfo;
use crate::session::{SessionMemo, SessionOutcome, SessionValidator};
use crate::smh::token::{MintError, MintTarget, TokenKey, TokenMemo, TokenOutcome, TokenService};
use crate::upstream::Upstream;

use forward::{Outgoing, RequestBody, SentKind};
use record::{lock, Finisher, LogSlot, RecordedBody};
use route::SmhRoute;

/// One SMH library the gateway fronts.
pub struct Library {
    pub id: Arc<str>,
    pub upstream: Upstream,
    /// How its tokens are minted (the same upstream, and the secret).
    pub mint: MintTarget,
    /// This library's metric handles.
    pub metrics: Arc<LibraryMetrics>,
}

/// The settings a reload replaces as one: each request loads them once, at
/// its start, and keeps them to its end.
pub struct Active {
    /// Bumped by every reload; a connection's memo from another generation
    /// is dropped (its session may have been judged by other keys).
    pub generation: u64,
    pub libraries: HashMap<String, Library>,
    /// Shared with the previous generation when `[session]` is unchanged.
    pub sessions: Arc<SessionValidator>,
    pub policy: Policy,
    pub cors: Option<cors::Cors>,
    pub limits: limits::RequestLimits,
    pub replay_body_limit: usize,
    pub request_timeout: Duration,
    /// Shared with the previous generation when its size is unchanged, so
    /// requests in flight across a reload stay counted.
    pub concurrency: Arc<Semaphore>,
    /// `limits.max_concurrent_requests` the semaphore was made with.
    pub concurrency_size: usize,
}

/// The request path's state: what lives as long as the process (token
/// cache, metrics, audit) and the reloadable [`Active`] settings.
pub struct Gateway {
    active: arc_swap::ArcSwap<Active>,
    pub tokens: TokenService,
    /// Revocations: its list is consulted after every session check (a
    /// local lookup; one atomic load while nothing is revoked), and logout
    /// makes one.
    pub revoker: Revoker,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
}

impl Gateway {
    pub fn new(
        active: Active,
        tokens: TokenService,
        revoker: Revoker,
        metrics: Arc<Metrics>,
        audit: Audit,
    ) -> Self {
        revoker.set_libraries(mint_targets(&active));
        Self {
            active: arc_swap::ArcSwap::from_pointee(active),
            tokens,
            revoker,
            metrics,
            audit,
        }
    }

    /// The settings new requests start with.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Swaps in `next` for requests that start from now on; returns the
    /// settings requests in flight may still be using.
    pub fn replace(&self, next: Active) -> Arc<Active> {
        self.revoker.set_libraries(mint_targets(&next));
        self.active.swap(Arc::new(next))
    }

    /// The request path. Every stage either hands the next one what it
    /// needs or returns the error that says why the request stops here;
    /// what each stage learns goes into `log` for the audit record.
    pub async fn handle(
        &self,
        active: &Active,
        req: Request<Incoming>,
        request_id: &str,
        log: &LogSlot,
        conn: &ConnMemo,
        now: Instant,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, incoming) = req.into_parts();

        // 0. The gateway's own route.
        if parts.uri.path() == logout::PATH {
            return self.logout(active, &parts, incoming, log, conn, now).await;
        }
        // 1. Route and operation flag, before anything else.
        let route = SmhRoute::parse(&parts.method, parts.uri.path())?;
        let query = query::judge(parts.uri.query())?;
        // 2. Library.
        let library = active.libraries.get(route.library);
        {
            let mut l = lock(log);
            l.resource_idx = Some(route.resource_idx);
            l.resource = Some(Cow::Borrowed(crate::smh::RESOURCES[route.resource_idx].0));
            l.target = Some(Target::new(route.space, route.rest));
            if let Some(lib) = library {
                l.library = Some(lib.id.clone());
                l.lib_metrics = Some(lib.metrics.clone());
            }
        }
        let library =
            library.ok_or_else(|| GatewayError::LibraryNotFound(route.library.to_string()))?;
        // 3. Session, and revocation.
        let (session, mut memo) = self.session(active, &parts, conn, now).await?;
        {
            let mut l = lock(log);
            l.user_id = Some(session.user_id.clone());
            l.client_id = Some(session.client_id.clone());
            l.session_id = Some(session.session_id.clone());
        }
        // 4. Body: small ones are kept (replay; the operation of a
        // flag-less PUT is in it).
        let mut body = RequestBody::read(
            incoming,
            &parts.headers,
            active
                .replay_body_limit
                .min(active.limits.max_body_bytes as usize),
            active.limits.max_body_bytes,
            log.clone(),
        )
        .await?;
        // 5. Operation and policy: the one operation SMH will perform,
        // judged and named once for the allow-list and the audit record.
        let judged = crate::smh::operation::judge(
            &parts.method,
            route.resource,
            query.flag,
            crate::smh::operation::BodyView {
                bytes: body.buffered(),
                plain_json: is_plain_json(&parts.headers),
            },
        )?;
        lock(log).operation = Some(judged.name);
        let op = Operation {
            method: &parts.method,
            resource: route.resource,
            name: judged.name,
        };
        let decision = active
            .policy
            .decide(&session, route.space, &judged.source_spaces, op)?;
        // 6. Token.
        let key = TokenKey {
            library: library.id.clone(),
            spaces: decision.token_space,
            user_id: session.user_id.clone(),
            client_id: session.client_id.clone(),
            session_id: session.session_id.clone(),
            grant: decision.grant,
            period_secs: decision.period_secs,
            target: library.mint.generation,
        };
        let (mut token, outcome) = self
            .tokens
            .get_memoized(&key, &library.mint, &mut memo.token, now)
            .await
            .map_err(mint_error)?;
        drop(memo);
        match outcome {
            TokenOutcome::Hit => self.metrics.token_cache_hits.inc(),
            _ => self.metrics.token_cache_misses.inc(),
        }
        lock(log).token = Some(outcome);
        // 7. Forward, replaying once if SMH rejects a token we thought live.
        let out = Outgoing {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            request_id,
        };
        let mut sent = forward::send(&library.upstream, &out, &mut body, token.token()).await?;
        if sent.kind == SentKind::InvalidToken {
            // The replay path is boxed so it does not size every request's
            // future (see `TokenService::get_memoized`).
            Box::pin(self.tokens.invalidate_if_same(&key, token.token())).await;
            // A streamed body is gone: the client's own refresh logic retries
            // and gets the fresh token then.
            if body.is_replayable() {
                tracing::info!(user = %session.user_id, "SMH rejected a cached token; re-minting and replaying");
                library.metrics.remint();
                (token, _) = Box::pin(self.tokens.get(&key, &library.mint))
                    .await
                    .map_err(mint_error)?;
                lock(log).token = Some(TokenOutcome::Reminted);
                sent = Box::pin(forward::send(
                    &library.upstream,
                    &out,
                    &mut body,
                    token.token(),
                ))
                .await?;
            }
        }
        library.metrics.observe_upstream(sent.upstream_latency);
        let mut l = lock(log);
        l.code = sent.code.map(Cow::Owned);
        l.upstream_latency = Some(sent.upstream_latency);
        Ok(sent.response)
    }

    /// Stage 3: the session from the connection's memo, the cache or a
    /// fresh validation, then refused if revoked. The memo goes back to
    /// the connection when the guard drops (once the token is known); a
    /// concurrent HTTP/2 stream meanwhile just finds it empty.
    async fn session<'c>(
        &self,
        active: &Active,
        parts: &http::request::Parts,
        conn: &'c ConnMemo,
        now: Instant,
    ) -> Result<(crate::session::Session, MemoGuard<'c>), GatewayError> {
        let mut memo = conn.take();
        if memo.generation != active.generation {
            *memo = Memo {
                generation: active.generation,
                ..Memo::default()
            };
        }
        let authenticated = active
            .sessions
            .authenticate(parts, &mut memo.session, now)
            .await;
        self.count_session(&authenticated);
        let session = authenticated?.0;
        // Checked for every request, whether the session came from the
        // cache, the connection's memo or a fresh validation.
        let revocations = self.revoker.list();
        if !revocations.is_empty()
            && revocations.is_revoked(
                &session.user_id,
                session.client_id_verified.then_some(&*session.client_id),
                (!session.session_id.is_empty()).then_some(&*session.session_id),
                active.sessions.revocation_iat(&session),
                crate::revocation::unix_now(),
            )
        {
            return Err(active.sessions.revoked());
        }
        Ok((session, memo))
    }

    fn count_session(&self, r: &Result<(crate::session::Session, SessionOutcome), GatewayError>) {
        let m = &self.metrics;
        match r {
            Ok((_, SessionOutcome::Cached)) => m.sessions_cached.inc(),
            Ok((_, SessionOutcome::Validated)) => m.sessions_validated.inc(),
            Err(GatewayError::MissingCredential | GatewayError::SmhEmptyAccessToken) => {
                m.sessions_missing.inc()
            }
            Err(GatewayError::SessionBackendUnavailable) => m.sessions_unavailable.inc(),
            Err(_) => m.sessions_invalid.inc(),
        }
    }

    /// The client-facing service around [`Gateway::handle`].
    pub fn service(self: &Arc<Self>) -> EdgeService {
        EdgeService {
            gateway: self.clone(),
            client_addr: None,
            h1: false,
            memo: Arc::default(),
        }
    }
}

/// Each library's minting credentials, which SMH deletes use too.
fn mint_targets(active: &Active) -> HashMap<Arc<str>, MintTarget> {
    active
        .libraries
        .values()
        .map(|l| (l.id.clone(), l.mint.clone()))
        .collect()
}

/// Whether a body means to SMH what it means to a JSON parser: no
/// `Content-Encoding`, and no `Content-Type` or a JSON one.
fn is_plain_json(headers: &http::HeaderMap) -> bool {
    !headers.contains_key(http::header::CONTENT_ENCODING)
        && headers.get(http::header::CONTENT_TYPE).is_none_or(|v| {
            v.to_str().is_ok_and(|t| {
                let essence = t.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            })
        })
}

fn mint_error(e: MintError) -> GatewayError {
    match e {
        MintError::Unavailable(m) => {
            tracing::warn!(error = %m, "token API unavailable");
            GatewayError::TokenApiUnavailable
        }
        // Logged at error level once, when the token service remembers it.
        MintError::Rejected(m) => GatewayError::TokenMintRejected(m),
        MintError::TooManyKeys(n) => GatewayError::TooManyTokenKeys(n),
    }
}

/// What the last request on one client connection resolved: its session
/// and its SMH token, reused by the next request when they still apply (see
/// [`SessionMemo`] and [`TokenMemo`]). Taken out for the request and put
/// back, so no lock is held across an await.
#[derive(Default)]
pub struct ConnMemo(std::sync::Mutex<Memo>);

#[derive(Default)]
struct Memo {
    /// The [`Active::generation`] the memo was made under.
    generation: u64,
    session: SessionMemo,
    token: TokenMemo,
}

impl ConnMemo {
    /// The memo, out of the connection until the guard is dropped (also
    /// on an early error return, so a refused request does not cost the
    /// next one its memo).
    fn take(&self) -> MemoGuard<'_> {
        let memo = std::mem::take(&mut *crate::sync::lock(&self.0));
        MemoGuard { conn: self, memo }
    }
}

struct MemoGuard<'a> {
    conn: &'a ConnMemo,
    memo: Memo,
}

impl std::ops::Deref for MemoGuard<'_> {
    type Target = Memo;
    fn deref(&self) -> &Memo {
        &self.memo
    }
}

impl std::ops::DerefMut for MemoGuard<'_> {
    fn deref_mut(&mut self) -> &mut Memo {
        &mut self.memo
    }
}

impl Drop for MemoGuard<'_> {
    fn drop(&mut self) {
        *crate::sync::lock(&self.conn.0) = std::mem::take(&mut self.memo);
    }
}

/// The edge: assigns the request id, opens the span, answers CORS
/// preflights, sheds load at the concurrency limit (503 at once rather than
/// queueing), enforces the whole-request deadline, turns every error into
/// an SMH-shaped response, stamps the response, and ties the audit record
/// and metrics to the response body.
///
/// Shedding and the deadline live here rather than in tower's `LoadShed`,
/// `ConcurrencyLimit` and `Timeout` layers: composed, those cost a boxed
/// service clone and a boxed semaphore future per request, which profiling
/// showed on the hot path; a `try_acquire` and `tokio::time::timeout` do the
/// same job without allocating.
#[derive(Clone)]
pub struct EdgeService {
    gateway: Arc<Gateway>,
    /// The connection's peer: the service is cloned per connection, so the
    /// address travels with it rather than in every request's extensions.
    client_addr: Option<std::net::SocketAddr>,
    /// HTTP/1.1 connection: a refused body closes it after the answer.
    h1: bool,
    memo: Arc<ConnMemo>,
}

impl EdgeService {
    /// The service for one client connection.
    pub fn for_connection(&self, conn: &ConnInfo) -> Self {
        Self {
            client_addr: Some(conn.remote),
            h1: !conn.h2,
            memo: Arc::default(),
            ..self.clone()
        }
    }
}

impl Service<Request<Incoming>> for EdgeService {
    type Response = Response<RecordedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RecordedBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let time = SystemTime::now();
        let gw = self.gateway.clone();
        let active = gw.active();
        gw.metrics.in_flight.inc();
        let rid = RequestId::for_request(&req);
        let slot = LogSlot::default();
        let client_addr = self.client_addr;
        let h1 = self.h1;
        let method = req.method().clone();
        let span = tracing::debug_span!("request", id = %rid, method = %method);
        // Preflights are answered here: before sessions, without credentials.
        let preflight = active
            .cors
            .as_ref()
            .and_then(|c| c.preflight(&req, rid.as_str()));
        let origin = active
            .cors
            .as_ref()
            .and_then(|_| req.headers().get(http::header::ORIGIN).cloned());
        let head = active.limits.check_head(&req);
        let permit = active.concurrency.clone().try_acquire_owned();
        let memo = self.memo.clone();
        Box::pin(
            async move {
                let outcome = match (head, preflight, permit) {
                    (Err(e), _, _) => Err(e),
                    (Ok(()), Some(resp), _) => {
                        lock(&slot).operation = Some("cors.preflight");
                        Ok(resp)
                    }
                    (Ok(()), None, Err(_)) => Err(GatewayError::Overloaded),
                    (Ok(()), None, Ok(_permit)) => {
                        // A panic in one request is that request's 500, not
                        // the connection's end (or, with HTTP/2, every
                        // stream's on it).
                        let handled = std::panic::AssertUnwindSafe(tokio::time::timeout(
                            active.request_timeout,
                            gw.handle(&active, req, rid.as_str(), &slot, &memo, started),
                        ));
                        match futures_util::FutureExt::catch_unwind(handled).await {
                            Ok(within) => within.unwrap_or(Err(GatewayError::Timeout)),
                            Err(_) => {
                                gw.metrics.panics.inc();
                                tracing::error!("request handling panicked; answered 500");
                                Err(GatewayError::Internal)
                            }
                        }
                    }
                };
                let mut resp = outcome.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "request refused");
                    lock(&slot).code = Some(Cow::Borrowed(e.status_and_code().1));
                    let mut resp = e.to_response(rid.as_str());
                    if matches!(e, GatewayError::BodyTooLarge(_)) {
                        gw.metrics.body_too_large.inc();
                        // The rest of the body is never read: the connection
                        // cannot carry another request.
                        if h1 {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                    }
                    resp
                });
                if let Some(cors) = &active.cors {
                    cors.decorate(origin.as_ref(), &mut resp);
                }
                if let Some(v) = rid.header_value() {
                    resp.headers_mut().insert(REQUEST_ID, v);
                }
                let status = resp.status().as_u16();
                let fin = Finisher {
                    slot,
                    started,
                    time,
                    request_id: rid,
                    method,
                    status,
                    client_addr,
                    metrics: gw.metrics.clone(),
                    audit: gw.audit.clone(),
                    response_bytes: 0,
                    done: false,
                };
                Ok(resp.map(|inner| RecordedBody { inner, fin }))
            }
            .instrument(span),
        )
    }
}
