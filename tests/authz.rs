//! Authorization as the specification: each class of hole an attacker
//! with a valid session would try, driven through real sockets against the
//! emulator. Every refusal is checked for its status, its SMH-shaped body,
//! and that SMH saw nothing: no request reached the emulator and no token
//! was minted. Paths go out byte for byte over a raw TLS connection, since
//! URL libraries resolve dot segments and re-encode before sending.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use common::{error_code, Harness};
use smh_gateway::emulator::EmulatorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "authz-suite-session-secret";

const ROLES: &str = r#"
[[role]]
name = "device"
grant = ["admin"]
spaces = ["{client_id}"]

[[role]]
name = "own"
grant = ["create_directory", "upload_file"]
spaces = ["{user_id}"]

[[role]]
name = "confirmer"
grant = ["upload_file"]
spaces = ["alice"]
operations = ["POST file?confirm", "PUT file?upload", "GET *"]

[[role]]
name = "reader"
spaces = ["*"]
operations = ["GET *", "HEAD *"]

[[role]]
name = "root"
grant = ["admin"]
spaces = ["*"]
"#;

struct Suite {
    h: Harness,
    audit: PathBuf,
}

async fn suite() -> Suite {
    let dir = std::env::temp_dir().join(format!("smh-authz-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let audit = dir.join("audit.jsonl");
    let session = format!(
        r#"[session]
credentials = ["bearer", "query"]
client_claim = "cid"
client_header = "x-client-id"
[session.jwt]
hmac_secret_file = "{}"
"#,
        dir.join("secret").display()
    );
    let extra = format!(
        // No origin is allowed: `dev` ships `[cors] allowed_origins = ["*"]`,
        // and these tests check that SMH's own CORS answers never leak.
        "{ROLES}\n[audit]\nsink = \"file\"\nfile = \"{}\"\n[cors]\nallowed_origins = []\n",
        audit.display()
    );
    let h = Harness::start_full(
        EmulatorConfig {
            multi_tenant: true,
            spaces: vec![
                "alice".into(),
                "bob".into(),
                "alice-phone".into(),
                "bob-phone".into(),
            ],
            ..EmulatorConfig::default()
        },
        &extra,
        Some(session),
    )
    .await;
    Suite { h, audit }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 JWT over exactly these header and claims bytes, so tests can
/// write what serde would never produce (duplicate members, `crit`).
fn sign_raw(header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

fn session(claims: serde_json::Value) -> String {
    let mut c = serde_json::json!({"iat": smh_gateway::revocation::unix_now(), "exp": smh_gateway::revocation::unix_now() + 3600});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &c.to_string())
}

fn alice(roles: &[&str]) -> String {
    session(serde_json::json!({"sub": "alice", "roles": roles}))
}

/// What the emulator had seen when the snapshot was taken.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Seen {
    requests: usize,
    mints: u64,
}

impl Suite {
    fn lib(&self) -> String {
        self.h.lib().to_string()
    }

    fn seen(&self) -> Seen {
        Seen {
            requests: self.h.hooks().requests().len(),
            mints: self.h.hooks().mints(),
        }
    }

    /// Sends `method target` with `headers` and `body` over a fresh TLS
    /// connection, exactly as written.
    async fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
        let mut tls = common::tls_connect(&self.h, self.h.env.running.addr, &[])
            .await
            .unwrap();
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "PUT" || method == "POST" {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out)).await;
        Raw::parse(&out)
    }

    /// The request is refused with `status`/`code` in SMH's shape, and SMH
    /// saw nothing of it.
    async fn refused(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        status: u16,
        code: &str,
    ) {
        let before = self.seen();
        let r = self.raw(method, target, headers, body).await;
        assert_eq!(
            (r.status, r.json["code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {target} {headers:?}: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.json["message"].is_string() && r.json["requestId"].is_string(),
            "SMH shape: {}",
            r.body
        );
        assert_eq!(self.seen(), before, "{method} {target}: SMH saw it");
    }

    /// The audit record of the request with this id, once written.
    async fn audit_record(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            if let Some(rec) = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|r| r["request_id"] == request_id)
            {
                return rec;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no audit record for {request_id}");
    }
}

/// Certificates of a PEM bundle.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    json: serde_json::Value,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        Raw {
            status,
            headers,
            body,
            json,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn bearer(s: &str) -> String {
    format!("Bearer {s}")
}

// 1. Identity comes only from what was verified.

#[tokio::test]
async fn a_header_device_id_never_chooses_a_space() {
    let s = suite().await;
    let lib = s.lib();
    let list = |space: &str| format!("/api/v1/directory/{lib}/{space}/?by-marker");

    // The verified client claim fills {client_id}.
    let phone =
        session(serde_json::json!({"sub": "alice", "roles": ["device"], "cid": "alice-phone"}));
    let r = s
        .raw(
            "GET",
            &list("alice-phone"),
            &[("authorization", &bearer(&phone))],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A header names bob's device: it labels, it does not authorize.
    let no_cid = alice(&["device"]);
    for (token, space) in [
        (&no_cid, "bob-phone"),
        (&phone, "bob-phone"),
        (&no_cid, "alice-phone"),
    ] {
        s.refused(
            "GET",
            &list(space),
            &[("authorization", &bearer(token)), ("x-client-id", space)],
            b"",
            403,
            "AccessTokenNotMatchSpace",
        )
        .await;
    }
    // The header id still labels the token of an allowed request.
    let own = alice(&["own"]);
    let r = s
        .raw(
            "GET",
            &list("alice"),
            &[
                ("authorization", &bearer(&own)),
                ("x-client-id", "laptop-1"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(s
        .h
        .hooks()
        .tokens_for_user("alice")
        .iter()
        .any(|t| t.client_id == "laptop-1"));
    // Header ids are bounded and plain.
    let long = "d".repeat(65);
    for bad in ["a,b", "a b", long.as_str(), "é"] {
        s.refused(
            "GET",
            &list("alice"),
            &[("authorization", &bearer(&own)), ("x-client-id", bad)],
            b"",
            400,
            "BadRequest",
        )
        .await;
    }
}

#[tokio::test]
async fn identity_values_cannot_widen_a_token() {
    let s = suite().await;
    let lib = s.lib();
    // `sub = "alice,bob"` with {user_id}: SMH would read space_id=alice,bob.
    for (claims, path) in [
        (
            serde_json::json!({"sub": "alice,bob", "roles": ["own"]}),
            format!("/api/v1/directory/{lib}/alice/?by-marker"),
        ),
        (
            serde_json::json!({"sub": "alice bob", "roles": ["own"]}),
            format!("/api/v1/directory/{lib}/alice/?by-marker"),
        ),
        (
            serde_json::json!({"sub": "a".repeat(300), "roles": ["root"]}),
            format!("/api/v1/directory/{lib}/alice/?by-marker"),
        ),
        (
            serde_json::json!({"sub": "alice", "cid": "x,y", "roles": ["own"]}),
            format!("/api/v1/directory/{lib}/alice/?by-marker"),
        ),
        (
            serde_json::json!({"sub": "alice", "sid": "s 1", "roles": ["own"]}),
            format!("/api/v1/directory/{lib}/alice/?by-marker"),
        ),
    ] {
        let t = session(claims.clone());
        s.refused(
            "GET",
            &path,
            &[("authorization", &bearer(&t))],
            b"",
            // SDK-compatible errors (the default): SMH's stale-token answer.
            403,
            "InvalidAccessToken",
        )
        .await;
    }
    // A space spelled with a comma is not a SpaceId, whoever asks (the
    // route is judged first, so this is 404 even for `sub = "alice,bob"`).
    let root = alice(&["root"]);
    s.refused(
        "GET",
        &format!("/api/v1/directory/{lib}/alice,bob/?by-marker"),
        &[("authorization", &bearer(&root))],
        b"",
        404,
        "RouteNotFound",
    )
    .await;
}

#[test]
fn a_config_that_lets_the_client_choose_its_space_is_refused_with_its_position() {
    let dir = std::env::temp_dir().join(format!("smh-authz-cfg-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let text = "[[library]]\nid = \"smh1\"\nsecret_file = \"/etc/hostname\"\n\n[session]\nclient_header = \"x-client-id\"\n[session.jwt]\nhmac_secret_file = \"/etc/hostname\"\n\n[[role]]\nname = \"device\"\nspaces = [\"-\", \"{client_id}\"]\n";
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smh-gateway"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    let column = "spaces = [\"-\", ".len() + 1;
    assert!(
        stderr.contains(&format!("gateway.toml:12:{column}:"))
            && stderr.contains("would let the client choose its space"),
        "{stderr}"
    );
    // With a verified client claim the same role is fine.
    std::fs::write(
        &file,
        text.replace("[session]\n", "[session]\nclient_claim = \"cid\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smh-gateway"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("would let the client choose"), "{stderr}");
    // Unknown templates and malformed SpaceIds are refused too.
    for bad in ["{client}", "a,b", "{claims.}", "../x"] {
        let t = text.replace("{client_id}", bad);
        let err = smh_gateway::config::parse(
            &t,
            "g.toml",
            &smh_gateway::config::Environment::from_pairs::<&str, &str>([]),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("g.toml:12:"), "{bad}: {err}");
    }
}

// 2. One canonical route, decided before anything else, default deny.

#[tokio::test]
async fn paths_the_gateway_cannot_place_exactly_are_refused() {
    let s = suite().await;
    let lib = s.lib();
    let root = bearer(&alice(&["root"]));
    let auth = [("authorization", root.as_str())];
    for path in [
        format!("/api/v1/FILE/{lib}/alice/a.txt"),
        format!("/api/v1/File/{lib}/alice/a.txt"),
        format!("/api/v1/%66ile/{lib}/alice/a.txt"),
        format!("/api/v1/fil%65/{lib}/alice/a.txt"),
        format!("/api/v1/album/{lib}/alice/a"),
        format!("/api/v1/cross-space/directory/{lib}/alice/a"),
        format!("/api/v1/stats/{lib}"),
        format!("/api/v1/space/{lib}//bob"),
        format!("/api/v1/directory/{lib}//bob/?by-marker"),
        format!("/api/v1/file/{lib}/alice/../bob/a.txt"),
        format!("/api/v1/file/{lib}/alice/%2e%2e/bob/a.txt"),
        format!("/api/v1/file/{lib}/alice/%2E./bob/a.txt"),
        format!("/api/v1/file/{lib}/alice/a%2F..%2F..%2Fbob%2Fa.txt"),
        format!("/api/v1/file/{lib}/alice/./a.txt"),
        format!("/api/v1/file/{lib}/alice/a%00.txt"),
        format!("/api/v1/file/{lib}/alice/a%0d%0ab.txt"),
        format!("/api/v1/file/{lib}/alice/a%5C..%5Cb.txt"),
        format!("/api/v1/file/{lib}/al%69ce/a.txt"),
        format!("/api/v1/file/{lib}/alice%2Fx/a.txt"),
        format!("/api/v1/file/{lib}%2Falice/a.txt"),
        format!("/api/v1/file/{lib}/alice;v=1/a.txt"),
        format!("/api/v1/file/{lib}/alice/a%zz"),
        format!("/API/V1/file/{lib}/alice/a.txt"),
        format!("/api/v1//file/{lib}/alice/a.txt"),
    ] {
        s.refused("GET", &path, &auth, b"", 404, "RouteNotFound")
            .await;
    }
    // A resource that takes a SpaceId is never treated as library-level.
    for path in [
        format!("/api/v1/inode/{lib}"),
        format!("/api/v1/batch/{lib}?delete"),
        format!("/api/v1/search/{lib}"),
        format!("/api/v1/space-quota/{lib}"),
        format!("/api/v1/recycled/{lib}"),
    ] {
        s.refused("GET", &path, &auth, b"", 404, "RouteNotFound")
            .await;
    }
}

#[tokio::test]
async fn every_space_position_in_the_reference_is_checked() {
    let s = suite().await;
    let lib = s.lib();
    let own = bearer(&alice(&["own"]));
    let auth = [("authorization", own.as_str())];
    // Calls into bob's space, wherever the resource puts the SpaceId.
    for (method, path) in [
        ("GET", format!("/api/v1/inode/{lib}/bob/1")),
        ("GET", format!("/api/v1/fs-delta/{lib}/bob/cursor")),
        ("GET", format!("/api/v1/recycled/{lib}/bob?by-marker")),
        ("POST", format!("/api/v1/batch/{lib}/bob?delete")),
        ("GET", format!("/api/v1/space-quota/{lib}/bob")),
        ("GET", format!("/api/v1/usage/{lib}/bob")),
        ("GET", format!("/api/v1/task/{lib}/bob/1,2")),
        ("GET", format!("/api/v1/task-result/{lib}/bob/1")),
        ("DELETE", format!("/api/v1/space/{lib}/bob")),
        ("GET", format!("/api/v1/space/{lib}/bob/extension")),
        ("POST", format!("/api/v1/search/{lib}/bob/search-fs")),
        ("GET", format!("/api/v1/office/{lib}/bob/edit/a.docx")),
        ("DELETE", format!("/api/v1/space/{lib}/list")),
    ] {
        let body: &[u8] = if method == "POST" { b"[]" } else { b"" };
        s.refused(method, &path, &auth, body, 403, "AccessTokenNotMatchSpace")
            .await;
    }
    // Library-level calls get a token without space_id: only for "*".
    for (method, path) in [
        ("GET", format!("/api/v1/space/{lib}/list")),
        ("POST", format!("/api/v1/space/{lib}")),
        ("GET", format!("/api/v1/usage/{lib}")),
        ("GET", format!("/api/v1/task/{lib}/1,2")),
        ("POST", format!("/api/v1/quota/{lib}")),
        // Where the next segment may be a share id, quota id or keyword.
        ("GET", format!("/api/v1/quota/{lib}/alice")),
        ("DELETE", format!("/api/v1/share/{lib}/alice")),
        (
            "GET",
            format!("/api/v1/directory-history/{lib}/library-history"),
        ),
        ("GET", format!("/api/v1/space/{lib}/list/")),
        ("GET", format!("/api/v1/task/{lib}/1234/")),
    ] {
        let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
        s.refused(method, &path, &auth, body, 403, "NoPermission")
            .await;
    }
    let root = bearer(&alice(&["root"]));
    let r = s
        .raw(
            "POST",
            &format!("/api/v1/space/{lib}?space_id=carol"),
            &[("authorization", &root)],
            b"",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn the_token_api_is_refused_in_any_spelling() {
    let s = suite().await;
    let lib = s.lib();
    let root = bearer(&alice(&["root"]));
    for path in [
        "/api/v1/token?library_id=x&library_secret=y".to_string(),
        format!("/api/v1/token/{lib}/acctk123"),
        format!("/api/v1/token/{lib}?user_id=bob"),
        format!("/api/v1/TOKEN/{lib}"),
        format!("/api/v1/Token/{lib}/acctk1"),
        format!("/api/v1/%74oken/{lib}"),
        format!("/api/v1/tok%65n/{lib}"),
    ] {
        for method in ["GET", "POST", "DELETE"] {
            s.refused(
                method,
                &path,
                &[("authorization", &root)],
                b"",
                403,
                "NoPermission",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn roles_never_add_up() {
    let s = suite().await;
    let lib = s.lib();
    // Reads anywhere + writes in her own space: not writes anywhere.
    let t = bearer(&alice(&["reader", "own"]));
    let auth = [("authorization", t.as_str())];
    s.refused(
        "DELETE",
        &format!("/api/v1/file/{lib}/bob/a.txt"),
        &auth,
        b"",
        403,
        "NoPermission",
    )
    .await;
    s.refused(
        "PUT",
        &format!("/api/v1/directory/{lib}/bob/new"),
        &auth,
        b"",
        403,
        "NoPermission",
    )
    .await;
    // Each role still does its own job, with its own token.
    let r = s
        .raw(
            "GET",
            &format!("/api/v1/directory/{lib}/bob/?by-marker"),
            &auth,
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .raw(
            "PUT",
            &format!("/api/v1/directory/{lib}/alice/mine"),
            &auth,
            b"",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut grants: Vec<Vec<String>> =
        s.h.hooks()
            .tokens_for_user("alice")
            .into_iter()
            .map(|t| t.grants)
            .collect();
    grants.sort();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(
        grants[0].is_empty(),
        "the reader's token is read-only: {grants:?}"
    );
}

#[tokio::test]
async fn methods_and_path_parameters_smh_does_not_use_are_refused() {
    let s = suite().await;
    let lib = s.lib();
    let root = bearer(&alice(&["root"]));
    let auth = [("authorization", root.as_str())];
    for method in ["PATCH", "PROPFIND", "TRACE", "MOVE"] {
        s.refused(
            method,
            &format!("/api/v1/file/{lib}/alice/a.txt"),
            &auth,
            b"",
            405,
            "MethodNotAllowed",
        )
        .await;
    }
    for path in [
        format!("/api/v1/file/{lib}/alice/..;/..;/bob/a.txt"),
        format!("/api/v1/file/{lib}/alice/a%3Bb.txt"),
    ] {
        s.refused("GET", &path, &auth, b"", 404, "RouteNotFound")
            .await;
    }
}

// 3. Exactly one operation.

#[tokio::test]
async fn a_request_names_exactly_one_operation_and_the_audit_names_it() {
    let s = suite().await;
    let lib = s.lib();
    let c = bearer(&alice(&["confirmer"]));
    let auth = [("authorization", c.as_str())];
    let file = format!("/api/v1/file/{lib}/alice/key1");
    for q in [
        "confirm&delete",
        "move&confirm=1",
        "copy&confirm",
        "confirm&restore",
        "confirm=0",
        "confirm=true",
        "confirm&multipart",
    ] {
        s.refused(
            "POST",
            &format!("{file}?{q}"),
            &auth,
            b"",
            400,
            "BadRequest",
        )
        .await;
    }
    // The allowed one reaches SMH and is named as judged.
    let before = s.seen();
    let r = s.raw("POST", &format!("{file}?confirm"), &auth, b"").await;
    assert_ne!(s.seen().requests, before.requests, "{}", r.body);
    let rid = r.header("x-request-id").unwrap().to_string();
    assert_eq!(s.audit_record(&rid).await["operation"], "file.confirm");

    // Flag-less PUT: SMH picks upload, move, copy or symlink from the body.
    let target = format!("/api/v1/file/{lib}/alice/b.txt");
    for body in [
        &br#"{"from":"a.txt"}"#[..],
        br#"{"copyFrom":"a.txt"}"#,
        br#"{"linkTo":"a.txt"}"#,
        br#"{"From":"a.txt"}"#,
    ] {
        s.refused("PUT", &target, &auth, body, 403, "NoPermission")
            .await;
    }
    for (q, body) in [
        ("?move", &br#"{"copyFrom":"a.txt"}"#[..]),
        ("?upload", b""),
        ("?confirm", b""),
        ("", br#"{"from":"a.txt","copyFrom":"b.txt"}"#),
        ("", b"from=a.txt"),
        ("", "{\"lin\u{212a}To\":\"a.txt\"}".as_bytes()),
    ] {
        s.refused(
            "PUT",
            &format!("{target}{q}"),
            &auth,
            body,
            400,
            "BadRequest",
        )
        .await;
    }
    // The body is judged as JSON only when it is sent as JSON.
    for (name, value) in [
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-encoding", "gzip"),
    ] {
        s.refused(
            "PUT",
            &target,
            &[auth[0], (name, value)],
            br#"{"x":"&from=victim.txt&"}"#,
            400,
            "BadRequest",
        )
        .await;
    }
    let before = s.seen();
    let r = s.raw("PUT", &target, &auth, br#"{"size":"3"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_ne!(s.seen(), before);
    let rid = r.header("x-request-id").unwrap().to_string();
    assert_eq!(s.audit_record(&rid).await["operation"], "file.upload");
    // A refused request is audited with the operation that was judged.
    let r = s.raw("PUT", &target, &auth, br#"{"copyFrom":"x"}"#).await;
    let rid = r.header("x-request-id").unwrap().to_string();
    assert_eq!(s.audit_record(&rid).await["operation"], "file.copy");
}

#[tokio::test]
async fn a_batch_cannot_take_from_a_space_the_session_does_not_reach() {
    let s = suite().await;
    let lib = s.lib();
    let own = bearer(&alice(&["own"]));
    let auth = [("authorization", own.as_str())];
    let batch = format!("/api/v1/batch/{lib}/alice");
    s.refused(
        "POST",
        &format!("{batch}?copy"),
        &auth,
        br#"[{"copyFrom":"secret.txt","to":"mine.txt","copyFromSpaceId":"bob"}]"#,
        403,
        "AccessTokenNotMatchSpace",
    )
    .await;
    s.refused(
        "POST",
        &format!("{batch}?move"),
        &auth,
        br#"[{"from":"secret.txt","to":"mine.txt","fromSpaceId":"bob"}]"#,
        403,
        "AccessTokenNotMatchSpace",
    )
    .await;
    s.refused("POST", &batch, &auth, b"[]", 400, "BadRequest")
        .await;
    // Extraction into another space.
    s.refused(
        "POST",
        &format!("/api/v1/file/{lib}/alice/a.zip?uncompress"),
        &auth,
        br#"{"targetSpaceId":"bob","targetPath":"x"}"#,
        403,
        "AccessTokenNotMatchSpace",
    )
    .await;
    // A member name a case-folding parser would read as copyFromSpaceId.
    s.refused(
        "POST",
        &format!("{batch}?copy"),
        &auth,
        "[{\"copyFrom\":\"a\",\"to\":\"b\",\"copyFrom\u{17f}paceId\":\"bob\"}]".as_bytes(),
        400,
        "BadRequest",
    )
    .await;
}

// 4. Nothing unvetted crosses the boundary, either way.

#[tokio::test]
async fn query_aliases_of_reserved_names_are_refused_and_the_real_ones_stripped() {
    let s = suite().await;
    let lib = s.lib();
    let own = alice(&["own"]);
    let auth_own = bearer(&own);
    let auth = [("authorization", auth_own.as_str())];
    let list = format!("/api/v1/directory/{lib}/alice/");
    for q in [
        "by-marker&access_token[]=acctkX",
        "by-marker&access+token=acctkX",
        "by-marker&access_token.=acctkX",
        "by-marker&access_token%00=acctkX",
        "by-marker&access%5Ftoken=acctkX",
        "by-marker&ACCESS_TOKEN=acctkX",
        "by-marker&Access_Token=acctkX",
        "by-marker;access_token=acctkX",
        "by-marker&limit=5;user_id=bob",
        "by-marker&LIBRARY_SECRET=s",
        "by-marker&library%5fsecret=s",
        "by-marker&User_Id=bob",
        "by-marker&user_id[]=bob",
        "by-marker&user%5Fid=bob",
        "by-marker&prefix=%00",
    ] {
        s.refused("GET", &format!("{list}?{q}"), &auth, b"", 400, "BadRequest")
            .await;
    }
    // Plainly spelled reserved names are dropped; SMH sees the gateway's token only.
    s.h.hooks().clear_logs();
    let q = format!("by-marker&user_id=bob&library_secret=guess&access_token={own}&limit=5");
    let r = s.raw("GET", &format!("{list}?{q}"), &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.h.hooks().requests();
    let data: Vec<_> = seen
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/directory/"))
        .collect();
    assert_eq!(data.len(), 1);
    let query = data[0].query.clone().unwrap();
    let names: Vec<&str> = query
        .split('&')
        .map(|p| p.split('=').next().unwrap())
        .collect();
    assert_eq!(names, ["by-marker", "limit", "access_token"], "{query}");
    assert!(!query.contains(&own), "the session went to SMH");
}

#[tokio::test]
async fn client_forwarding_headers_never_reach_smh() {
    let s = suite().await;
    let lib = s.lib();
    let own = bearer(&alice(&["own"]));
    s.h.hooks().clear_logs();
    let r = s
        .raw(
            "GET",
            &format!("/api/v1/directory/{lib}/alice/?by-marker"),
            &[
                ("authorization", &own),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "http"),
                ("forwarded", "for=10.1.2.3;host=evil.example"),
                ("x-real-ip", "10.1.2.3"),
                ("x-original-url", "/api/v1/directory/lib/bob/"),
                ("x-rewrite-url", "/api/v1/directory/lib/bob/"),
                ("x-http-method-override", "DELETE"),
                ("x-method-override", "DELETE"),
                ("x-client-ip", "10.1.2.3"),
                ("true-client-ip", "10.1.2.3"),
                ("cookie", "session=abc"),
                ("x-smh-meta-tag", "kept"),
                ("client-version", "smh-js-sdk/1.0.16"),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.h.hooks().requests();
    let req = seen
        .iter()
        .find(|r| r.path.starts_with("/api/v1/directory/"))
        .unwrap();
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    for forbidden in [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-method-override",
        "x-client-ip",
        "true-client-ip",
        "cookie",
        "authorization",
        "x-client-id",
    ] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} reached SMH: {names:?}"
        );
    }
    assert_eq!(req.header("x-smh-meta-tag"), Some("kept"));
    assert_eq!(req.header("client-version"), Some("smh-js-sdk/1.0.16"));
}

#[tokio::test]
async fn smh_cors_headers_never_reach_the_client() {
    let s = suite().await;
    let lib = s.lib();
    let own = bearer(&alice(&["own"]));
    let r = s
        .raw(
            "GET",
            &format!("/api/v1/directory/{lib}/alice/?by-marker"),
            &[("authorization", &own), ("origin", "https://evil.example")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for h in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert_eq!(
            r.header(h),
            None,
            "{h} from SMH reached the client (no CORS origin allowed)"
        );
    }
    // The emulator does send them, so the test above can fail.
    let direct =
        common::client_builder(&std::fs::read(s.h.env.dir.join("emulator-ca.pem")).unwrap())
            .build()
            .unwrap();
    let resp = direct
        .get(format!(
            "{}/api/v1/directory/{lib}/alice/?by-marker",
            s.h.env.emulator.base_url()
        ))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://evil.example")
    );
}

// 5. JWT strictness.

#[tokio::test]
async fn a_session_that_never_expires_is_refused_without_crashing_the_gateway() {
    let s = suite().await;
    let lib = s.lib();
    let path = format!("/api/v1/directory/{lib}/alice/?by-marker");
    // Its lifetime is over session.max_lifetime_secs (a revocation could
    // not outlive it); the arithmetic on u64::MAX must not overflow either.
    let now = smh_gateway::revocation::unix_now();
    let forever = sign_raw(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","roles":["own"],"iat":{now},"exp":18446744073709551615}}"#),
    );
    for _ in 0..2 {
        let r = s
            .raw("GET", &path, &[("authorization", &bearer(&forever))], b"")
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("max_lifetime_secs"), "{}", r.body);
    }
}

#[tokio::test]
async fn jwts_with_crit_or_duplicate_claims_are_refused() {
    let s = suite().await;
    let lib = s.lib();
    let path = format!("/api/v1/directory/{lib}/bob/?by-marker");
    // iat and exp in the last position, where duplicates below go.
    let now = smh_gateway::revocation::unix_now();
    let times = format!(r#""iat":{now},"exp":{}"#, now + 3600);
    let claims_bob = &format!(r#"{{"sub":"bob","roles":["own"],{times}}}"#);
    let ok = sign_raw(r#"{"alg":"HS256"}"#, claims_bob);
    let r = s
        .raw("GET", &path, &[("authorization", &bearer(&ok))], b"")
        .await;
    assert_eq!(r.status, 200, "the control token works: {}", r.body);
    for token in [
        sign_raw(r#"{"alg":"HS256","crit":["exp"]}"#, claims_bob),
        sign_raw(
            r#"{"alg":"HS256","crit":["http://example.com/x"],"http://example.com/x":1}"#,
            claims_bob,
        ),
        sign_raw(r#"{"alg":"HS256","alg":"HS256"}"#, claims_bob),
        sign_raw(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"alice","sub":"bob","roles":["own"],{times}}}"#),
        ),
        sign_raw(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"bob","roles":["own"],"roles":["root"],{times}}}"#),
        ),
        sign_raw(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"bob","roles":["own"],"exp":1,{times}}}"#),
        ),
    ] {
        s.refused(
            "GET",
            &path,
            &[("authorization", &bearer(&token))],
            b"",
            // SDK-compatible errors (the default): SMH's stale-token answer.
            403,
            "InvalidAccessToken",
        )
        .await;
    }
}

#[tokio::test]
async fn refusals_are_smh_shaped_through_an_independent_client_too() {
    let s = suite().await;
    let lib = s.lib();
    let own = alice(&["own"]);
    let before = s.seen();
    let resp =
        s.h.get(&format!("/api/v1/directory/{lib}/bob/?by-marker"), &own)
            .await;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "AccessTokenNotMatchSpace"));
    assert_eq!(s.seen(), before);
}
