//! Names the SMH operation a request performs, for the audit trail:
//! `<resource>.<operation>`, from the method, the flag in the query, and —
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

/// `body` is the request body when the gateway kept it (small bodies);
/// `None` when it streamed.
pub fn name(method: &Method, resource: &str, query: Option<&str>, body: Option<&[u8]>) -> String {
    if let Some(flag) = FLAGS.iter().find(|f| crate::policy::has_flag(query, f)) {
        return format!("{resource}.{flag}");
    }
    let op = match (method.as_str(), resource) {
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
    };
    format!("{resource}.{op}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_flags_methods_and_put_bodies() {
        assert_eq!(name(&Method::GET, "file", Some("info"), None), "file.info");
        assert_eq!(
            name(&Method::POST, "file", Some("confirm=1"), None),
            "file.confirm"
        );
        assert_eq!(
            name(&Method::GET, "directory", Some("by-marker&limit=5"), None),
            "directory.by-marker"
        );
        assert_eq!(name(&Method::GET, "file", None, None), "file.download");
        assert_eq!(name(&Method::PUT, "file", None, Some(b"")), "file.upload");
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"from":"a"}"#)),
            "file.move"
        );
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"copyFrom":"a"}"#)),
            "file.copy"
        );
        assert_eq!(
            name(&Method::PUT, "file", None, Some(br#"{"linkTo":"a"}"#)),
            "file.symlink"
        );
        assert_eq!(
            name(&Method::PUT, "directory", None, None),
            "directory.create"
        );
        assert_eq!(
            name(&Method::DELETE, "directory", Some("permanent=1"), None),
            "directory.delete"
        );
    }
}
