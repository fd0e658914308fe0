//! The COS side: an in-memory object store, the emulator's URL/header
//! signatures, and the `/cos/<key>` byte surface (PUT, part PUT, GET/HEAD
//! with a single `Range`). Errors here are COS-style XML, not SMH JSON,
//! because clients talk to COS directly in the real service.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use rand::Rng;

use crate::body::{boxed, empty, full, Body};

use super::proto::{decode, unix_secs, Query};
use super::State;

/// Path prefix of the COS surface on the emulator's listener.
pub const COS_PREFIX: &str = "/cos/";
/// Chunk size used when streaming stored bytes back, so large downloads are
/// sent as a stream of frames rather than one allocation-sized write.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// CRC-64/XZ is the variant COS calls crc64ecma and SMH reports as `crc64`.
pub const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

pub fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

#[derive(Debug, Clone)]
pub struct Object {
    pub data: Bytes,
    pub content_type: String,
}

#[derive(Default)]
pub struct CosStore {
    pub objects: HashMap<String, Object>,
    /// Multipart uploads: upload id -> part number -> bytes.
    pub parts: HashMap<String, BTreeMap<u32, Bytes>>,
}

impl CosStore {
    /// Joins the parts of a multipart upload into an object, if any part
    /// arrived. Parts must be contiguous from 1 (smh-api.md 5.1).
    pub fn complete_multipart(&mut self, upload_id: &str, key: &str) -> bool {
        let Some(parts) = self.parts.get(upload_id) else {
            return false;
        };
        let contiguous = parts.keys().copied().eq(1..=parts.len() as u32);
        if parts.is_empty() || !contiguous {
            return false;
        }
        let mut data = Vec::with_capacity(parts.values().map(Bytes::len).sum());
        for p in parts.values() {
            data.extend_from_slice(p);
        }
        self.parts.remove(upload_id);
        self.objects.insert(
            key.to_string(),
            Object {
                data: Bytes::from(data),
                content_type: "application/octet-stream".into(),
            },
        );
        true
    }
}

/// A fresh object key; keys are independent of SMH paths so moves and
/// renames never touch the bytes.
pub fn new_object_key(library_id: &str) -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{library_id}/{v:032x}")
}

/// Emulator signatures: a CRC-64 pair over a per-process random secret.
/// They prove a URL or header came from this emulator unedited and unexpired;
/// they are not meant to resist a determined forger (test/dev only).
pub struct Signer {
    secret: String,
}

impl Signer {
    pub fn new() -> Self {
        let v: u128 = rand::thread_rng().gen();
        Self {
            secret: format!("{v:032x}"),
        }
    }

    pub fn sign(&self, method: &str, key: &str, expires: u64) -> String {
        let msg = format!("{method}\n{key}\n{expires}");
        let mut d1 = CRC64.digest();
        d1.update(self.secret.as_bytes());
        d1.update(msg.as_bytes());
        let mut d2 = CRC64.digest();
        d2.update(msg.as_bytes());
        d2.update(self.secret.as_bytes());
        format!("{:016x}{:016x}", d1.finalize(), d2.finalize())
    }

    /// The `Authorization` value the COS PUT must carry, COS q-sign style.
    pub fn upload_authorization(&self, key: &str, start: u64, expires: u64) -> String {
        format!(
            "q-sign-algorithm=emulator-crc64&q-key-time={start};{expires}&q-signature={}",
            self.sign("PUT", key, expires)
        )
    }

    /// Query string for a signed GET of `key` valid until `expires`.
    pub fn download_query(&self, key: &str, expires: u64) -> String {
        format!("sign={}&expires={expires}", self.sign("GET", key, expires))
    }
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

pub fn cos_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(full(xml))
        .expect("static response parts are valid")
}

fn denied(message: &str) -> Response<Body> {
    cos_error(StatusCode::FORBIDDEN, "AccessDenied", message)
}

/// Checks the upload `Authorization` header for `key` at `now`.
fn check_upload_auth(
    signer: &Signer,
    key: &str,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), &'static str> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("Authorization header missing")?;
    let mut expires = None;
    let mut signature = None;
    for kv in auth.split('&') {
        match kv.split_once('=') {
            Some(("q-key-time", v)) => {
                expires = v.split_once(';').and_then(|(_, e)| e.parse::<u64>().ok());
            }
            Some(("q-signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return Err("Authorization header malformed");
    };
    if signature != signer.sign("PUT", key, expires) {
        return Err("signature does not match");
    }
    if expires < unix_secs(now) {
        return Err("Request has expired");
    }
    Ok(())
}

/// Handles a request under [`COS_PREFIX`].
pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let raw_key = &req.uri().path()[COS_PREFIX.len()..];
    let key = decode(raw_key);
    let query = Query::parse(req.uri().query());
    let now = state.hooks.now();
    match *req.method() {
        Method::PUT => {
            if let Err(why) = check_upload_auth(&state.signer, &key, req.headers(), now) {
                return denied(why);
            }
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let data = match req.into_body().collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => {
                    return cos_error(
                        StatusCode::BAD_REQUEST,
                        "IncompleteBody",
                        "body ended early",
                    )
                }
            };
            let etag = format!("\"{:016x}\"", crc64(&data));
            let crc = crc64(&data).to_string();
            let part = query
                .get("partNumber")
                .and_then(|p| p.parse::<u32>().ok())
                .zip(query.non_empty("uploadId"));
            {
                let mut cos = state.cos();
                match part {
                    Some((n, upload_id)) => {
                        cos.parts
                            .entry(upload_id.to_string())
                            .or_default()
                            .insert(n, data);
                    }
                    None => {
                        cos.objects.insert(key, Object { data, content_type });
                    }
                }
            }
            Response::builder()
                .status(StatusCode::OK)
                .header(header::ETAG, etag)
                .header("x-cos-hash-crc64ecma", crc)
                .body(empty())
                .expect("static response parts are valid")
        }
        Method::GET | Method::HEAD => {
            let expires = query.get("expires").and_then(|e| e.parse::<u64>().ok());
            let sign = query.get("sign");
            let (Some(expires), Some(sign)) = (expires, sign) else {
                return denied("sign and expires are required");
            };
            if sign != state.signer.sign("GET", &key, expires) {
                return denied("signature does not match");
            }
            if expires < unix_secs(now) {
                return denied("Request has expired");
            }
            let Some(obj) = state.cos().objects.get(&key).cloned() else {
                return cos_error(
                    StatusCode::NOT_FOUND,
                    "NoSuchKey",
                    "The specified key does not exist.",
                );
            };
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok());
            let head = req.method() == Method::HEAD;
            serve_bytes(obj.data, &obj.content_type, range, head, HeaderMap::new())
        }
        _ => cos_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ),
    }
}

/// Outcome of interpreting a `Range` header against a length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable single range: serve everything (RFC 9110 lets a server
    /// ignore ranges it does not support, such as multiple ranges).
    Full,
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, len: u64) -> RangeOutcome {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeOutcome::Full;
        };
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        return RangeOutcome::Partial {
            start: len.saturating_sub(n),
            end: len - 1,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeOutcome::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeOutcome::Full,
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// Serves `data` (or the requested slice of it) as a chunked stream, with
/// `extra` headers added.
pub fn serve_bytes(
    data: Bytes,
    content_type: &str,
    range: Option<&str>,
    head: bool,
    extra: HeaderMap,
) -> Response<Body> {
    let len = data.len() as u64;
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes");
    let slice = match parse_range(range, len) {
        RangeOutcome::Full => {
            builder = builder.status(StatusCode::OK);
            data
        }
        RangeOutcome::Partial { start, end } => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            data.slice(start as usize..=end as usize)
        }
        RangeOutcome::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(empty())
                .expect("static response parts are valid");
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, slice.len());
    let mut resp = if head {
        builder.body(empty())
    } else {
        builder.body(chunked(slice))
    }
    .expect("static response parts are valid");
    resp.headers_mut().extend(extra);
    resp
}

fn chunked(data: Bytes) -> Body {
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..data.len())
        .step_by(STREAM_CHUNK)
        .map(|i| {
            Ok(Frame::data(
                data.slice(i..(i + STREAM_CHUNK).min(data.len())),
            ))
        })
        .collect();
    boxed(StreamBody::new(futures_util::stream::iter(chunks)))
}

/// Seconds-from-now helper for expiry timestamps.
pub fn expires_after(now: SystemTime, ttl: Duration) -> u64 {
    unix_secs(now + ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            RangeOutcome::Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            RangeOutcome::Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeOutcome::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            RangeOutcome::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            RangeOutcome::Partial { start: 8, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), RangeOutcome::Full);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), RangeOutcome::Full);
        assert_eq!(parse_range(None, 10), RangeOutcome::Full);
    }

    #[test]
    fn crc64_is_the_cos_variant() {
        // CRC-64/XZ check value for "123456789".
        assert_eq!(crc64(b"123456789"), 0x995d_c9bb_df19_39fa);
    }

    #[test]
    fn signatures_bind_method_key_and_expiry() {
        let s = Signer::new();
        let a = s.sign("GET", "k", 10);
        assert_eq!(a.len(), 32);
        assert_ne!(a, s.sign("PUT", "k", 10));
        assert_ne!(a, s.sign("GET", "k2", 10));
        assert_ne!(a, s.sign("GET", "k", 11));
    }
}
