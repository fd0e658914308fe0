//! Sessions: find the caller's credential, validate it, and produce the
//! identity the rest of the request path works with. This validator
//! is HS256 JWT from the `Authorization: Bearer` header; the seam
//! (`SessionValidator::authenticate`) is where richer sources slot in.

use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::SessionConfig;
use crate::error::GatewayError;

/// A session token longer than this is refused before any parsing: real
/// JWTs are a few hundred bytes to a few KiB.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// Who is calling, as the business's login system says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: Arc<str>,
    pub client_id: Arc<str>,
    pub session_id: Arc<str>,
    pub roles: Vec<String>,
    pub issued_at: Option<u64>,
}

pub struct SessionValidator {
    key: DecodingKey,
    validation: Validation,
    user_claim: String,
    client_claim: Option<String>,
    client_header: http::HeaderName,
    roles_claim: String,
    default_roles: Vec<String>,
}

impl std::fmt::Debug for SessionValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionValidator")
            .field("key", &"<redacted>")
            .field("user_claim", &self.user_claim)
            .finish_non_exhaustive()
    }
}

impl SessionValidator {
    pub fn from_config(cfg: &SessionConfig) -> anyhow::Result<Self> {
        let secret = cfg
            .jwt
            .hs256
            .resolve()
            .map_err(|e| anyhow::anyhow!("session.jwt: {e}"))?
            .ok_or_else(|| {
                anyhow::anyhow!("session.jwt.hs256_secret or hs256_secret_file is required")
            })?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.jwt.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &cfg.jwt.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &cfg.jwt.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            key: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
            user_claim: cfg.user_claim.clone(),
            client_claim: cfg.client_claim.clone(),
            client_header: http::HeaderName::from_bytes(cfg.client_header.as_bytes())
                .map_err(|e| anyhow::anyhow!("session.client_header: {e}"))?,
            roles_claim: cfg.roles_claim.clone(),
            default_roles: cfg.default_roles.clone(),
        })
    }

    /// Validates the bearer credential in `headers`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Session, GatewayError> {
        let credential = bearer(headers)?;
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(GatewayError::InvalidSession("credential too large".into()));
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(credential, &self.key, &self.validation)
                .map_err(|e| GatewayError::InvalidSession(describe_jwt_error(&e)))?;
        let claims = data.claims;
        let user_id = claim_str(&claims, &self.user_claim)
            .filter(|u| !u.is_empty())
            .ok_or(GatewayError::NoUserInSession)?;
        let client_id = self
            .client_claim
            .as_deref()
            .and_then(|c| claim_str(&claims, c))
            .or_else(|| {
                headers
                    .get(&self.client_header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let session_id = claim_str(&claims, "sid")
            .or_else(|| claim_str(&claims, "jti"))
            .unwrap_or_default();
        let mut roles = roles(&claims, &self.roles_claim);
        if roles.is_empty() {
            roles = self.default_roles.clone();
        }
        Ok(Session {
            user_id: user_id.into(),
            client_id: client_id.into(),
            session_id: session_id.into(),
            roles,
            issued_at: claims.get("iat").and_then(Value::as_u64),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(GatewayError::MissingCredential)?;
    if values.next().is_some() {
        return Err(GatewayError::InvalidSession(
            "more than one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| GatewayError::InvalidSession("Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        GatewayError::InvalidSession("expected `Authorization: Bearer <token>`".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(GatewayError::InvalidSession(
            "expected `Authorization: Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

/// A claim as a string; numbers are accepted for ids (`"sub": 42`).
fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn roles(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Says what was wrong without echoing the token.
fn describe_jwt_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "session expired".into(),
        ImmatureSignature => "session not yet valid".into(),
        InvalidSignature => "bad signature".into(),
        InvalidAlgorithm | InvalidAlgorithmName => "algorithm not accepted".into(),
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        MissingRequiredClaim(c) => format!("missing claim {c}"),
        InvalidToken | Base64(_) | Json(_) | Utf8(_) => "malformed token".into(),
        _ => "invalid token".into(),
    }
}
