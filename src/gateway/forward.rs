//! Forwarding: the request body kept for one replay when it is small,
//! streamed when it is not; the upstream call; and spotting SMH's
//! `InvalidAccessToken` answer without buffering any other response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::Incoming;

use crate::body::{self, Body, BoxError};
use crate::error::GatewayError;
use crate::smh::wire::{code, ErrorBody};
use crate::upstream::{Upstream, UpstreamBody, UpstreamError, UpstreamFailure};

use super::record::{LogShared, LogSlot};
use super::rewrite;

/// The body of an SMH 403 is tiny JSON; we read at most this much of it to
/// learn its code.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The client's request body: whole (replayable) or a one-shot stream.
pub enum RequestBody {
    Buffered(Bytes),
    Streaming {
        body: Option<Body>,
        /// Set when the stream passed `limits.max_body_bytes` and was cut.
        over_cap: Arc<AtomicBool>,
    },
}

/// The error a streamed body ends with when it passes the cap.
#[derive(Debug, thiserror::Error)]
#[error("request body passed limits.max_body_bytes ({0} bytes)")]
struct OverCap(u64);

impl RequestBody {
    /// Reads up to `keep` bytes. A body that ends within them is kept for
    /// replay; a longer one continues as a stream (prefix + rest), cut off
    /// with an error once it passes `cap` bytes in all. `log` counts the
    /// body bytes as they pass.
    pub async fn read(
        mut incoming: Incoming,
        headers: &HeaderMap,
        keep: usize,
        cap: u64,
        log: LogSlot,
    ) -> Result<Self, GatewayError> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > keep as u64) {
            return Ok(Self::stream(
                futures_util::stream::empty(),
                incoming,
                cap,
                log,
            ));
        }
        let mut buf = BytesMut::new();
        loop {
            match incoming.frame().await {
                None => {
                    log.request_bytes.store(buf.len() as u64, Ordering::Relaxed);
                    return Ok(Self::Buffered(buf.freeze()));
                }
                Some(Err(e)) => {
                    return Err(GatewayError::BadRequest(format!(
                        "reading request body: {e}"
                    )))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() as u64 > cap {
                        return Err(GatewayError::BodyTooLarge(format!(
                            "more than {cap} bytes (limits.max_body_bytes)"
                        )));
                    }
                    if buf.len() > keep {
                        log.request_bytes.store(buf.len() as u64, Ordering::Relaxed);
                        let prefix = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
                            buf.freeze(),
                        ))]);
                        return Ok(Self::stream(prefix, incoming, cap, log));
                    }
                }
            }
        }
    }

    /// `prefix` (already counted) then the rest of `incoming`, counted and
    /// cut off past `cap`.
    fn stream(
        prefix: impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static,
        incoming: Incoming,
        cap: u64,
        log: LogSlot,
    ) -> Self {
        let over_cap = Arc::new(AtomicBool::new(false));
        let flag = over_cap.clone();
        let rest = futures_util::StreamExt::map(BodyStream::new(incoming), move |r| {
            count(&log, r.map_err(BoxError::from), cap, &flag)
        });
        let chained = futures_util::StreamExt::chain(prefix, rest);
        Self::Streaming {
            body: Some(StreamBody::new(chained).boxed_unsync()),
            over_cap,
        }
    }

    /// Whether a streamed body was cut off at the cap.
    pub fn over_cap(&self) -> bool {
        matches!(self, Self::Streaming { over_cap, .. } if over_cap.load(Ordering::Acquire))
    }

    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Buffered(_))
    }

    /// The whole body when it was kept.
    pub fn buffered(&self) -> Option<&[u8]> {
        match self {
            Self::Buffered(b) => Some(b),
            Self::Streaming { .. } => None,
        }
    }

    /// The body for one send. A streaming body can be taken once.
    fn take(&mut self) -> Body {
        match self {
            Self::Buffered(b) => {
                if b.is_empty() {
                    body::empty()
                } else {
                    body::full(b.clone())
                }
            }
            Self::Streaming { body, .. } => body.take().unwrap_or_else(body::empty),
        }
    }
}

/// The parts of the client request that every (re)send reuses.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
}

fn count(
    log: &LogShared,
    frame: Result<Frame<Bytes>, BoxError>,
    cap: u64,
    over_cap: &AtomicBool,
) -> Result<Frame<Bytes>, BoxError> {
    if let Ok(f) = &frame {
        if let Some(d) = f.data_ref() {
            let total = log
                .request_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed)
                .saturating_add(d.len() as u64);
            if total > cap {
                over_cap.store(true, Ordering::Release);
                return Err(Box::new(OverCap(cap)));
            }
        }
    }
    frame
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentKind {
    /// SMH said the token is invalid.
    InvalidToken,
    Passed,
}

/// What came back from one send.
pub struct Sent {
    pub kind: SentKind,
    pub response: Response<Body>,
    /// SMH's error code, read from small error bodies.
    pub code: Option<String>,
    pub upstream_latency: std::time::Duration,
}

/// Sends one request upstream with `token` injected.
pub async fn send(
    upstream: &Upstream,
    out: &Outgoing<'_>,
    body: &mut RequestBody,
    token: &str,
) -> Result<Sent, GatewayError> {
    let pq = rewrite::upstream_path_and_query(out.path, out.query, token);
    let uri: Uri = upstream
        .uri_from(pq)
        .map_err(|e| GatewayError::BadRequest(format!("cannot build upstream URI: {e}")))?;
    let mut req = Request::new(body.take());
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    *headers = rewrite::upstream_request_headers(out.headers);
    if let Ok(v) = HeaderValue::from_str(out.request_id) {
        headers.insert(crate::request_id::REQUEST_ID, v);
    }
    let started = std::time::Instant::now();
    let resp = upstream.send(req).await.map_err(|e| {
        // The client's body passed the cap mid-stream: that is the
        // client's 413, not an outage.
        if body.over_cap() {
            return GatewayError::BodyTooLarge(
                "the streamed body passed limits.max_body_bytes".into(),
            );
        }
        upstream_error(&e)
    })?;
    let upstream_latency = started.elapsed();
    let (kind, response, code) = classify(resp).await?;
    Ok(Sent {
        kind,
        response,
        code,
        upstream_latency,
    })
}

/// The client's answer to a failed upstream call: SMH not answering in
/// time is 504, any other failure 502.
fn upstream_error(e: &UpstreamError) -> GatewayError {
    let cause = e.cause().map_or("request body", UpstreamFailure::as_str);
    tracing::warn!(error = %e, cause, "upstream call failed");
    match e.cause() {
        Some(UpstreamFailure::Timeout) => GatewayError::UpstreamTimeout,
        _ => GatewayError::UpstreamUnavailable,
    }
}

/// Passes every response through as a stream, except small error bodies,
/// which are read to learn SMH's error code (for the audit trail, and for
/// a 403 to know whether the token was rejected) and then passed on whole.
async fn classify(
    resp: Response<UpstreamBody>,
) -> Result<(SentKind, Response<Body>, Option<String>), GatewayError> {
    let (mut parts, incoming) = resp.into_parts();
    rewrite::strip_response_headers(&mut parts.headers);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let small = declared.is_some_and(|n| n <= MAX_ERROR_BODY_BYTES);
    let must_read = parts.status == StatusCode::FORBIDDEN;
    if parts.status.as_u16() < 400 || !(small || must_read) {
        return Ok((
            SentKind::Passed,
            Response::from_parts(parts, body::boxed(incoming)),
            None,
        ));
    }
    let bytes = Limited::new(incoming, MAX_ERROR_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| GatewayError::UpstreamUnavailable)?
        .to_bytes();
    let code = smh_error_code(&bytes);
    let kind = if parts.status == StatusCode::FORBIDDEN
        && code.as_deref() == Some(code::INVALID_ACCESS_TOKEN)
    {
        SentKind::InvalidToken
    } else {
        SentKind::Passed
    };
    Ok((kind, Response::from_parts(parts, body::full(bytes)), code))
}

/// SMH's error code in an error answer, if the body is SMH's error shape.
/// Fuzzed (`fuzz/`): these are upstream bytes.
pub fn smh_error_code(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(bytes)
        .ok()
        .map(|b| b.code)
}
