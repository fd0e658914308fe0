//! Verification keys: HMAC secret, PEM public keys, JWK sets. Each key knows
//! its family (and curve), so a token is only ever checked against keys of
//! the family its pinned algorithm requires — the HS/RS confusion attack
//! has nothing to work with.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    /// EC key; `None` curve for PEM keys whose curve we did not parse.
    Ec(Option<Curve>),
    Ed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Family {
    /// The family (and curve) an algorithm needs.
    pub fn of(alg: Algorithm) -> Family {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => Family::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
            ES256 => Family::Ec(Some(Curve::P256)),
            ES384 => Family::Ec(Some(Curve::P384)),
            EdDSA => Family::Ed,
        }
    }

    /// Whether a key of family `self` may verify a token needing `needed`.
    pub fn serves(self, needed: Family) -> bool {
        match (self, needed) {
            (Family::Ec(None), Family::Ec(_)) => true,
            (a, b) => a == b,
        }
    }
}

#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub family: Family,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// Reads one PEM public key, whichever family it is.
pub fn from_pem(pem: &[u8]) -> Result<Key, String> {
    let (family, key) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (Family::Rsa, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (Family::Ec(None), k)
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (Family::Ed, k)
    } else {
        return Err("not an RSA, EC or Ed25519 public key in PEM".into());
    };
    Ok(Key {
        kid: None,
        family,
        key,
    })
}

/// Reads a JWK Set. Keys that are not for signatures, symmetric keys (a
/// published HMAC key would be a secret in the open) and curves ring cannot
/// verify are skipped with a reason.
pub fn from_jwks(json: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWK Set: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let label = kid.clone().unwrap_or_else(|| "<no kid>".into());
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            skipped.push(format!("{label}: use=enc"));
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Family::Ec(Some(Curve::P256)),
                EllipticCurve::P384 => Family::Ec(Some(Curve::P384)),
                _ => {
                    skipped.push(format!("{label}: unsupported curve"));
                    continue;
                }
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Family::Ed,
            AlgorithmParameters::OctetKeyPair(_) => {
                skipped.push(format!("{label}: unsupported curve"));
                continue;
            }
            AlgorithmParameters::OctetKey(_) => {
                skipped.push(format!(
                    "{label}: symmetric keys are not accepted from a JWK Set"
                ));
                continue;
            }
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(Key { kid, family, key }),
            Err(e) => skipped.push(format!("{label}: {e}")),
        }
    }
    Ok((keys, skipped))
}
