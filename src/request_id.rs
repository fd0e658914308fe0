//! Request ids: a client's `X-Request-Id` is kept when it is made of safe
//! characters only (so it can go into logs, headers and audit records
//! unescaped); otherwise one is generated. Generated ids live inline, so
//! naming a request costs no allocation.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The same name as a `HeaderName`: inserting by `&str` would copy a
/// non-standard name into a fresh allocation on every request.
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
/// A client-supplied request id longer than this is replaced, not trusted.
const MAX_CLIENT_REQUEST_ID_LEN: usize = 128;
/// 128 random bits as lowercase hex.
const GENERATED_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq)]
pub enum RequestId {
    Generated([u8; GENERATED_LEN]),
    Client(Arc<str>),
}

impl RequestId {
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = rand::random::<u128>();
        let mut out = [0u8; GENERATED_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (n >> (4 * (GENERATED_LEN - 1 - i))) & 0xf;
            *b = HEX[nibble as usize];
        }
        Self::Generated(out)
    }

    /// The client's id when it is sane, otherwise a fresh one.
    pub fn for_request<B>(req: &Request<B>) -> Self {
        Self::from_client(req).unwrap_or_else(Self::generate)
    }

    fn from_client<B>(req: &Request<B>) -> Option<Self> {
        let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
        let sane = !v.is_empty()
            && v.len() <= MAX_CLIENT_REQUEST_ID_LEN
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| Self::Client(Arc::from(v)))
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Always ASCII hex, so never the empty fallback.
            Self::Generated(b) => std::str::from_utf8(b).unwrap_or_default(),
            Self::Client(s) => s,
        }
    }

    /// The id as a header value (both forms are header-safe by construction).
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(self.as_str()).ok()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(v: &str) -> Request<()> {
        Request::builder()
            .header(REQUEST_ID_HEADER, v)
            .body(())
            .unwrap()
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(a.header_value().is_some());
    }

    #[test]
    fn sane_client_ids_are_kept_and_others_replaced() {
        let kept = RequestId::for_request(&with_header("trace-1.a:b_c"));
        assert_eq!(kept.as_str(), "trace-1.a:b_c");
        for bad in ["has space", "quote\"", &"x".repeat(129), ""] {
            let id = RequestId::for_request(&with_header(bad));
            assert!(matches!(id, RequestId::Generated(_)), "{bad:?} was kept");
        }
    }
}
