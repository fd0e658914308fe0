//! Revoked sessions are refused on the request path, whether they come
//! from the session cache, the connection's memo or a fresh check; other
//! sessions of the user keep working, and a session issued after the
//! revocation works. (The admin routes, logout and Redis sharing build on
//! this; see issue 16.)

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{error_code, Harness};
use smh_gateway::revocation::{unix_now, Revocation};

/// An `iat` a session issued after a revocation made at or before `at`
/// carries: past the seconds a stamp may run ahead
/// (`MAX_ISSUED_AHEAD_SECS`, during which new sessions are still refused),
/// and no further ahead of the clock than that. Waits for the clock to
/// pass `at` (at most a second).
async fn issued_after(at: u64) -> u64 {
    while smh_gateway::revocation::unix_now() <= at {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    at + smh_gateway::session::MAX_ISSUED_AHEAD_SECS + 1
}

fn session(h: &Harness, user: &str, sid: &str, iat: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "sid": sid, "roles": ["viewer"], "iat": iat, "exp": iat + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn revoked_sessions_are_refused_and_others_keep_working() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let a = session(&h, "rita", "s-a", now - 10);
    let b = session(&h, "rita", "s-b", now - 10);
    let other = session(&h, "sam", "s-x", now - 10);
    for s in [&a, &b, &other] {
        // Twice each: the second answer comes from the cache and the memo.
        assert_eq!(h.get(&list, s).await.status(), 200);
        assert_eq!(h.get(&list, s).await.status(), 200);
    }
    let revocations = &h.env.running.gateway.revoker.list();
    // One session.
    let one = Revocation::new("rita", 3600, "test", "local").session("s-a");
    assert!(revocations.insert(one, unix_now()).unwrap());
    let (status, code, _) = error_code(h.get(&list, &a).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "InvalidAccessToken"),
        "SDK-compatible refusal"
    );
    assert_eq!(
        h.get(&list, &b).await.status(),
        200,
        "the user's other session works"
    );
    // Every session of the user.
    let all = Revocation::new("rita", 3600, "test", "local");
    assert!(revocations.insert(all, unix_now()).unwrap());
    assert_eq!(h.get(&list, &b).await.status(), 403);
    assert_eq!(
        h.get(&list, &other).await.status(),
        200,
        "other users are untouched"
    );
    // A session issued after the revocation.
    let fresh = session(&h, "rita", "s-c", issued_after(unix_now()).await);
    assert_eq!(h.get(&list, &fresh).await.status(), 200);
}

const ADMIN_TOKEN: &str = "admin-token-4b1f09e2";

/// A harness with an admin token, `client_claim = "cid"` and an audit file.
async fn admin_harness() -> (Harness, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("smh-revoke-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin-token");
    std::fs::write(&token, ADMIN_TOKEN).unwrap();
    let audit = dir.join("audit.jsonl");
    let h = Harness::start_with(
        Default::default(),
        &format!(
            "[admin]\ntoken_file = \"{}\"\n[session]\nclient_claim = \"cid\"\n[audit]\nsink = \"file\"\nfile = \"{}\"\n",
            token.display(),
            audit.display()
        ),
    )
    .await;
    (h, audit)
}

fn device_session(h: &Harness, user: &str, cid: &str, sid: &str) -> String {
    let iat = unix_now() - 5;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "cid": cid, "sid": sid, "roles": ["viewer"], "iat": iat, "exp": iat + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

async fn admin(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, h.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The audit file's revocation lines, once `n` are there.
async fn revocation_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "revocation")
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_admin_route_revokes_at_smh_in_the_caches_and_on_the_request_path() {
    let (h, audit) = admin_harness().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let phone = device_session(&h, "una", "phone", "s1");
    let laptop = device_session(&h, "una", "laptop", "s2");
    let other = device_session(&h, "vik", "phone", "s3");
    for s in [&phone, &laptop, &other] {
        assert_eq!(h.get(&list, s).await.status(), 200);
    }
    assert_eq!(h.hooks().tokens_for_user("una").len(), 2);

    // Refused without the admin token, and for bodies that say too little
    // or something unknown (a typo must not widen a revocation).
    let r = reqwest::Client::new()
        .post(h.admin_url("/admin/v1/revoke"))
        .body(r#"{"user_id":"una"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for bad in [
        "",
        "{}",
        "not json",
        r#"{"user_id":""}"#,
        r#"{"user_id":"una","client":"phone"}"#,
        r#"{"user_id":"una","session_id":""}"#,
        // A comma would name two users in SMH's delete.
        r#"{"user_id":"una,vik"}"#,
        r#"{"user_id":"una vik"}"#,
        r#"{"user_id":"una","client_id":"ph\u00f6ne"}"#,
        r#"{"user_id":"una","reason":"line\nbreak"}"#,
        r#"{"user_id":"una","requested_by":7}"#,
    ] {
        let (status, body) = admin(&h, reqwest::Method::POST, "/admin/v1/revoke", Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(h.get(&list, &phone).await.status(), 200, "nothing revoked");

    // One device.
    let (status, body) = admin(
        &h,
        reqwest::Method::POST,
        "/admin/v1/revoke",
        Some(r#"{"user_id":"una","client_id":"phone","reason":"lost phone","requested_by":"ops-ticket-42"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared"], "local", "no Redis configured: {body}");
    assert_eq!(body["smh"][&lib]["status"], "confirmed", "{body}");
    assert_eq!(body["revocation"]["client_id"], "phone");
    assert_eq!(body["revocation"]["requested_by"], "admin:ops-ticket-42");
    let revoked_at = body["revocation"]["revoked_at"].as_u64().unwrap();
    let expires_at = body["revocation"]["expires_at"].as_u64().unwrap();
    assert_eq!(
        expires_at - revoked_at,
        7 * 86_400 + 30 + 5 + 1,
        "lives the longest session lifetime, the leeway, how far a stamp may run ahead, and a second"
    );
    let (status, code, _) = error_code(h.get(&list, &phone).await).await;
    assert_eq!((status, code.as_str()), (403, "InvalidAccessToken"));
    assert_eq!(h.get(&list, &laptop).await.status(), 200, "other device");
    // Listed with SMH's outcome.
    let (status, body) = admin(&h, reqwest::Method::GET, "/admin/v1/revocations", None).await;
    assert_eq!(status, 200);
    let listed = body["revocations"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["client_id"], "phone");
    assert_eq!(listed[0]["reason"], "lost phone");
    assert_eq!(listed[0]["smh"][&lib]["status"], "confirmed");
    let at_smh: Vec<String> = h
        .hooks()
        .tokens_for_user("una")
        .iter()
        .map(|t| t.client_id.clone())
        .collect();
    assert_eq!(at_smh, ["laptop"], "SMH deleted the phone's token only");

    // All devices: the laptop goes too, at SMH and here; vik is untouched.
    let mints = h.hooks().mints();
    let (status, body) = admin(
        &h,
        reqwest::Method::POST,
        "/admin/v1/revoke",
        Some(r#"{"user_id":"una"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.get(&list, &laptop).await.status(), 403);
    assert!(h.hooks().tokens_for_user("una").is_empty());
    assert_eq!(h.hooks().tokens_for_user("vik").len(), 1);
    assert_eq!(h.get(&list, &other).await.status(), 200);
    assert_eq!(h.hooks().mints(), mints, "vik's token stayed cached");
    // A new session of una's (issued after the revocation) mints anew.
    let fresh = {
        let iat = issued_after(unix_now()).await;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "una", "cid": "laptop", "sid": "s9", "roles": ["viewer"], "iat": iat, "exp": iat + 3600}),
            &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(h.get(&list, &fresh).await.status(), 200);

    // Listed: the user-wide revocation only, since it refuses everything
    // the device one did, for at least as long (the list drops the older).
    let (status, body) = admin(&h, reqwest::Method::GET, "/admin/v1/revocations", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["redis"]["state"], "disabled");
    let listed = body["revocations"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert!(listed[0].get("client_id").is_none(), "{body}");
    assert_eq!(listed[0]["user_id"], "una");
    assert_eq!(listed[0]["smh"][&lib]["status"], "confirmed");
    let (status, _) = admin(&h, reqwest::Method::POST, "/admin/v1/revocations", None).await;
    assert_eq!(status, 405);

    // Audited: who asked, whom, scope, outcome.
    let lines = revocation_lines(&audit, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["requested_by"], "admin:ops-ticket-42");
    assert_eq!(lines[0]["user_id"], "una");
    assert_eq!(lines[0]["scope"], "device");
    assert_eq!(lines[0]["outcome"], "applied");
    assert_eq!(lines[0]["smh"][&lib]["status"], "confirmed");
    assert_eq!(lines[1]["scope"], "user");

    // Metrics.
    let admin_base = h.admin_url("");
    let applied = common::scrape_sample(
        &admin_base,
        "smh_gateway_revocations_total",
        &[("source", "local")],
    )
    .await;
    assert_eq!(applied, 2.0);
    let confirmed = common::scrape_sample(
        &admin_base,
        "smh_gateway_revocation_smh_deletions_total",
        &[("library", &lib), ("result", "confirmed")],
    )
    .await;
    assert_eq!(confirmed, 2.0);
    let active = common::scrape_sample(&admin_base, "smh_gateway_revocations_active", &[]).await;
    assert_eq!(active, 1.0, "the device revocation was superseded");
    let disabled = common::scrape_sample(
        &admin_base,
        "smh_gateway_revocation_redis_state",
        &[("state", "disabled")],
    )
    .await;
    assert_eq!(disabled, 1.0);
}

#[tokio::test]
async fn logout_revokes_the_callers_device_or_all_its_devices() {
    let (h, audit) = admin_harness().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let phone = device_session(&h, "wen", "phone", "s1");
    let laptop = device_session(&h, "wen", "laptop", "s2");
    for s in [&phone, &laptop] {
        assert_eq!(h.get(&list, s).await.status(), 200);
    }
    let logout = |session: Option<&str>, body: &str| {
        let mut r = h
            .client
            .post(h.url("/gateway/v1/logout"))
            .body(body.to_string());
        if let Some(s) = session {
            r = r.bearer_auth(s);
        }
        r.send()
    };
    // Without a session: the SDK-compatible answer to a missing one.
    let (status, code, _) = error_code(logout(None, "").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "EmptyAccessToken"));
    // A body that is not the documented one.
    let (status, code, _) = error_code(
        logout(Some(&phone), r#"{"everything":true}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{code}");
    assert_eq!(h.get(&list, &phone).await.status(), 200, "nothing revoked");
    // Only POST.
    let r = h
        .client
        .get(h.url("/gateway/v1/logout"))
        .bearer_auth(&phone)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    let r = logout(Some(&phone), "").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h.get(&list, &phone).await.status(), 403);
    assert_eq!(h.get(&list, &laptop).await.status(), 200, "other device");
    let at_smh: Vec<String> = h
        .hooks()
        .tokens_for_user("wen")
        .iter()
        .map(|t| t.client_id.clone())
        .collect();
    assert_eq!(at_smh, ["laptop"]);
    // The revoked session cannot log out again (it is refused like any
    // request); the laptop logs out all devices.
    assert_eq!(logout(Some(&phone), "").await.unwrap().status(), 403);
    let r = logout(Some(&laptop), r#"{"all_devices": true}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h.get(&list, &laptop).await.status(), 403);
    assert!(h.hooks().tokens_for_user("wen").is_empty());

    let lines = revocation_lines(&audit, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["requested_by"], "logout");
    assert_eq!(lines[0]["scope"], "device");
    assert_eq!(lines[0]["client_id"], "phone");
    assert_eq!(lines[1]["scope"], "user");
    // The logout requests themselves are audited like any request.
    let text = std::fs::read_to_string(&audit).unwrap();
    let logouts = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["operation"] == "gateway.logout" && v["status"] == 204)
        .count();
    assert_eq!(logouts, 2, "{text}");
}

#[tokio::test]
async fn logout_without_a_proven_device_revokes_the_session() {
    // The dev session settings: no client claim, so a session names no
    // device it can prove; its `sid` is the narrowest scope that covers it.
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let now = unix_now();
    let a = session(&h, "xan", "s-a", now - 10);
    let b = session(&h, "xan", "s-b", now - 10);
    assert_eq!(h.get(&list, &a).await.status(), 200);
    let r = h
        .client
        .post(h.url("/gateway/v1/logout"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h.get(&list, &a).await.status(), 403);
    assert_eq!(
        h.get(&list, &b).await.status(),
        200,
        "the user's other session"
    );
    let listed = h.env.running.gateway.revoker.active();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revocation.session_id.as_deref(), Some("s-a"));
    assert_eq!(listed[0].revocation.client_id, None);
}

#[tokio::test]
async fn session_lifetimes_are_bounded_so_revocations_can_end() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let now = unix_now();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
        )
        .unwrap()
    };
    let week = 7 * 86_400;
    let no_iat = sign(serde_json::json!({"sub": "yul", "exp": now + 600}));
    let too_long =
        sign(serde_json::json!({"sub": "yul", "iat": now - 10, "exp": now - 10 + week + 1}));
    let longest = sign(serde_json::json!({"sub": "yul", "iat": now - 10, "exp": now - 10 + week}));
    for (s, why) in [(&no_iat, "iat"), (&too_long, "max_lifetime_secs")] {
        let (status, code, body) = error_code(h.get(&list, s).await).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "InvalidAccessToken"),
            "{body}"
        );
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(h.get(&list, &longest).await.status(), 200);
}

#[tokio::test]
async fn unconfirmed_smh_deletes_are_retried_in_the_background() {
    use smh_gateway::revocation::RevocationList;
    use smh_gateway::revoke::{RevokeRequest, Revoker};
    use std::sync::Arc;
    use std::time::Duration;

    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let gw = &h.env.running.gateway;
    // Its own revoker, with retries every few milliseconds instead of
    // seconds; the same tokens, metrics and SMH.
    let revoker = Revoker::new(
        Arc::new(RevocationList::new()),
        None,
        gw.tokens.clone(),
        "test-replica".into(),
        gw.metrics.clone(),
        gw.audit.clone(),
        (Duration::from_millis(20), Duration::from_millis(80)),
    );
    revoker.set_libraries(
        gw.active()
            .libraries
            .values()
            .map(|l| (l.id.clone(), l.mint.clone()))
            .collect(),
    );
    let request = |user: &str, lifetime: u64| RevokeRequest {
        user_id: user.into(),
        client_id: None,
        session_id: None,
        reason: None,
        requested_by: "admin".into(),
        lifetime: Duration::from_secs(lifetime),
    };
    let status_of = |id: &str| {
        revoker
            .active()
            .into_iter()
            .find(|l| l.revocation.id == id)
            .and_then(|l| l.smh)
            .map(|m| m[&lib].clone())
    };
    let wait_for = |id: String, want: &'static str| {
        let status_of = &status_of;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let s = status_of(&id);
                if s.as_ref().is_some_and(|s| s.status == want) {
                    return s.unwrap();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "still {s:?}, want {want}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // SMH's token API is down: the answer says pending, and the metric too.
    h.hooks().set_token_api_down(true);
    let report = revoker.revoke(request("zed", 3600)).await.unwrap();
    let d = &report.smh[&lib];
    assert_eq!(d.status, "pending", "{report:?}");
    assert_eq!(d.attempts, smh_gateway::smh::delete::DELETE_ATTEMPTS);
    assert!(d.error.as_deref().unwrap().contains("503"), "{d:?}");
    revoker.refresh_metrics();
    assert_eq!(gw.metrics.revocation.pending_deletions.get(), 1);
    // Still retried while it is down...
    let calls = h.hooks().token_api_calls();
    while h.hooks().token_api_calls() < calls + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_of(&report.revocation.id).unwrap().status, "pending");
    // ...and confirmed once it is back.
    h.hooks().set_token_api_down(false);
    let done = wait_for(report.revocation.id.clone(), "confirmed").await;
    assert!(
        done.attempts > smh_gateway::smh::delete::DELETE_ATTEMPTS,
        "{done:?}"
    );
    revoker.refresh_metrics();
    assert_eq!(gw.metrics.revocation.pending_deletions.get(), 0);

    // A revocation that ends before SMH ever confirms stops being retried.
    h.hooks().set_token_api_down(true);
    let report = revoker.revoke(request("zoe", 1)).await.unwrap();
    assert_eq!(report.smh[&lib].status, "pending");
    let id = report.revocation.id.clone();
    // Expired entries leave the list; the outcome is read before that.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let pending = loop {
        revoker.refresh_metrics();
        let n = gw.metrics.revocation.pending_deletions.get();
        if n == 0 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending, 0, "the retry of {id} never ended");
    h.hooks().set_token_api_down(false);
}

#[tokio::test]
async fn a_user_logging_out_many_sessions_holds_a_bounded_share_of_the_list() {
    use smh_gateway::revoke::MAX_LOGOUT_ENTRIES_PER_USER;
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let now = unix_now();
    let logout = |s: String| {
        let r = h.client.post(h.url("/gateway/v1/logout")).bearer_auth(s);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    for i in 0..MAX_LOGOUT_ENTRIES_PER_USER {
        assert_eq!(
            logout(session(&h, "yves", &format!("s{i}"), now - 10)).await,
            204
        );
    }
    let revocations = h.env.running.gateway.revoker.list();
    assert_eq!(revocations.entries_of("yves"), MAX_LOGOUT_ENTRIES_PER_USER);
    let other = session(&h, "yves", "s-other", now - 10);
    assert_eq!(h.get(&list, &other).await.status(), 200, "not logged out");
    // One more: widened to every device, which replaces the others.
    assert_eq!(logout(session(&h, "yves", "s-last", now - 10)).await, 204);
    assert_eq!(revocations.entries_of("yves"), 1);
    assert_eq!(h.get(&list, &other).await.status(), 403, "widened");
    let listed = h.env.running.gateway.revoker.active();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revocation.session_id, None);
    assert!(
        listed[0]
            .revocation
            .reason
            .as_deref()
            .unwrap()
            .contains("widened"),
        "{listed:?}"
    );
}

#[tokio::test]
async fn a_session_stamped_a_little_ahead_is_still_revoked_and_further_is_refused() {
    // The issuer's clock may run a few seconds ahead of ours: a session
    // stamped 4 s from now may have been issued just before a revocation,
    // so it is refused too; one stamped further ahead is refused outright.
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let far = session(&h, "zara", "s-far", unix_now() + 20);
    let (status, _, body) = error_code(h.get(&list, &far).await).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("future"),
        "{body}"
    );
    let ahead = session(&h, "zara", "s-ahead", unix_now() + 4);
    assert_eq!(h.get(&list, &ahead).await.status(), 200);
    let r = h
        .client
        .post(h.url("/gateway/v1/logout"))
        .bearer_auth(&ahead)
        .body(r#"{"all_devices":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h.get(&list, &ahead).await.status(), 403);
    let listed = h.env.running.gateway.revoker.active();
    let rev = &listed[0].revocation;
    assert_eq!(rev.expires_at - rev.revoked_at, 7 * 86_400 + 30 + 5 + 1);
    // A login right after the revocation (stamped now) is refused for
    // those few seconds; one stamped past them works.
    let at = rev.revoked_at;
    let soon = session(&h, "zara", "s-soon", at + 1);
    assert_eq!(h.get(&list, &soon).await.status(), 403);
    let later = session(&h, "zara", "s-later", issued_after(at).await);
    assert_eq!(h.get(&list, &later).await.status(), 200);
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_cancel_the_revocation() {
    let (h, audit) = admin_harness().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let phone = device_session(&h, "ugo", "phone", "s1");
    assert_eq!(h.get(&list, &phone).await.status(), 200);
    // SMH's token API is down, so the deletes take several attempts; the
    // client gives up long before that.
    h.hooks().set_token_api_down(true);
    let calls = h.hooks().token_api_calls();
    let impatient =
        common::client_builder(&std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap())
            .timeout(std::time::Duration::from_millis(100))
            .build()
            .unwrap();
    let r = impatient
        .post(h.url("/gateway/v1/logout"))
        .bearer_auth(&phone)
        .send()
        .await;
    assert!(r.is_err(), "the client timed out: {r:?}");
    // The revocation still ran to its end: every attempt, the background
    // retry registered, the audit line written.
    let lines = revocation_lines(&audit, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["smh"][&lib]["status"], "pending", "{lines:?}");
    assert!(
        h.hooks().token_api_calls() - calls >= u64::from(smh_gateway::smh::delete::DELETE_ATTEMPTS),
        "every attempt was made"
    );
    let listed = h.env.running.gateway.revoker.active();
    assert_eq!(listed[0].smh.as_ref().unwrap()[&lib].status, "pending");
    assert_eq!(h.get(&list, &phone).await.status(), 403);
    h.hooks().set_token_api_down(false);
}

#[tokio::test]
async fn readiness_can_wait_for_the_first_revocation_sync() {
    use smh_gateway::revocation::test_support::RedisServer;
    // A Redis that is not there (started and killed: its port is free).
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    for (check, status, says) in [
        (false, 200, "ready (revocations: redis connecting"),
        (true, 503, "revocations: redis connecting"),
    ] {
        let h = Harness::start_with(
            Default::default(),
            &format!("[admin]\ncheck_revocations = {check}\n[revocation]\nredis_url = \"{url}\"\n"),
        )
        .await;
        let r = reqwest::get(h.admin_url("/readyz")).await.unwrap();
        assert_eq!(r.status(), status, "check_revocations = {check}");
        let body = r.text().await.unwrap();
        assert!(body.starts_with(says), "{body:?}");
        // Serving goes on either way (the load balancer decides).
        let lib = h.lib().to_string();
        let s = h.session("vera", &["viewer"]);
        assert_eq!(
            h.get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &s)
                .await
                .status(),
            200
        );
    }
}
