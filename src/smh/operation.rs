//! The SMH operation a request performs, judged once: from the method, the
//! one operation flag in the query (the gateway's query stage) and — for a
//! flag-less `PUT` on a file or directory — the JSON body, because SMH
//! overloads that call (smh-api.md 5.3, 5.4). The name judged here is the
//! one the policy allow-list matches and the audit record names.
//!
//! Where SMH's choice is not certain from what the gateway can see, the
//! request is refused: a flag on a call whose operation SMH takes from the
//! body, a body naming two operations, a batch without exactly one flag,
//! a body too large to read.

use http::Method;

/// Why a request names no single operation SMH would perform; the
/// gateway answers it (400, or 413 for a body too large to judge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationError {
    BadRequest(String),
    BodyTooLarge(String),
}

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
/// Body members ending in this (case aside) name a space the call reads
/// from or writes to besides the route's: batch `copyFromSpaceId` and
/// `fromSpaceId` (smh-api.md 5.5), `targetSpaceId` of `?uncompress`.
const SPACE_MEMBER_SUFFIX: &str = "spaceid";
/// Flags whose body may name another space; the body must be read.
const CROSS_SPACE_FLAGS: &[&str] = &["uncompress"];

/// The judged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// `info`, `confirm`, `download`, `move`, ...; the audit prefixes the
    /// resource.
    pub name: &'static str,
    /// Other spaces the body names (`copyFromSpaceId`, `fromSpaceId`,
    /// `targetSpaceId`, ...): the policy must allow each of them too.
    pub source_spaces: Vec<String>,
}

/// The request body as the judge sees it.
#[derive(Debug, Clone, Copy)]
pub struct BodyView<'a> {
    /// The whole body when the gateway kept it, `None` when it streams.
    pub bytes: Option<&'a [u8]>,
    /// `Content-Type` is absent or JSON, and there is no `Content-Encoding`:
    /// the bytes mean to SMH what they mean to a JSON parser.
    pub plain_json: bool,
}

/// Judges the operation.
pub fn judge(
    method: &Method,
    resource: &str,
    flag: Option<&'static str>,
    body: BodyView<'_>,
) -> Result<Judged, OperationError> {
    // Parsed once; everything below reads this value.
    let json = body.bytes.map(Json::parse).unwrap_or(Json::Empty);
    let name = match (method.as_str(), resource, flag) {
        ("PUT", "file" | "directory", Some(f)) => {
            let allowed = if resource == "file" {
                PUT_FILE_FLAGS
            } else {
                PUT_DIRECTORY_FLAGS
            };
            if !allowed.contains(&f) {
                return Err(OperationError::BadRequest(format!(
                    "?{f} is not an operation of PUT {resource}: SMH chooses this call's operation from the body"
                )));
            }
            f
        }
        ("PUT", "file" | "directory", None) => {
            let default = if resource == "file" {
                "upload"
            } else {
                "create"
            };
            judged_body(body)?;
            put_body_kind(&json)?.unwrap_or(default)
        }
        ("POST", "batch", Some(f)) if BATCH_FLAGS.contains(&f) => {
            if f != "delete" {
                judged_body(body)?;
                if !matches!(json, Json::Value(serde_json::Value::Array(_))) {
                    return Err(OperationError::BadRequest(
                        "a batch body must be a JSON array of items".into(),
                    ));
                }
            }
            f
        }
        ("POST", "batch", _) => {
            return Err(OperationError::BadRequest(
                "a batch names exactly one of ?copy, ?move, ?delete".into(),
            ))
        }
        (_, _, Some(f)) => {
            if CROSS_SPACE_FLAGS.contains(&f) {
                judged_body(body)?;
            }
            f
        }
        (m, r, None) => match (m, r) {
            ("GET", "file") => "download",
            ("GET", "directory") => "list",
            ("GET", _) => "get",
            ("HEAD", _) => "head",
            ("DELETE", _) => "delete",
            ("POST", _) => "post",
            ("PUT", _) => "put",
            _ => "other",
        },
    };
    Ok(Judged {
        name,
        source_spaces: named_spaces(&json)?,
    })
}

/// A kept body, read as JSON once.
enum Json {
    /// No bytes, or only whitespace.
    Empty,
    Value(serde_json::Value),
    /// Bytes that are not one JSON value.
    Other,
}

impl Json {
    fn parse(bytes: &[u8]) -> Self {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Self::Empty;
        }
        serde_json::from_slice(bytes).map_or(Self::Other, Self::Value)
    }
}

/// A body the operation depends on: it must have been kept whole, and be
/// plain JSON (or empty).
fn judged_body(body: BodyView<'_>) -> Result<(), OperationError> {
    let bytes = body.bytes.ok_or_else(|| {
        OperationError::BodyTooLarge(
            "a body that decides the operation must fit in limits.replay_body_limit_bytes".into(),
        )
    })?;
    if !body.plain_json && !bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(OperationError::BadRequest(
            "this call's body decides what SMH does, so it must be unencoded JSON (Content-Type: application/json)".into(),
        ));
    }
    Ok(())
}

/// What a flag-less PUT body asks for; `None` for the plain call (upload,
/// create). Member names are compared without ASCII case, and non-ASCII
/// names are refused ([`named_spaces`]), so `From` or `linK` (Kelvin sign)
/// cannot pass as "no operation" if SMH's parser folds case.
fn put_body_kind(json: &Json) -> Result<Option<&'static str>, OperationError> {
    let o = match json {
        Json::Empty => return Ok(None),
        Json::Value(serde_json::Value::Object(o)) => o,
        _ => {
            return Err(OperationError::BadRequest(
                "the body of this call must be a JSON object".into(),
            ))
        }
    };
    let mut kind = None;
    for key in o.keys() {
        let key = key.to_ascii_lowercase();
        if let Some((_, k)) = BODY_KINDS.iter().find(|(m, _)| *m == key) {
            match kind {
                Some(prev) if prev != *k => {
                    return Err(OperationError::BadRequest(format!(
                        "the body names two operations ({prev} and {k}); send one"
                    )))
                }
                _ => kind = Some(*k),
            }
        }
    }
    Ok(kind)
}

/// The spaces a JSON body names in `...SpaceId` members, at the top level
/// or in the items of a top-level array (where SMH's operation fields
/// are). Those levels' member names must be ASCII: a case-folding parser
/// (Go's `encoding/json` folds U+212A to `k`, U+017F to `s`) could read a
/// non-ASCII name as one of SMH's. Bodies that are not JSON name nothing;
/// where the body decides the operation, [`judged_body`] refused them.
fn named_spaces(json: &Json) -> Result<Vec<String>, OperationError> {
    let objects: Vec<&serde_json::Map<String, serde_json::Value>> = match json {
        Json::Value(serde_json::Value::Object(o)) => vec![o],
        Json::Value(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|v| v.as_object()).collect()
        }
        _ => return Ok(Vec::new()),
    };
    let mut spaces: Vec<String> = Vec::new();
    for o in objects {
        for (k, v) in o {
            if !k.is_ascii() {
                return Err(OperationError::BadRequest(format!(
                    "body member {k:?}: member names must be ASCII"
                )));
            }
            if !k.to_ascii_lowercase().ends_with(SPACE_MEMBER_SUFFIX) {
                continue;
            }
            let s = match v {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(OperationError::BadRequest(format!(
                        "body member {k} must be a SpaceId string"
                    )))
                }
            };
            if !crate::smh::is_space_id(s) {
                return Err(OperationError::BadRequest(format!(
                    "body member {k}: {s:?} is not a SpaceId"
                )));
            }
            if !spaces.iter().any(|x| x == s) {
                spaces.push(s.to_string());
            }
        }
    }
    Ok(spaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> BodyView<'_> {
        BodyView {
            bytes: Some(b),
            plain_json: true,
        }
    }

    const STREAMED: BodyView<'static> = BodyView {
        bytes: None,
        plain_json: true,
    };

    fn name(m: Method, r: &str, f: Option<&'static str>, body: &[u8]) -> &'static str {
        judge(&m, r, f, json(body)).unwrap().name
    }

    #[test]
    fn names_follow_flags_methods_and_put_bodies() {
        assert_eq!(name(Method::GET, "file", Some("info"), b""), "info");
        assert_eq!(name(Method::POST, "file", Some("confirm"), b""), "confirm");
        assert_eq!(name(Method::GET, "file", None, b""), "download");
        assert_eq!(name(Method::GET, "directory", None, b""), "list");
        assert_eq!(name(Method::PUT, "file", None, b""), "upload");
        assert_eq!(
            name(Method::PUT, "file", None, br#"{"size":"5"}"#),
            "upload"
        );
        assert_eq!(name(Method::PUT, "file", None, br#"{"from":"a"}"#), "move");
        assert_eq!(name(Method::PUT, "file", None, br#"{"From":"a"}"#), "move");
        assert_eq!(
            name(Method::PUT, "file", None, br#"{"copyFrom":"a"}"#),
            "copy"
        );
        assert_eq!(
            name(Method::PUT, "file", None, br#"{"linkTo":"a"}"#),
            "symlink"
        );
        assert_eq!(name(Method::PUT, "directory", None, b""), "create");
        assert_eq!(
            name(Method::PUT, "directory", Some("calibrate"), b""),
            "calibrate"
        );
        assert_eq!(name(Method::PUT, "file", Some("convert"), b""), "convert");
        assert_eq!(name(Method::DELETE, "directory", None, b""), "delete");
        assert_eq!(name(Method::POST, "batch", Some("delete"), b"[]"), "delete");
        assert_eq!(
            judge(&Method::GET, "file", None, STREAMED).unwrap().name,
            "download"
        );
    }

    #[test]
    fn what_smh_could_read_differently_is_refused() {
        let bad = |m: Method, r: &str, f: Option<&'static str>, b: BodyView<'_>| {
            judge(&m, r, f, b).is_err()
        };
        assert!(bad(
            Method::PUT,
            "file",
            Some("move"),
            json(br#"{"copyFrom":"a"}"#)
        ));
        assert!(bad(Method::PUT, "file", Some("confirm"), json(b"")));
        assert!(bad(Method::PUT, "directory", Some("copy"), json(b"")));
        assert!(bad(
            Method::PUT,
            "file",
            None,
            json(br#"{"from":"a","copyFrom":"b"}"#)
        ));
        assert!(bad(
            Method::PUT,
            "file",
            None,
            json(br#"{"from":"a","LINKTO":"b"}"#)
        ));
        assert!(bad(
            Method::PUT,
            "file",
            None,
            json("{\"lin\u{212a}To\":\"a\"}".as_bytes())
        ));
        assert!(bad(Method::PUT, "file", None, json(b"not json")));
        assert!(bad(Method::PUT, "file", None, json(b"[1]")));
        assert!(
            bad(Method::PUT, "file", None, STREAMED),
            "a streamed body cannot be judged"
        );
        let form = BodyView {
            bytes: Some(br#"{"x":"&from=victim.txt&"}"#),
            plain_json: false,
        };
        assert!(
            bad(Method::PUT, "file", None, form),
            "judged as JSON only when sent as JSON"
        );
        assert!(bad(Method::POST, "batch", None, json(b"[]")));
        assert!(bad(Method::POST, "batch", Some("info"), json(b"[]")));
        assert!(bad(Method::POST, "batch", Some("move"), STREAMED));
        assert!(bad(Method::POST, "batch", Some("copy"), json(b"{}")));
        assert!(bad(Method::POST, "file", Some("uncompress"), STREAMED));
        assert!(bad(
            Method::POST,
            "batch",
            Some("copy"),
            json(br#"[{"copyFromSpaceId":"a,b"}]"#)
        ));
    }

    #[test]
    fn bodies_name_the_other_spaces_they_touch() {
        let j = judge(
            &Method::POST,
            "batch",
            Some("copy"),
            json(br#"[{"copyFrom":"a","to":"b","copyFromSpaceId":"bob"},{"copyFrom":"c","to":"d"},{"from":"x","FromSpaceId":"eve"}]"#),
        )
        .unwrap();
        assert_eq!(j.source_spaces, ["bob", "eve"]);
        let j = judge(
            &Method::POST,
            "file",
            Some("uncompress"),
            json(br#"{"targetSpaceId":"bob","targetPath":"x"}"#),
        )
        .unwrap();
        assert_eq!(j.source_spaces, ["bob"]);
        let j = judge(
            &Method::POST,
            "file",
            Some("confirm"),
            json(br#"{"metaData":{"spaceId":"x"}}"#),
        )
        .unwrap();
        assert!(
            j.source_spaces.is_empty(),
            "only operation-level members count"
        );
    }
}
