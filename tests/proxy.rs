//! The proxy path end to end: client -> gateway (real TLS, ephemeral port)
//! -> SMH emulator (real TLS). Each test names the acceptance point it shows.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{error_code, Harness};
use smh_gateway::emulator::EmulatorConfig;

/// The access token the emulator saw on its most recent request to `path_prefix`.
fn seen_token(h: &Harness, path_prefix: &str) -> Option<String> {
    h.hooks()
        .requests()
        .iter()
        .rev()
        .find(|r| r.path.starts_with(path_prefix))
        .and_then(|r| r.query.clone())
        .and_then(|q| {
            q.split('&')
                .find_map(|p| p.strip_prefix("access_token=").map(str::to_string))
        })
}

#[tokio::test]
async fn session_reaches_smh_with_the_users_token_and_is_recorded_as_operator() {
    let h = Harness::start().await;
    let alice = h.session("alice", &["editor"]);
    let lib = h.lib().to_string();
    let resp = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/-/albums")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);

    let tokens = h.hooks().tokens_for_user("alice");
    assert_eq!(tokens.len(), 1, "one token minted for alice");
    let t = &tokens[0];
    assert_eq!(t.client_id, "");
    let mut grants = t.grants.clone();
    grants.sort();
    assert!(
        grants.contains(&"create_directory".to_string()),
        "{grants:?}"
    );
    assert_eq!(
        seen_token(&h, &format!("/api/v1/directory/{lib}/-/albums")).as_deref(),
        Some(t.token.as_str()),
        "the forwarded request carries alice's SMH token"
    );
    let ops = h.hooks().operations();
    let op = ops
        .iter()
        .find(|o| o.path.contains("albums"))
        .expect("mkdir recorded");
    assert_eq!(
        op.user_id, "alice",
        "SMH records the session's user as operator"
    );
}

#[tokio::test]
async fn client_id_comes_from_the_header_and_is_part_of_the_token() {
    // The device header is opt-in (`session.client_header`); see
    // tests/authz.rs for what it may not do.
    let h = Harness::start_full(
        EmulatorConfig::default(),
        "",
        Some(
            "[session]\ndefault_roles = [\"viewer\"]\nclient_header = \"x-client-id\"\n[session.jwt]\nhmac_secret_file = \"{dir}/session-secret\"\n"
                .to_string(),
        ),
    )
    .await;
    let bob = h.session("bob", &["viewer"]);
    let lib = h.lib().to_string();
    for device in ["phone", "laptop", "phone"] {
        let resp = h
            .client
            .get(h.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
            .bearer_auth(&bob)
            .header("x-client-id", device)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut clients: Vec<String> = h
        .hooks()
        .tokens_for_user("bob")
        .into_iter()
        .map(|t| t.client_id)
        .collect();
    clients.sort();
    assert_eq!(clients, ["laptop", "phone"], "one token per (user, client)");
}

#[tokio::test]
async fn one_mint_for_a_thousand_concurrent_first_requests() {
    let h = Arc::new(Harness::start().await);
    let lib = h.lib().to_string();
    let carol = h.session("carol", &["viewer"]);
    let before = h.hooks().mints();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let h = h.clone();
        let (carol, lib) = (carol.clone(), lib.clone());
        tasks.push(tokio::spawn(async move {
            h.get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &carol)
                .await
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        h.hooks().mints() - before,
        1,
        "1,000 concurrent first requests -> 1 mint"
    );

    // 50 users -> 50 mints, concurrently.
    let before = h.hooks().mints();
    let mut tasks = Vec::new();
    for round in 0..2 {
        for u in 0..50 {
            let h = h.clone();
            let lib = lib.clone();
            let s = h.session(&format!("user{u}"), &["viewer"]);
            tasks.push(tokio::spawn(async move {
                let _ = round;
                h.get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &s)
                    .await
                    .status()
                    .as_u16()
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.hooks().mints() - before, 50, "50 users -> 50 mints");

    // Repeat traffic: no mints at all.
    let before = h.hooks().mints();
    for u in 0..50 {
        let s = h.session(&format!("user{u}"), &["viewer"]);
        assert_eq!(
            h.get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &s)
                .await
                .status(),
            200
        );
    }
    assert_eq!(h.hooks().mints(), before, "warm cache -> no mints");
}

#[tokio::test]
async fn client_credentials_never_reach_smh_and_the_query_keeps_its_bytes() {
    // Sessions from the bearer header only, so the query's access_token is
    // a stale SMH token to strip, not a second session credential (which
    // would disagree with the bearer one and be refused).
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[session]\ncredentials = [\"bearer\"]\n",
    )
    .await;
    let lib = h.lib().to_string();
    let s = h.session("dave", &["viewer"]);
    let path = format!("/api/v1/directory/{lib}/-/");
    let resp = h
        .client
        .get(h.url(&format!(
            "{path}?access_token=acctkSTOLEN&by-marker&library_secret=guess&limit=5&user_id=root&order_by=name"
        )))
        .bearer_auth(&s)
        .header("cookie", "business_session=abc")
        .header("x-smh-meta-note", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h
        .hooks()
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == path)
        .expect("request reached the emulator");
    let token = &h.hooks().tokens_for_user("dave")[0].token;
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("by-marker&limit=5&order_by=name&access_token={token}").as_str()),
        "credentials stripped, everything else kept in order, token appended"
    );
    let names: HashSet<String> = seen
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(!names.contains("authorization"), "{names:?}");
    assert!(!names.contains("cookie"), "{names:?}");
    assert_eq!(seen.header("x-smh-meta-note"), Some("kept"));
    assert!(
        seen.header("x-request-id").is_some(),
        "request id sent upstream"
    );
}

#[tokio::test]
async fn encoded_paths_and_bare_flags_pass_unchanged() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("erin", &["editor"]);
    let resp = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/-/a%2Fb%2Fc")))
        .bearer_auth(&s)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let resp = h
        .get(&format!("/api/v1/directory/{lib}/-/a/b?info"), &s)
        .await;
    assert_eq!(resp.status(), 200, "a%2Fb%2Fc created a/b/c");
    let seen: Vec<_> = h.hooks().requests();
    assert!(seen
        .iter()
        .any(|r| r.path == format!("/api/v1/directory/{lib}/-/a%2Fb%2Fc")));
    assert!(seen.iter().any(|r| r
        .query
        .as_deref()
        .is_some_and(|q| q.starts_with("info&access_token="))));
}

/// `upstream.http2 = true` takes hyper-util's client (h2 to the emulator)
/// instead of the keep-alive pool: listing, a PUT with a body and the
/// remint-and-replay all behave the same.
#[tokio::test]
async fn the_h2_upstream_transport_proxies_and_replays_too() {
    let h = Harness::start_with(EmulatorConfig::default(), "[upstream]\nhttp2 = true\n").await;
    let lib = h.lib().to_string();
    let s = h.session("hana", &["editor"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200);
    let old = h.hooks().tokens_for_user("hana")[0].token.clone();
    h.hooks().fail_next_uses(&old, 1);
    let resp = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/-/over-h2")))
        .bearer_auth(&s)
        .json(&serde_json::json!({"labels": ["y"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let seen: Vec<_> = h
        .hooks()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/over-h2"))
        .collect();
    assert_eq!(seen.len(), 2, "rejected once, replayed once");
    assert_eq!(seen[0].body_bytes, seen[1].body_bytes);
    assert_eq!(
        seen[1].header("host"),
        None,
        "h2 names the host in :authority only"
    );
}

#[tokio::test]
async fn forced_invalid_token_is_reminted_and_replayed_invisibly() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("frank", &["editor"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200);
    let old = h.hooks().tokens_for_user("frank")[0].token.clone();
    let mints = h.hooks().mints();
    let uses_before = h.hooks().token_uses(&old);
    h.hooks().fail_next_uses(&old, 1);

    // A PUT with a small JSON body: the body must be replayed too.
    let resp = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/-/replayed")))
        .bearer_auth(&s)
        .json(&serde_json::json!({"labels": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "client never sees the first failure");
    assert_eq!(h.hooks().mints() - mints, 1, "a second mint");
    assert_eq!(
        h.hooks().token_uses(&old) - uses_before,
        1,
        "one rejected call with the old token"
    );
    let tokens = h.hooks().tokens_for_user("frank");
    let new = tokens.iter().find(|t| t.token != old).expect("new token");
    assert_eq!(
        h.hooks().token_uses(&new.token),
        1,
        "one accepted call with the new token"
    );
    let replayed = h
        .hooks()
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/replayed"))
        .collect::<Vec<_>>();
    assert_eq!(replayed.len(), 2);
    assert_eq!(
        replayed[0].body_bytes, replayed[1].body_bytes,
        "body replayed whole"
    );
    assert!(replayed[1].body_bytes > 0);

    // The fresh token is cached: the next request mints nothing.
    let mints = h.hooks().mints();
    assert_eq!(h.get(&list, &s).await.status(), 200);
    assert_eq!(h.hooks().mints(), mints);
}

#[tokio::test]
async fn token_api_outage_is_503_not_cached_and_recovers() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("grace", &["viewer"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    h.hooks().set_token_api_down(true);
    let data_before = h.hooks().data_requests();
    for _ in 0..3 {
        let resp = h.get(&list, &s).await;
        assert_eq!(resp.headers()["retry-after"], "2");
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (503, "TokenServiceUnavailable"));
    }
    assert_eq!(
        h.hooks().data_requests(),
        data_before,
        "no data call without a token"
    );
    h.hooks().set_token_api_down(false);
    let resp = h.get(&list, &s).await;
    assert_eq!(
        resp.status(),
        200,
        "recovers by itself: failures were not cached"
    );
    assert_eq!(h.hooks().tokens_for_user("grace").len(), 1);
}

#[tokio::test]
async fn upstream_unreachable_is_502_not_401() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("heidi", &["viewer"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200);
    h.hooks().fail_next_data_requests(1, 503);
    let resp = h.get(&list, &s).await;
    assert_eq!(resp.status(), 503, "SMH's own 5xx passes through as is");
    h.env.emulator.shutdown();
    // Wait for the event, not a clock: until the emulator's connections
    // are gone a request may still be answered; from then on it is 502.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = h.get(&list, &s).await;
        if resp.status() == 200 && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            continue;
        }
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (502, "UpstreamUnavailable"));
        break;
    }
}

#[tokio::test]
async fn refusals_are_smh_shaped_and_never_reach_smh() {
    // The gateway's own answers; the SDK-compatible default is in tests/sdk.rs.
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[session]\nsmh_compatible_errors = false\n",
    )
    .await;
    let lib = h.lib().to_string();
    let s = h.session("ivan", &["viewer"]);
    let before = h.hooks().requests().len();

    let resp = h
        .client
        .get(h.url(&format!("/api/v1/directory/{lib}/-/")))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("www-authenticate"));
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "MissingSession"), "{body}");

    let resp = h
        .client
        .get(h.url(&format!("/api/v1/directory/{lib}/-/")))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "InvalidSession");

    let expired =
        smh_gateway::dev::sign_session(&h.env.session_secret, "ivan", &["viewer"], 0).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    // exp == now is within the leeway; forge one well in the past instead.
    let _ = expired;
    let past = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "ivan", "exp": 1_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap();
    let resp = h.get(&format!("/api/v1/directory/{lib}/-/"), &past).await;
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "InvalidSession"));
    assert!(body["message"].as_str().unwrap().contains("expired"));

    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "ivan", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"wrong key"),
    )
    .unwrap();
    let resp = h.get(&format!("/api/v1/directory/{lib}/-/"), &forged).await;
    assert_eq!(error_code(resp).await.1, "InvalidSession");

    let resp = h.get("/api/v1/directory/nosuchlib/-/", &s).await;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (404, "LibraryNotFound"));

    for p in [
        format!("/api/v1/token?library_id={lib}&library_secret=x"),
        format!("/api/v1/token/{lib}/acctkX"),
    ] {
        let resp = h.get(&p, &s).await;
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (403, "NoPermission"), "{p}");
    }

    let resp = h.get("/not-smh", &s).await;
    assert_eq!(error_code(resp).await.0, 404);

    let resp = h
        .get(&format!("/api/v1/directory/{lib}/otherspace/"), &s)
        .await;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "AccessTokenNotMatchSpace"));

    assert_eq!(h.hooks().requests().len(), before, "nothing reached SMH");
    assert_eq!(h.hooks().tokens_for_user("ivan").len(), 0, "nothing minted");
}

#[tokio::test]
async fn upload_201_and_download_302_pass_through_untouched() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("judy", &["editor"]);
    let up = h
        .upload("hello.txt", &s, b"hello through the gateway".to_vec())
        .await;
    let emu_authority = format!("localhost:{}", h.env.emulator.addr().port());
    assert_eq!(
        up["domain"],
        emu_authority.as_str(),
        "upload target is SMH's (COS), not rewritten"
    );

    let resp = h.get(&format!("/api/v1/file/{lib}/-/hello.txt"), &s).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("https://{emu_authority}/")),
        "{location}"
    );
    assert_eq!(resp.headers()["x-smh-size"], "25");
    assert!(resp.headers().contains_key("x-request-id"));
    let bytes = h
        .client
        .get(&location)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bytes, "hello through the gateway");
}

#[tokio::test]
async fn http1_and_http2_clients_both_work() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("ken", &["viewer"]);
    let url = h.url(&format!("/api/v1/directory/{lib}/-/?by-marker"));
    let r2 = h.client.get(&url).bearer_auth(&s).send().await.unwrap();
    assert_eq!(r2.version(), reqwest::Version::HTTP_2);
    assert_eq!(r2.status(), 200);
    let r1 = h.h1.get(&url).bearer_auth(&s).send().await.unwrap();
    assert_eq!(r1.version(), reqwest::Version::HTTP_11);
    assert_eq!(r1.status(), 200);
    let b1: serde_json::Value = r1.json().await.unwrap();
    let b2: serde_json::Value = r2.json().await.unwrap();
    assert_eq!(b1, b2);
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_made_otherwise() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("leo", &["viewer"]);
    let url = h.url(&format!("/api/v1/directory/{lib}/-/?by-marker"));
    let r = h
        .client
        .get(&url)
        .bearer_auth(&s)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let seen = h.hooks().requests().into_iter().last().unwrap();
    assert_eq!(seen.header("x-request-id"), Some("abc-123"));
    let r = h
        .client
        .get(&url)
        .bearer_auth(&s)
        .header("x-request-id", "bad id\twith<junk>")
        .send()
        .await
        .unwrap();
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 32, "replaced by a generated id: {rid}");
    // Errors carry the same id in the body.
    let r = h
        .client
        .get(&url)
        .header("x-request-id", "err-1")
        .send()
        .await
        .unwrap();
    let (_, _, body) = error_code(r).await;
    assert_eq!(body["requestId"], "err-1");
}

#[tokio::test]
async fn large_request_bodies_stream_through_without_replay() {
    // 8 MiB (well over the 64 KiB replay bound, under a 16 MiB body cap):
    // the emulator reads it all and answers 413, proving the gateway
    // streamed it rather than refusing it. A flagged call: a flag-less
    // PUT's body is read to judge its operation.
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nmax_body_bytes = 16777216\n",
    )
    .await;
    let lib = h.lib().to_string();
    let s = h.session("mallory", &["editor"]);
    let size = 8 * 1024 * 1024;
    let before = h.hooks().body_bytes_received();
    let resp = h
        .client
        .post(h.url(&format!("/api/v1/file/{lib}/-/big.bin?multipart")))
        .bearer_auth(&s)
        .body(vec![b'x'; size])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(h.hooks().body_bytes_received() - before, size as u64);
}

#[tokio::test]
async fn cached_tokens_slide_with_use_and_expire_before_smh_would() {
    // Token period 6 s, safety margin 2 s: the cache keeps a token 4 s past
    // its last use. Real seconds pass here because the cache runs on the
    // real clock; the assertions count mints, not time.
    let h = Harness::start_with(
        EmulatorConfig {
            period_min: 1,
            ..EmulatorConfig::default()
        },
        "[tokens]\nsafety_margin_secs = 2\n[[role]]\nname = \"short\"\nspaces = [\"-\"]\nperiod_secs = 6\n",
    )
    .await;
    let lib = h.lib().to_string();
    let s = h.session("olga", &["short"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200);
    let t = &h.hooks().tokens_for_user("olga")[0];
    assert_eq!(t.period, 6, "the role's period is what SMH was asked for");
    let mints = h.hooks().mints();
    // Used every second for 6 s (past the 4 s idle window): still one token.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(h.get(&list, &s).await.status(), 200);
    }
    assert_eq!(h.hooks().mints(), mints, "each use slid the cached entry");
    // Idle for 5 s (> 4 s): the entry is gone although SMH (6 s) still
    // honours the token; the next request mints a fresh one.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(h.get(&list, &s).await.status(), 200);
    assert_eq!(
        h.hooks().mints(),
        mints + 1,
        "expired a margin before SMH would"
    );
}

#[tokio::test]
async fn over_the_concurrency_limit_is_503_and_slow_upstreams_hit_the_deadline() {
    let h = Arc::new(
        Harness::start_with(
            EmulatorConfig::default(),
            "[limits]\nmax_concurrent_requests = 2\nrequest_timeout_secs = 2\n",
        )
        .await,
    );
    let lib = h.lib().to_string();
    let s = h.session("pat", &["viewer"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200, "warm the token");
    h.hooks().set_latency(std::time::Duration::from_millis(700));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h, s, list) = (h.clone(), s.clone(), list.clone());
        tasks.push(tokio::spawn(async move {
            let r = h.get(&list, &s).await;
            let retry = r.headers().get("retry-after").is_some();
            let status = r.status().as_u16();
            let code = if status == 200 {
                String::new()
            } else {
                error_code(r).await.1
            };
            (status, code, retry)
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _, _) => ok += 1,
            (503, code, true) if code == "ServerOverloaded" => shed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        ok >= 2 && shed >= 1 && ok + shed == 8,
        "ok {ok} shed {shed}"
    );

    h.hooks()
        .set_latency(std::time::Duration::from_millis(2500));
    let (status, code, _) = error_code(h.get(&list, &s).await).await;
    assert_eq!((status, code.as_str()), (504, "RequestTimeout"));
    h.hooks().set_latency(std::time::Duration::ZERO);
}
