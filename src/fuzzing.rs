//! Entry points for the fuzz targets in `fuzz/`: every parser of client or
//! upstream bytes the gateway owns, each driven from one byte slice.
//! Not an API; hidden from the docs. Each function must only ever return:
//! a panic here is a finding.

use http::{Method, StatusCode};

use crate::gateway::{forward, query, route};
use crate::session::{credential, jwt};
use crate::smh::{operation, token};

/// The SMH methods plus one the route refuses, picked by the first byte.
fn method(b: u8) -> Method {
    match b % 6 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::PUT,
        3 => Method::POST,
        4 => Method::DELETE,
        _ => Method::PATCH,
    }
}

/// Route placement of a path (first byte picks the method).
pub fn route(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    if let Ok(path) = std::str::from_utf8(rest) {
        let _ = route::SmhRoute::parse(&method(m), path);
    }
}

/// The query judge and, when it passes, the operation judge over the same
/// bytes split into `path ? query \0 body` (first byte picks the method).
pub fn query_and_operation(data: &[u8]) {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let (path, q) = match head.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (head, None),
    };
    let Ok(facts) = query::judge(q) else {
        return;
    };
    let method = method(m);
    let resource = route::SmhRoute::parse(&method, path)
        .map(|r| r.resource)
        .unwrap_or("file");
    let _ = operation::judge(
        &method,
        resource,
        facts.flag,
        operation::BodyView {
            bytes: body,
            plain_json: m & 0x80 == 0,
        },
    );
}

/// Credential extraction from a request head given as `name: value` lines
/// and a first line that is the request target.
pub fn credential(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/");
    let mut req = http::Request::builder()
        .uri(http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/")));
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::try_from(n.trim()),
                http::HeaderValue::try_from(v.trim()),
            ) {
                req = req.header(n, v);
            }
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let sources = [
        credential::CredentialSource::Bearer,
        credential::CredentialSource::Cookie("session".into()),
        credential::CredentialSource::Query,
    ];
    let _ = credential::extract(&sources, &parts);
}

/// The JWT structure checks that run before any signature check.
pub fn jwt_structure(data: &[u8]) {
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = jwt::check_structure(t);
    }
}

/// SMH's answers the gateway reads: the token API's (first two bytes pick
/// the status) and the error code of a forwarded error.
pub fn upstream_answers(data: &[u8]) {
    let Some((status, body)) = data.split_at_checked(2) else {
        return;
    };
    let code = 100 + u16::from_be_bytes([status[0], status[1]]) % 500;
    if let Ok(status) = StatusCode::from_u16(code) {
        let _ = token::read_mint_answer(status, body);
    }
    let _ = forward::smh_error_code(body);
}

/// The HTTP/2 header-block watch over client bytes: read whole or split
/// at any point (the first byte picks where), it must reach the same
/// answer — reads arrive in pieces of any size.
pub fn h2_frames(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut whole = crate::server::FrameWatch::default();
    let open = whole.feed(rest);
    let at = usize::from(cut).min(rest.len());
    let mut split = crate::server::FrameWatch::default();
    split.feed(&rest[..at]);
    let split_open = split.feed(&rest[at..]);
    assert_eq!(
        (split_open, split.opened()),
        (open, whole.opened()),
        "split at {at}"
    );
}
