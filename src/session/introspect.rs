//! Introspection: opaque sessions checked by the business backend.
//!
//! `GET <url>` with `Authorization: Bearer <credential>`; 200 with
//! `{user_id, iat, client_id?, session_id?, roles?, claims?, expires_in?}` is a
//! session, 401/403 is "no such session", anything else (5xx, timeout,
//! connection refused, garbage) is an outage and becomes 503 — never 401,
//! so a backend blip does not log users out. Negative answers are
//! remembered briefly; positive ones go into the shared session cache.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use moka::sync::Cache;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::body;
use crate::error::GatewayError;
use crate::upstream::Upstream;

/// An identity answer is small JSON.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Remembered negative answers; bounded so junk credentials cannot grow memory.
const NEGATIVE_CACHE_CAPACITY: u64 = 10_000;

#[derive(Debug, Deserialize)]
pub struct Identity {
    pub user_id: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Seconds the session stays valid; caps the cache TTL.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Unix time the session was issued (also read from `claims.iat`);
    /// required, so its lifetime is bounded and revocations can end.
    #[serde(default)]
    pub iat: Option<u64>,
}

/// What `[session.introspection]` says, parsed.
pub struct IntrospectionSettings {
    /// The business backend's session endpoint (https).
    pub url: http::Uri,
    pub extra_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub timeout: Duration,
    /// How long a positive answer is reused.
    pub ttl: Duration,
    /// How long a refusal is reused.
    pub negative_ttl: Duration,
}

pub struct Introspector {
    upstream: Upstream,
    path_and_query: String,
    timeout: Duration,
    pub ttl: Duration,
    negative: Cache<[u8; 32], ()>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn new(cfg: &IntrospectionSettings, connect_timeout: Duration) -> anyhow::Result<Self> {
        let base = format!(
            "{}://{}",
            cfg.url.scheme_str().unwrap_or("https"),
            cfg.url.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        Ok(Self {
            upstream: Upstream::new(
                &base,
                &cfg.extra_ca,
                connect_timeout,
                super::BACKEND_POOL_IDLE,
                super::BACKEND_READ_TIMEOUT,
                true,
            )?,
            path_and_query: cfg
                .url
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            timeout: cfg.timeout,
            ttl: cfg.ttl,
            negative: Cache::builder()
                .max_capacity(NEGATIVE_CACHE_CAPACITY)
                .time_to_live(cfg.negative_ttl)
                .build(),
        })
    }

    pub async fn check(&self, credential: &str, key: &[u8; 32]) -> Result<Identity, GatewayError> {
        let rejected = || GatewayError::InvalidSession("rejected by the session backend".into());
        if self.negative.contains_key(key) {
            return Err(rejected());
        }
        let answer = tokio::time::timeout(self.timeout, self.call(credential))
            .await
            .map_err(|_| {
                tracing::warn!("session backend timed out");
                GatewayError::SessionBackendUnavailable
            })??;
        match answer {
            Some(identity) if !identity.user_id.is_empty() => Ok(identity),
            Some(_) => Err(GatewayError::NoUserInSession),
            None => {
                self.negative.insert(*key, ());
                Err(rejected())
            }
        }
    }

    /// `Ok(None)` is the backend saying no.
    async fn call(&self, credential: &str) -> Result<Option<Identity>, GatewayError> {
        let unavailable = |what: String| {
            tracing::warn!(error = %what, "session backend unavailable");
            GatewayError::SessionBackendUnavailable
        };
        let uri = self
            .upstream
            .uri(&self.path_and_query)
            .map_err(|e| unavailable(e.to_string()))?;
        let auth = http::HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| {
            GatewayError::InvalidSession("credential has invalid characters".into())
        })?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .body(body::empty())
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = self
            .upstream
            .send(req)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match resp.status() {
            StatusCode::OK => {
                let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| unavailable(format!("reading answer: {e}")))?
                    .to_bytes();
                serde_json::from_slice::<Identity>(&bytes)
                    .map(Some)
                    .map_err(|e| unavailable(format!("answer is not an identity: {e}")))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(None),
            other => Err(unavailable(format!("HTTP {other}"))),
        }
    }
}
