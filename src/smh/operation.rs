//! Names the SMH operation a request performs, for the audit trail
//! (`<resource>.<operation>`), from the method, the flag in the query, and —
//! for a flag-less `PUT` on a file or directory — the JSON body, because
//! SMH overloads that one call (smh-api.md 5.3, 5.4).

use http::Method;

/// Flags that select an operation (smh-api.md 1.3), in the order checked.
const FLAGS: &[&str] = &[
    "multipart",
    "confirm",
    "upload",
    "renew",
    "info",
    "preview",
    "copy",
    "move",
    "delete",
    "restore",
    "update",
    "lifecycle",
    "by-marker",
    "by-page",
    "stats",
    "calibrate",
    "convert",
    "uncompress",
    "virtual_file",
    "zip-preview",
    "transcode",
    "live_transcode",
    "search",
];

/// What a flag-less PUT body asks for.
pub fn put_body_kind(body: &[u8]) -> Option<&'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    if o.contains_key("from") {
        Some("move")
    } else if o.contains_key("copyFrom") {
        Some("copy")
    } else if o.contains_key("linkTo") {
        Some("symlink")
    } else {
        None
    }
}

/// The operation part of the name (`info`, `list`, `upload`, ...); the audit
/// record prefixes the resource. `body` is the request body when the
/// gateway kept it (small bodies); `None` when it streamed.
///
/// One pass over the query: every pair that is a flag (bare, empty or `=1`,
/// as SMH reads them) is looked up in [`FLAGS`], and the earliest listed
/// flag wins, whatever order the client wrote them in.
pub fn name(
    method: &Method,
    resource: &str,
    query: Option<&str>,
    body: Option<&[u8]>,
) -> &'static str {
    let flag = query.and_then(|q| {
        q.split('&')
            .filter_map(|pair| match pair.split_once('=') {
                None => Some(pair),
                Some((k, "" | "1")) => Some(k),
                Some(_) => None,
            })
            .filter_map(|k| FLAGS.iter().position(|f| *f == k))
            .min()
    });
    if let Some(i) = flag {
        return FLAGS[i];
    }
    match (method.as_str(), resource) {
        ("GET", "file") => "download",
        ("GET", "directory") => "list",
        ("GET", _) => "get",
        ("HEAD", _) => "head",
        ("DELETE", _) => "delete",
        ("POST", _) => "post",
        ("PUT", "file") => body.and_then(put_body_kind).unwrap_or("upload"),
        ("PUT", "directory") => body.and_then(put_body_kind).unwrap_or("create"),
        ("PUT", _) => "put",
        ("OPTIONS", _) => "options",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_listed_flag_wins_in_any_order() {
        assert_eq!(
            name(&Method::POST, "file", Some("upload&multipart"), None),
            "multipart"
        );
        assert_eq!(
            name(&Method::GET, "file", Some("x=info&info=2&preview="), None),
            "preview"
        );
        assert_eq!(
            name(&Method::GET, "file", Some("limit=5"), None),
            "download"
        );
    }

    #[test]
    fn names_follow_flags_methods_and_put_bodies() {
        assert_eq!(name(&Method::GET, "file", Some("info"), None), "info");
        assert_eq!(
            name(&Method::POST, "file", Some("confirm=1"), None),
            "confirm"
        );
        assert_eq!(
            name(&Method::GET, "directory", Some("by-marker&limit=5"), None),
            "by-marker"
        );
        assert_eq!(name(&Method::GET, "file", None, None), "download");
        assert_eq!(name(&Method::PUT, "file", None, Some(b"")), "upload");
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"from":"a"}"#)),
            "move"
        );
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"copyFrom":"a"}"#)),
            "copy"
        );
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"linkTo":"a"}"#)),
            "symlink"
        );
        assert_eq!(name(&Method::PUT, "directory", None, None), "create");
        assert_eq!(
            name(&Method::DELETE, "directory", Some("permanent=1"), None),
            "delete"
        );
    }
}
