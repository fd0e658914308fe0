//! Rebuild-then-inject, both ways across the boundary. To SMH: the query
//! pairs [`super::query::judge`] allowed, minus the reserved names, then the
//! gateway's `access_token`; only allow-listed request headers. Pairs are
//! copied on their raw bytes, so every forwarded parameter keeps its order,
//! spelling and encoding (bare flags stay bare, `%2F` stays `%2F`). To the
//! client: SMH's answer without hop-by-hop headers, and without SMH's own
//! CORS and cookie headers (the gateway's `[cors]` is the only CORS policy).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::query::RESERVED;

/// Hop-by-hop names collected per scan of a response's headers; a response
/// with more (none seen in practice) takes another scan.
const RESPONSE_HOPS_PER_SCAN: usize = 8;
/// `Connection` tokens remembered per message; longer lists are re-read
/// from the header for each name (correct, just slower).
const MAX_CONNECTION_TOKENS: usize = 8;

/// Hop-by-hop headers (RFC 9110 7.6.1, plus the legacy `keep-alive` and
/// `proxy-connection`), never forwarded either way. Matched as text, which
/// compiles to a length switch and one comparison.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Request headers SMH may see: content negotiation and framing, range and
/// conditional reads, the SDKs' version headers (`Client-Version`, the
/// planned `X-SMH-SDK-Version`), and custom metadata `x-smh-meta-*`
/// (smh-api.md 1.5). Everything else stays here: the
/// client's credentials (`Authorization`, `Cookie`), the device header,
/// `Host` (the upstream request sets its own), and headers that would let
/// a client speak for the gateway to SMH or anything in front of it
/// (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Original-URL`,
/// `X-HTTP-Method-Override`, ...).
fn is_forwarded_request_header(name: &str) -> bool {
    matches!(
        name,
        "accept"
            | "accept-encoding"
            | "accept-language"
            | "cache-control"
            | "client-version"
            | "content-disposition"
            | "content-encoding"
            | "content-language"
            | "content-length"
            | "content-type"
            | "if-match"
            | "if-modified-since"
            | "if-none-match"
            | "if-range"
            | "if-unmodified-since"
            | "range"
            | "user-agent"
            | "x-smh-sdk-version"
    ) || name.starts_with("x-smh-meta-")
}

/// Response headers SMH's answer loses: its CORS policy (the gateway's
/// replaces it) and cookies (they would land on the gateway's domain).
fn is_smh_only_response_header(name: &str) -> bool {
    name.starts_with("access-control-") || name == "set-cookie" || name == "set-cookie2"
}

/// Returns the upstream path-and-query: `path`, then the client's query
/// without the reserved names, then `access_token=<token>`. The query has
/// passed [`super::query::judge`], so every name is plainly spelled and an
/// exact comparison finds every reserved one.
pub fn upstream_path_and_query(path: &str, query: Option<&str>, token: &str) -> String {
    let mut out = String::with_capacity(
        path.len() + query.map_or(0, str::len) + token.len() + "?&access_token=".len(),
    );
    out.push_str(path);
    out.push('?');
    if let Some(q) = query {
        for pair in q.split('&') {
            if pair.is_empty() || is_stripped(pair) {
                continue;
            }
            out.push_str(pair);
            out.push('&');
        }
    }
    out.push_str("access_token=");
    out.extend(percent_encoding::utf8_percent_encode(
        token,
        percent_encoding::NON_ALPHANUMERIC,
    ));
    out
}

/// True when the pair's name is one the gateway owns.
fn is_stripped(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    RESERVED.contains(&name)
}

/// The upstream request's headers: the client's allow-listed ones, minus
/// any the client named in `Connection`. Built in one pass over the
/// client's headers (values are shared, not copied).
pub fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let listed = Listed::new(client);
    let mut out = HeaderMap::with_capacity(client.len() + 1);
    for (name, value) in client {
        let n = name.as_str();
        if is_forwarded_request_header(n) && !listed.contains(n) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Removes hop-by-hop headers (and those named in `Connection`) and SMH's
/// CORS and cookie headers from an upstream response: one scan over the
/// names finds what is present, and only that is removed.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    loop {
        let mut found: [Option<HeaderName>; RESPONSE_HOPS_PER_SCAN] = Default::default();
        let mut n = 0;
        let listed = Listed::new(headers);
        for name in headers.keys() {
            let s = name.as_str();
            // `Connection` itself goes last: a further scan still needs it.
            if n < found.len()
                && name != header::CONNECTION
                && (is_hop_by_hop(s) || is_smh_only_response_header(s) || listed.contains(s))
            {
                found[n] = Some(name.clone());
                n += 1;
            }
        }
        for name in found.iter().flatten() {
            headers.remove(name);
        }
        if n < RESPONSE_HOPS_PER_SCAN {
            headers.remove(header::CONNECTION);
            return;
        }
    }
}

/// The names a message's `Connection` header lists, read once.
struct Listed<'a> {
    tokens: [&'a str; MAX_CONNECTION_TOKENS],
    len: usize,
    /// More tokens than fit: look through every value instead.
    overflow: Option<header::GetAll<'a, HeaderValue>>,
}

impl<'a> Listed<'a> {
    fn new(headers: &'a HeaderMap) -> Self {
        let all = headers.get_all(header::CONNECTION);
        let mut listed = Self {
            tokens: [""; MAX_CONNECTION_TOKENS],
            len: 0,
            overflow: None,
        };
        let tokens = all
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        for t in tokens {
            if listed.len == MAX_CONNECTION_TOKENS {
                listed.overflow = Some(all);
                break;
            }
            listed.tokens[listed.len] = t;
            listed.len += 1;
        }
        listed
    }

    /// `name` is lowercase (a `HeaderName`); tokens may be any case.
    fn contains(&self, name: &str) -> bool {
        match &self.overflow {
            None => self.tokens[..self.len]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name)),
            Some(all) => all
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_other_byte_of_the_query() {
        let q = "multipart&conflict_resolution_strategy=rename&x=%2Fa%2Fb&by-marker=1&empty=";
        assert_eq!(
            upstream_path_and_query("/api/v1/file/l/-/a%2Fb", Some(q), "acctk1"),
            format!("/api/v1/file/l/-/a%2Fb?{q}&access_token=acctk1")
        );
    }

    #[test]
    fn strips_the_reserved_names() {
        let q = "access_token=stolen&info&library_secret=s&user_id=root&limit=5&access_token";
        assert_eq!(
            upstream_path_and_query("/p", Some(q), "tok"),
            "/p?info&limit=5&access_token=tok"
        );
    }

    #[test]
    fn no_query_and_empty_pairs() {
        assert_eq!(
            upstream_path_and_query("/p", None, "t"),
            "/p?access_token=t"
        );
        assert_eq!(
            upstream_path_and_query("/p", Some("&&a&"), "t"),
            "/p?a&access_token=t"
        );
    }

    #[test]
    fn forwards_only_allow_listed_request_headers() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer x"),
            ("cookie", "s=1"),
            ("connection", "x-smh-meta-hop, keep-alive"),
            ("x-smh-meta-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("te", "trailers"),
            ("host", "evil.example"),
            ("x-client-id", "bob-phone"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-original-url", "/api/v1/token"),
            ("x-rewrite-url", "/api/v1/token"),
            ("x-http-method-override", "DELETE"),
            ("x-method-override", "DELETE"),
            ("origin", "https://evil.example"),
            ("content-type", "application/json"),
            ("client-version", "smh-js-sdk/1.0.16"),
            ("range", "bytes=0-1"),
        ] {
            h.append(HeaderName::from_static(n), v.parse().unwrap());
        }
        h.insert("x-smh-meta-a", "b".parse().unwrap());
        h.append("x-smh-meta-a", "c".parse().unwrap());
        let out = upstream_request_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["client-version", "content-type", "range", "x-smh-meta-a"]
        );
        let kept: Vec<_> = out.get_all("x-smh-meta-a").iter().collect();
        assert_eq!(kept, ["b", "c"]);
    }

    #[test]
    fn smh_cors_and_cookies_never_reach_the_client() {
        let mut h = HeaderMap::new();
        h.insert(
            "access-control-allow-origin",
            "https://evil.example".parse().unwrap(),
        );
        h.insert("access-control-allow-credentials", "true".parse().unwrap());
        h.insert("access-control-expose-headers", "*".parse().unwrap());
        h.insert("set-cookie", "a=b".parse().unwrap());
        h.insert("x-smh-size", "5".parse().unwrap());
        strip_response_headers(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-smh-size"]);
    }

    #[test]
    fn a_long_connection_list_on_a_request_is_honoured_to_its_end() {
        let mut h = HeaderMap::new();
        let listed: Vec<String> = (0..12).map(|i| format!("X-Hop-{i}")).collect();
        h.insert("connection", listed.join(",").parse().unwrap());
        h.insert("x-hop-11", "1".parse().unwrap());
        h.insert("x-hop-0", "1".parse().unwrap());
        h.insert("x-smh-meta-x", "1".parse().unwrap());
        h.append("connection", "x-smh-meta-x".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let out = upstream_request_headers(&h);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out.contains_key("accept"));
    }

    #[test]
    fn a_response_with_more_hop_headers_than_one_scan_holds_is_fully_stripped() {
        let mut h = HeaderMap::new();
        let listed: Vec<String> = (0..20).map(|i| format!("x-hop-{i}")).collect();
        h.insert("connection", listed.join(", ").parse().unwrap());
        for name in &listed {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "1".parse().unwrap(),
            );
        }
        h.insert("etag", "\"e\"".parse().unwrap());
        strip_response_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn strips_hop_headers_from_responses_including_connection_named() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Hop".parse().unwrap());
        h.append("connection", "close, x-other-hop".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("x-other-hop", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-smh-request-id", "r1".parse().unwrap());
        strip_response_headers(&mut h);
        let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-smh-request-id"]);
    }
}
