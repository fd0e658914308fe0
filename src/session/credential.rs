//! Where a session credential may travel, and finding exactly one.
//!
//! Sources are configured in order: the `Authorization: Bearer` header, a
//! named cookie, and the `access_token` query parameter (how SMH SDKs send
//! a token, so an unmodified SDK whose token provider returns the business
//! session works). A request carrying credentials in several places that
//! disagree is refused: which one the caller "meant" is not ours to guess.
//! Every source is removed before forwarding by the rewrite stage.

use http::request::Parts;

use crate::error::GatewayError;

/// The query parameter SMH SDKs put their token in.
pub const QUERY_PARAM: &str = "access_token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    Cookie(String),
    Query,
}

impl CredentialSource {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "bearer" => Ok(Self::Bearer),
            "query" => Ok(Self::Query),
            other => match other.strip_prefix("cookie:") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                {
                    Ok(Self::Cookie(name.to_string()))
                }
                _ => Err(format!(
                    "credential source {s:?}: expected \"bearer\", \"query\" or \"cookie:<name>\""
                )),
            },
        }
    }
}

/// Written the way the configuration spells it.
impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer => f.write_str("bearer"),
            Self::Query => f.write_str("query"),
            Self::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// Finds the one credential in `parts` among `sources`.
pub fn extract<'a>(
    sources: &[CredentialSource],
    parts: &'a Parts,
) -> Result<std::borrow::Cow<'a, str>, GatewayError> {
    let mut found: Option<std::borrow::Cow<'a, str>> = None;
    let mut note = |value: std::borrow::Cow<'a, str>| -> Result<(), GatewayError> {
        match &found {
            Some(prev) if *prev != value => Err(GatewayError::InvalidSession(
                "credentials in more than one place disagree".into(),
            )),
            Some(_) => Ok(()),
            None => {
                found = Some(value);
                Ok(())
            }
        }
    };
    for source in sources {
        match source {
            CredentialSource::Bearer => {
                let mut values = parts.headers.get_all(http::header::AUTHORIZATION).iter();
                if let Some(v) = values.next() {
                    if values.next().is_some() {
                        return Err(GatewayError::InvalidSession(
                            "more than one Authorization header".into(),
                        ));
                    }
                    note(bearer_token(v)?.into())?;
                }
            }
            CredentialSource::Cookie(name) => {
                for header in parts.headers.get_all(http::header::COOKIE) {
                    let header = header.to_str().map_err(|_| {
                        GatewayError::InvalidSession("Cookie header is not ASCII".into())
                    })?;
                    for pair in header.split(';') {
                        if let Some((k, v)) = pair.trim().split_once('=') {
                            if k == name && !v.is_empty() {
                                note(v.trim_matches('"').into())?;
                            }
                        }
                    }
                }
            }
            CredentialSource::Query => {
                for pair in parts.uri.query().unwrap_or("").split('&') {
                    if let Some((k, v)) = pair.split_once('=') {
                        if k == QUERY_PARAM && !v.is_empty() {
                            let decoded = percent_encoding::percent_decode_str(v)
                                .decode_utf8()
                                .map_err(|_| {
                                    GatewayError::InvalidSession("access_token is not UTF-8".into())
                                })?;
                            note(decoded)?;
                        }
                    }
                }
            }
        }
    }
    found.ok_or(GatewayError::MissingCredential)
}

fn bearer_token(v: &http::HeaderValue) -> Result<&str, GatewayError> {
    let malformed =
        || GatewayError::InvalidSession("expected `Authorization: Bearer <token>`".into());
    let v = v.to_str().map_err(|_| malformed())?;
    let (scheme, token) = v.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn all() -> Vec<CredentialSource> {
        vec![
            CredentialSource::Bearer,
            CredentialSource::Cookie("sess".into()),
            CredentialSource::Query,
        ]
    }

    #[test]
    fn finds_each_source() {
        let p = parts("/x", &[("authorization", "Bearer abc")]);
        assert_eq!(extract(&all(), &p).unwrap(), "abc");
        let p = parts("/x", &[("cookie", "a=1; sess=abc; b=2")]);
        assert_eq!(extract(&all(), &p).unwrap(), "abc");
        let p = parts("/x?info&access_token=a%2Bb", &[]);
        assert_eq!(extract(&all(), &p).unwrap(), "a+b");
    }

    #[test]
    fn agreeing_duplicates_pass_and_disagreeing_ones_fail() {
        let p = parts("/x?access_token=abc", &[("authorization", "Bearer abc")]);
        assert_eq!(extract(&all(), &p).unwrap(), "abc");
        let p = parts("/x?access_token=other", &[("authorization", "Bearer abc")]);
        assert!(matches!(
            extract(&all(), &p),
            Err(GatewayError::InvalidSession(_))
        ));
        let p = parts("/x", &[("cookie", "sess=a"), ("cookie", "sess=b")]);
        assert!(matches!(
            extract(&all(), &p),
            Err(GatewayError::InvalidSession(_))
        ));
    }

    #[test]
    fn unconfigured_sources_are_ignored() {
        let p = parts("/x?access_token=abc", &[]);
        assert_eq!(
            extract(&[CredentialSource::Bearer], &p),
            Err(GatewayError::MissingCredential)
        );
        let p = parts("/x", &[("authorization", "Basic Zm9v")]);
        assert!(matches!(
            extract(&all(), &p),
            Err(GatewayError::InvalidSession(_))
        ));
    }

    #[test]
    fn parses_config_strings() {
        assert_eq!(
            CredentialSource::parse("cookie:sid"),
            Ok(CredentialSource::Cookie("sid".into()))
        );
        assert!(CredentialSource::parse("cookie:").is_err());
        assert!(CredentialSource::parse("header").is_err());
    }
}
