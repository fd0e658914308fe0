//! Reloads: SIGHUP and `POST /admin/v1/reload` re-read the file and swap in
//! roles and CORS (and the rest) for new requests while one HTTP/2
//! connection keeps serving; a broken file changes nothing but a log line
//! and a metric; settings that need a restart are named.

mod common;

use std::time::Duration;

use common::{parse_prometheus, sample, GatewayProcess, Harness};
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
    let text = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sample(
        &parse_prometheus(&text),
        "smh_gateway_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
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
    assert_eq!(
        conn.send("OPTIONS", &mkdir(1), &preflight("https://one.example"))
            .await
            .0,
        204
    );
    assert_eq!(
        conn.send("OPTIONS", &mkdir(1), &preflight("https://two.example"))
            .await
            .0,
        403
    );

    // SIGHUP with the viewer granted create_directory and origin two.
    write_config(&gw, &["create_directory"], "https://two.example", None);
    gw.signal("HUP");
    wait_reloads(&gw, "ok", 1.0).await;
    let (status, body) = conn.send("PUT", &mkdir(2), &auth).await;
    assert_eq!(status, 201, "the new grant applies at once: {body}");
    assert_eq!(
        conn.send("OPTIONS", &mkdir(2), &preflight("https://one.example"))
            .await
            .0,
        403
    );
    assert_eq!(
        conn.send("OPTIONS", &mkdir(2), &preflight("https://two.example"))
            .await
            .0,
        204
    );

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
    assert_eq!(
        conn.send("OPTIONS", &mkdir(3), &preflight("https://two.example"))
            .await
            .0,
        204
    );
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
    assert_eq!(
        conn.send("OPTIONS", &mkdir(4), &preflight("https://one.example"))
            .await
            .0,
        204
    );
    assert_eq!(
        conn.send("OPTIONS", &mkdir(4), &preflight("https://two.example"))
            .await
            .0,
        403
    );
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
