//! What the request path learns about a request, collected as it goes, and
//! turned into exactly one audit record plus the request metrics when the
//! response body ends — or is dropped (client gone, timeout, shed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::audit::{Audit, AuditRecord};
use crate::body::{Body, BoxError};
use crate::metrics::{self, Metrics};
use crate::smh::token::TokenOutcome;

/// Filled in by the stages of the request path.
#[derive(Debug, Default)]
pub struct RequestLog {
    pub library: Option<Arc<str>>,
    /// Metric indexes, resolved once per request.
    pub lib_idx: Option<usize>,
    pub resource: Option<String>,
    pub space: Option<String>,
    pub path: Option<String>,
    pub user_id: Option<Arc<str>>,
    pub client_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub operation: Option<String>,
    pub code: Option<String>,
    pub token: Option<TokenOutcome>,
    pub upstream_latency: Option<Duration>,
    pub request_bytes: Arc<AtomicU64>,
}

/// Shared between the edge (which emits) and the stages (which fill in).
pub type LogSlot = Arc<Mutex<RequestLog>>;

pub fn lock(slot: &LogSlot) -> std::sync::MutexGuard<'_, RequestLog> {
    // A panic while holding the lock leaves plain data; keep recording.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Emits the record and metrics once, at body end or drop.
pub struct Finisher {
    pub slot: LogSlot,
    pub started: Instant,
    pub time: SystemTime,
    pub request_id: Arc<str>,
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
            .lib_idx
            .unwrap_or_else(|| m.library_index(metrics::UNKNOWN_LIBRARY));
        let resource = metrics::resource_index(log.resource.as_deref().unwrap_or("other"));
        m.observe_request(
            lib,
            resource,
            metrics::method_index(&self.method),
            self.status,
            elapsed,
        );
        m.in_flight.dec();
        self.audit.record(AuditRecord {
            time: self.time,
            request_id: self.request_id.clone(),
            user_id: log.user_id,
            client_id: log.client_id.filter(|c| !c.is_empty()),
            session_id: log.session_id.filter(|s| !s.is_empty()),
            library: log.library,
            space: log.space,
            method: self.method.to_string(),
            resource: log.resource,
            operation: log.operation,
            path: log.path,
            status: self.status,
            code: log.code,
            request_bytes: log.request_bytes.load(Ordering::Relaxed),
            response_bytes: self.response_bytes,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_latency_ms: log.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            token: log.token.map(TokenOutcome::as_str),
            client_addr: self.client_addr.map(|a| a.to_string()),
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
