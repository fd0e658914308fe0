//! Reloads: SIGHUP and `POST /admin/v1/reload` re-read the file and swap in
//! roles and CORS (and the rest) for new requests while one HTTP/2
//! connection keeps serving; a broken file changes nothing but a log line
//! and a metric; settings that need a restart are named.

mod common;

use std::time::Duration;

use common::{GatewayProcess, Harness};
use http_body_util::BodyExt;

const ADMIN_TOKEN: &str = "reload-test-admin-token";

/// One HTTP/2 connection to the gateway, kept for the whole test.
struct Conn {
    send: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    base: String,
}

impl Conn {
    async fn open(h: &Harness, gw: &GatewayProcess) -> Self {
        let tls = common::tls_connect(h, gw.addr, &[b"h2"]).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        Conn {
            send,
            base: format!("https://localhost:{}", gw.addr.port()),
        }
    }

    /// Status and body; panics if the connection is gone.
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .send
            .send_request(req.body(http_body_util::Empty::new()).unwrap())
            .await
            .expect("the connection from before the reload still serves");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

async fn reloads(gw: &GatewayProcess, result: &str) -> f64 {
    common::scrape_sample(
        &gw.admin_url(""),
        "smh_gateway_config_reloads_total",
        &[("result", result)],
    )
    .await
}

/// Waits (bounded) until the reload counter for `result` reaches `n`: the
/// signal is asynchronous, the counter is the event.
async fn wait_reloads(gw: &GatewayProcess, result: &str, n: f64) {
    for _ in 0..300 {
        if reloads(gw, result).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no {result} reload #{n} within 15 s; logs:\n{}",
        gw.log.lock().unwrap().join("\n")
    );
}

async fn admin_reload(gw: &GatewayProcess) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/v1/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Rewrites the running file: `viewer` with `grant`, CORS for `origin`.
fn write_config(gw: &GatewayProcess, grant: &[&str], origin: &str, listen: Option<&str>) {
    let mut cfg: toml::Table = std::fs::read_to_string(&gw.config)
        .unwrap()
        .parse()
        .unwrap();
    for role in cfg["role"].as_array_mut().unwrap() {
        if role["name"].as_str() == Some("viewer") {
            role["grant"] = toml::Value::Array(grant.iter().map(|g| (*g).into()).collect());
        }
    }
    cfg["cors"]["allowed_origins"] = toml::Value::Array(vec![origin.into()]);
    if let Some(addr) = listen {
        cfg["listener"]["address"] = addr.into();
    }
    std::fs::write(&gw.config, toml::to_string(&cfg).unwrap()).unwrap();
}

fn preflight(origin: &str) -> [(&str, &str); 2] {
    [("origin", origin), ("access-control-request-method", "PUT")]
}

/// Preflight statuses for origins one and two.
async fn origins(conn: &mut Conn, path: &str) -> (u16, u16) {
    let one = conn
        .send("OPTIONS", path, &preflight("https://one.example"))
        .await
        .0;
    let two = conn
        .send("OPTIONS", path, &preflight("https://two.example"))
        .await
        .0;
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_route_swap_roles_and_cors_without_dropping_a_connection() {
    let h = Harness::start().await;
    let token_file = h.env.dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let gw = GatewayProcess::spawn(
        &h,
        &format!(
            "[admin]\ntoken_file = \"{}\"\n[cors]\nallowed_origins = [\"https://one.example\"]\n",
            token_file.display()
        ),
        None,
    );
    let lib = h.lib().to_string();
    let viewer = format!("Bearer {}", h.session("vera", &["viewer"]));
    let auth = [("authorization", viewer.as_str())];
    let mut conn = Conn::open(&h, &gw).await;
    let mkdir = |n: u32| format!("/api/v1/directory/{lib}/-/reload-{n}");

    // Before: a viewer may not create; only origin one may preflight.
    let (status, body) = conn.send("PUT", &mkdir(1), &auth).await;
    assert_eq!(status, 403, "viewer has no create_directory grant: {body}");
    assert_eq!(origins(&mut conn, &mkdir(1)).await, (204, 403));

    // SIGHUP with the viewer granted create_directory and origin two.
    write_config(&gw, &["create_directory"], "https://two.example", None);
    gw.signal("HUP");
    wait_reloads(&gw, "ok", 1.0).await;
    let (status, body) = conn.send("PUT", &mkdir(2), &auth).await;
    assert_eq!(status, 201, "the new grant applies at once: {body}");
    assert_eq!(origins(&mut conn, &mkdir(2)).await, (403, 204));

    // A broken file, by SIGHUP and by the admin route: refused, counted,
    // the running settings keep serving.
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        good.replace("[[role]]", "[[role]]\nbogus_key = 1"),
    )
    .unwrap();
    gw.signal("HUP");
    wait_reloads(&gw, "failed", 1.0).await;
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["reloaded"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus_key`"),
        "{answer}"
    );
    assert_eq!(reloads(&gw, "failed").await, 2.0);
    assert_eq!(
        conn.send("PUT", &mkdir(3), &auth).await.0,
        201,
        "old settings still serve"
    );
    assert_eq!(origins(&mut conn, &mkdir(3)).await, (403, 204));
    assert!(
        gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("configuration reload failed")),
        "a failed reload is logged"
    );

    // The admin route, back to a read-only viewer and origin one; a new
    // listener address is named as needing a restart, and not applied.
    std::fs::write(&gw.config, &good).unwrap();
    write_config(&gw, &[], "https://one.example", Some("127.0.0.1:1"));
    let (status, answer) = admin_reload(&gw).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"], true);
    assert_eq!(
        answer["needs_restart"],
        serde_json::json!(["listener.address"])
    );
    assert_eq!(
        conn.send("PUT", &mkdir(4), &auth).await.0,
        403,
        "grant removed again"
    );
    assert_eq!(origins(&mut conn, &mkdir(4)).await, (204, 403));
    assert_eq!(reloads(&gw, "ok").await, 2.0);
    assert!(
        gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("take effect only after a restart")
                && l.contains("listener.address")),
        "the log line names what needs a restart"
    );
}

/// Edits the in-process harness's own file (what its reloads read).
fn edit_dev_config(h: &Harness, f: impl FnOnce(&mut toml::Table)) {
    let path = h.env.dir.join("gateway.toml");
    let mut cfg: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    f(&mut cfg);
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
}

async fn session_outcome(h: &Harness, outcome: &str) -> f64 {
    common::scrape_sample(
        &h.admin_url(""),
        "smh_gateway_session_validations_total",
        &[("outcome", outcome)],
    )
    .await
}

/// A reload that leaves `[session]` alone keeps the running validator and
/// its cache (an IdP outage during a routine reload must not log anyone
/// out); one that changes it to keys that cannot be fetched is refused.
#[tokio::test]
async fn a_reload_keeps_the_session_layer_unless_session_changed_and_never_swaps_in_missing_keys() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("sam", &["viewer"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    // Fresh clients: a new connection each, so no connection memo answers.
    let fresh = || {
        common::client_builder(&std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap())
            .build()
            .unwrap()
    };
    let get = |c: reqwest::Client| {
        let url = h.url(&list);
        let s = s.clone();
        async move { c.get(url).bearer_auth(s).send().await.unwrap().status() }
    };
    assert_eq!(get(fresh()).await, 200);
    let validated = session_outcome(&h, "validated").await;
    // Roles change, [session] does not.
    edit_dev_config(&h, |cfg| {
        cfg["role"].as_array_mut().unwrap()[0]["grant"] =
            toml::Value::Array(vec!["create_directory".into()]);
    });
    h.env.running.reload().await.expect("reload");
    assert_eq!(get(fresh()).await, 200);
    assert_eq!(
        session_outcome(&h, "validated").await,
        validated,
        "the session cache survived the reload: no re-verification"
    );
    // [session] changes to a JWKS nobody serves: refused, old keys serve on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    edit_dev_config(&h, |cfg| {
        let jwt = cfg["session"]["jwt"].as_table_mut().unwrap();
        jwt.insert(
            "algorithms".into(),
            toml::Value::Array(vec!["HS256".into(), "RS256".into()]),
        );
        jwt.insert(
            "jwks_url".into(),
            format!("https://127.0.0.1:{dead_port}/jwks.json").into(),
        );
    });
    let err = h
        .env
        .running
        .reload()
        .await
        .expect_err("keys cannot be fetched");
    assert!(err.contains("JWKS"), "{err}");
    assert_eq!(get(fresh()).await, 200, "the running sessions keep serving");
}

/// A reload that changes a library's secret drops its tokens and mints
/// under the new one (here refused by SMH: 502, never the old token); the
/// reload that fixes it clears the memory of that refusal at once.
#[tokio::test]
async fn a_changed_library_secret_is_never_served_an_old_token() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let s = h.session("tina", &["viewer"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    assert_eq!(h.get(&list, &s).await.status(), 200);
    let mints = h.hooks().mints();
    let right = h.env.dir.join("library-secret");
    let wrong = h.env.dir.join("wrong-secret");
    std::fs::write(&wrong, "not-the-library-secret").unwrap();
    edit_dev_config(&h, |cfg| {
        cfg["library"].as_array_mut().unwrap()[0]["secret_file"] =
            wrong.display().to_string().into();
    });
    h.env.running.reload().await.expect("reload");
    let r = h.get(&list, &s).await;
    assert_eq!(
        r.status(),
        502,
        "minted under the new (wrong) secret, not served the old token"
    );
    assert_eq!(
        h.hooks().mints(),
        mints,
        "SMH minted nothing for the wrong secret"
    );
    edit_dev_config(&h, |cfg| {
        cfg["library"].as_array_mut().unwrap()[0]["secret_file"] =
            right.display().to_string().into();
    });
    h.env.running.reload().await.expect("reload");
    assert_eq!(
        h.get(&list, &s).await.status(),
        200,
        "the refusal was forgotten with the fix"
    );
    assert_eq!(h.hooks().mints(), mints + 1);
}

/// SIGTERM during a reload that waits on an IdP still stops the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_reload_still_stops_the_gateway() {
    let h = Harness::start().await;
    // An IdP that accepts and never answers.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    let (connected, mut fetching) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = stall.accept().await {
            held.push(c);
            let _ = connected.send(());
        }
    });
    let gw = GatewayProcess::spawn(&h, "[limits]\nlame_duck_secs = 0\n", None);
    let mut cfg: toml::Table = std::fs::read_to_string(&gw.config)
        .unwrap()
        .parse()
        .unwrap();
    let jwt = cfg["session"]["jwt"].as_table_mut().unwrap();
    jwt.insert(
        "algorithms".into(),
        toml::Value::Array(vec!["HS256".into(), "RS256".into()]),
    );
    jwt.insert(
        "jwks_url".into(),
        format!("https://127.0.0.1:{stall_port}/jwks.json").into(),
    );
    std::fs::write(&gw.config, toml::to_string(&cfg).unwrap()).unwrap();
    gw.signal("HUP");
    // The reload is under way once its JWKS fetch connects to the stall.
    tokio::time::timeout(Duration::from_secs(30), fetching.recv())
        .await
        .expect("the reload fetches the JWKS");
    gw.terminate();
    let mut child = gw.child;
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = child.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "still running 10 s after SIGTERM: {exited:?}"
    );
}
