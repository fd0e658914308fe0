//! Strip-then-inject: remove every credential the client sent and add the
//! SMH token. The query is edited pair by pair on its raw bytes, so every
//! other parameter keeps its order, spelling and encoding (bare flags stay
//! bare, `%2F` stays `%2F`).

use http::header::{self, HeaderMap, HeaderName};

/// Query parameters a client may never pass to SMH through the gateway: SMH
/// credentials and the admin-token `user_id` impersonation switch.
pub const STRIPPED_QUERY_PARAMS: &[&str] = &["access_token", "library_secret", "user_id"];

/// Hop-by-hop headers (RFC 9110 7.6.1) plus the client's credentials and the
/// host, which the upstream request sets itself.
const STRIPPED_HEADERS: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";

/// Returns the upstream path-and-query: `path`, then the client's query
/// without credentials, then `access_token=<token>`.
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

/// True when the pair's (decoded) name is one we strip. Decoding matters:
/// `access%5Ftoken=x` is the same parameter to SMH.
fn is_stripped(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or(pair);
    if !name.contains('%') && !name.contains('+') {
        return STRIPPED_QUERY_PARAMS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name));
    }
    let decoded = name.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy();
    STRIPPED_QUERY_PARAMS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(decoded.trim()))
}

/// Removes credentials and hop-by-hop headers, including any the client
/// named in `Connection`.
pub fn strip_request_headers(headers: &mut HeaderMap) {
    strip_connection_named(headers);
    for h in STRIPPED_HEADERS {
        headers.remove(h);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
}

/// Removes hop-by-hop headers from an upstream response.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    strip_connection_named(headers);
    for h in [
        header::CONNECTION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
}

fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
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
    fn strips_credentials_in_any_spelling() {
        let q = "access_token=stolen&info&LIBRARY_SECRET=s&user_id=root&access%5Ftoken=x&user%5Fid=y&limit=5&access_token";
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
    fn strips_credential_and_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer x".parse().unwrap());
        h.insert("cookie", "s=1".parse().unwrap());
        h.insert("connection", "x-secret-hop, keep-alive".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-smh-meta-a", "b".parse().unwrap());
        strip_request_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-smh-meta-a"], "b");
    }
}
