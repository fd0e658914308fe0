//! Policy through the gateway: roles become SMH grant strings and spaces
//! (literal and templated), the operation allow-list refuses before SMH,
//! and several roles give their union. Introspection sessions too.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{error_code, Harness, TestServer};
use smh_gateway::emulator::EmulatorConfig;

const ROLES: &str = r#"
[[role]]
name = "reader"
grant = []
spaces = ["*"]
operations = ["GET *", "HEAD *"]

[[role]]
name = "writer"
grant = ["upload_file", "create_directory", "delete_file", "delete_directory"]
spaces = ["{claims.team_space}"]
period_secs = 1800

[[role]]
name = "own"
grant = ["create_directory"]
spaces = ["{user_id}"]

[[role]]
name = "admin"
grant = ["admin"]
spaces = ["*"]
"#;

async fn multi_tenant() -> Harness {
    Harness::start_with(
        EmulatorConfig {
            multi_tenant: true,
            spaces: vec!["team1".into(), "team2".into(), "alice".into()],
            ..EmulatorConfig::default()
        },
        ROLES,
    )
    .await
}

fn session(h: &Harness, user: &str, roles: &[&str], extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({"sub": user, "roles": roles, "iat": smh_gateway::revocation::unix_now(), "exp": smh_gateway::revocation::unix_now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

fn grants_of(h: &Harness, user: &str) -> Vec<String> {
    let t = h.hooks().tokens_for_user(user);
    assert_eq!(t.len(), 1, "{user}: one token");
    let mut g = t[0].grants.clone();
    g.sort();
    g
}

#[tokio::test]
async fn roles_mint_tokens_with_their_grant_strings_and_spaces() {
    let h = multi_tenant().await;
    let lib = h.lib().to_string();
    let list = |space: &str| format!("/api/v1/directory/{lib}/{space}/?by-marker");

    let viewer = session(&h, "vic", &["reader"], serde_json::json!({}));
    assert_eq!(h.get(&list("team2"), &viewer).await.status(), 200);
    assert!(grants_of(&h, "vic").is_empty(), "reader -> read-only token");

    let editor = session(
        &h,
        "eve",
        &["writer"],
        serde_json::json!({"team_space": "team1"}),
    );
    assert_eq!(h.get(&list("team1"), &editor).await.status(), 200);
    assert_eq!(
        grants_of(&h, "eve"),
        [
            "create_directory",
            "delete_directory",
            "delete_file",
            "upload_file"
        ]
    );
    let t = &h.hooks().tokens_for_user("eve")[0];
    assert_eq!(t.spaces, ["team1"], "token scoped to the templated space");
    assert_eq!(t.period, 1800);

    let admin = session(&h, "ada", &["admin"], serde_json::json!({}));
    assert_eq!(h.get(&list("team2"), &admin).await.status(), 200);
    assert_eq!(grants_of(&h, "ada"), ["admin"]);
}

#[tokio::test]
async fn templated_spaces_refuse_other_spaces_before_smh() {
    let h = multi_tenant().await;
    let lib = h.lib().to_string();
    let before = h.hooks().requests().len();
    let editor = session(
        &h,
        "eve",
        &["writer"],
        serde_json::json!({"team_space": "team1"}),
    );
    let r = h
        .get(&format!("/api/v1/directory/{lib}/team2/"), &editor)
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "AccessTokenNotMatchSpace"));
    let no_claim = session(&h, "nat", &["writer"], serde_json::json!({}));
    let r = h
        .get(&format!("/api/v1/directory/{lib}/team1/"), &no_claim)
        .await;
    assert_eq!(
        r.status(),
        403,
        "a template that resolves to nothing matches nothing"
    );
    assert_eq!(h.hooks().requests().len(), before);

    // {user_id}: alice reaches the space named after her, and creates in it.
    let alice = session(&h, "alice", &["own"], serde_json::json!({}));
    let r = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/alice/mine")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = h
        .get(&format!("/api/v1/directory/{lib}/team1/"), &alice)
        .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn allow_list_refuses_a_viewers_delete_and_roles_union() {
    let h = multi_tenant().await;
    let lib = h.lib().to_string();
    let admin = session(&h, "ada", &["admin"], serde_json::json!({}));
    let r = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/team1/doomed")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let viewer = session(&h, "vic", &["reader"], serde_json::json!({}));
    let before = h.hooks().requests().len();
    let r = h
        .client
        .delete(h.url(&format!("/api/v1/directory/{lib}/team1/doomed")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "NoPermission"));
    assert_eq!(
        h.hooks().requests().len(),
        before,
        "refused before SMH saw it"
    );
    assert!(
        h.hooks().tokens_for_user("vic").is_empty(),
        "no token minted for a refusal"
    );

    // reader + writer: the writer role (no allow-list) permits the DELETE,
    // and the token carries the union of both roles' grants.
    let both = session(
        &h,
        "bo",
        &["reader", "writer"],
        serde_json::json!({"team_space": "team1"}),
    );
    let r = h
        .client
        .delete(h.url(&format!("/api/v1/directory/{lib}/team1/doomed")))
        .bearer_auth(&both)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    assert_eq!(
        grants_of(&h, "bo"),
        [
            "create_directory",
            "delete_directory",
            "delete_file",
            "upload_file"
        ]
    );
    let ops = h.hooks().operations();
    assert!(ops
        .iter()
        .any(|o| o.user_id == "bo" && o.path.contains("doomed")));
}

/// A business session backend for introspection mode.
struct Backend {
    server: TestServer,
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

async fn backend() -> Backend {
    let calls = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (c, d) = (calls.clone(), down.clone());
    let server = TestServer::start(Arc::new(move |_, path, headers| {
        c.fetch_add(1, Ordering::SeqCst);
        assert_eq!(path, "/internal/session");
        if d.load(Ordering::SeqCst) {
            return (500, "{}".into());
        }
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match auth.strip_prefix("Bearer ") {
            Some(cred) if cred.starts_with("good-") => (
                200,
                serde_json::json!({
                    "user_id": format!("user-{}", &cred[5..]),
                    "iat": smh_gateway::revocation::unix_now() - 5,
                    "client_id": "tablet",
                    "roles": ["writer"],
                    "claims": {"team_space": "team1"}
                })
                .to_string(),
            ),
            // Answers a revocation could not outlive: no issue time, or
            // issued longer ago than session.max_lifetime_secs.
            Some("noiat-1") => (200, r#"{"user_id":"user-noiat"}"#.into()),
            Some("old-1") => (
                200,
                serde_json::json!({
                    "user_id": "user-old",
                    "iat": smh_gateway::revocation::unix_now() - 8 * 86_400,
                })
                .to_string(),
            ),
            _ => (401, r#"{"error":"no session"}"#.into()),
        }
    }))
    .await;
    Backend {
        server,
        calls,
        down,
    }
}

#[tokio::test]
async fn introspection_caches_answers_and_outages_are_503() {
    let be = backend().await;
    let session_toml = format!(
        "[session]\nmode = \"introspection\"\n[session.introspection]\nurl = \"{}\"\nca_file = \"{}\"\ncache_ttl_secs = 60\nnegative_cache_ttl_secs = 60\n",
        be.server.url("/internal/session"),
        be.server.ca_file.display()
    );
    let h = Harness::start_full(
        EmulatorConfig {
            multi_tenant: true,
            spaces: vec!["team1".into()],
            ..EmulatorConfig::default()
        },
        // The gateway's own 401 InvalidSession is what this test reads.
        &format!("{ROLES}\n[session]\nsmh_compatible_errors = false\n"),
        Some(session_toml),
    )
    .await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/team1/?by-marker");

    for _ in 0..3 {
        assert_eq!(h.get(&list, "good-1").await.status(), 200);
    }
    assert_eq!(be.calls.load(Ordering::SeqCst), 1, "positive answer cached");
    let t = &h.hooks().tokens_for_user("user-1")[0];
    assert_eq!(
        (t.client_id.as_str(), t.spaces.as_slice()),
        ("tablet", ["team1".to_string()].as_slice())
    );

    for _ in 0..3 {
        let (status, code, _) = error_code(h.get(&list, "forged").await).await;
        assert_eq!((status, code.as_str()), (401, "InvalidSession"));
    }
    assert_eq!(be.calls.load(Ordering::SeqCst), 2, "negative answer cached");
    for (cred, says) in [("noiat-1", "no iat"), ("old-1", "longer ago")] {
        let (status, code, body) = error_code(h.get(&list, cred).await).await;
        assert_eq!((status, code.as_str()), (401, "InvalidSession"), "{body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }

    be.down.store(true, Ordering::SeqCst);
    let r = h.get(&list, "good-2").await;
    assert_eq!(r.headers()["retry-after"], "2");
    let (status, code, _) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (503, "SessionServiceUnavailable"),
        "backend outage is never 401"
    );
    assert_eq!(
        h.get(&list, "good-1").await.status(),
        200,
        "cached sessions keep working"
    );
    be.down.store(false, Ordering::SeqCst);
    assert_eq!(
        h.get(&list, "good-2").await.status(),
        200,
        "outages are not cached"
    );
}
