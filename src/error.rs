//! The gateway's one error type and its one mapping to HTTP responses in
//! SMH's error shape (`{"code", "message", "requestId"}`), so SMH SDKs parse
//! gateway refusals exactly like SMH's own.
//!
//! Rule of the mapping: a bad credential is 401, a policy refusal 403, and an
//! outage of anything we depend on (token API, SMH, session backend) is
//! 502/503/504 — never 401, so clients do not log users out over an outage.

use http::{HeaderValue, Response, StatusCode};

use crate::body::{json_response, Body};
use crate::smh::wire::{code, ErrorBody};

/// Seconds a client is told to wait after an outage answer. Short: token-API
/// and upstream blips are usually over in seconds, and nothing is cached.
pub const RETRY_AFTER_SECS: u32 = 2;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The path could not be placed in SMH's resource table exactly (or
    /// SMH could read it differently); the reason says which rule.
    #[error("no such route: {0}")]
    RouteNotFound(&'static str),
    #[error("SMH's API uses GET, HEAD, PUT, POST and DELETE only")]
    MethodNotAllowed,
    #[error("library {0:?} is not served by this gateway")]
    LibraryNotFound(String),
    #[error("the gateway manages SMH access tokens; /api/v1/token is not available to clients")]
    TokenEndpointRefused,
    #[error("no session credential: send `Authorization: Bearer <session>`")]
    MissingCredential,
    #[error("session rejected: {0}")]
    InvalidSession(String),
    #[error("session is valid but names no user")]
    NoUserInSession,
    #[error("the session service is unavailable; retry shortly")]
    SessionBackendUnavailable,
    /// `smh_compatible_errors`: a missing session, answered as SMH would.
    #[error("no access token (session credential) in the request")]
    SmhEmptyAccessToken,
    /// `smh_compatible_errors`: a bad session, answered as SMH answers a bad
    /// token so SDKs refresh and retry.
    #[error("access token (session) invalid: {0}")]
    SmhInvalidAccessToken(String),
    #[error("CORS: {0}")]
    CorsRejected(String),
    #[error("space {0:?} is not allowed for this session")]
    SpaceNotAllowed(String),
    #[error("operation not allowed for this session: {0}")]
    OperationNotAllowed(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("request body too large: {0}")]
    BodyTooLarge(String),
    #[error("request URI longer than the gateway accepts ({0} bytes; limits.max_uri_bytes)")]
    UriTooLong(usize),
    #[error("request headers exceed the gateway's limit: {0}")]
    HeadersTooLarge(String),
    #[error("the SMH token API is unavailable; retry shortly")]
    TokenApiUnavailable,
    #[error("the SMH token API refused to mint a token ({0}); check the library configuration")]
    TokenMintRejected(String),
    #[error("SMH is unreachable; retry shortly")]
    UpstreamUnavailable,
    #[error("SMH did not answer in time")]
    UpstreamTimeout,
    #[error("this user already holds {0} SMH tokens (devices x grants x libraries; tokens.max_keys_per_user); retry when one expires")]
    TooManyTokenKeys(usize),
    #[error("the gateway is at its concurrency limit; retry shortly")]
    Overloaded,
    /// A revocation could not be recorded (the list is full).
    #[error("the revocation was not recorded: {0}")]
    RevocationRefused(String),
    #[error("the request took too long")]
    Timeout,
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    /// The one mapping: status and SMH-style error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use GatewayError::*;
        match self {
            RouteNotFound(_) => (StatusCode::NOT_FOUND, code::ROUTE_NOT_FOUND),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, code::METHOD_NOT_ALLOWED),
            LibraryNotFound(_) => (StatusCode::NOT_FOUND, code::LIBRARY_NOT_FOUND),
            TokenEndpointRefused => (StatusCode::FORBIDDEN, code::NO_PERMISSION),
            MissingCredential => (StatusCode::UNAUTHORIZED, code::MISSING_SESSION),
            InvalidSession(_) | NoUserInSession => {
                (StatusCode::UNAUTHORIZED, code::INVALID_SESSION)
            }
            SessionBackendUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                code::SESSION_SERVICE_UNAVAILABLE,
            ),
            SmhEmptyAccessToken => (StatusCode::BAD_REQUEST, code::EMPTY_ACCESS_TOKEN),
            SmhInvalidAccessToken(_) => (StatusCode::FORBIDDEN, code::INVALID_ACCESS_TOKEN),
            CorsRejected(_) => (StatusCode::FORBIDDEN, code::NO_PERMISSION),
            SpaceNotAllowed(_) => (StatusCode::FORBIDDEN, code::ACCESS_TOKEN_NOT_MATCH_SPACE),
            OperationNotAllowed(_) => (StatusCode::FORBIDDEN, code::NO_PERMISSION),
            BadRequest(_) => (StatusCode::BAD_REQUEST, code::BAD_REQUEST),
            UriTooLong(_) => (StatusCode::URI_TOO_LONG, code::URI_TOO_LONG),
            HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                code::HEADER_FIELDS_TOO_LARGE,
            ),
            BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                code::REQUEST_ENTITY_TOO_LARGE,
            ),
            TokenApiUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                code::TOKEN_SERVICE_UNAVAILABLE,
            ),
            TokenMintRejected(_) => (StatusCode::BAD_GATEWAY, code::TOKEN_MINT_FAILED),
            UpstreamUnavailable => (StatusCode::BAD_GATEWAY, code::UPSTREAM_UNAVAILABLE),
            UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, code::REQUEST_TIMEOUT),
            Overloaded | RevocationRefused(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, code::SERVER_OVERLOADED)
            }
            TooManyTokenKeys(_) => (StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMIT_EXCEEDED),
            Timeout => (StatusCode::GATEWAY_TIMEOUT, code::REQUEST_TIMEOUT),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL_SERVER_ERROR,
            ),
        }
    }

    /// Outage answers tell the client when to come back.
    pub fn retry_after(&self) -> Option<u32> {
        use GatewayError::*;
        match self {
            TokenApiUnavailable | UpstreamUnavailable | Overloaded | SessionBackendUnavailable => {
                Some(RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }

    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            code: code.to_string(),
            message: self.to_string(),
            request_id: request_id.to_string(),
        };
        let mut resp = json_response(status, &body);
        // The gateway's own answers are JSON about this one request: never
        // sniffed as anything else, never cached.
        let headers = resp.headers_mut();
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"smh-gateway\""),
            );
        }
        resp
    }
}

impl From<crate::smh::operation::OperationError> for GatewayError {
    fn from(e: crate::smh::operation::OperationError) -> Self {
        use crate::smh::operation::OperationError::*;
        match e {
            BadRequest(m) => GatewayError::BadRequest(m),
            BodyTooLarge(m) => GatewayError::BodyTooLarge(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Pins the whole mapping: changing a status or code is a visible decision.
    #[test]
    fn mapping_is_pinned() {
        use GatewayError::*;
        let cases: Vec<(GatewayError, u16, &str, Option<u32>)> = vec![
            (RouteNotFound("x"), 404, "RouteNotFound", None),
            (MethodNotAllowed, 405, "MethodNotAllowed", None),
            (LibraryNotFound("x".into()), 404, "LibraryNotFound", None),
            (TokenEndpointRefused, 403, "NoPermission", None),
            (MissingCredential, 401, "MissingSession", None),
            (
                InvalidSession("expired".into()),
                401,
                "InvalidSession",
                None,
            ),
            (NoUserInSession, 401, "InvalidSession", None),
            (
                SessionBackendUnavailable,
                503,
                "SessionServiceUnavailable",
                Some(2),
            ),
            (SmhEmptyAccessToken, 400, "EmptyAccessToken", None),
            (
                SmhInvalidAccessToken("x".into()),
                403,
                "InvalidAccessToken",
                None,
            ),
            (CorsRejected("x".into()), 403, "NoPermission", None),
            (
                SpaceNotAllowed("s".into()),
                403,
                "AccessTokenNotMatchSpace",
                None,
            ),
            (
                OperationNotAllowed("DELETE".into()),
                403,
                "NoPermission",
                None,
            ),
            (BadRequest("x".into()), 400, "BadRequest", None),
            (BodyTooLarge("x".into()), 413, "RequestEntityTooLarge", None),
            (UriTooLong(8), 414, "URITooLong", None),
            (
                HeadersTooLarge("x".into()),
                431,
                "HeaderFieldsTooLarge",
                None,
            ),
            (TooManyTokenKeys(3), 429, "RateLimitExceeded", None),
            (TokenApiUnavailable, 503, "TokenServiceUnavailable", Some(2)),
            (TokenMintRejected("x".into()), 502, "TokenMintFailed", None),
            (UpstreamUnavailable, 502, "UpstreamUnavailable", Some(2)),
            (UpstreamTimeout, 504, "RequestTimeout", None),
            (Overloaded, 503, "ServerOverloaded", Some(2)),
            (Timeout, 504, "RequestTimeout", None),
            (Internal, 500, "InternalServerError", None),
        ];
        for (err, status, code, retry) in cases {
            let (s, c) = err.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{err:?}");
            assert_eq!(err.retry_after(), retry, "{err:?}");
        }
    }

    #[tokio::test]
    async fn response_has_smh_shape_and_headers() {
        let resp = GatewayError::TokenApiUnavailable.to_response("req-1");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "TokenServiceUnavailable");
        assert_eq!(v["requestId"], "req-1");
        assert!(v["message"].as_str().unwrap().contains("unavailable"));

        let resp = GatewayError::MissingCredential.to_response("req-2");
        assert_eq!(resp.status(), 401);
        assert!(resp.headers().contains_key("www-authenticate"));
    }
}
