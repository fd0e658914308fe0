//! JWT sessions: pinned algorithms, keys from config (HMAC secret, PEM
//! files, a JWK Set file) and an optional JWKS URL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksObserver, RemoteJwks};
use super::keys::{Family, Key};
use crate::error::GatewayError;
use crate::secret::Secret;
use crate::upstream::Upstream;
use rustls_pki_types::CertificateDer;

/// Verified claims and when they stop being valid.
pub struct Verified {
    pub claims: Map<String, Value>,
    /// `exp` as Unix seconds.
    pub expires_at: u64,
}

pub struct JwtValidator {
    validations: HashMap<Algorithm, Validation>,
    hmac: Option<DecodingKey>,
    static_keys: Vec<Key>,
    remote: Option<Arc<RemoteJwks>>,
    leeway: u64,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("algorithms", &self.validations.keys().collect::<Vec<_>>())
            .field("static_keys", &self.static_keys.len())
            .finish_non_exhaustive()
    }
}

/// What `[session.jwt]` says, parsed: keys read and checked, algorithms
/// known, the JWKS URL an https URL with its trust.
pub struct JwtSettings {
    pub algorithms: Vec<Algorithm>,
    pub hmac: Option<Secret>,
    pub static_keys: Vec<Key>,
    pub remote: Option<RemoteJwksSettings>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

/// A JWK Set fetched from the IdP.
pub struct RemoteJwksSettings {
    pub url: http::Uri,
    pub extra_ca: Vec<CertificateDer<'static>>,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

impl JwtValidator {
    /// Builds the validator; a JWKS URL is fetched once here. At start-up a
    /// failure is logged, not fatal (the refresher and unknown-kid
    /// re-fetches retry); with `require_keys` (a reload) it is an error.
    pub async fn new(
        cfg: JwtSettings,
        connect_timeout: Duration,
        jwks_observer: Option<Arc<dyn JwksObserver>>,
        require_keys: bool,
    ) -> anyhow::Result<Self> {
        let mut validations = HashMap::new();
        for alg in cfg.algorithms {
            let mut v = Validation::new(alg);
            v.leeway = cfg.leeway_secs;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            match &cfg.audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            if let Some(iss) = &cfg.issuer {
                v.set_issuer(&[iss]);
            }
            validations.insert(alg, v);
        }
        let hmac = cfg
            .hmac
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let remote = match cfg.remote {
            Some(r) => {
                let url = r.url.to_string();
                let base = format!(
                    "{}://{}",
                    r.url.scheme_str().unwrap_or("https"),
                    r.url.authority().map(|a| a.as_str()).unwrap_or_default()
                );
                let upstream = Upstream::new(
                    &base,
                    &r.extra_ca,
                    connect_timeout,
                    super::BACKEND_POOL_IDLE,
                    super::BACKEND_READ_TIMEOUT,
                    true,
                )?;
                let jwks = Arc::new(RemoteJwks::new(
                    &url,
                    upstream,
                    r.min_refetch,
                    jwks_observer,
                )?);
                match jwks.refresh().await {
                    Ok(_) => {}
                    // A reload must not swap in a validator with no keys
                    // for the one serving with fetched ones.
                    Err(e) if require_keys => {
                        anyhow::bail!(
                            "JWKS {url}: {e}; not swapping in sessions without their keys"
                        )
                    }
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "initial JWKS fetch failed; will retry")
                    }
                }
                jwks.spawn_refresher(r.refresh.max(Duration::from_secs(1)));
                Some(jwks)
            }
            None => None,
        };
        Ok(Self {
            validations,
            hmac,
            static_keys: cfg.static_keys,
            remote,
            leeway: cfg.leeway_secs,
        })
    }

    /// False while a configured JWKS URL is failing.
    pub fn remote_healthy(&self) -> bool {
        self.remote.as_ref().is_none_or(|r| r.is_healthy())
    }

    pub async fn validate(&self, token: &str) -> Result<Verified, GatewayError> {
        let invalid = |m: &str| GatewayError::InvalidSession(m.to_string());
        check_structure(token).map_err(invalid)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&describe(&e)))?;
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or_else(|| invalid("algorithm not accepted"))?;
        let needed = Family::of(header.alg);
        let kid = header.kid.as_deref();

        let data = if needed == Family::Hmac {
            let key = self
                .hmac
                .as_ref()
                .ok_or_else(|| invalid("algorithm not accepted"))?;
            jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
                .map_err(|e| invalid(&describe(&e)))?
        } else {
            let mut candidates = self.candidates(needed, kid);
            if candidates.is_empty() && kid.is_some() {
                if let Some(remote) = &self.remote {
                    remote.refetch_for_unknown_kid().await;
                    candidates = self.candidates(needed, kid);
                }
            }
            if candidates.is_empty() && kid.is_some() {
                // PEM keys carry no kid; an IdP that stamps kids on tokens
                // while the operator pinned its PEM key still works. The
                // signature check is what keeps forged tokens out.
                candidates = self.kidless(needed);
            }
            if candidates.is_empty() {
                if self.remote.as_ref().is_some_and(|r| !r.is_healthy()) {
                    // We cannot tell a forged kid from a rotated one while
                    // the IdP is down: an outage, not a bad credential.
                    return Err(GatewayError::SessionBackendUnavailable);
                }
                return Err(invalid(if kid.is_some() {
                    "unknown key id"
                } else {
                    "no key for this algorithm"
                }));
            }
            let mut last = invalid("bad signature");
            let mut verified = None;
            for key in &candidates {
                match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                    Ok(d) => {
                        verified = Some(d);
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            jsonwebtoken::errors::ErrorKind::InvalidSignature
                        ) => {}
                    Err(e) => last = invalid(&describe(&e)),
                }
            }
            verified.ok_or(last)?
        };
        let claims = data.claims;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
            if iat > now + super::issued_ahead_secs(self.leeway) {
                return Err(invalid("issued in the future"));
            }
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("missing claim exp"))?;
        Ok(Verified { claims, expires_at })
    }

    /// Keys of the needed family; for a token naming a `kid`, only the keys
    /// published under that kid.
    fn candidates(&self, needed: Family, kid: Option<&str>) -> Vec<DecodingKey> {
        let remote = self.remote.as_ref().map(|r| r.keys());
        self.static_keys
            .iter()
            .chain(remote.iter().flat_map(|k| k.iter()))
            .filter(|k| k.family.serves(needed))
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .map(|k| k.key.clone())
            .collect()
    }

    /// Configured PEM keys (they have no kid) of the needed family.
    fn kidless(&self, needed: Family) -> Vec<DecodingKey> {
        self.static_keys
            .iter()
            .filter(|k| k.kid.is_none() && k.family.serves(needed))
            .map(|k| k.key.clone())
            .collect()
    }
}

/// What the JOSE library does not check for us, before any key is tried:
///
/// - `crit` (RFC 7515 4.1.11): the gateway implements no extension, so a
///   header that marks any as critical must be refused.
/// - Duplicate member names, in the header or the claims, at any depth.
///   RFC 7519 4 allows rejecting them; the gateway does, because two
///   readers of the same token (the IdP's library that signed it, ours,
///   anything else the business runs) may keep different copies: a
///   `{"sub":"alice","sub":"bob"}` must not be alice to one and bob to
///   another.
pub fn check_structure(token: &str) -> Result<(), &'static str> {
    use base64::Engine;
    // Exactly three parts, so the payload checked here is the one the
    // signature covers.
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.decode(header).map_err(|_| "malformed token")?;
    let payload = b64.decode(payload).map_err(|_| "malformed token")?;
    let header_json: serde_json::Value =
        check_unique_members(&header).map_err(|_| "malformed token header")?;
    if header_json.get("crit").is_some() {
        return Err("token header marks extensions as critical (crit); none are supported");
    }
    check_unique_members(&payload).map_err(|_| "malformed claims or duplicate claim names")?;
    Ok(())
}

/// Parses JSON, failing on an object with a repeated member name.
fn check_unique_members(json: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(json);
    let v = UniqueMembers.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// A JSON value whose objects must not repeat a member name.
struct UniqueMembers;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueMembers {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueMembers {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueMembers)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(UniqueMembers)?;
            if out.insert(key, v).is_some() {
                return Err(serde::de::Error::custom("repeated member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Says what was wrong without echoing the token.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        ExpiredSignature => "session expired".into(),
        ImmatureSignature => "session not yet valid".into(),
        InvalidSignature => "bad signature".into(),
        InvalidAlgorithm | InvalidAlgorithmName | MissingAlgorithm => {
            "algorithm not accepted".into()
        }
        InvalidIssuer => "wrong issuer".into(),
        InvalidAudience => "wrong audience".into(),
        MissingRequiredClaim(c) => format!("missing claim {c}"),
        InvalidToken | Base64(_) | Json(_) | Utf8(_) => "malformed token".into(),
        _ => "invalid token".into(),
    }
}

#[cfg(test)]
mod structure_tests {
    use super::*;
    use base64::Engine;

    fn token(header: &str, payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b64.encode(header), b64.encode(payload))
    }

    #[test]
    fn crit_and_duplicate_members_are_refused() {
        let ok = token(r#"{"alg":"HS256"}"#, r#"{"sub":"a","x":{"y":[1,{"z":2}]}}"#);
        assert_eq!(check_structure(&ok), Ok(()));
        for t in [
            token(
                r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
                r#"{"sub":"a"}"#,
            ),
            token(r#"{"alg":"HS256","crit":[]}"#, r#"{"sub":"a"}"#),
            token(r#"{"alg":"HS256","alg":"none"}"#, r#"{"sub":"a"}"#),
            token(r#"{"alg":"HS256"}"#, r#"{"sub":"alice","sub":"bob"}"#),
            token(r#"{"alg":"HS256"}"#, r#"{"sub":"a","c":{"s":1,"s":2}}"#),
            token(r#"{"alg":"HS256"}"#, r#"{"sub":"a"} x"#),
            "not-a-token".to_string(),
            format!("{ok}.extra"),
        ] {
            assert!(check_structure(&t).is_err(), "{t}");
        }
    }
}
