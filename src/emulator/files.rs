//! `/api/v1/file/{Lib}/{Space}/{Path}`: upload start (simple and
//! multipart), confirm, status, abort, download (302 or direct), info,
//! status headers, delete, move, copy and symlink (smh-api.md 5.1–5.4).

use std::collections::BTreeMap;
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use rand::Rng;
use serde_json::{json, Value};

use crate::body::empty;
use crate::smh::wire::code;

use super::api::{json, no_content, Ctx};
use super::cos::{crc64, expires_after, new_object_key, serve_bytes, COS_PREFIX};
use super::fs::{
    self, check_name_lengths, guess_content_type, parent_of, segments, Conflict, FileMeta, Fs,
    Node, PendingUpload,
};
use super::op;
use super::proto::{extra_code, json_object, json_str, rfc3339, unix_secs, ApiError, ApiResult};
use super::tokens::Perm;

/// How long upload targets (and their COS signature) stay usable.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Signed download links last about 2 h by default (smh-api.md 5.2).
pub const DOWNLOAD_LINK_TTL: u64 = 7200;
/// `?info&period=` bounds for the link lifetime (smh-api.md 5.2).
pub const DOWNLOAD_LINK_MIN: u64 = 60;
/// Upper bound of `?info&period=`.
pub const DOWNLOAD_LINK_MAX: u64 = 7200;
/// Prefix of custom-metadata request headers and response headers.
const META_PREFIX: &str = "x-smh-meta-";

pub fn handle(ctx: &Ctx<'_>) -> ApiResult {
    let q = ctx.query;
    match *ctx.method {
        Method::PUT => {
            let body = json_object(ctx.body)?;
            if let Some(from) = json_str(&body, "from") {
                move_or_copy(ctx, from, false)
            } else if let Some(from) = json_str(&body, "copyFrom") {
                move_or_copy(ctx, from, true)
            } else if let Some(to) = json_str(&body, "linkTo") {
                symlink(ctx, to)
            } else if q.flag("convert") || q.flag("virtual_file") {
                Err(not_emulated("format conversion and virtual files"))
            } else {
                begin_upload(ctx, false)
            }
        }
        Method::POST if q.flag("confirm") => confirm(ctx),
        Method::POST if q.flag("multipart") => begin_upload(ctx, true),
        Method::POST if q.flag("renew") => renew_upload(ctx),
        Method::POST => Err(not_emulated("form upload")),
        Method::GET if q.flag("upload") => upload_status(ctx),
        Method::GET if q.flag("info") => info(ctx),
        Method::GET => download(ctx),
        Method::HEAD => head(ctx),
        Method::DELETE if q.flag("upload") => abort_upload(ctx),
        Method::DELETE => delete(ctx),
        _ => Err(ApiError::route_not_found()),
    }
}

fn not_emulated(what: &str) -> ApiError {
    ApiError::not_found(code::ROUTE_NOT_FOUND, format!("{what} is not emulated"))
}

/// `x-smh-meta-*` request headers, keyed without the prefix.
fn request_meta(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(n, v)| {
            let key = n.as_str().strip_prefix(META_PREFIX)?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect()
}

fn domain(ctx: &Ctx<'_>) -> String {
    format!("localhost:{}", ctx.state.port)
}

/// The upload target block shared by start and renew.
fn upload_target(ctx: &Ctx<'_>, confirm_key: &str, up: &PendingUpload) -> Value {
    let start = unix_secs(ctx.now);
    let expires = unix_secs(up.expires);
    let mut v = json!({
        "domain": domain(ctx),
        "path": format!("{COS_PREFIX}{}", up.object_key),
        "headers": {
            "Authorization": ctx.state.signer.upload_authorization(&up.object_key, start, expires),
        },
        "confirmKey": confirm_key,
        "expiration": rfc3339(up.expires),
        "availableDomainNum": 1,
    });
    if let Some(id) = &up.upload_id {
        v["uploadId"] = Value::String(id.clone());
    }
    v
}

fn random_hex() -> String {
    let v: u128 = rand::thread_rng().gen();
    format!("{v:032x}")
}

fn begin_upload(ctx: &Ctx<'_>, multipart: bool) -> ApiResult {
    ctx.caller.require(Perm::BeginUpload)?;
    if ctx.path.is_empty() {
        return Err(ApiError::bad_request(
            code::EMPTY_FILE_NAME,
            "a file path is required",
        ));
    }
    check_name_lengths(&ctx.path, true)?;
    let conflict = Conflict::parse(
        ctx.query.get("conflict_resolution_strategy"),
        Conflict::Rename,
    )?;
    let may_overwrite = ctx.caller.may_overwrite(Perm::BeginUpload);
    let mut fs = ctx.state.fs();
    if !fs.is_dir(&ctx.space, parent_of(&ctx.path)) {
        return Err(Fs::missing_dir(parent_of(&ctx.path)));
    }
    // Refuse early what confirm would refuse anyway, so clients do not upload
    // bytes for nothing.
    fs.resolve_target(&ctx.space, &ctx.path, conflict, may_overwrite)?;
    let confirm_key = random_hex();
    let up = PendingUpload {
        space: ctx.space.clone(),
        path: ctx.path.clone(),
        object_key: new_object_key(&ctx.state.config.library_id),
        conflict,
        may_overwrite,
        user_id: ctx.caller.operator.clone(),
        meta: request_meta(ctx.headers),
        created: ctx.now,
        expires: ctx.now + UPLOAD_TTL,
        upload_id: multipart.then(random_hex),
        confirmed: false,
    };
    let body = upload_target(ctx, &confirm_key, &up);
    fs.uploads.insert(confirm_key, up);
    drop(fs);
    ctx.record(op::BEGIN_UPLOAD, &ctx.path);
    Ok(json(StatusCode::CREATED, &body))
}

/// Looks up a pending upload by the confirm key in the path.
fn pending(fs: &Fs, ctx: &Ctx<'_>, missing: fn() -> ApiError) -> Result<PendingUpload, ApiError> {
    fs.uploads
        .get(&ctx.path)
        .filter(|u| u.space == ctx.space)
        .cloned()
        .ok_or_else(missing)
}

fn confirm_key_not_found() -> ApiError {
    ApiError::not_found(code::CONFIRM_KEY_NOT_FOUND, "confirm key not found")
}

fn upload_not_found() -> ApiError {
    ApiError::not_found(extra_code::UPLOAD_NOT_FOUND, "upload not found")
}

fn check_owner(ctx: &Ctx<'_>, up: &PendingUpload) -> Result<(), ApiError> {
    if up.user_id.is_empty() || up.user_id == ctx.caller.operator {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            extra_code::UPLOAD_NOT_BELONG_YOU,
            "the upload was started by another user",
        ))
    }
}

fn confirm(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::ConfirmUpload)?;
    let body = json_object(ctx.body)?;
    let mut fs = ctx.state.fs();
    let up = pending(&fs, ctx, confirm_key_not_found)?;
    if up.confirmed {
        return Err(ApiError::conflict(
            code::UPLOAD_COMPLETE,
            "upload already confirmed",
        ));
    }
    check_owner(ctx, &up)?;
    let obj = {
        let mut cos = ctx.state.cos();
        if let Some(id) = &up.upload_id {
            cos.complete_multipart(id, &up.object_key);
        }
        cos.objects.get(&up.object_key).cloned()
    };
    let obj = obj.ok_or_else(|| {
        ApiError::not_found(
            code::UPLOAD_INCOMPLETE,
            "the file bytes have not been uploaded",
        )
    })?;
    let crc = crc64(&obj.data);
    let claimed = body
        .as_ref()
        .and_then(|b| b.get("crc64"))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    if let Some(claimed) = claimed {
        if claimed.trim().parse::<u64>().ok() != Some(crc) {
            return Err(ApiError::bad_request(
                code::BAD_CRC64,
                format!("crc64 {claimed} does not match the uploaded bytes ({crc})"),
            ));
        }
    }
    let conflict = match ctx.query.get("conflict_resolution_strategy") {
        Some(v) if !v.is_empty() => Conflict::parse(Some(v), up.conflict)?,
        _ => up.conflict,
    };
    if !fs.is_dir(&ctx.space, parent_of(&up.path)) {
        return Err(Fs::missing_dir(parent_of(&up.path)));
    }
    let may_overwrite = up.may_overwrite || ctx.caller.may_overwrite(Perm::ConfirmUpload);
    let target = fs.resolve_target(&ctx.space, &up.path, conflict, may_overwrite)?;
    let guessed = guess_content_type(&target);
    let content_type = if guessed == "application/octet-stream" {
        obj.content_type.clone()
    } else {
        guessed.to_string()
    };
    let created = match fs.get(&ctx.space, &target) {
        Some(Node::File(old)) => old.created,
        _ => ctx.now,
    };
    let node = Node::File(FileMeta {
        created,
        modified: ctx.now,
        object_key: up.object_key.clone(),
        size: obj.data.len() as u64,
        crc64: crc,
        content_type,
        meta: up.meta.clone(),
    });
    let placed = fs.place(&ctx.space, &target, node.clone());
    if let Some(Node::File(old)) = &placed.overwritten {
        ctx.state.cos().objects.remove(&old.object_key);
    }
    if let Some(u) = fs.uploads.get_mut(&ctx.path) {
        u.confirmed = true;
    }
    drop(fs);
    ctx.record(op::CONFIRM_UPLOAD, &placed.path);
    let mut v = node.describe(&placed.path);
    v["isOverwritten"] = Value::Bool(placed.overwritten.is_some());
    Ok(json(StatusCode::OK, &v))
}

fn renew_upload(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::BeginUpload)?;
    let mut fs = ctx.state.fs();
    let mut up = pending(&fs, ctx, confirm_key_not_found)?;
    check_owner(ctx, &up)?;
    if up.confirmed {
        return Err(ApiError::conflict(
            code::UPLOAD_COMPLETE,
            "upload already confirmed",
        ));
    }
    if up.upload_id.is_none() {
        return Err(ApiError::bad_request(
            code::PARAM_INVALID,
            "only multipart uploads can be renewed",
        ));
    }
    up.expires = ctx.now + UPLOAD_TTL;
    let body = upload_target(ctx, &ctx.path, &up);
    fs.uploads.insert(ctx.path.clone(), up);
    Ok(json(StatusCode::OK, &body))
}

fn upload_status(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::BeginUpload)?;
    let fs = ctx.state.fs();
    let up = pending(&fs, ctx, upload_not_found)?;
    drop(fs);
    let parts: Vec<Value> = up
        .upload_id
        .as_ref()
        .and_then(|id| ctx.state.cos().parts.get(id).cloned())
        .unwrap_or_default()
        .iter()
        .map(|(n, b)| json!({ "partNumber": n, "size": b.len().to_string(), "eTag": format!("\"{:016x}\"", crc64(b)) }))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "confirmed": up.confirmed,
            "path": segments(&up.path),
            "type": if up.upload_id.is_some() { "multipart" } else { "simple" },
            "creationTime": rfc3339(up.created),
            "conflictResolutionStrategy": up.conflict.as_str(),
            "force": up.may_overwrite,
            "availableDomainNum": 1,
            "uploadId": up.upload_id,
            "parts": parts,
        }),
    ))
}

fn abort_upload(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::BeginUpload)?;
    let mut fs = ctx.state.fs();
    let up = pending(&fs, ctx, upload_not_found)?;
    check_owner(ctx, &up)?;
    if up.confirmed {
        return Err(ApiError::conflict(
            code::UPLOAD_COMPLETE,
            "upload already confirmed",
        ));
    }
    fs.uploads.remove(&ctx.path);
    let mut cos = ctx.state.cos();
    cos.objects.remove(&up.object_key);
    if let Some(id) = &up.upload_id {
        cos.parts.remove(id);
    }
    drop(cos);
    drop(fs);
    ctx.record(op::ABORT_UPLOAD, &up.path);
    Ok(no_content())
}

/// The file at `path`, following one symlink hop.
fn resolve_file(fs: &Fs, space: &str, path: &str) -> Result<FileMeta, ApiError> {
    match fs.get(space, path) {
        Some(Node::File(f)) => Ok(f),
        Some(Node::Symlink { target, .. }) => match fs.get(space, &target) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(Fs::missing_file(path)),
        },
        _ => Err(Fs::missing_file(path)),
    }
}

/// `x-smh-*` metadata headers for a file (smh-api.md 1.5).
fn smh_headers(f: &FileMeta) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &str, value: String| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            h.insert(n, v);
        }
    };
    put("x-smh-type", "file".into());
    put("x-smh-size", f.size.to_string());
    put("x-smh-etag", f.etag());
    put("x-smh-crc64", f.crc64.to_string());
    put("x-smh-content-type", f.content_type.clone());
    put("x-smh-creation-time", rfc3339(f.created));
    for (k, v) in &f.meta {
        put(&format!("{META_PREFIX}{k}"), v.clone());
    }
    h
}

fn signed_url(ctx: &Ctx<'_>, key: &str, ttl: u64) -> String {
    let expires = expires_after(ctx.now, Duration::from_secs(ttl));
    format!(
        "https://{}{COS_PREFIX}{key}?{}",
        domain(ctx),
        ctx.state.signer.download_query(key, expires)
    )
}

fn download(ctx: &Ctx<'_>) -> ApiResult {
    let f = resolve_file(&ctx.state.fs(), &ctx.space, &ctx.path)?;
    let headers = smh_headers(&f);
    if ctx.state.config.download_direct {
        let obj = ctx
            .state
            .cos()
            .objects
            .get(&f.object_key)
            .cloned()
            .ok_or_else(|| Fs::missing_file(&ctx.path))?;
        let range = ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
        return Ok(serve_bytes(
            obj.data,
            &f.content_type,
            range,
            false,
            headers,
        ));
    }
    let mut resp = Response::builder()
        .status(StatusCode::FOUND)
        .header(
            header::LOCATION,
            signed_url(ctx, &f.object_key, DOWNLOAD_LINK_TTL),
        )
        .body(empty())
        .expect("static response parts are valid");
    resp.headers_mut().extend(headers);
    Ok(resp)
}

fn info(ctx: &Ctx<'_>) -> ApiResult {
    let ttl = match ctx.query.non_empty("period") {
        None => DOWNLOAD_LINK_TTL,
        Some(p) => p
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(code::PARAM_INVALID, "period must be an integer"))?
            .clamp(DOWNLOAD_LINK_MIN, DOWNLOAD_LINK_MAX),
    };
    let fs = ctx.state.fs();
    let f = resolve_file(&fs, &ctx.space, &ctx.path)?;
    let node = fs
        .get(&ctx.space, &ctx.path)
        .ok_or_else(|| Fs::missing_file(&ctx.path))?;
    drop(fs);
    let mut v = node.describe(&ctx.path);
    if let Node::Symlink { .. } = node {
        // A link reports its target's content, as a download would serve it.
        v = Node::File(f.clone()).describe(&ctx.path);
        v["type"] = Value::String("symlink".into());
    }
    v["cosUrl"] = Value::String(signed_url(ctx, &f.object_key, ttl));
    Ok(json(StatusCode::OK, &v))
}

fn head(ctx: &Ctx<'_>) -> ApiResult {
    let f = resolve_file(&ctx.state.fs(), &ctx.space, &ctx.path)?;
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .body(empty())
        .expect("static response parts are valid");
    resp.headers_mut().extend(smh_headers(&f));
    Ok(resp)
}

fn delete(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::DeleteFile)?;
    let mut fs = ctx.state.fs();
    match fs.get(&ctx.space, &ctx.path) {
        Some(Node::File(_) | Node::Symlink { .. }) => {}
        _ => return Err(Fs::missing_file(&ctx.path)),
    }
    for node in fs.remove_tree(&ctx.space, &ctx.path) {
        if let Node::File(f) = node {
            ctx.state.cos().objects.remove(&f.object_key);
        }
    }
    drop(fs);
    ctx.record(op::DELETE_FILE, &ctx.path);
    Ok(no_content())
}

/// Flag-less PUT with `{from}` or `{copyFrom}`; parents are NOT created.
fn move_or_copy(ctx: &Ctx<'_>, from: &str, copy: bool) -> ApiResult {
    let perm = if copy { Perm::CopyFile } else { Perm::MoveFile };
    ctx.caller.require(perm)?;
    let from = fs::normalize(from)?;
    if ctx.path.is_empty() {
        return Err(ApiError::bad_request(
            code::EMPTY_FILE_NAME,
            "a target path is required",
        ));
    }
    check_name_lengths(&ctx.path, true)?;
    let conflict = Conflict::parse(ctx.query.get("conflict_resolution_strategy"), Conflict::Ask)?;
    let mut fs = ctx.state.fs();
    match fs.get(&ctx.space, &from) {
        Some(Node::File(_) | Node::Symlink { .. }) => {}
        Some(Node::Dir { .. }) => {
            return Err(ApiError::bad_request(
                extra_code::INVALID_SOURCE_FILE,
                format!("source {from:?} is a directory"),
            ))
        }
        None => {
            return Err(ApiError::not_found(
                code::SOURCE_FILE_NOT_FOUND,
                format!("source file {from:?} not found"),
            ))
        }
    }
    if !fs.is_dir(&ctx.space, parent_of(&ctx.path)) {
        return Err(Fs::missing_dir(parent_of(&ctx.path)));
    }
    if ctx.path == from {
        return Err(fs::same_name_exists(&ctx.path));
    }
    let target = fs.resolve_target(
        &ctx.space,
        &ctx.path,
        conflict,
        ctx.caller.may_overwrite(perm),
    )?;
    let mut cos = ctx.state.cos();
    for node in fs.remove_tree(&ctx.space, &target) {
        if let Node::File(f) = node {
            cos.objects.remove(&f.object_key);
        }
    }
    if copy {
        let lib = ctx.state.config.library_id.clone();
        fs.copy_tree(&ctx.space, &from, &target, ctx.now, |old| {
            let new = new_object_key(&lib);
            if let Some(obj) = cos.objects.get(old).cloned() {
                cos.objects.insert(new.clone(), obj);
            }
            new
        });
    } else {
        fs.move_tree(&ctx.space, &from, &target, ctx.now);
    }
    drop(cos);
    drop(fs);
    ctx.record(if copy { op::COPY_FILE } else { op::MOVE_FILE }, &target);
    Ok(json(StatusCode::OK, &json!({ "path": segments(&target) })))
}

fn symlink(ctx: &Ctx<'_>, to: &str) -> ApiResult {
    ctx.caller.require(Perm::Symlink)?;
    let to = fs::normalize(to)?;
    if ctx.path.is_empty() {
        return Err(ApiError::bad_request(
            code::EMPTY_FILE_NAME,
            "a link path is required",
        ));
    }
    check_name_lengths(&ctx.path, true)?;
    let conflict = Conflict::parse(ctx.query.get("conflict_resolution_strategy"), Conflict::Ask)?;
    let mut fs = ctx.state.fs();
    if !matches!(fs.get(&ctx.space, &to), Some(Node::File(_))) {
        return Err(ApiError::not_found(
            code::SOURCE_FILE_NOT_FOUND,
            format!("link target {to:?} is not a file"),
        ));
    }
    if !fs.is_dir(&ctx.space, parent_of(&ctx.path)) {
        return Err(Fs::missing_dir(parent_of(&ctx.path)));
    }
    let target = fs.resolve_target(
        &ctx.space,
        &ctx.path,
        conflict,
        ctx.caller.may_overwrite(Perm::Symlink),
    )?;
    let placed = fs.place(
        &ctx.space,
        &target,
        Node::Symlink {
            created: ctx.now,
            target: to,
        },
    );
    if let Some(Node::File(old)) = placed.overwritten {
        ctx.state.cos().objects.remove(&old.object_key);
    }
    drop(fs);
    ctx.record(op::CREATE_SYMLINK, &target);
    Ok(json(StatusCode::OK, &json!({ "path": segments(&target) })))
}
