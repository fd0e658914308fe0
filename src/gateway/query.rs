//! The client's query, judged once before anything else: which SMH
//! operation flag it names (at most one), and whether every pair is one
//! the gateway may forward. SMH sees only what passes here, rebuilt by
//! [`super::rewrite::upstream_path_and_query`], plus the gateway's own
//! `access_token`.
//!
//! The allow-list is a grammar, not a list of names: SMH's parameters are
//! plain ASCII words (`conflict_resolution_strategy`, `by-marker`, and a few
//! camelCase ones such as `orderBy`), and the SDKs send them spelled
//! plainly. A name outside that grammar (`access_token[]`, `access+token`,
//! `access%5Ftoken`, `user_id.`), or a respelling of a reserved name or an
//! operation flag in another case or with `-`/`_` swapped or dropped
//! (`ACCESS_TOKEN`, `access-token`, `Confirm`, `by_marker`), is something a
//! server framework might fold into the real one, so the request is refused
//! rather than guessed at.

use crate::error::GatewayError;

/// Query names the gateway owns: the client's copies are dropped (the
/// session may travel in `access_token`, SDKs send it there) and the
/// gateway adds its own `access_token`. `user_id` would let an admin token
/// act as another user (smh-api.md 1.2); `library_secret` is ours alone.
pub const RESERVED: &[&str] = &["access_token", "library_secret", "user_id"];

/// Flags that select an operation: SMH's vocabulary, kept in `smh`.
pub use crate::smh::FLAGS;

/// Two flags SMH documents together, read as the first: `?info&preview=1`
/// asks for the info of a file with a preview link (smh-api.md 5.2).
const COMBINED_FLAGS: &[(&str, &str)] = &[("info", "preview")];

/// Longest parameter name accepted; SMH's longest is about 30 bytes.
const MAX_NAME_BYTES: usize = 64;

/// What the gateway read from the query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryFacts {
    /// The one operation flag, when the query names one.
    pub flag: Option<&'static str>,
}

/// Checks every pair and finds the operation flag.
pub fn judge(query: Option<&str>) -> Result<QueryFacts, GatewayError> {
    let Some(q) = query else {
        return Ok(QueryFacts::default());
    };
    if q.contains(';') {
        return Err(GatewayError::BadRequest(
            "';' in the query: some servers split pairs on it; send it as %3B".into(),
        ));
    }
    let mut flags: [Option<&'static str>; 2] = [None, None];
    // `preview=0` beside `?info` asks for no preview link (smh-api.md 5.2).
    let mut preview_off = false;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if !is_plain_name(name) {
            return Err(GatewayError::BadRequest(format!(
                "query parameter name {:?} is not a plain SMH parameter name (ASCII letters, digits, '_', '-')",
                truncate(name)
            )));
        }
        if let Some(v) = value {
            check_value(name, v)?;
        }
        let flag = FLAGS.iter().find(|f| **f == name);
        if flag.is_none() {
            if let Some(real) = RESERVED.iter().chain(FLAGS).find(|r| same_word(r, name)) {
                return Err(GatewayError::BadRequest(format!(
                    "query parameter {:?} respells {real:?}; send it as {real:?} or not at all",
                    truncate(name)
                )));
            }
        }
        let Some(flag) = flag else { continue };
        if *flag == "preview" && value == Some("0") {
            preview_off = true;
            continue;
        }
        if !matches!(value, None | Some("") | Some("1")) {
            return Err(GatewayError::BadRequest(format!(
                "operation flag ?{flag} takes no value other than 1"
            )));
        }
        match flags {
            [Some(a), _] if a == *flag => {}
            [_, Some(b)] if b == *flag => {}
            [None, _] => flags[0] = Some(flag),
            [Some(_), None] => flags[1] = Some(flag),
            [Some(a), Some(b)] => return Err(more_than_one(a, b, Some(flag))),
        }
    }
    let flag = match flags {
        [None, _] => None,
        [Some(a), None] => Some(a),
        [Some(a), Some(b)] => Some(
            COMBINED_FLAGS
                .iter()
                .find(|(x, y)| (*x == a && *y == b) || (*x == b && *y == a))
                .map(|(primary, _)| *primary)
                .ok_or_else(|| more_than_one(a, b, None))?,
        ),
    };
    if preview_off && flag != Some("info") {
        return Err(GatewayError::BadRequest(
            "preview=0 is only meaningful beside ?info".into(),
        ));
    }
    Ok(QueryFacts { flag })
}

/// Whether `name` is `word` up to ASCII case and `-`/`_` (which some
/// frameworks fold or drop).
fn same_word(word: &str, name: &str) -> bool {
    // Runs for every parameter against every reserved name and flag, so
    // the folded bytes are compared as they stream, without collecting.
    name != word && name.len() <= word.len() + 4 && folded(name).eq(folded(word))
}

/// `s` without `_` and `-`, in ASCII lower case.
fn folded(s: &str) -> impl Iterator<Item = u8> + '_ {
    s.bytes()
        .filter(|b| *b != b'_' && *b != b'-')
        .map(|b| b.to_ascii_lowercase())
}

fn more_than_one(a: &str, b: &str, c: Option<&str>) -> GatewayError {
    let mut names = format!("?{a}, ?{b}");
    if let Some(c) = c {
        names.push_str(&format!(", ?{c}"));
    }
    GatewayError::BadRequest(format!(
        "the query names more than one SMH operation ({names}); send exactly one"
    ))
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Values pass through byte for byte, so they must mean one thing to
/// every reader: well-formed escapes, and no control characters once
/// decoded.
fn check_value(name: &str, value: &str) -> Result<(), GatewayError> {
    let b = value.as_bytes();
    let bad = |why: &str| {
        Err(GatewayError::BadRequest(format!(
            "query parameter {name}: {why}"
        )))
    };
    let mut i = 0;
    while i < b.len() {
        let byte = if b[i] == b'%' {
            match super::route::escaped_byte(b, i) {
                Some(byte) => {
                    i += 3;
                    byte
                }
                None => return bad("malformed percent-encoding"),
            }
        } else {
            i += 1;
            b[i - 1]
        };
        if byte < 0x20 || byte == 0x7f {
            return bad("control character in the value");
        }
    }
    Ok(())
}

/// Names are echoed in error messages; a long one is cut.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(MAX_NAME_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(q: &str) -> Option<&'static str> {
        judge(Some(q)).unwrap().flag
    }

    #[test]
    fn one_flag_in_any_accepted_spelling() {
        assert_eq!(flag("confirm"), Some("confirm"));
        assert_eq!(
            flag("confirm=1&conflict_resolution_strategy=ask"),
            Some("confirm")
        );
        assert_eq!(flag("by-marker=&limit=5&marker=%2Fa"), Some("by-marker"));
        assert_eq!(flag("limit=5"), None);
        assert_eq!(flag("info&preview=1&period=60"), Some("info"));
        assert_eq!(flag("preview=1&info"), Some("info"));
        assert_eq!(flag("confirm&confirm=1"), Some("confirm"));
        assert_eq!(judge(None).unwrap().flag, None);
        assert_eq!(flag("access_token=x&user_id=u&&"), None);
        assert_eq!(flag("info&preview=0"), Some("info"));
        assert_eq!(
            flag("by-marker&orderBy=name&orderByType=asc"),
            Some("by-marker")
        );
        assert_eq!(flag("cancel"), Some("cancel"));
    }

    #[test]
    fn more_than_one_operation_is_refused() {
        for q in [
            "confirm&delete",
            "move&confirm=1",
            "copy&confirm",
            "confirm&info&preview",
            "multipart&upload",
            "delete&restore",
        ] {
            assert!(judge(Some(q)).is_err(), "{q}");
        }
    }

    #[test]
    fn names_a_framework_could_fold_are_refused() {
        for q in [
            "access_token[]=x",
            "access+token=x",
            "access_token.=x",
            "access_token%00=x",
            "access%5Ftoken=x",
            "ACCESS_TOKEN=x",
            "Library_Secret=s",
            "user_id;x=1",
            "a=1;user_id=2",
            "confirm%26delete",
            "%63onfirm",
            "Confirm",
            "by_marker",
            "access-token=x",
            "accesstoken=x",
            "USERID=x",
            "x y=1",
            "preview=0",
            "cancel&delete",
        ] {
            assert!(judge(Some(q)).is_err(), "{q}");
        }
    }

    #[test]
    fn flag_values_and_control_characters() {
        assert!(judge(Some("confirm=0")).is_err(), "a flag is on or absent");
        assert!(judge(Some("delete=true")).is_err());
        assert!(judge(Some("prefix=a%00b")).is_err());
        assert!(judge(Some("prefix=a%0d%0aX:1")).is_err());
        assert!(judge(Some("prefix=%zz")).is_err());
        assert!(judge(Some("prefix=a%2Fb%20c&marker=")).is_ok());
    }
}
