//! The one canonical route: `/api/v1/<resource>/<LibraryId>[/<SpaceId>][/rest]`
//! parsed into (resource, library, space) from the resource table, before
//! anything else runs. Default deny: a path the gateway cannot place
//! exactly, or whose bytes SMH could read differently from how the gateway
//! read them, is refused here. The tail is kept verbatim: `%2F` in file
//! paths must reach SMH exactly as the client sent it.

use http::Method;

use crate::error::GatewayError;
use crate::smh::{self, SpaceAt};

const API_PREFIX: &str = "/api/v1/";

/// Segments after `/api/v1/space/<LibraryId>/` that are library-level
/// reads, not SpaceIds (smh-api.md 3.4), for GET and HEAD only: a custom
/// SpaceId may be spelled `list`, and `DELETE space/<Lib>/list` deletes it.
const SPACE_LIBRARY_READS: &[&str] = &["list", "count"];
/// Words that stand where a SpaceId would, making the call library-level
/// (`directory-history/<Lib>/library-history`).
const LIBRARY_LEVEL_WORDS: &[(&str, &str)] = &[("directory-history", "library-history")];

/// Methods SMH's API uses (smh-api.md 2-5); anything else is refused
/// rather than judged as an unknown operation.
const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::DELETE,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmhRoute<'a> {
    /// `file`, `directory`, ... exactly as in [`smh::RESOURCES`].
    pub resource: &'a str,
    /// The resource's row in [`smh::RESOURCES`] (metrics).
    pub resource_idx: usize,
    pub library: &'a str,
    /// The tenant space the call acts in; `None` for library-level calls.
    pub space: Option<&'a str>,
    /// Everything after the space (or library), raw, without leading slash.
    pub rest: &'a str,
}

impl<'a> SmhRoute<'a> {
    pub fn parse(method: &Method, path: &'a str) -> Result<Self, GatewayError> {
        let tail = path
            .strip_prefix(API_PREFIX)
            .ok_or(GatewayError::RouteNotFound("only /api/v1/... is served"))?;
        check_path_bytes(path)?;
        let (resource, after) = split_segment(tail);
        if is_token_spelling(resource) {
            return Err(GatewayError::TokenEndpointRefused);
        }
        let (resource_idx, space_at) =
            smh::lookup(resource).ok_or(GatewayError::RouteNotFound("unknown SMH resource"))?;
        let (library, after) = split_segment(after);
        if !smh::is_library_id(library) {
            return Err(GatewayError::RouteNotFound(
                "expected /api/v1/<resource>/<LibraryId>/...",
            ));
        }
        if !METHODS.contains(method) {
            return Err(GatewayError::MethodNotAllowed);
        }
        // The first segment after the library, and what follows it; a
        // trailing slash does not make a segment (`task/<Lib>/1234/` is
        // still library-level).
        let (first, after_first) = split_segment(after);
        let has_segments = !after.is_empty();
        let space_follows = match space_at {
            SpaceAt::Always => true,
            SpaceAt::IfPresent => has_segments,
            SpaceAt::BeforeLast => !after_first.is_empty(),
            SpaceAt::SpaceApi => {
                let library_read = (method == Method::GET || method == Method::HEAD)
                    && SPACE_LIBRARY_READS.contains(&first)
                    && after_first.is_empty();
                has_segments && !library_read
            }
            SpaceAt::Never => false,
        } && !LIBRARY_LEVEL_WORDS.contains(&(resource, first));
        let (space, rest) = if space_follows {
            let (space, rest) = split_segment(after);
            if !smh::is_space_id(space) {
                return Err(GatewayError::RouteNotFound(
                    "expected a SpaceId (\"-\" for a single-tenant library: ASCII letters, digits, '-', '_') after the LibraryId",
                ));
            }
            (Some(space), rest)
        } else {
            (None, after)
        };
        Ok(SmhRoute {
            resource,
            resource_idx,
            library,
            space,
            rest,
        })
    }
}

/// The token API in any case, and encoded spellings of it (which are not
/// known resources either, so they would be refused anyway; this gives
/// them the clearer answer).
fn is_token_spelling(segment: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(segment);
    let mut bytes = decoded.map(|b| b.to_ascii_lowercase());
    let prefix: Vec<u8> = bytes.by_ref().take(5).collect();
    prefix == b"token"
}

/// Refuses what SMH's server (or anything in front of it) could read
/// differently from this parser: malformed or control-character escapes,
/// raw or encoded backslashes, and dot segments in any spelling, including
/// those that only appear once `%2F` in a file path is decoded.
fn check_path_bytes(path: &str) -> Result<(), GatewayError> {
    let b = path.as_bytes();
    let mut i = 0;
    // The decoded segment so far: its length, and whether it is all dots.
    let (mut seg_len, mut seg_dots) = (0usize, true);
    let dot_segment = |len: usize, dots: bool| dots && (len == 1 || len == 2);
    while i < b.len() {
        let byte = match b[i] {
            b'%' => {
                let byte = escaped_byte(b, i).ok_or(GatewayError::RouteNotFound(
                    "malformed percent-encoding in the path",
                ))?;
                i += 3;
                byte
            }
            other => {
                i += 1;
                other
            }
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(GatewayError::RouteNotFound("control character in the path"));
        }
        if byte == b'\\' {
            return Err(GatewayError::RouteNotFound("backslash in the path"));
        }
        if byte == b';' {
            // Path parameters: some servers drop `;...` from a segment, so
            // `..;` would be a dot segment to them.
            return Err(GatewayError::RouteNotFound("';' in the path"));
        }
        if byte == b'/' {
            if dot_segment(seg_len, seg_dots) {
                return Err(GatewayError::RouteNotFound(
                    "dot segment (. or ..) in the path",
                ));
            }
            (seg_len, seg_dots) = (0, true);
        } else {
            seg_len += 1;
            seg_dots &= byte == b'.';
        }
    }
    if dot_segment(seg_len, seg_dots) {
        return Err(GatewayError::RouteNotFound(
            "dot segment (. or ..) in the path",
        ));
    }
    Ok(())
}

/// The byte `%XX` at `b[i..]` stands for; `None` when it is not two hex
/// digits (which servers disagree on how to read).
pub(crate) fn escaped_byte(b: &[u8], i: usize) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    let hi = b.get(i + 1).copied().and_then(hex)?;
    let lo = b.get(i + 2).copied().and_then(hex)?;
    Some((hi * 16 + lo) as u8)
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

    fn get(p: &str) -> Result<SmhRoute<'_>, GatewayError> {
        SmhRoute::parse(&Method::GET, p)
    }

    fn refused(r: Result<SmhRoute<'_>, GatewayError>) -> bool {
        matches!(r, Err(GatewayError::RouteNotFound(_)))
    }

    #[test]
    fn parses_space_scoped_paths_verbatim() {
        let r = get("/api/v1/file/lib1/-/a%2Fb%2Fc.txt").unwrap();
        assert_eq!(
            (r.resource, r.library, r.space, r.rest),
            ("file", "lib1", Some("-"), "a%2Fb%2Fc.txt")
        );
        let r = get("/api/v1/directory/lib1/space9/a/b/").unwrap();
        assert_eq!((r.space, r.rest), (Some("space9"), "a/b/"));
        let r = get("/api/v1/directory/lib1/-").unwrap();
        assert_eq!((r.space, r.rest), (Some("-"), ""));
        let r = get("/api/v1/file/lib1/-/a..b/...txt").unwrap();
        assert_eq!(r.rest, "a..b/...txt", "dots inside names are names");
    }

    #[test]
    fn every_resource_places_its_space_as_the_reference_says() {
        let r = get("/api/v1/space/lib1/list").unwrap();
        assert_eq!((r.space, r.rest), (None, "list"));
        let r = SmhRoute::parse(&Method::DELETE, "/api/v1/space/lib1/list").unwrap();
        assert_eq!(
            r.space,
            Some("list"),
            "DELETE space/<Lib>/list deletes space list"
        );
        let r = SmhRoute::parse(&Method::POST, "/api/v1/space/lib1").unwrap();
        assert_eq!(r.space, None);
        let r = get("/api/v1/space/lib1/sp1/extension").unwrap();
        assert_eq!((r.space, r.rest), (Some("sp1"), "extension"));
        let r = get("/api/v1/usage/lib1").unwrap();
        assert_eq!((r.resource, r.space), ("usage", None));
        let r = get("/api/v1/usage/lib1/sp1").unwrap();
        assert_eq!(r.space, Some("sp1"));
        let r = get("/api/v1/space/lib1/list/").unwrap();
        assert_eq!(r.space, None, "list/ is still the list");
        let r = get("/api/v1/task/lib1/1234/").unwrap();
        assert_eq!((r.space, r.rest), (None, "1234/"));
        for p in [
            "/api/v1/share/lib1/1042",
            "/api/v1/quota/lib1/sp1",
            "/api/v1/directory-history/lib1/library-history",
        ] {
            assert_eq!(get(p).unwrap().space, None, "{p}");
        }
        assert_eq!(
            SmhRoute::parse(&Method::PATCH, "/api/v1/file/lib1/-/a"),
            Err(GatewayError::MethodNotAllowed)
        );
        let r = get("/api/v1/task/lib1/1,2,3").unwrap();
        assert_eq!((r.space, r.rest), (None, "1,2,3"));
        let r = get("/api/v1/task/lib1/sp1/1,2").unwrap();
        assert_eq!((r.space, r.rest), (Some("sp1"), "1,2"));
        let r = get("/api/v1/task-result/lib1/sp1/7").unwrap();
        assert_eq!(r.space, Some("sp1"));
        for res in [
            "space-quota",
            "inode",
            "fs-delta",
            "batch",
            "recycled",
            "search",
            "favorite",
            "recent",
            "hls",
            "office",
            "authority",
            "directory-history",
        ] {
            let p = format!("/api/v1/{res}/lib1/sp2/x");
            assert_eq!(get(&p).unwrap().space, Some("sp2"), "{res}");
            let p = format!("/api/v1/{res}/lib1");
            assert!(refused(get(&p)), "{res} without a space");
        }
    }

    #[test]
    fn refuses_the_token_api_in_any_spelling() {
        for p in [
            "/api/v1/token",
            "/api/v1/token/lib1/acctk123",
            "/api/v1/TOKEN/lib1",
            "/api/v1/%74oken/lib1",
            "/api/v1/Token",
        ] {
            assert_eq!(get(p), Err(GatewayError::TokenEndpointRefused), "{p}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_place_exactly() {
        for p in [
            "/",
            "/api/v2/file/x",
            "/API/v1/file/lib1/-/a",
            "//api/v1/file/lib1/-/a",
            "/api/v1/",
            "/api/v1/file",
            "/api/v1/file/",
            "/api/v1/file/lib1",
            "/api/v1/FILE/lib1/-/a",
            "/api/v1/%66ile/lib1/-/a",
            "/api/v1/album/lib1/-/a",
            "/api/v1/cross-space/directory/lib1/a",
            "/api/v1/file/lib1//sp1/a",
            "/api/v1/space/lib1//sp1",
            "/api/v1/file//-/a",
            "/api/v1/file/lib%2F1/-/a",
            "/api/v1/file/lib1/sp%2F1/a",
            "/api/v1/file/lib1/sp%31/a",
            "/api/v1/file/lib1/a,b/x",
            "/api/v1/file/lib1/sp;x=1/a",
            "/api/v1/file/lib1/-/../other/a",
            "/api/v1/file/lib1/-/a/./b",
            "/api/v1/file/lib1/-/a/%2e%2E/b",
            "/api/v1/file/lib1/-/a%2F..%2Fb",
            "/api/v1/file/lib1/-/a%2F.",
            "/api/v1/file/lib1/-/.%2e",
            "/api/v1/file/lib1/-/a%00b",
            "/api/v1/file/lib1/-/a%0Ab",
            "/api/v1/file/lib1/-/a%5C..%5Cb",
            "/api/v1/file/lib1/-/a%zz",
            "/api/v1/file/lib1/-/a%4",
            "/api/v1/file/lib1/-/..;/b",
            "/api/v1/file/lib1/-/a%3Bb",
            "/api/v1/usage/lib1/a,b",
        ] {
            assert!(refused(get(p)), "{p}: {:?}", get(p));
        }
    }
}
