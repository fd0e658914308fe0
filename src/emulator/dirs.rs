//! `/api/v1/directory/{Lib}/{Space}/{Path}`: create, move, copy, list,
//! info, status and delete (smh-api.md 5.3).

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::empty;
use crate::smh::wire::code;

use super::api::{json, no_content, Ctx};
use super::cos::new_object_key;
use super::fs::{self, check_name_lengths, parent_of, segments, Conflict, Fs, Node};
use super::op;
use super::proto::{extra_code, json_object, json_str, rfc3339, ApiError, ApiResult};
use super::tokens::Perm;

/// Listing page size when `limit` is absent (smh-api.md 5.3).
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Largest listing page SMH serves.
pub const MAX_LIST_LIMIT: usize = 1000;

pub fn handle(ctx: &Ctx<'_>) -> ApiResult {
    match *ctx.method {
        Method::PUT => {
            let body = json_object(ctx.body)?;
            if let Some(from) = json_str(&body, "from") {
                move_or_copy(ctx, from, false)
            } else if let Some(from) = json_str(&body, "copyFrom") {
                move_or_copy(ctx, from, true)
            } else {
                create(ctx)
            }
        }
        Method::GET if ctx.query.flag("info") => info(ctx),
        Method::GET if ctx.query.flag("by-page") => list_by_page(ctx),
        Method::GET => list_by_marker(ctx),
        Method::HEAD => head(ctx),
        Method::DELETE => delete(ctx),
        _ => Err(ApiError::route_not_found()),
    }
}

fn root_refused(what: &str) -> ApiError {
    ApiError::bad_request(
        code::EMPTY_PATH,
        format!("cannot {what} the root directory"),
    )
}

fn create(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::CreateDirectory)?;
    if ctx.path.is_empty() {
        return Err(root_refused("create"));
    }
    check_name_lengths(&ctx.path, false)?;
    let conflict = Conflict::parse(ctx.query.get("conflict_resolution_strategy"), Conflict::Ask)?;
    let mut fs = ctx.state.fs();
    let target = match (fs.get(&ctx.space, &ctx.path), conflict) {
        (None, _) => ctx.path.clone(),
        (Some(_), Conflict::Rename) => fs.free_name(&ctx.space, &ctx.path),
        // Overwriting a directory with a directory leaves it as it is.
        (Some(Node::Dir { .. }), Conflict::Overwrite) => ctx.path.clone(),
        (Some(_), _) => return Err(fs::same_name_exists(&ctx.path)),
    };
    fs.mkdir_p(&ctx.space, &target, ctx.now)?;
    let created = match fs.get(&ctx.space, &target) {
        Some(Node::Dir { created, .. }) => created,
        _ => ctx.now,
    };
    drop(fs);
    ctx.record(op::CREATE_DIRECTORY, &target);
    Ok(json(
        StatusCode::CREATED,
        &json!({ "path": segments(&target), "creationTime": rfc3339(created) }),
    ))
}

/// Flag-less PUT with `{from}` (move, parents auto-created) or `{copyFrom}`.
fn move_or_copy(ctx: &Ctx<'_>, from: &str, copy: bool) -> ApiResult {
    ctx.caller.require(if copy {
        Perm::CopyDirectory
    } else {
        Perm::MoveDirectory
    })?;
    let from = fs::normalize(from)?;
    if ctx.path.is_empty() {
        return Err(root_refused("replace"));
    }
    if from.is_empty() {
        return Err(ApiError::bad_request(
            extra_code::INVALID_SOURCE_DIRECTORY,
            "the root directory cannot be moved or copied",
        ));
    }
    check_name_lengths(&ctx.path, false)?;
    let conflict = Conflict::parse(ctx.query.get("conflict_resolution_strategy"), Conflict::Ask)?;
    let mut fs = ctx.state.fs();
    match fs.get(&ctx.space, &from) {
        None => {
            return Err(ApiError::not_found(
                code::SOURCE_DIRECTORY_NOT_FOUND,
                format!("source directory {from:?} not found"),
            ))
        }
        Some(n) if !n.is_dir() => {
            return Err(ApiError::bad_request(
                extra_code::INVALID_SOURCE_DIRECTORY,
                format!("source {from:?} is not a directory"),
            ))
        }
        Some(_) => {}
    }
    if ctx.path == from || ctx.path.starts_with(&format!("{from}/")) {
        return Err(ApiError::bad_request(
            extra_code::INVALID_DESTINATION_PATH,
            "a directory cannot be moved or copied into itself",
        ));
    }
    // Directories are never overwritten, whatever the strategy.
    let target = fs.resolve_target(&ctx.space, &ctx.path, conflict, false)?;
    fs.mkdir_p(&ctx.space, parent_of(&target), ctx.now)?;
    if copy {
        let lib = ctx.state.config.library_id.clone();
        let mut pairs = Vec::new();
        fs.copy_tree(&ctx.space, &from, &target, ctx.now, |old| {
            let new = new_object_key(&lib);
            pairs.push((old.to_string(), new.clone()));
            new
        });
        let mut cos = ctx.state.cos();
        for (old, new) in pairs {
            if let Some(obj) = cos.objects.get(&old).cloned() {
                cos.objects.insert(new, obj);
            }
        }
    } else {
        fs.move_tree(&ctx.space, &from, &target, ctx.now);
    }
    drop(fs);
    ctx.record(
        if copy {
            op::COPY_DIRECTORY
        } else {
            op::MOVE_DIRECTORY
        },
        &target,
    );
    Ok(json(StatusCode::OK, &json!({ "path": segments(&target) })))
}

fn info(ctx: &Ctx<'_>) -> ApiResult {
    let fs = ctx.state.fs();
    let node = fs
        .get(&ctx.space, &ctx.path)
        .ok_or_else(|| Fs::missing_dir(&ctx.path))?;
    Ok(json(StatusCode::OK, &node.describe(&ctx.path)))
}

fn head(ctx: &Ctx<'_>) -> ApiResult {
    let fs = ctx.state.fs();
    match fs.get(&ctx.space, &ctx.path) {
        Some(Node::Dir { created, .. }) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header("x-smh-type", "dir")
            .header("x-smh-creation-time", rfc3339(created))
            .body(empty())
            .expect("static response parts are valid")),
        _ => Err(Fs::missing_dir(&ctx.path)),
    }
}

fn parse_usize(ctx: &Ctx<'_>, name: &str, default: usize) -> Result<usize, ApiError> {
    match ctx.query.non_empty(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(code::PARAM_INVALID, format!("{name} {v:?} is not a number"))
        }),
    }
}

/// Children after `filter` and `order_by_type`, each as SMH lists it.
fn listed_children(ctx: &Ctx<'_>) -> Result<Vec<Value>, ApiError> {
    let fs = ctx.state.fs();
    if !fs.is_dir(&ctx.space, &ctx.path) {
        return Err(Fs::missing_dir(&ctx.path));
    }
    let filter = ctx.query.get("filter").unwrap_or("");
    let prefix = ctx.query.get("prefix").unwrap_or("");
    let mut items: Vec<Value> = fs
        .children(&ctx.space, &ctx.path)
        .into_iter()
        .filter(|(_, n)| match filter {
            "onlyDir" => n.is_dir(),
            "onlyFile" => !n.is_dir(),
            _ => true,
        })
        .filter(|(p, _)| fs::name_of(p).starts_with(prefix))
        .map(|(p, n)| {
            let mut v = n.describe(&p);
            if let Some(obj) = v.as_object_mut() {
                obj.remove("path");
            }
            v
        })
        .collect();
    if ctx.query.get("order_by_type") == Some("desc") {
        items.reverse();
    }
    Ok(items)
}

fn list_by_marker(ctx: &Ctx<'_>) -> ApiResult {
    let limit = parse_usize(ctx, "limit", DEFAULT_LIST_LIMIT)?.clamp(1, MAX_LIST_LIMIT);
    let marker = parse_usize(ctx, "marker", 0).map_err(|_| {
        ApiError::not_found(
            code::MARKER_NOT_FOUND,
            "marker is not one this server issued",
        )
    })?;
    let items = listed_children(ctx)?;
    if marker > items.len() {
        return Err(ApiError::not_found(
            code::MARKER_NOT_FOUND,
            "marker is past the end",
        ));
    }
    let end = (marker + limit).min(items.len());
    let mut body = json!({
        "path": segments(&ctx.path),
        "contents": items[marker..end],
    });
    if end < items.len() {
        body["nextMarker"] = Value::String(end.to_string());
    }
    Ok(json(StatusCode::OK, &body))
}

fn list_by_page(ctx: &Ctx<'_>) -> ApiResult {
    let page = parse_usize(ctx, "page", 1)?.max(1);
    let size = parse_usize(ctx, "page_size", DEFAULT_LIST_LIMIT)?.clamp(1, MAX_LIST_LIMIT);
    let items = listed_children(ctx)?;
    let start = ((page - 1) * size).min(items.len());
    let end = (start + size).min(items.len());
    Ok(json(
        StatusCode::OK,
        &json!({
            "path": segments(&ctx.path),
            "totalNum": items.len(),
            "contents": items[start..end],
        }),
    ))
}

fn delete(ctx: &Ctx<'_>) -> ApiResult {
    ctx.caller.require(Perm::DeleteDirectory)?;
    if ctx.path.is_empty() {
        return Err(root_refused("delete"));
    }
    let mut fs = ctx.state.fs();
    if !fs.is_dir(&ctx.space, &ctx.path) {
        return Err(Fs::missing_dir(&ctx.path));
    }
    let removed = fs.remove_tree(&ctx.space, &ctx.path);
    let mut cos = ctx.state.cos();
    for node in removed {
        if let Node::File(f) = node {
            cos.objects.remove(&f.object_key);
        }
    }
    drop(cos);
    drop(fs);
    ctx.record(op::DELETE_DIRECTORY, &ctx.path);
    Ok(no_content())
}
