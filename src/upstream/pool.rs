//! The keep-alive pool of one upstream host's hyper HTTP/1.1 connections.
//!
//! hyper-util's general-purpose client spawns a task per request to hand
//! the connection back to its pool, keys the pool by scheme and authority
//! behind a shared map, and races a checkout against a fresh connect; an
//! `Upstream` has exactly one host, so the pool is a stack of idle
//! connections behind a mutex, and a connection goes back onto it when the
//! response body ends — from the body itself, with no extra task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use super::connector::TlsConnector;
use super::{classify, Phase, UpstreamError, UpstreamFailure, UpstreamObserver};
use crate::body::Body;

/// The keep-alive connections to one host: how to dial a new one, and the
/// idle ones, most recently returned last — reuse keeps few connections
/// hot, and the ones idle longest sit at the front for eviction. `T` is
/// the connection as a transport keeps it (hyper's `SendRequest`).
pub struct Pool<T> {
    pub(super) connector: TlsConnector,
    /// `https://<authority>/`: what the connector dials.
    pub(super) target: Uri,
    idle: Mutex<Vec<(T, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// How long a response body may send nothing.
    pub(super) read_timeout: Duration,
    /// Told the number of idle connections, and body read failures.
    observer: Option<Arc<dyn UpstreamObserver>>,
}

/// SMH's response heads are a status and a few `x-smh-*` headers; a head
/// larger than this is not SMH and fails the request.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 32 * 1024;

/// The pool of hyper client connections.
pub type H1Pool = Pool<SendRequest<Body>>;

impl<T> Pool<T> {
    pub fn new(
        connector: TlsConnector,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
        read_timeout: Duration,
        observer: Option<Arc<dyn UpstreamObserver>>,
    ) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            read_timeout,
            observer,
        }
    }

    /// Reports the idle count; called with the lock held, so reports
    /// arrive in the order the pool changed.
    fn report_idle(&self, n: usize) {
        if let Some(o) = &self.observer {
            o.idle_connections(n);
        }
    }

    /// The most recently returned connection that `usable` accepts, if
    /// any; unusable and expired ones met on the way are dropped.
    pub(super) fn pop(&self, usable: impl Fn(&mut T) -> bool) -> Option<T> {
        let mut idle = lock(&self.idle);
        let before = idle.len();
        let mut found = None;
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && usable(&mut conn) {
                found = Some(conn);
                break;
            }
        }
        if idle.len() != before {
            self.report_idle(idle.len());
        }
        found
    }

    pub(super) fn push(&self, conn: T, usable: impl Fn(&mut T) -> bool) {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        // Evict from the front: those have been idle longest.
        let mut stale = 0;
        for (c, since) in idle.iter_mut() {
            if now.duration_since(*since) < self.idle_timeout && usable(c) {
                break;
            }
            stale += 1;
        }
        idle.drain(..stale);
        if idle.len() < self.max_idle {
            idle.push((conn, now));
        }
        self.report_idle(idle.len());
    }
}

fn sender_open(s: &mut SendRequest<Body>) -> bool {
    !s.is_closed()
}

impl Pool<SendRequest<Body>> {
    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or
    /// a new one. A pooled connection the upstream closed while it sat idle
    /// hands the request back unsent; it then goes out on a fresh
    /// connection, so a stale socket never surfaces as an error.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<HyperBody>, UpstreamError> {
        while let Some(mut sender) = self.checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.attach(sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::exchanging(e.error())),
                },
            }
        }
        // Boxed: TCP + TLS + handshake is a large future, needed only
        // when no idle connection is left; inline it would size every send.
        let mut sender = Box::pin(self.connect()).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::exchanging(&e))?;
        Ok(self.attach(sender, resp))
    }

    fn checkout(&self) -> Option<SendRequest<Body>> {
        self.pop(sender_open)
    }

    fn checkin(&self, mut sender: SendRequest<Body>) {
        if sender_open(&mut sender) {
            self.push(sender, sender_open);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = tower::Service::call(&mut connector, self.target.clone())
            .await
            .map_err(|e| UpstreamError::connecting(&e))?;
        let (sender, conn) = http1::Builder::new()
            .max_header_size(MAX_RESPONSE_HEAD_BYTES)
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::connecting(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with error");
            }
        });
        Ok(sender)
    }

    /// Ties the connection to the response body, which returns it at its
    /// end (at once for a response without a body).
    fn attach(
        self: &Arc<Self>,
        sender: SendRequest<Body>,
        resp: Response<Incoming>,
    ) -> Response<HyperBody> {
        resp.map(|inner| {
            let mut body = HyperBody {
                inner,
                recycle: Some(Recycle {
                    sender,
                    pool: self.clone(),
                }),
                read_timeout: self.read_timeout,
                stall: None,
                observer: None,
            };
            if body.inner.is_end_stream() {
                body.finished();
            }
            body
        })
    }
}

struct Recycle {
    sender: SendRequest<Body>,
    pool: Arc<H1Pool>,
}

impl Recycle {
    fn run(self) {
        self.pool.checkin(self.sender);
    }
}

/// A response body from hyper's client. Dropped before its end (client
/// gone), the connection is dropped with it rather than reused
/// mid-message.
/// A body that sends nothing for its read timeout ends with an error.
pub struct HyperBody {
    inner: Incoming,
    recycle: Option<Recycle>,
    read_timeout: Duration,
    /// Armed only while a read is pending: bodies that arrive with their
    /// head (most SMH answers) never touch the timer.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Told about read failures of an unpooled body; a pooled body tells
    /// its pool's observer (no handle of its own to clone per response).
    observer: Option<Arc<dyn UpstreamObserver>>,
}

/// The error a stalled upstream body ends with.
#[derive(Debug, thiserror::Error)]
#[error("SMH sent no response bytes for {0:?} (upstream.read_timeout_secs)")]
pub struct ReadTimeout(Duration);

impl HyperBody {
    /// A body from a client that pools by itself (the h2 path).
    pub fn unpooled(
        inner: Incoming,
        read_timeout: Duration,
        observer: Option<Arc<dyn UpstreamObserver>>,
    ) -> Self {
        Self {
            inner,
            recycle: None,
            read_timeout,
            stall: None,
            observer,
        }
    }

    fn finished(&mut self) {
        if let Some(r) = self.recycle.take() {
            r.run();
        }
    }

    /// The body ended in an error: mid-message, its connection cannot be
    /// reused; the failure is reported.
    fn failed(&mut self, cause: Option<UpstreamFailure>) {
        let recycle = self.recycle.take();
        let observer = match &recycle {
            Some(r) => r.pool.observer.as_ref(),
            None => self.observer.as_ref(),
        };
        if let (Some(o), Some(c)) = (observer, cause) {
            o.failed(c);
        }
    }
}

impl HttpBody for HyperBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                let timeout = this.read_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    this.failed(Some(UpstreamFailure::Timeout));
                    return Poll::Ready(Some(Err(Box::new(ReadTimeout(timeout)))));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => this.finished(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finished(),
            Poll::Ready(Some(Err(e))) => this.failed(classify(Phase::Exchange, e)),
            Poll::Ready(Some(Ok(_))) => {}
        }
        this.stall = None;
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
