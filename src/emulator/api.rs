//! The SMH API surface: request intake (body limit, request log), routing
//! under `/api/v1/`, the token endpoints, data-request authentication and
//! the tenant-space endpoint. Directory and file handlers live in
//! `dirs.rs` and `files.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::json;

use crate::body::{empty, json_response, Body};
use crate::smh::wire::{code, TokenResponse};

use super::hooks::{OperationRecord, SeenRequest};
use super::proto::{
    decode, extra_code, new_request_id, read_limited, set_request_id, ApiError, ApiResult, Query,
    MAX_JSON_BODY,
};
use super::tokens::{new_token, Perm, TokenRecord};
use super::{dirs, files, fs, State};

/// Token lifetime when `period` is absent or not positive (smh-api.md 2.1).
pub const DEFAULT_PERIOD: u64 = 86_400;
/// SMH caps comma lists on delete-user-tokens at 100 entries each.
const MAX_DELETE_LIST: usize = 100;
/// Generated tenant-space id length; ids are `[a-z0-9]` so always valid.
const GENERATED_SPACE_ID_LEN: usize = 12;

/// Entry point for every request outside the COS surface.
pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let request_id = new_request_id();
    let (parts, body) = req.into_parts();
    if is_token_api(parts.uri.path()) {
        let d = state.hooks.token_api_latency();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
    let read = read_limited(body, MAX_JSON_BODY, &state.hooks).await;
    state.hooks.record_request(SeenRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_bytes: read.total,
    });
    let result = match (read.complete, read.bytes) {
        (false, _) => Err(ApiError::bad_request(
            extra_code::INCOMPLETE_BODY,
            "request body ended early",
        )),
        (true, None) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::REQUEST_ENTITY_TOO_LARGE,
            format!("request body larger than {MAX_JSON_BODY} bytes"),
        )),
        (true, Some(bytes)) => route(state, &parts, &bytes),
    };
    let mut resp = result.unwrap_or_else(|e| e.into_response(&request_id));
    set_request_id(&mut resp, &request_id);
    allow_any_origin(&parts, &mut resp);
    if parts.method == Method::HEAD {
        // HEAD answers carry status and headers only, errors included.
        *resp.body_mut() = empty();
    }
    resp
}

/// SMH answers browsers itself ("CORS is supported by default",
/// smh-api.md 1.1) with headers the docs do not spell out; the emulator
/// takes the most permissive reading (the caller's origin echoed, or `*`,
/// with credentials), so a proxy in front of it is tested against the
/// worst an SMH answer could carry.
fn allow_any_origin(parts: &Parts, resp: &mut Response<Body>) {
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .cloned()
        .unwrap_or(http::HeaderValue::from_static("*"));
    let h = resp.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        http::HeaderValue::from_static("true"),
    );
    h.insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        http::HeaderValue::from_static("*"),
    );
}

fn is_token_api(path: &str) -> bool {
    path == "/api/v1/token" || path.starts_with("/api/v1/token/")
}

fn route(state: &State, parts: &Parts, body: &Bytes) -> ApiResult {
    let query = Query::parse(parts.uri.query());
    let Some(rest) = parts.uri.path().strip_prefix("/api/v1/") else {
        return Err(ApiError::route_not_found());
    };
    let (resource, tail) = rest.split_once('/').unwrap_or((rest, ""));
    match resource {
        "token" => token_api(state, &parts.method, tail, &query),
        "directory" | "file" | "space" => data_api(state, parts, resource, tail, &query, body),
        _ => Err(ApiError::route_not_found()),
    }
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_response(status, value)
}

pub fn no_content() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(empty())
        .expect("static response parts are valid")
}

fn library_not_found(lib: &str) -> ApiError {
    ApiError::not_found(
        code::LIBRARY_NOT_FOUND,
        format!("library {lib:?} not found"),
    )
}

fn invalid_token(message: &str) -> ApiError {
    ApiError::forbidden(code::INVALID_ACCESS_TOKEN, message)
}

// ---------------------------------------------------------------- tokens

fn token_api(state: &State, method: &Method, tail: &str, query: &Query) -> ApiResult {
    state.hooks.count_token_api_call();
    if state.hooks.token_api_is_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SERVER_OVERLOADED,
            "token service unavailable (emulated outage)",
        ));
    }
    let segs: Vec<String> = tail
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    match (method, segs.as_slice()) {
        (&Method::GET | &Method::POST, []) => generate_token(state, query),
        (&Method::POST, [lib, token]) => renew_token(state, lib, token),
        (&Method::DELETE, [lib, token]) => delete_token(state, lib, token),
        (&Method::DELETE, [lib]) => delete_user_tokens(state, lib, query),
        _ => Err(ApiError::route_not_found()),
    }
}

fn check_secret(state: &State, lib: &str, secret: &str) -> Result<(), ApiError> {
    match (lib.is_empty(), secret.is_empty()) {
        (true, true) => Err(ApiError::bad_request(
            code::EMPTY_LIBRARY_ID_OR_SECRET,
            "library_id and library_secret are required",
        )),
        (true, false) => Err(ApiError::bad_request(
            code::EMPTY_LIBRARY_ID,
            "library_id is required",
        )),
        (false, true) => Err(ApiError::bad_request(
            code::EMPTY_LIBRARY_SECRET,
            "library_secret is required",
        )),
        _ if lib != state.config.library_id
            || secret != state.config.library_secret
            || state.hooks.secret_rotated() =>
        {
            Err(ApiError::not_found(
                code::WRONG_LIBRARY_ID_OR_SECRET,
                "wrong library id or secret",
            ))
        }
        _ => Ok(()),
    }
}

/// `period` per the decisions in mod.rs: absent or not positive means the
/// default; otherwise clamped into the configured bounds.
fn parse_period(state: &State, raw: Option<&str>) -> Result<u64, ApiError> {
    let raw = raw.map(str::trim).unwrap_or("");
    if raw.is_empty() {
        return Ok(DEFAULT_PERIOD);
    }
    let n: i128 = raw.parse().map_err(|_| {
        ApiError::bad_request(
            code::PARAM_INVALID,
            format!("period {raw:?} is not an integer"),
        )
    })?;
    if n <= 0 {
        return Ok(DEFAULT_PERIOD);
    }
    let (lo, hi) = (
        state.config.period_min,
        state.config.period_max.max(state.config.period_min),
    );
    Ok(n.clamp(i128::from(lo), i128::from(hi)) as u64)
}

fn generate_token(state: &State, query: &Query) -> ApiResult {
    let lib = query.get("library_id").unwrap_or("");
    let secret = query.get("library_secret").unwrap_or("");
    check_secret(state, lib, secret)?;
    let period = parse_period(state, query.get("period"))?;
    let spaces = query.list("space_id");
    if state.config.multi_tenant {
        let known = state.spaces();
        if let Some(missing) = spaces.iter().find(|s| !known.contains(*s)) {
            return Err(ApiError::not_found(
                code::SPACE_NOT_FOUND,
                format!("space {missing:?} not found"),
            ));
        }
    } else if spaces.iter().any(|s| s != "-") {
        return Err(ApiError::bad_request(
            code::NOT_MULTI_SPACE_LIBRARY,
            "library is single-tenant; space_id must be omitted or \"-\"",
        ));
    }
    let now = state.hooks.now();
    let rec = TokenRecord {
        token: new_token(),
        library_id: lib.to_string(),
        spaces,
        user_id: query.get("user_id").unwrap_or("").to_string(),
        client_id: query.get("client_id").unwrap_or("").to_string(),
        session_id: query.get("session_id").unwrap_or("").to_string(),
        grants: query.list("grant"),
        period,
        expires_at: now + Duration::from_secs(period),
    };
    let resp = TokenResponse {
        access_token: rec.token.clone(),
        expires_in: period,
    };
    state.hooks.token_store().insert(rec);
    state.hooks.count_mint();
    Ok(json_response(StatusCode::OK, &resp))
}

fn renew_token(state: &State, lib: &str, token: &str) -> ApiResult {
    if lib != state.config.library_id {
        return Err(library_not_found(lib));
    }
    let now = state.hooks.now();
    let mut store = state.hooks.token_store();
    let rec = store
        .live(token, now)
        .ok_or_else(|| invalid_token("access token is invalid or expired"))?;
    rec.slide(now);
    let resp = TokenResponse {
        access_token: rec.token.clone(),
        expires_in: rec.period,
    };
    drop(store);
    state.hooks.count_renew();
    Ok(json_response(StatusCode::OK, &resp))
}

fn delete_token(state: &State, lib: &str, token: &str) -> ApiResult {
    if lib != state.config.library_id {
        return Err(library_not_found(lib));
    }
    let removed = state.hooks.token_store().remove(token);
    state.hooks.count_delete();
    let (user_id, client_id) = removed
        .map(|r| (r.user_id, r.client_id))
        .unwrap_or_default();
    state.hooks.record_operation(OperationRecord {
        operation: super::op::DELETE_TOKEN.into(),
        library_id: lib.to_string(),
        space_id: String::new(),
        path: String::new(),
        user_id,
        client_id,
    });
    Ok(no_content())
}

fn delete_user_tokens(state: &State, lib: &str, query: &Query) -> ApiResult {
    if lib != state.config.library_id {
        return Err(library_not_found(lib));
    }
    check_secret(state, lib, query.get("library_secret").unwrap_or(""))?;
    let users = query.list("user_id");
    if users.is_empty() {
        return Err(ApiError::bad_request(
            code::PARAM_INVALID,
            "user_id is required",
        ));
    }
    let clients = query.list("client_id");
    let sessions = query.list("session_id");
    if [&users, &clients, &sessions]
        .iter()
        .any(|l| l.len() > MAX_DELETE_LIST)
    {
        return Err(ApiError::bad_request(
            code::PARAM_INVALID,
            format!("at most {MAX_DELETE_LIST} ids per list"),
        ));
    }
    state
        .hooks
        .token_store()
        .remove_matching(&users, &clients, &sessions);
    state.hooks.count_delete();
    state.hooks.record_operation(OperationRecord {
        operation: super::op::DELETE_USER_TOKENS.into(),
        library_id: lib.to_string(),
        space_id: String::new(),
        path: String::new(),
        user_id: users.join(","),
        client_id: clients.join(","),
    });
    Ok(no_content())
}

// ---------------------------------------------------------------- data requests

/// An authenticated data request's identity.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenRecord,
    /// Who SMH records as operator (smh-api.md 1.2 `user_id`).
    pub operator: String,
}

impl Caller {
    pub fn require(&self, perm: Perm) -> Result<(), ApiError> {
        if perm.allowed(&self.token.grants) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                code::NO_PERMISSION,
                format!("the access token is not granted {perm:?}"),
            ))
        }
    }

    pub fn may_overwrite(&self, perm: Perm) -> bool {
        perm.may_overwrite(&self.token.grants)
    }
}

/// Everything a directory or file handler needs.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: &'a Query,
    pub body: &'a Bytes,
    pub caller: Caller,
    pub space: String,
    /// Normalised, decoded path inside the space ("" = root).
    pub path: String,
    pub now: SystemTime,
}

impl Ctx<'_> {
    pub fn record(&self, operation: &str, path: &str) {
        self.state.hooks.record_operation(OperationRecord {
            operation: operation.to_string(),
            library_id: self.state.config.library_id.clone(),
            space_id: self.space.clone(),
            path: path.to_string(),
            user_id: self.caller.operator.clone(),
            client_id: self.caller.token.client_id.clone(),
        });
    }
}

fn forced_failure(status: u16) -> ApiError {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(StatusCode::is_server_error)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let c = if status == StatusCode::SERVICE_UNAVAILABLE {
        code::SERVER_OVERLOADED
    } else {
        code::INTERNAL_SERVER_ERROR
    };
    ApiError::new(status, c, "emulated server failure")
}

fn data_api(
    state: &State,
    parts: &Parts,
    resource: &str,
    tail: &str,
    query: &Query,
    body: &Bytes,
) -> ApiResult {
    state.hooks.count_data_request();
    if let Some(status) = state.hooks.take_data_failure() {
        return Err(forced_failure(status));
    }
    let (lib_raw, rest) = tail.split_once('/').unwrap_or((tail, ""));
    let lib = decode(lib_raw);
    if lib.is_empty() {
        return Err(ApiError::route_not_found());
    }
    if lib != state.config.library_id {
        return Err(library_not_found(&lib));
    }
    if resource == "space" {
        return space_api(state, parts, rest, query);
    }
    let (space_raw, path_raw) = rest.split_once('/').unwrap_or((rest, ""));
    let space = decode(space_raw);
    if space.is_empty() {
        return Err(ApiError::route_not_found());
    }
    let caller = authenticate(state, &parts.headers, query, Some(&space))?;
    let path = fs::normalize(&decode(path_raw))?;
    let ctx = Ctx {
        state,
        method: &parts.method,
        headers: &parts.headers,
        query,
        body,
        caller,
        space,
        path,
        now: state.hooks.now(),
    };
    if resource == "directory" {
        dirs::handle(&ctx)
    } else {
        files::handle(&ctx)
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Token from `access_token` (preferred) or `Authorization: Bearer`, then
/// validity, forced failures, sliding expiry and space scoping.
fn authenticate(
    state: &State,
    headers: &HeaderMap,
    query: &Query,
    space: Option<&str>,
) -> Result<Caller, ApiError> {
    let hooks = &state.hooks;
    let token = query
        .non_empty("access_token")
        .map(str::to_string)
        .or_else(|| bearer(headers))
        .ok_or_else(|| {
            ApiError::bad_request(code::EMPTY_ACCESS_TOKEN, "access token is required")
        })?;
    hooks.count_token_use(&token);
    if hooks.take_token_failure(&token) {
        return Err(invalid_token("access token is invalid (emulated failure)"));
    }
    let now = hooks.now();
    let live = hooks
        .token_store()
        .live(&token, now)
        .map(|r| r.library_id == state.config.library_id)
        .unwrap_or(false);
    if !live {
        return Err(invalid_token("access token is invalid or expired"));
    }
    if hooks.take_any_token_failure() {
        return Err(invalid_token("access token is invalid (emulated failure)"));
    }
    let rec = {
        let mut store = hooks.token_store();
        let rec = store
            .live(&token, now)
            .ok_or_else(|| invalid_token("access token is invalid or expired"))?;
        rec.slide(now);
        rec.clone()
    };
    if let Some(space) = space {
        check_space(state, &rec, space)?;
    }
    let operator = if !rec.user_id.is_empty() {
        rec.user_id.clone()
    } else if rec.is_admin() {
        query.get("user_id").unwrap_or("").to_string()
    } else {
        String::new()
    };
    Ok(Caller {
        token: rec,
        operator,
    })
}

fn check_space(state: &State, rec: &TokenRecord, space: &str) -> Result<(), ApiError> {
    let not_match = || {
        ApiError::forbidden(
            code::ACCESS_TOKEN_NOT_MATCH_SPACE,
            format!("the access token is not valid for space {space:?}"),
        )
    };
    let scoped_ok = if rec.spaces.is_empty() {
        // Unscoped tokens reach every space only with `admin` on a
        // multi-tenant library; single-tenant has just the one space.
        !state.config.multi_tenant || rec.is_admin()
    } else {
        rec.spaces.iter().any(|s| s == space)
    };
    if !scoped_ok {
        return Err(not_match());
    }
    let exists = if state.config.multi_tenant {
        state.spaces().contains(space)
    } else {
        space == "-"
    };
    if exists {
        Ok(())
    } else {
        Err(ApiError::not_found(
            code::SPACE_NOT_FOUND,
            format!("space {space:?} not found"),
        ))
    }
}

// ---------------------------------------------------------------- spaces

fn valid_space_id(id: &str) -> bool {
    (2..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

fn space_api(state: &State, parts: &Parts, rest: &str, query: &Query) -> ApiResult {
    let caller = authenticate(state, &parts.headers, query, None)?;
    if !rest.trim_matches('/').is_empty() || parts.method != Method::POST {
        return Err(ApiError::route_not_found());
    }
    if !state.config.multi_tenant {
        return Err(ApiError::bad_request(
            code::NOT_MULTI_SPACE_LIBRARY,
            "tenant spaces exist only on multi-tenant libraries",
        ));
    }
    caller.require(Perm::CreateSpace)?;
    let id = match query.non_empty("space_id") {
        Some(id) if !valid_space_id(id) => {
            return Err(ApiError::bad_request(
                extra_code::SPACE_ID_INVALID,
                "space id must be 2-32 of [a-z0-9-], not starting or ending with '-'",
            ))
        }
        Some(id) => id.to_string(),
        None => {
            let mut rng = rand::thread_rng();
            const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            (0..GENERATED_SPACE_ID_LEN)
                .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
                .collect()
        }
    };
    if !state.spaces().insert(id.clone()) {
        return Err(ApiError::conflict(
            extra_code::PATH_CONFLICT,
            format!("space {id:?} already exists"),
        ));
    }
    state.hooks.record_operation(OperationRecord {
        operation: super::op::CREATE_SPACE.into(),
        library_id: state.config.library_id.clone(),
        space_id: id.clone(),
        path: String::new(),
        user_id: caller.operator.clone(),
        client_id: caller.token.client_id.clone(),
    });
    Ok(json(StatusCode::CREATED, &json!({ "spaceId": id })))
}
