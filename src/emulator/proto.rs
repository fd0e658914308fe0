//! Wire plumbing for the SMH API surface: the error type and its response,
//! query and flag parsing, path decoding, bounded body reading, timestamps.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use rand::Rng;

use crate::body::{json_response, Body};
use crate::smh::wire::{code, ErrorBody};

use super::hooks::Hooks;

/// SMH API bodies are small JSON documents; anything larger is refused after
/// being drained, so proxies can be tested with huge streamed bodies.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The request-id header the emulator sets on every API response.
pub const REQUEST_ID_HEADER: &str = "x-smh-request-id";

/// Codes the emulator needs beyond those shared in `smh::wire::code`
/// (all from smh-api.md 4.2/4.3).
pub mod extra_code {
    pub const UPLOAD_NOT_BELONG_YOU: &str = "UploadNotBelongYou";
    pub const UPLOAD_NOT_FOUND: &str = "UploadNotFound";
    pub const INVALID_SOURCE_DIRECTORY: &str = "InvalidSourceDirectory";
    pub const INVALID_SOURCE_FILE: &str = "InvalidSourceFile";
    pub const INVALID_DESTINATION_PATH: &str = "InvalidDestinationPath";
    pub const ILLEGAL_FILE_NAME: &str = "IllegalFileName";
    pub const INCOMPLETE_BODY: &str = "IncompleteBody";
    pub const PATH_CONFLICT: &str = "PathConflict";
    pub const SPACE_ID_INVALID: &str = "SpaceIdInvalid";
}

/// An SMH error: status plus `code`/`message`; the request id is added when
/// the response is built.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn route_not_found() -> Self {
        Self::not_found(code::ROUTE_NOT_FOUND, "no such API route")
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        json_response(
            self.status,
            &ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                request_id: request_id.to_string(),
            },
        )
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

/// A fresh request id: 32 lowercase hex digits.
pub fn new_request_id() -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

pub fn set_request_id(resp: &mut Response<Body>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
}

/// Percent-decodes a path segment or tail; invalid UTF-8 is replaced, which
/// can only make a lookup miss, never alias another name silently.
pub fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Query parameters decoded form-style (`+` is a space), in arrival order.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, Option<String>)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (form_decode(k), Some(form_decode(v))),
                None => (form_decode(p), None),
            })
            .collect();
        Self { pairs }
    }

    /// First value of `name`; a bare flag yields `Some("")`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// First non-empty value of `name`.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Comma-separated list value, trimmed, empties dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        split_list(self.get(name).unwrap_or(""))
    }

    /// A flag is set when bare (`?info`), empty (`info=`), `1` or `true`.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("" | "1" | "true"))
    }
}

pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn form_decode(s: &str) -> String {
    decode(&s.replace('+', " "))
}

/// What reading a request body produced.
pub struct ReadBody {
    /// `None` when the body exceeded the limit (and was discarded) or broke
    /// off early; see `complete`.
    pub bytes: Option<Bytes>,
    /// Bytes read, including discarded ones.
    pub total: u64,
    /// False when the client's body ended with an error.
    pub complete: bool,
}

/// Reads the body to its end, keeping at most `limit` bytes; the rest is
/// counted and dropped as it arrives so nothing large is ever held.
pub async fn read_limited(mut body: Incoming, limit: usize, hooks: &Hooks) -> ReadBody {
    let mut buf = Some(BytesMut::new());
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ReadBody {
                bytes: None,
                total,
                complete: false,
            };
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            hooks.count_body_bytes(data.len() as u64);
            match &mut buf {
                Some(b) if b.len() + data.len() <= limit => b.extend_from_slice(&data),
                _ => buf = None,
            }
        }
    }
    ReadBody {
        bytes: buf.map(BytesMut::freeze),
        total,
        complete: true,
    }
}

/// Parses an optional JSON object body: empty means "no body".
pub fn json_object(
    body: &Bytes,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::bad_request(
            code::PARAM_INVALID,
            "request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            code::BAD_REQUEST,
            format!("request body is not valid JSON: {e}"),
        )),
    }
}

/// A string field of a JSON body, if present and a string.
pub fn json_str<'a>(
    body: &'a Option<serde_json::Map<String, serde_json::Value>>,
    key: &str,
) -> Option<&'a str> {
    body.as_ref()?.get(key)?.as_str()
}

/// RFC 3339 UTC with milliseconds, the form SMH uses for timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_bare_empty_and_one_are_set() {
        let q = Query::parse(Some("info&by-marker=1&confirm=&x=0&user_id=a+b%2Cc"));
        assert!(q.flag("info"));
        assert!(q.flag("by-marker"));
        assert!(q.flag("confirm"));
        assert!(!q.flag("x"));
        assert!(!q.flag("missing"));
        assert_eq!(q.get("user_id"), Some("a b,c"));
    }

    #[test]
    fn timestamps_are_utc_millis() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:01.500Z");
    }
}
