//! Parses `/api/v1/<resource>/<LibraryId>[/<SpaceId>][/rest]` into a typed
//! route without decoding or normalising the tail: `%2F` in file paths and
//! bare query flags must reach SMH exactly as the client sent them.

use crate::error::GatewayError;

const API_PREFIX: &str = "/api/v1/";

use crate::smh::is_space_scoped;

/// Segments after `/api/v1/space/<LibraryId>/` that are library-level calls,
/// not SpaceIds (`list`, `count`).
const SPACE_LIBRARY_CALLS: &[&str] = &["list", "count"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmhRoute<'a> {
    /// `file`, `directory`, `token`, ...
    pub resource: &'a str,
    pub library: &'a str,
    /// The tenant space the call acts in; `None` for library-level calls.
    pub space: Option<&'a str>,
    /// Everything after the space (or library), raw, without leading slash.
    pub rest: &'a str,
}

impl<'a> SmhRoute<'a> {
    pub fn parse(path: &'a str) -> Result<Self, GatewayError> {
        let tail = path
            .strip_prefix(API_PREFIX)
            .ok_or(GatewayError::RouteNotFound)?;
        let (resource, after) = split_segment(tail);
        if resource.is_empty() {
            return Err(GatewayError::RouteNotFound);
        }
        if resource == "token" {
            return Err(GatewayError::TokenEndpointRefused);
        }
        let (library, after) = split_segment(after);
        if library.is_empty() {
            return Err(GatewayError::RouteNotFound);
        }
        let (space, rest) = if is_space_scoped(resource) {
            let (space, rest) = split_segment(after);
            if space.is_empty() {
                return Err(GatewayError::BadRequest(format!(
                    "/api/v1/{resource}/<LibraryId>/<SpaceId>/...: SpaceId is missing (use \"-\" for a single-tenant library)"
                )));
            }
            (Some(space), rest)
        } else if resource == "space" {
            let (seg, rest) = split_segment(after);
            if seg.is_empty() || SPACE_LIBRARY_CALLS.contains(&seg) {
                (None, after)
            } else {
                (Some(seg), rest)
            }
        } else {
            (None, after)
        };
        Ok(SmhRoute {
            resource,
            library,
            space,
            rest,
        })
    }
}

/// Splits at the first `/`; the rest keeps everything after it verbatim.
fn split_segment(s: &str) -> (&str, &str) {
    match s.find('/') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_space_scoped_paths_verbatim() {
        let r = SmhRoute::parse("/api/v1/file/lib1/-/a%2Fb%2Fc.txt").unwrap();
        assert_eq!(
            r,
            SmhRoute {
                resource: "file",
                library: "lib1",
                space: Some("-"),
                rest: "a%2Fb%2Fc.txt"
            }
        );
        let r = SmhRoute::parse("/api/v1/directory/lib1/space9/a/b/").unwrap();
        assert_eq!((r.space, r.rest), (Some("space9"), "a/b/"));
        let r = SmhRoute::parse("/api/v1/directory/lib1/-").unwrap();
        assert_eq!((r.space, r.rest), (Some("-"), ""));
    }

    #[test]
    fn library_level_calls_have_no_space() {
        let r = SmhRoute::parse("/api/v1/space/lib1/list").unwrap();
        assert_eq!((r.space, r.rest), (None, "list"));
        let r = SmhRoute::parse("/api/v1/space/lib1").unwrap();
        assert_eq!(r.space, None);
        let r = SmhRoute::parse("/api/v1/space/lib1/sp1/extension").unwrap();
        assert_eq!((r.space, r.rest), (Some("sp1"), "extension"));
        let r = SmhRoute::parse("/api/v1/usage/lib1").unwrap();
        assert_eq!((r.resource, r.space), ("usage", None));
    }

    #[test]
    fn refuses_token_endpoints_and_foreign_paths() {
        for p in [
            "/api/v1/token",
            "/api/v1/token/lib1/acctk123",
            "/api/v1/token/lib1",
        ] {
            assert_eq!(
                SmhRoute::parse(p),
                Err(GatewayError::TokenEndpointRefused),
                "{p}"
            );
        }
        for p in [
            "/",
            "/api/v2/file/x",
            "/api/v1/",
            "/api/v1/file",
            "/api/v1/file/",
        ] {
            assert_eq!(SmhRoute::parse(p), Err(GatewayError::RouteNotFound), "{p}");
        }
        assert!(matches!(
            SmhRoute::parse("/api/v1/file/lib1"),
            Err(GatewayError::BadRequest(_))
        ));
    }
}
