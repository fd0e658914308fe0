//! What the request path learns about a request, collected as it goes, and
//! turned into exactly one audit record plus the request metrics when the
//! response body ends — or is dropped (client gone, timeout, shed).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::audit::{Audit, AuditRecord, Target};
use crate::body::{Body, BoxError};
use crate::metrics::{self, LibraryMetrics, Metrics};
use crate::request_id::RequestId;
use crate::smh::token::TokenOutcome;

/// Filled in by the stages of the request path. Everything here is typed
/// or shared (`Arc`, `&'static str`): the text of the audit line is made on
/// the audit writer thread, not on the request path.
#[derive(Debug, Default)]
pub struct RequestLog {
    pub library: Option<Arc<str>>,
    /// The library's metric handles; none for an unknown library.
    pub lib_metrics: Option<Arc<LibraryMetrics>>,
    pub resource_idx: Option<usize>,
    /// Borrowed from the table of known resources; owned only for others.
    pub resource: Option<Cow<'static, str>>,
    pub target: Option<Target>,
    pub user_id: Option<Arc<str>>,
    pub client_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    /// The operation without its resource (see `smh::operation`).
    pub operation: Option<&'static str>,
    pub code: Option<Cow<'static, str>>,
    pub token: Option<TokenOutcome>,
    pub upstream_latency: Option<Duration>,
}

/// Shared between the edge (which emits) and the stages (which fill in):
/// one allocation per request.
#[derive(Debug, Default)]
pub struct LogShared {
    log: Mutex<RequestLog>,
    /// Request body bytes, counted as they stream past.
    pub request_bytes: AtomicU64,
}

pub type LogSlot = Arc<LogShared>;

pub fn lock(slot: &LogShared) -> std::sync::MutexGuard<'_, RequestLog> {
    crate::sync::lock(&slot.log)
}

/// Emits the record and metrics once, at body end or drop.
pub struct Finisher {
    pub slot: LogSlot,
    pub started: Instant,
    pub time: SystemTime,
    pub request_id: RequestId,
    pub method: Method,
    pub status: u16,
    pub client_addr: Option<std::net::SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    pub response_bytes: u64,
    pub done: bool,
}

impl Finisher {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.started.elapsed();
        let log = std::mem::take(&mut *lock(&self.slot));
        let m = &self.metrics;
        let lib = log
            .lib_metrics
            .as_ref()
            .unwrap_or_else(|| m.unknown_library());
        let resource = log.resource_idx.unwrap_or(crate::smh::OTHER_RESOURCE);
        lib.observe_request(
            resource,
            metrics::method_index(&self.method),
            self.status,
            elapsed,
        );
        m.in_flight.dec();
        if !self.audit.enabled() {
            return;
        }
        self.audit.record(AuditRecord {
            time: self.time,
            request_id: self.request_id.clone(),
            user_id: log.user_id,
            client_id: log.client_id.filter(|c| !c.is_empty()),
            session_id: log.session_id.filter(|s| !s.is_empty()),
            library: log.library,
            target: log.target,
            method: self.method.clone(),
            resource: log.resource,
            operation: log.operation,
            status: self.status,
            code: log.code,
            request_bytes: self.slot.request_bytes.load(Ordering::Relaxed),
            response_bytes: self.response_bytes,
            latency: elapsed,
            upstream_latency: log.upstream_latency,
            token: log.token.map(TokenOutcome::as_str),
            client_addr: self.client_addr,
        });
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The response body, counting bytes and finishing the record at its end.
pub struct RecordedBody {
    pub inner: Body,
    pub fin: Finisher,
}

impl HttpBody for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.fin.response_bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.fin.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.fin.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
