//! Revocation across replicas (issue 16): gateway processes sharing one
//! real `redis-server` and one emulator. A revocation made on one replica
//! (admin route or the caller's logout) is refused on every replica within
//! a second, drops the user's SMH tokens (at SMH and in every replica's
//! cache), is loaded by a replica started later, and survives Redis going
//! away: traffic keeps flowing, and the revocation reaches the other
//! replicas once Redis is back.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{GatewayProcess, Harness};
use serde_json::{json, Value};
use smh_gateway::revocation::test_support::RedisServer;

const ADMIN_TOKEN: &str = "replicas-test-admin-token";
/// Poll interval for every wait below.
const POLL: Duration = Duration::from_millis(20);
/// The issue's bound for a revocation to reach every replica.
const WITHIN_ONE_SECOND: Duration = Duration::from_secs(1);
/// Bound for events with no promised latency (start-up, Redis state).
const EVENTUALLY: Duration = Duration::from_secs(15);
/// The session claim naming the device in these tests' configuration.
const CLIENT_CLAIM: &str = "cid";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A viewer session for `user` on `device` (if any), named `sid`, issued at `iat`.
fn session(h: &Harness, user: &str, device: Option<&str>, sid: &str, iat: u64) -> String {
    let mut claims = json!({
        "sub": user,
        "sid": sid,
        "roles": ["viewer"],
        "iat": iat,
        "exp": iat + 3600,
    });
    if let Some(d) = device {
        claims[CLIENT_CLAIM] = d.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

/// A replica on the harness's configuration: the admin API on, the device
/// claim named, revocations shared through `redis_url`.
fn replica(h: &Harness, redis_url: &str, replica_id: &str) -> GatewayProcess {
    let token_file = h.env.dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    GatewayProcess::spawn(
        h,
        &format!(
            "[admin]\ntoken_file = \"{}\"\n\
             [session]\nclient_claim = \"{CLIENT_CLAIM}\"\n\
             [revocation]\nredis_url = \"{redis_url}\"\nreplica_id = \"{replica_id}\"\n",
            token_file.display()
        ),
        None,
    )
}

/// The last lines of a replica's log, for failure messages.
fn tail(gw: &GatewayProcess) -> String {
    let log = gw.log.lock().unwrap();
    let from = log.len().saturating_sub(40);
    log[from..].join("\n")
}

/// What a data request got back.
struct Answer {
    status: u16,
    code: String,
    body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Answer {
    fn refused(&self) -> bool {
        self.status == 403 && self.code == "InvalidAccessToken"
    }
}

fn list_path(h: &Harness) -> String {
    format!("/api/v1/directory/{}/-/?by-marker", h.lib())
}

/// A directory listing through `gw` with `session`.
async fn list(h: &Harness, gw: &GatewayProcess, session: &str) -> Answer {
    let r = h
        .client
        .get(gw.url(&list_path(h)))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    Answer { status, code, body }
}

async fn expect_ok(h: &Harness, gw: &GatewayProcess, session: &str, what: &str) {
    let a = list(h, gw, session).await;
    assert_eq!(
        a.status,
        200,
        "{what}: GET {} answered {a:?}\nreplica log:\n{}",
        list_path(h),
        tail(gw)
    );
}

async fn expect_refused(h: &Harness, gw: &GatewayProcess, session: &str, what: &str) {
    let a = list(h, gw, session).await;
    assert!(
        a.refused(),
        "{what}: GET {} should be 403 InvalidAccessToken, got {a:?}\nreplica log:\n{}",
        list_path(h),
        tail(gw)
    );
}

/// Polls until `session` is refused (403 `InvalidAccessToken`) on `gw`.
async fn wait_refused(
    h: &Harness,
    gw: &GatewayProcess,
    session: &str,
    deadline: Instant,
    what: &str,
) {
    loop {
        let a = list(h, gw, session).await;
        if a.refused() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: still not refused at the deadline; last answer to GET {}: {a:?}\n\
                 replica log:\n{}",
                list_path(h),
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An admin call: status, JSON answer (or the text as a JSON string), and
/// when the answer arrived.
async fn admin(
    gw: &GatewayProcess,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, Instant) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let at = Instant::now();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, at)
}

/// `POST /admin/v1/revoke` on `gw`; panics unless 200. Returns the answer
/// and when it arrived.
async fn revoke(gw: &GatewayProcess, body: Value) -> (Value, Instant) {
    let (status, answer, at) = admin(gw, "POST", "/admin/v1/revoke", Some(body.clone())).await;
    assert_eq!(
        status,
        200,
        "POST /admin/v1/revoke {body} answered {answer}\nreplica log:\n{}",
        tail(gw)
    );
    (answer, at)
}

/// Checks the answer's shape: sharing outcome and SMH confirmed for `lib`.
fn check_revoke_answer(answer: &Value, lib: &str, shared: &str) {
    assert_eq!(answer["shared"], shared, "sharing outcome in {answer}");
    assert_eq!(
        answer["smh"][lib]["status"], "confirmed",
        "SMH confirmed the delete for library {lib}: {answer}"
    );
    assert!(
        answer["revocation"]["id"].is_string(),
        "the revocation has an id: {answer}"
    );
}

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

/// Waits until the revocation counters say one revocation was made on
/// `made_on` and received by `received_by`.
async fn applied_once(made_on: &GatewayProcess, received_by: &GatewayProcess) {
    let soon = Instant::now() + EVENTUALLY;
    wait_metric(
        made_on,
        "smh_gateway_revocations_total",
        &[("source", "local")],
        1.0,
        soon,
    )
    .await;
    wait_metric(
        received_by,
        "smh_gateway_revocations_total",
        &[("source", "replica")],
        1.0,
        soon,
    )
    .await;
}

fn revoked_at(answer: &Value) -> u64 {
    let at = &answer["revocation"]["revoked_at"];
    at.as_u64()
        .or_else(|| at.as_f64().map(|f| f as u64))
        .unwrap_or_else(|| panic!("revoked_at is a number of seconds: {answer}"))
}

/// `GET /admin/v1/revocations` on `gw`.
async fn revocations(gw: &GatewayProcess) -> Value {
    let (status, v, _) = admin(gw, "GET", "/admin/v1/revocations", None).await;
    assert_eq!(status, 200, "GET /admin/v1/revocations answered {v}");
    v
}

/// The entry with `id` in `gw`'s revocation list, if listed.
async fn listed(gw: &GatewayProcess, id: &str) -> Option<Value> {
    revocations(gw).await["revocations"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["id"] == id).cloned())
}

async fn wait_listed(gw: &GatewayProcess, id: &str, deadline: Instant, what: &str) -> Value {
    loop {
        if let Some(r) = listed(gw, id).await {
            return r;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: revocation {id} not listed; GET /admin/v1/revocations: {}\nreplica log:\n{}",
                revocations(gw).await,
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the replica reports Redis in `state` (admin revocations route).
async fn wait_redis_state(gw: &GatewayProcess, state: &str, what: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let v = revocations(gw).await;
        if v["redis"]["state"] == state {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: Redis state not {state:?} within {EVENTUALLY:?}; GET /admin/v1/revocations: {v}\n\
                 replica log:\n{}",
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_ready(gw: &GatewayProcess, what: &str) {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        if status == 200 {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: /readyz still {status} {body:?}\nreplica log:\n{}",
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn metric(gw: &GatewayProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    common::scrape_sample(&gw.admin_url(""), name, labels).await
}

/// Polls until the sample equals `want`.
async fn wait_metric(
    gw: &GatewayProcess,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    deadline: Instant,
) {
    loop {
        let got = metric(gw, name, labels).await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{name}{labels:?} is {got}, expected {want}\nreplica log:\n{}",
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn revocations_total(gw: &GatewayProcess, source: &str) -> f64 {
    metric(gw, "smh_gateway_revocations_total", &[("source", source)]).await
}

/// `token_cache_entries` from `GET /admin/v1/status`.
async fn token_cache_entries(gw: &GatewayProcess) -> u64 {
    let (status, v, _) = admin(gw, "GET", "/admin/v1/status", None).await;
    assert_eq!(status, 200, "GET /admin/v1/status answered {v}");
    v["token_cache_entries"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token_cache_entries in {v}"))
}

async fn wait_cache_entries(gw: &GatewayProcess, want: u64, deadline: Instant, what: &str) {
    loop {
        let got = token_cache_entries(gw).await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: token_cache_entries is {got}, expected {want}\nreplica log:\n{}",
                tail(gw)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `POST /gateway/v1/logout` on the client listener.
async fn logout(
    h: &Harness,
    gw: &GatewayProcess,
    session: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = h.client.post(gw.url("/gateway/v1/logout"));
    if let Some(s) = session {
        req = req.bearer_auth(s);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// Live SMH tokens of `user` at the emulator, as (client_id, session_id).
fn smh_tokens(h: &Harness, user: &str) -> Vec<(String, String)> {
    h.hooks()
        .tokens_for_user(user)
        .into_iter()
        .map(|t| (t.client_id, t.session_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_reaches_every_replica() {
    let redis = RedisServer::start();
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let a = replica(&h, &redis.url(), "gw-a");
    let b = replica(&h, &redis.url(), "gw-b");
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        wait_ready(gw, name).await;
        wait_redis_state(gw, "connected", name).await;
    }
    let issued = now() - 10;
    let s1 = session(&h, "ursula", None, "u-s1", issued);
    let v1 = session(&h, "victor", None, "v-s1", issued);

    // Warm: V first, then U, on both replicas (twice: cache and memo).
    let mut only_v = Vec::new();
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &v1, &format!("V on {name} before")).await;
        only_v.push(token_cache_entries(gw).await);
        for _ in 0..2 {
            expect_ok(&h, gw, &s1, &format!("U on {name} before")).await;
        }
        let with_u = token_cache_entries(gw).await;
        assert!(
            with_u > *only_v.last().unwrap(),
            "{name} caches U's token: {with_u} entries with U, {} without",
            only_v.last().unwrap()
        );
    }
    assert!(!smh_tokens(&h, "ursula").is_empty(), "U has SMH tokens");
    let v_tokens = smh_tokens(&h, "victor").len();
    assert!(v_tokens >= 2, "V has a token per replica: {v_tokens}");

    // Revoke every device of U on A.
    let (answer, answered) = revoke(
        &a,
        json!({"user_id": "ursula", "reason": "password changed"}),
    )
    .await;
    check_revoke_answer(&answer, &lib, "published");
    assert_eq!(answer["revocation"]["user_id"], "ursula", "{answer}");
    assert_eq!(answer["revocation"]["requested_by"], "admin", "{answer}");
    assert_eq!(
        answer["revocation"]["reason"], "password changed",
        "{answer}"
    );
    let id = answer["revocation"]["id"].as_str().unwrap().to_string();
    let at = revoked_at(&answer);
    let expires = answer["revocation"]["expires_at"].as_u64().unwrap_or(0);
    assert!(
        expires >= at + 604_800,
        "a revocation lives at least session.max_lifetime_secs (604800): {answer}"
    );
    // SMH confirmed: checked before any request reaches B (a request B
    // serves before it hears of the revocation may mint U a new token).
    assert_eq!(
        smh_tokens(&h, "ursula"),
        Vec::<(String, String)>::new(),
        "the emulator still holds live tokens of U after the confirmed delete"
    );
    assert_eq!(
        smh_tokens(&h, "victor").len(),
        v_tokens,
        "V's SMH tokens are untouched"
    );

    // Within one second of the answer, refused on both, caches dropped.
    let deadline = answered + WITHIN_ONE_SECOND;
    wait_refused(&h, &a, &s1, deadline, "U's old session on A").await;
    wait_refused(&h, &b, &s1, deadline, "U's old session on B").await;
    wait_cache_entries(&a, only_v[0], deadline, "A dropped U's tokens, kept V's").await;
    wait_cache_entries(&b, only_v[1], deadline, "B dropped U's tokens, kept V's").await;

    // V untouched: served from the cache, nothing minted.
    let mints = h.hooks().mints();
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &v1, &format!("V on {name} after")).await;
    }
    assert_eq!(
        h.hooks().mints(),
        mints,
        "V's cached tokens were kept on both replicas"
    );

    // A session issued after the revocation works on both.
    let fresh = session(&h, "ursula", None, "u-s2", issued_after(at).await);
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &fresh, &format!("U's new session on {name}")).await;
        expect_refused(&h, gw, &s1, &format!("U's old session on {name}, still")).await;
    }

    // The list on B names it; A's entry carries the SMH outcome.
    let on_b = listed(&b, &id)
        .await
        .unwrap_or_else(|| panic!("B lists revocation {id}"));
    assert_eq!(on_b["user_id"], "ursula", "{on_b}");
    assert_eq!(on_b["revoked_at"].as_u64(), Some(at), "{on_b}");
    let on_a = listed(&a, &id)
        .await
        .unwrap_or_else(|| panic!("A lists revocation {id}"));
    assert_eq!(on_a["smh"][&lib]["status"], "confirmed", "{on_a}");

    // Applied once on each: made on A, received on B.
    applied_once(&a, &b).await;
    assert_eq!(
        revocations_total(&a, "replica").await,
        0.0,
        "A does not apply its own message again"
    );
    assert_eq!(
        revocations_total(&b, "local").await,
        0.0,
        "nothing was revoked on B itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_session_scopes() {
    let redis = RedisServer::start();
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let a = replica(&h, &redis.url(), "gw-a");
    let b = replica(&h, &redis.url(), "gw-b");
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        wait_ready(gw, name).await;
        wait_redis_state(gw, "connected", name).await;
    }
    let issued = now() - 10;
    let d1 = session(&h, "ursula", Some("phone"), "s-phone", issued);
    let d2a = session(&h, "ursula", Some("laptop"), "s-laptop-a", issued);
    let d2b = session(&h, "ursula", Some("laptop"), "s-laptop-b", issued);
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        for (s, what) in [(&d1, "phone"), (&d2a, "laptop a"), (&d2b, "laptop b")] {
            expect_ok(&h, gw, s, &format!("{what} on {name} before")).await;
        }
    }
    // Minted tokens name the device and the session.
    let count = |client: &str, sid: &str| {
        smh_tokens(&h, "ursula")
            .iter()
            .filter(|(c, s)| (client.is_empty() || c == client) && (sid.is_empty() || s == sid))
            .count()
    };
    for (c, s) in [
        ("phone", "s-phone"),
        ("laptop", "s-laptop-a"),
        ("laptop", "s-laptop-b"),
    ] {
        assert_eq!(
            count(c, s),
            2,
            "one SMH token per replica names client_id {c} and session_id {s}: {:?}",
            smh_tokens(&h, "ursula")
        );
    }

    // One device.
    let (answer, answered) = revoke(&a, json!({"user_id": "ursula", "client_id": "phone"})).await;
    check_revoke_answer(&answer, &lib, "published");
    assert_eq!(answer["revocation"]["client_id"], "phone", "{answer}");
    assert_eq!(
        count("phone", ""),
        0,
        "the phone's SMH tokens are deleted: {:?}",
        smh_tokens(&h, "ursula")
    );
    assert_eq!(
        count("laptop", ""),
        4,
        "the laptop's SMH tokens are not: {:?}",
        smh_tokens(&h, "ursula")
    );
    let deadline = answered + WITHIN_ONE_SECOND;
    wait_refused(&h, &a, &d1, deadline, "the phone on A").await;
    wait_refused(&h, &b, &d1, deadline, "the phone on B").await;
    let mints = h.hooks().mints();
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(
            &h,
            gw,
            &d2a,
            &format!("laptop a on {name} after the phone's revocation"),
        )
        .await;
        expect_ok(
            &h,
            gw,
            &d2b,
            &format!("laptop b on {name} after the phone's revocation"),
        )
        .await;
    }
    assert_eq!(
        h.hooks().mints(),
        mints,
        "the laptop's cached tokens were kept"
    );

    // One session.
    let (answer, answered) =
        revoke(&a, json!({"user_id": "ursula", "session_id": "s-laptop-a"})).await;
    check_revoke_answer(&answer, &lib, "published");
    assert_eq!(answer["revocation"]["session_id"], "s-laptop-a", "{answer}");
    assert_eq!(
        count("", "s-laptop-a"),
        0,
        "that session's SMH tokens are deleted: {:?}",
        smh_tokens(&h, "ursula")
    );
    assert_eq!(
        count("", "s-laptop-b"),
        2,
        "the other session's are not: {:?}",
        smh_tokens(&h, "ursula")
    );
    let deadline = answered + WITHIN_ONE_SECOND;
    wait_refused(&h, &a, &d2a, deadline, "laptop session a on A").await;
    wait_refused(&h, &b, &d2a, deadline, "laptop session a on B").await;
    let mints = h.hooks().mints();
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(
            &h,
            gw,
            &d2b,
            &format!("laptop session b on {name} after session a's revocation"),
        )
        .await;
        expect_refused(&h, gw, &d1, &format!("the phone on {name}, still")).await;
    }
    assert_eq!(
        h.hooks().mints(),
        mints,
        "session b's cached tokens were kept"
    );
    // A new phone session works.
    let fresh = session(
        &h,
        "ursula",
        Some("phone"),
        "s-phone-2",
        issued_after(now()).await,
    );
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &fresh, &format!("a new phone session on {name}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_loads_the_revocation() {
    let redis = RedisServer::start();
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let a = replica(&h, &redis.url(), "gw-a");
    wait_ready(&a, "A").await;
    wait_redis_state(&a, "connected", "A").await;
    let issued = now() - 10;
    let s1 = session(&h, "ursula", None, "u-s1", issued);
    let v1 = session(&h, "victor", None, "v-s1", issued);
    expect_ok(&h, &a, &s1, "U on A before").await;
    let (answer, _) = revoke(&a, json!({"user_id": "ursula"})).await;
    check_revoke_answer(&answer, &lib, "published");
    let id = answer["revocation"]["id"].as_str().unwrap().to_string();
    let at = revoked_at(&answer);
    expect_refused(&h, &a, &s1, "U's old session on A").await;

    let c = replica(&h, &redis.url(), "gw-c");
    wait_ready(&c, "C").await;
    let entry = wait_listed(
        &c,
        &id,
        Instant::now() + EVENTUALLY,
        "C loads the stored revocation",
    )
    .await;
    assert_eq!(entry["user_id"], "ursula", "{entry}");
    // C's first data request.
    expect_refused(&h, &c, &s1, "U's old session on C (C's first request)").await;
    expect_ok(&h, &c, &v1, "V on C").await;
    let fresh = session(&h, "ursula", None, "u-s2", issued_after(at).await);
    expect_ok(&h, &c, &fresh, "U's new session on C").await;
    assert_eq!(
        revocations_total(&c, "local").await,
        0.0,
        "C made no revocation of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_does_not_stop_traffic_and_revocations_catch_up() {
    let mut redis = RedisServer::start();
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let a = replica(&h, &redis.url(), "gw-a");
    let b = replica(&h, &redis.url(), "gw-b");
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        wait_ready(gw, name).await;
        wait_redis_state(gw, "connected", name).await;
    }
    let issued = now() - 10;
    let s1 = session(&h, "ursula", None, "u-s1", issued);
    let v1 = session(&h, "victor", None, "v-s1", issued);
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &s1, &format!("U on {name} before")).await;
        expect_ok(&h, gw, &v1, &format!("V on {name} before")).await;
    }
    // Latency is reported (run with --nocapture), never asserted: the
    // request path has nothing to wait on Redis for.
    let mut before = Vec::new();
    for round in 0..100 {
        let t = Instant::now();
        expect_ok(&h, &a, &v1, &format!("V on A, timed before, #{round}")).await;
        before.push(t.elapsed());
    }

    redis.kill();
    // Right away (before anyone noticed) and once degraded is reported:
    // every request is served.
    for round in 0..25 {
        for (gw, name) in [(&a, "A"), (&b, "B")] {
            expect_ok(
                &h,
                gw,
                &s1,
                &format!("U on {name}, Redis just killed, #{round}"),
            )
            .await;
            expect_ok(
                &h,
                gw,
                &v1,
                &format!("V on {name}, Redis just killed, #{round}"),
            )
            .await;
        }
    }
    let soon = Instant::now() + EVENTUALLY;
    for gw in [&a, &b] {
        wait_metric(
            gw,
            "smh_gateway_revocation_redis_state",
            &[("state", "degraded")],
            1.0,
            soon,
        )
        .await;
        assert_eq!(
            metric(
                gw,
                "smh_gateway_revocation_redis_state",
                &[("state", "connected")]
            )
            .await,
            0.0,
            "not connected while Redis is down"
        );
        let r = reqwest::get(gw.admin_url("/readyz")).await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(
            status, 200,
            "/readyz stays 200 while Redis is down: {body:?}"
        );
        assert!(
            body.contains("degraded"),
            "/readyz says Redis is degraded: {body:?}"
        );
    }
    let mut during = Vec::new();
    for round in 0..100 {
        let t = Instant::now();
        expect_ok(
            &h,
            &a,
            &v1,
            &format!("V on A, timed with Redis down, #{round}"),
        )
        .await;
        during.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let max = |v: &Vec<Duration>| *v.iter().max().unwrap();
    eprintln!(
        "request latency on A (100 sequential GETs each): Redis up median {:?} max {:?}; Redis down median {:?} max {:?}",
        median(&mut before),
        max(&before),
        median(&mut during),
        max(&during)
    );
    for round in 0..50 {
        for (gw, name) in [(&a, "A"), (&b, "B")] {
            expect_ok(&h, gw, &s1, &format!("U on {name}, Redis down, #{round}")).await;
            expect_ok(&h, gw, &v1, &format!("V on {name}, Redis down, #{round}")).await;
        }
    }

    // Revoke U on A meanwhile: applied on A at once, queued for the others.
    let (answer, _) = revoke(&a, json!({"user_id": "ursula"})).await;
    check_revoke_answer(&answer, &lib, "queued");
    let id = answer["revocation"]["id"].as_str().unwrap().to_string();
    let at = revoked_at(&answer);
    expect_refused(&h, &a, &s1, "U's old session on A, Redis down").await;
    assert_eq!(
        metric(&a, "smh_gateway_revocation_pending_publish", &[]).await,
        1.0,
        "A holds one revocation for Redis"
    );
    // B cannot know yet.
    expect_ok(
        &h,
        &b,
        &s1,
        "U's old session on B, Redis down (B has not heard)",
    )
    .await;
    expect_ok(&h, &b, &v1, "V on B, Redis down").await;

    // Redis back (same port, empty): B refuses U's old session.
    redis.restart();
    let deadline = Instant::now() + EVENTUALLY;
    wait_refused(
        &h,
        &b,
        &s1,
        deadline,
        "U's old session on B after Redis is back",
    )
    .await;
    wait_listed(
        &b,
        &id,
        deadline,
        "B lists the revocation after Redis is back",
    )
    .await;
    wait_metric(
        &a,
        "smh_gateway_revocation_pending_publish",
        &[],
        0.0,
        deadline,
    )
    .await;
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        wait_redis_state(gw, "connected", name).await;
        expect_ok(&h, gw, &v1, &format!("V on {name}, Redis back")).await;
        let fresh = session(&h, "ursula", None, "u-s2", issued_after(at).await);
        expect_ok(
            &h,
            gw,
            &fresh,
            &format!("U's new session on {name}, Redis back"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_callers_device() {
    let redis = RedisServer::start();
    let h = Harness::start().await;
    let a = replica(&h, &redis.url(), "gw-a");
    let b = replica(&h, &redis.url(), "gw-b");
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        wait_ready(gw, name).await;
        wait_redis_state(gw, "connected", name).await;
    }
    let issued = now() - 10;
    let d1 = session(&h, "ursula", Some("phone"), "s-phone", issued);
    let d2 = session(&h, "ursula", Some("laptop"), "s-laptop", issued);
    let d3 = session(&h, "ursula", Some("tablet"), "s-tablet", issued);
    let v1 = session(&h, "victor", Some("phone"), "v-phone", issued);
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        for (s, what) in [(&d1, "phone"), (&d2, "laptop"), (&d3, "tablet"), (&v1, "V")] {
            expect_ok(&h, gw, s, &format!("{what} on {name} before")).await;
        }
    }

    // Logout from the phone on A.
    let r = logout(&h, &a, Some(&d1), None).await;
    let answered = Instant::now();
    let status = r.status().as_u16();
    assert_eq!(
        status,
        204,
        "POST /gateway/v1/logout (phone session) answered {status} {:?}\nreplica log:\n{}",
        r.text().await.unwrap_or_default(),
        tail(&a)
    );
    expect_refused(&h, &a, &d1, "the phone on A after its logout").await;
    wait_refused(
        &h,
        &b,
        &d1,
        answered + WITHIN_ONE_SECOND,
        "the phone on B after its logout",
    )
    .await;
    assert!(
        smh_tokens(&h, "ursula").iter().all(|(c, _)| c != "phone"),
        "the phone's SMH tokens are deleted: {:?}",
        smh_tokens(&h, "ursula")
    );
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(
            &h,
            gw,
            &d2,
            &format!("the laptop on {name} after the phone's logout"),
        )
        .await;
        expect_ok(
            &h,
            gw,
            &d3,
            &format!("the tablet on {name} after the phone's logout"),
        )
        .await;
        expect_ok(
            &h,
            gw,
            &v1,
            &format!("V's phone on {name} after U's phone's logout"),
        )
        .await;
    }
    applied_once(&a, &b).await;
    let list_a = revocations(&a).await;
    let entry = list_a["revocations"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["user_id"] == "ursula").cloned())
        .unwrap_or_else(|| panic!("A lists the logout: {list_a}"));
    assert_eq!(
        entry["client_id"], "phone",
        "logout scope is the caller's device: {entry}"
    );

    // All devices, from the laptop, on B.
    let r = logout(&h, &b, Some(&d2), Some(json!({"all_devices": true}))).await;
    let answered = Instant::now();
    let status = r.status().as_u16();
    assert_eq!(
        status,
        204,
        "POST /gateway/v1/logout {{\"all_devices\": true}} (laptop session) answered {status} {:?}\nreplica log:\n{}",
        r.text().await.unwrap_or_default(),
        tail(&b)
    );
    expect_refused(&h, &b, &d2, "the laptop on B after logging out all devices").await;
    expect_refused(
        &h,
        &b,
        &d3,
        "the tablet on B after the laptop logged out all devices",
    )
    .await;
    let deadline = answered + WITHIN_ONE_SECOND;
    wait_refused(
        &h,
        &a,
        &d2,
        deadline,
        "the laptop on A after logging out all devices",
    )
    .await;
    wait_refused(
        &h,
        &a,
        &d3,
        deadline,
        "the tablet on A after logging out all devices",
    )
    .await;
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(
            &h,
            gw,
            &v1,
            &format!("V on {name} after U logged out everywhere"),
        )
        .await;
    }
    let fresh = session(
        &h,
        "ursula",
        Some("laptop"),
        "s-laptop-2",
        issued_after(now()).await,
    );
    for (gw, name) in [(&a, "A"), (&b, "B")] {
        expect_ok(&h, gw, &fresh, &format!("U logs in again on {name}")).await;
    }

    // Without a session: refused like any request.
    let (status, code, body) = common::error_code(logout(&h, &a, None, None).await).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "EmptyAccessToken"),
        "logout without a session: {body}"
    );
}
