//! Forwarding: the request body kept for one replay when it is small,
//! streamed when it is not; the upstream call; and spotting SMH's
//! `InvalidAccessToken` answer without buffering any other response.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::Incoming;

use crate::body::{self, Body, BoxError};
use crate::error::GatewayError;
use crate::smh::wire::{code, ErrorBody};
use crate::upstream::{Upstream, UpstreamError};

use super::rewrite;

/// The body of an SMH 403 is tiny JSON; we read at most this much of it to
/// learn its code.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The client's request body: whole (replayable) or a one-shot stream.
pub enum RequestBody {
    Buffered(Bytes),
    Streaming(Option<Body>),
}

impl RequestBody {
    /// Reads up to `limit` bytes. A body that ends within the limit is kept
    /// for replay; a longer one continues as a stream (prefix + rest).
    pub async fn read(
        mut incoming: Incoming,
        headers: &HeaderMap,
        limit: usize,
    ) -> Result<Self, GatewayError> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Ok(Self::Streaming(Some(body::boxed(incoming))));
        }
        let mut buf = BytesMut::new();
        loop {
            match incoming.frame().await {
                None => return Ok(Self::Buffered(buf.freeze())),
                Some(Err(e)) => {
                    return Err(GatewayError::BadRequest(format!(
                        "reading request body: {e}"
                    )))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() > limit {
                        let prefix = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
                            buf.freeze(),
                        ))]);
                        let rest = futures_util::StreamExt::map(BodyStream::new(incoming), |r| {
                            r.map_err(BoxError::from)
                        });
                        let chained = futures_util::StreamExt::chain(prefix, rest);
                        return Ok(Self::Streaming(Some(
                            StreamBody::new(chained).boxed_unsync(),
                        )));
                    }
                }
            }
        }
    }

    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Buffered(_))
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
            Self::Streaming(s) => s.take().unwrap_or_else(body::empty),
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

/// What came back from one send.
pub enum Sent {
    /// SMH said the token is invalid (the 403 body was consumed).
    InvalidToken(Response<Body>),
    Passed(Response<Body>),
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
        .uri(&pq)
        .map_err(|e| GatewayError::BadRequest(format!("cannot build upstream URI: {e}")))?;
    let mut req = Request::new(body.take());
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    headers.clone_from(out.headers);
    rewrite::strip_request_headers(headers);
    if let Ok(v) = HeaderValue::from_str(out.request_id) {
        headers.insert(super::REQUEST_ID_HEADER, v);
    }
    let resp = upstream.send(req).await.map_err(|e| {
        match &e {
            UpstreamError::Connect(m) => tracing::warn!(error = %m, "upstream connect failed"),
            UpstreamError::Request(m) => tracing::warn!(error = %m, "upstream request failed"),
        }
        GatewayError::UpstreamUnavailable
    })?;
    classify(resp).await
}

/// Passes every response through as a stream, except a 403 whose JSON code
/// must be read to know whether the token was rejected.
async fn classify(resp: Response<Incoming>) -> Result<Sent, GatewayError> {
    let (mut parts, incoming) = resp.into_parts();
    rewrite::strip_response_headers(&mut parts.headers);
    if parts.status != StatusCode::FORBIDDEN {
        return Ok(Sent::Passed(Response::from_parts(
            parts,
            body::boxed(incoming),
        )));
    }
    let bytes = Limited::new(incoming, MAX_ERROR_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| GatewayError::UpstreamUnavailable)?
        .to_bytes();
    let invalid = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.code == code::INVALID_ACCESS_TOKEN)
        .unwrap_or(false);
    let resp = Response::from_parts(parts, body::full(bytes));
    Ok(if invalid {
        Sent::InvalidToken(resp)
    } else {
        Sent::Passed(resp)
    })
}
