//! The request-size limits the gateway answers itself, in SMH's error
//! shape: URI length (414), header count and bytes (431), declared body
//! length (413). hyper's own backstops sit above these
//! ([`crate::server::MAX_HEADERS_BACKSTOP`] and friends) so a head that
//! breaks them is read whole and answered here, not dropped.

use http::Request;

use crate::error::GatewayError;

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

impl RequestLimits {
    /// Checks the head. Runs for every request, preflights included: a
    /// handful of length reads over the headers hyper already parsed.
    pub fn check_head<B>(&self, req: &Request<B>) -> Result<(), GatewayError> {
        let uri = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri > self.max_uri_bytes {
            return Err(GatewayError::UriTooLong(self.max_uri_bytes));
        }
        let headers = req.headers();
        if headers.len() > self.max_headers {
            return Err(GatewayError::HeadersTooLarge(format!(
                "{} header fields, at most {} (limits.max_request_headers)",
                headers.len(),
                self.max_headers
            )));
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge(format!(
                "{bytes} bytes of header fields, at most {} (limits.max_request_header_bytes)",
                self.max_header_bytes
            )));
        }
        if let Some(declared) = declared_length(req) {
            if declared > self.max_body_bytes {
                return Err(GatewayError::BodyTooLarge(format!(
                    "Content-Length {declared}, at most {} (limits.max_body_bytes)",
                    self.max_body_bytes
                )));
            }
        }
        Ok(())
    }
}

/// `Content-Length` as hyper accepted it (it refuses malformed values
/// before the service runs; h2 checks it against the DATA frames).
fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
