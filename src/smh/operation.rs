//! The SMH operation a request performs, judged once: from the method, the
//! one operation flag in the query ([`crate::gateway::query`]) and — for a
//! flag-less `PUT` on a file or directory — the JSON body, because SMH
//! overloads that call (smh-api.md 5.3, 5.4). The name judged here is the
//! one the policy allow-list matches and the audit record names.
//!
//! Where SMH's choice is not certain from what the gateway can see, the
//! request is refused: a flag on a call whose operation SMH takes from the
//! body, a body naming two operations, a batch without exactly one flag,
//! a body too large to read.

use http::Method;

use crate::error::GatewayError;

/// Flags SMH documents on `PUT file` (smh-api.md 5.4: `?convert`,
/// `?virtual_file`) and `PUT directory` (5.3: `?calibrate`). Any other
/// flag there would leave SMH to pick the operation from the body while
/// the gateway judged the flag.
const PUT_FILE_FLAGS: &[&str] = &["convert", "virtual_file"];
const PUT_DIRECTORY_FLAGS: &[&str] = &["calibrate"];
/// A batch is exactly one of these (smh-api.md 5.5).
const BATCH_FLAGS: &[&str] = &["copy", "move", "delete"];

/// Body members that turn a flag-less PUT into another operation.
const BODY_KINDS: &[(&str, &str)] = &[
    ("from", "move"),
    ("copyfrom", "copy"),
    ("linkto", "symlink"),
];
/// Batch item members naming the space an item is taken from.
const BATCH_SOURCE_SPACE_KEYS: &[&str] = &["copyfromspaceid", "fromspaceid"];

/// The judged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// `info`, `confirm`, `download`, `move`, ...; the audit prefixes the
    /// resource.
    pub name: &'static str,
    /// Other spaces the body names as sources (batch `copyFromSpaceId`,
    /// `fromSpaceId`): the policy must allow each of them too.
    pub source_spaces: Vec<String>,
}

/// Judges the operation. `body` is the whole request body when the gateway
/// kept it, `None` when it was too large and streams.
pub fn judge(
    method: &Method,
    resource: &str,
    flag: Option<&'static str>,
    body: Option<&[u8]>,
) -> Result<Judged, GatewayError> {
    let simple = |name| {
        Ok(Judged {
            name,
            source_spaces: Vec::new(),
        })
    };
    match (method.as_str(), resource, flag) {
        ("PUT", "file" | "directory", Some(f)) => {
            let allowed = if resource == "file" {
                PUT_FILE_FLAGS
            } else {
                PUT_DIRECTORY_FLAGS
            };
            if allowed.contains(&f) {
                simple(f)
            } else {
                Err(GatewayError::BadRequest(format!(
                    "?{f} is not an operation of PUT {resource}: SMH chooses this call's operation from the body"
                )))
            }
        }
        ("PUT", "file" | "directory", None) => {
            let default = if resource == "file" {
                "upload"
            } else {
                "create"
            };
            let body = body.ok_or(GatewayError::BodyTooLarge)?;
            simple(put_body_kind(body)?.unwrap_or(default))
        }
        ("POST", "batch", Some(f)) if BATCH_FLAGS.contains(&f) => {
            let source_spaces = if f == "delete" {
                Vec::new()
            } else {
                batch_source_spaces(body.ok_or(GatewayError::BodyTooLarge)?)?
            };
            Ok(Judged {
                name: f,
                source_spaces,
            })
        }
        ("POST", "batch", _) => Err(GatewayError::BadRequest(
            "a batch names exactly one of ?copy, ?move, ?delete".into(),
        )),
        (_, _, Some(f)) => simple(f),
        (m, r, None) => simple(match (m, r) {
            ("GET", "file") => "download",
            ("GET", "directory") => "list",
            ("GET", _) => "get",
            ("HEAD", _) => "head",
            ("DELETE", _) => "delete",
            ("POST", _) => "post",
            ("PUT", _) => "put",
            ("OPTIONS", _) => "options",
            _ => "other",
        }),
    }
}

fn json_object(
    body: &[u8],
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(o)) => Ok(Some(o)),
        _ => Err(GatewayError::BadRequest(
            "the body of this call must be a JSON object".into(),
        )),
    }
}

/// What a flag-less PUT body asks for; `None` for the plain call (upload,
/// create). Member names are compared without case, so `From` cannot slip
/// past as "no operation" if SMH's parser folds case.
pub fn put_body_kind(body: &[u8]) -> Result<Option<&'static str>, GatewayError> {
    let Some(o) = json_object(body)? else {
        return Ok(None);
    };
    let mut kind = None;
    for key in o.keys() {
        let key = key.to_ascii_lowercase();
        if let Some((_, k)) = BODY_KINDS.iter().find(|(m, _)| *m == key) {
            match kind {
                Some(prev) if prev != *k => {
                    return Err(GatewayError::BadRequest(format!(
                        "the body names two operations ({prev} and {k}); send one"
                    )))
                }
                _ => kind = Some(*k),
            }
        }
    }
    Ok(kind)
}

/// The source spaces a batch copy/move body names besides the route's.
fn batch_source_spaces(body: &[u8]) -> Result<Vec<String>, GatewayError> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|_| {
        GatewayError::BadRequest("a batch body must be a JSON array of objects".into())
    })?;
    let mut spaces: Vec<String> = Vec::new();
    for item in &items {
        let o = item.as_object().ok_or_else(|| {
            GatewayError::BadRequest("a batch body must be a JSON array of objects".into())
        })?;
        for (k, v) in o {
            if BATCH_SOURCE_SPACE_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                let s = v.as_str().ok_or_else(|| {
                    GatewayError::BadRequest(format!("batch item {k} must be a SpaceId string"))
                })?;
                if !spaces.iter().any(|x| x == s) {
                    spaces.push(s.to_string());
                }
            }
        }
    }
    Ok(spaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(m: Method, r: &str, f: Option<&'static str>, body: Option<&[u8]>) -> &'static str {
        judge(&m, r, f, body).unwrap().name
    }

    #[test]
    fn names_follow_flags_methods_and_put_bodies() {
        assert_eq!(name(Method::GET, "file", Some("info"), None), "info");
        assert_eq!(name(Method::POST, "file", Some("confirm"), None), "confirm");
        assert_eq!(name(Method::GET, "file", None, None), "download");
        assert_eq!(name(Method::GET, "directory", None, None), "list");
        assert_eq!(name(Method::PUT, "file", None, Some(b"")), "upload");
        assert_eq!(
            name(Method::PUT, "file", None, Some(br#"{"size":"5"}"#)),
            "upload"
        );
        assert_eq!(
            name(Method::PUT, "file", None, Some(br#"{"from":"a"}"#)),
            "move"
        );
        assert_eq!(
            name(Method::PUT, "file", None, Some(br#"{"From":"a"}"#)),
            "move"
        );
        assert_eq!(
            name(Method::PUT, "file", None, Some(br#"{"copyFrom":"a"}"#)),
            "copy"
        );
        assert_eq!(
            name(Method::PUT, "file", None, Some(br#"{"linkTo":"a"}"#)),
            "symlink"
        );
        assert_eq!(name(Method::PUT, "directory", None, Some(b"")), "create");
        assert_eq!(
            name(Method::PUT, "directory", Some("calibrate"), None),
            "calibrate"
        );
        assert_eq!(name(Method::PUT, "file", Some("convert"), None), "convert");
        assert_eq!(name(Method::DELETE, "directory", None, None), "delete");
        assert_eq!(name(Method::POST, "batch", Some("delete"), None), "delete");
    }

    #[test]
    fn what_smh_could_read_differently_is_refused() {
        let bad = |m: Method, r: &str, f: Option<&'static str>, b: Option<&[u8]>| {
            judge(&m, r, f, b).is_err()
        };
        assert!(bad(
            Method::PUT,
            "file",
            Some("move"),
            Some(br#"{"copyFrom":"a"}"#)
        ));
        assert!(bad(Method::PUT, "file", Some("confirm"), Some(b"")));
        assert!(bad(Method::PUT, "directory", Some("copy"), Some(b"")));
        assert!(bad(
            Method::PUT,
            "file",
            None,
            Some(br#"{"from":"a","copyFrom":"b"}"#)
        ));
        assert!(bad(
            Method::PUT,
            "file",
            None,
            Some(br#"{"from":"a","LINKTO":"b"}"#)
        ));
        assert!(bad(Method::PUT, "file", None, Some(b"not json")));
        assert!(bad(Method::PUT, "file", None, Some(b"[1]")));
        assert!(
            bad(Method::PUT, "file", None, None),
            "a streamed body cannot be judged"
        );
        assert!(bad(Method::POST, "batch", None, Some(b"[]")));
        assert!(bad(Method::POST, "batch", Some("info"), Some(b"[]")));
        assert!(bad(Method::POST, "batch", Some("move"), None));
        assert!(bad(Method::POST, "batch", Some("copy"), Some(b"{}")));
    }

    #[test]
    fn batch_bodies_name_their_source_spaces() {
        let j = judge(
            &Method::POST,
            "batch",
            Some("copy"),
            Some(br#"[{"copyFrom":"a","to":"b","copyFromSpaceId":"bob"},{"copyFrom":"c","to":"d"},{"from":"x","FromSpaceId":"eve"}]"#),
        )
        .unwrap();
        assert_eq!(j.source_spaces, ["bob", "eve"]);
    }
}
