//! Operator audit, metrics, admin port, readiness, reload: checked from the
//! outside, mostly against the gateway running as its own process so its
//! logs, stdout and signals are real.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{parse_prometheus, sample, ChildGateway, Harness};

const ADMIN_TOKEN: &str = "admin-token-7d1e0c5b";

/// The harness's generated config with an admin token and `extra` appended.
fn child_config(h: &Harness, name: &str, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(h.env.dir.join("gateway.toml")).unwrap();
    std::fs::write(h.env.dir.join("admin-token"), ADMIN_TOKEN).unwrap();
    let text = text.replacen(
        "[admin]\n",
        &format!(
            "[admin]\ntoken_file = \"{}/admin-token\"\n",
            h.env.dir.display()
        ),
        1,
    );
    let path = h.env.dir.join(name);
    std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
    path
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_known_traffic_and_parse_with_the_reference_parser() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let alice = h.session("alice", &["editor"]);
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    for _ in 0..5 {
        assert_eq!(h.get(&list, &alice).await.status(), 200);
    }
    let token = h.hooks().tokens_for_user("alice")[0].token.clone();
    h.hooks().fail_next_uses(&token, 1);
    assert_eq!(h.get(&list, &alice).await.status(), 200, "reminted");
    for _ in 0..2 {
        let r = h.client.get(h.url(&list)).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(h.get("/api/v1/file/nolib/-/x", &alice).await.status(), 404);
    let r = h
        .client
        .put(h.url(&format!("/api/v1/directory/{lib}/-/made")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let plain = reqwest::Client::new();
    let text = scrape(&plain, &h.admin_url("/metrics")).await;
    let s = parse_prometheus(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&s, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };
    let req = |res: &str, method: &str, code: &str, class: &str| {
        get(
            "smh_gateway_requests_total",
            &[
                ("library", &lib),
                ("resource", res),
                ("method", method),
                ("code", code),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("directory", "GET", "200", "2xx"), 6.0);
    assert_eq!(req("directory", "GET", "401", "4xx"), 2.0);
    assert_eq!(req("directory", "PUT", "201", "2xx"), 1.0);
    assert_eq!(
        get(
            "smh_gateway_requests_total",
            &[
                ("library", "unknown"),
                ("resource", "file"),
                ("method", "GET"),
                ("code", "404"),
                ("status_class", "4xx")
            ]
        ),
        1.0
    );
    // One series per status: nothing else was answered.
    let request_series = s
        .iter()
        .filter(|(n, _, _)| n == "smh_gateway_requests_total")
        .count();
    assert_eq!(request_series, 4, "{text}");
    assert_eq!(
        get(
            "smh_gateway_request_duration_seconds_count",
            &[
                ("library", &lib),
                ("resource", "directory"),
                ("method", "GET")
            ]
        ),
        8.0
    );
    assert_eq!(
        get(
            "smh_gateway_token_mints_total",
            &[("library", &lib), ("outcome", "ok")]
        ),
        2.0,
        "first mint + re-mint"
    );
    assert_eq!(
        get("smh_gateway_token_remints_total", &[("library", &lib)]),
        1.0
    );
    assert_eq!(
        get(
            "smh_gateway_token_mint_duration_seconds_count",
            &[("library", &lib)]
        ),
        2.0
    );
    assert_eq!(
        get(
            "smh_gateway_token_cache_lookups_total",
            &[("result", "miss")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "smh_gateway_token_cache_lookups_total",
            &[("result", "hit")]
        ),
        6.0
    );
    assert_eq!(get("smh_gateway_token_cache_entries", &[]), 1.0);
    assert_eq!(
        get(
            "smh_gateway_session_validations_total",
            &[("outcome", "validated")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "smh_gateway_session_validations_total",
            &[("outcome", "cached")]
        ),
        6.0
    );
    assert_eq!(
        get(
            "smh_gateway_session_validations_total",
            &[("outcome", "missing")]
        ),
        2.0
    );
    assert_eq!(get("smh_gateway_session_cache_entries", &[]), 1.0);
    assert_eq!(
        get(
            "smh_gateway_upstream_duration_seconds_count",
            &[("library", &lib)]
        ),
        7.0
    );
    assert_eq!(get("smh_gateway_requests_in_flight", &[]), 0.0);
    assert_eq!(
        get("smh_gateway_open_connections", &[("protocol", "http2")]),
        1.0
    );
    assert_eq!(
        get(
            "smh_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert!(get("smh_gateway_certificate_not_after_timestamp_seconds", &[]) > now);
    assert!(
        get(
            "smh_gateway_config_last_reload_success_timestamp_seconds",
            &[]
        ) > now - 600.0
    );
    assert!(!text.contains("alice"), "no user ids in metric labels");
}

#[tokio::test]
async fn audit_has_one_record_per_request_and_no_secret_leaks_anywhere() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let audit = h.env.dir.join("audit.jsonl");
    let config = child_config(
        &h,
        "child.toml",
        &format!("[audit]\nsink = \"file\"\nfile = \"{}\"\n", audit.display()),
    );
    let gw = ChildGateway::spawn(&config, "debug", Stdio::null());
    let alice = h.session("alice", &["editor"]);
    let list = gw.url(&format!("/api/v1/directory/{lib}/-/?by-marker"));
    let mut ids = Vec::new();
    let mut send = |r: reqwest::Response| {
        ids.push((
            r.headers()["x-request-id"].to_str().unwrap().to_string(),
            r.status().as_u16(),
        ));
    };
    for _ in 0..3 {
        send(
            h.client
                .get(&list)
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
        );
    }
    send(h.client.get(&list).send().await.unwrap()); // no session
    send(
        h.client
            .get(gw.url(&format!("/api/v1/directory/{lib}/elsewhere/")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    ); // policy refusal
    let token = h
        .hooks()
        .tokens_for_user("alice")
        .into_iter()
        .last()
        .unwrap()
        .token;
    h.hooks().fail_next_uses(&token, 1);
    send(
        h.client
            .get(&list)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    ); // reminted
    h.hooks().fail_next_data_requests(1, 500);
    send(
        h.client
            .get(&list)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    ); // upstream error
    send(
        h.client
            .put(gw.url(&format!("/api/v1/directory/{lib}/-/audited")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    );
    let statuses: Vec<u16> = ids.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 401, 403, 200, 500, 201]);

    let mut records: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        records = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if records.len() >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(records.len(), ids.len(), "one record per request");
    // A record is written when the gateway sees its response end, and the
    // client may already have sent its next request by then: put the
    // records in request order by their ids.
    let records: Vec<serde_json::Value> = ids
        .iter()
        .map(|(id, _)| {
            records
                .iter()
                .find(|r| r["request_id"] == id.as_str())
                .cloned()
                .unwrap_or_else(|| panic!("no audit record for request {id}"))
        })
        .collect();
    for ((id, status), rec) in ids.iter().zip(&records) {
        assert_eq!(rec["request_id"], id.as_str());
        assert_eq!(rec["status"], *status);
        assert_eq!(rec["library"], lib.as_str());
        assert_eq!(rec["method"], if *status == 201 { "PUT" } else { "GET" });
        assert!(rec["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(rec["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert!(rec["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(records[0]["user_id"], "alice");
    assert_eq!(records[0]["token"], "miss");
    assert_eq!(records[1]["token"], "hit");
    assert_eq!(records[0]["operation"], "directory.by-marker");
    assert!(records[0]["response_bytes"].as_u64().unwrap() > 0);
    assert!(records[3]["user_id"].is_null());
    assert_eq!(records[3]["code"], "MissingSession");
    assert_eq!(records[4]["user_id"], "alice");
    assert_eq!(records[4]["code"], "AccessTokenNotMatchSpace");
    assert_eq!(records[5]["token"], "reminted");
    assert_eq!(
        records[6]["code"], "InternalServerError",
        "SMH's own error code"
    );
    assert!(records[6]["upstream_latency_ms"].as_f64().is_some());
    assert_eq!(records[7]["operation"], "directory.create");
    assert_eq!(records[7]["path"], "audited");

    // No secret, token or credential anywhere: logs (at debug), audit, metrics.
    let metrics = scrape(&reqwest::Client::new(), &gw.admin_url("/metrics")).await;
    let everything = format!(
        "{}\n{}\n{metrics}",
        gw.logs(),
        std::fs::read_to_string(&audit).unwrap()
    );
    let mut secrets = vec![
        h.env.emulator.library_secret().to_string(),
        h.env.session_secret.clone(),
        alice.clone(),
        ADMIN_TOKEN.to_string(),
    ];
    secrets.extend(h.hooks().tokens().into_iter().map(|t| t.token));
    assert!(secrets.len() >= 6);
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret leaked: {}…",
            &secret[..8]
        );
    }
    assert!(
        gw.logs().contains("DEBUG"),
        "logs were captured at debug level"
    );
}

#[tokio::test]
async fn full_audit_queue_drops_and_counts_but_requests_are_served() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    // Audit to stdout, a pipe nobody reads: once the pipe buffer is full the
    // writer blocks, the 16-slot queue fills, and records must be dropped.
    let config = child_config(
        &h,
        "slow.toml",
        "[audit]\nsink = \"stdout\"\nqueue_capacity = 16\n",
    );
    let gw = ChildGateway::spawn(&config, "info", Stdio::piped());
    let alice = h.session("alice", &["viewer"]);
    let list = gw.url(&format!("/api/v1/directory/{lib}/-/?by-marker"));
    let total = 600;
    for _ in 0..total {
        let r = h
            .client
            .get(&list)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let text = scrape(&reqwest::Client::new(), &gw.admin_url("/metrics")).await;
    let s = parse_prometheus(&text);
    let written = sample(
        &s,
        "smh_gateway_audit_records_total",
        &[("fate", "written")],
    )
    .unwrap();
    let dropped = sample(
        &s,
        "smh_gateway_audit_records_total",
        &[("fate", "dropped")],
    )
    .unwrap();
    assert!(dropped > 0.0, "written {written}, dropped {dropped}");
    let accounted = written + dropped;
    assert!(
        accounted <= total as f64 && accounted >= (total - 16 - 2) as f64,
        "written {written} dropped {dropped}"
    );
}

#[tokio::test]
async fn readiness_is_false_until_start_up_finishes() {
    let h = Harness::start().await;
    // An IdP that accepts connections and never answers: the initial JWKS
    // fetch holds start-up for its 5 s timeout.
    let stall = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(h.env.dir.join("gateway.toml")).unwrap();
    let text = text
        .replace("address = \"127.0.0.1:0\"\n\n[[library]]", &format!("address = \"127.0.0.1:{admin_port}\"\n\n[[library]]"))
        .replacen(
            "[session.jwt]\n",
            &format!(
                "[session.jwt]\nalgorithms = [\"HS256\", \"RS256\"]\njwks_url = \"https://localhost:{stall_port}/jwks.json\"\n"
            ),
            1,
        );
    assert!(text.contains(&format!("127.0.0.1:{admin_port}")), "{text}");
    let config = h.env.dir.join("slow-start.toml");
    std::fs::write(&config, text).unwrap();
    let start = std::time::Instant::now();
    let spawned = std::thread::spawn(move || ChildGateway::spawn(&config, "info", Stdio::null()));
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{admin_port}");
    let mut seen_starting = false;
    let mut seen_ready = false;
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = plain.get(format!("{url}/readyz")).send().await {
            match r.status().as_u16() {
                503 => {
                    seen_starting = true;
                    assert_eq!(
                        plain
                            .get(format!("{url}/healthz"))
                            .send()
                            .await
                            .unwrap()
                            .status(),
                        200,
                        "alive while starting"
                    );
                }
                200 => {
                    seen_ready = true;
                    break;
                }
                other => panic!("unexpected /readyz {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stall);
    let gw = spawned.join().unwrap();
    assert!(
        seen_starting,
        "/readyz answered 503 while start-up was running"
    );
    assert!(seen_ready, "/readyz turned 200 once start-up finished");
    assert_eq!(gw.admin_addr.port(), admin_port);
}

#[tokio::test]
async fn admin_api_needs_the_token_and_sighup_reloads_the_certificate() {
    let h = Harness::start().await;
    let config = child_config(&h, "admin.toml", "");
    let gw = ChildGateway::spawn(&config, "info", Stdio::null());
    let plain = reqwest::Client::new();
    let r = plain
        .get(gw.admin_url("/admin/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(gw.admin_url("/admin/v1/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(gw.admin_url("/admin/v1/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["libraries"][0], h.lib());

    // Replace the certificate on disk with one from a new CA and send SIGHUP.
    let new_pki = smh_gateway::tls::ThrowAwayPki::generate(&[]).unwrap();
    new_pki.write_to(&h.env.dir.join("tls")).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let only_new = common::client_builder(new_pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let lib = h.lib().to_string();
    let url = gw.url(&format!("/api/v1/directory/{lib}/-/"));
    let mut ok = false;
    for _ in 0..100 {
        if only_new.get(&url).send().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "new connections present the reloaded certificate");
    // A broken certificate is refused and the last good one stays.
    std::fs::write(h.env.dir.join("tls/cert.pem"), "not a certificate").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        only_new.get(&url).send().await.is_ok(),
        "last good certificate kept"
    );
    let s = parse_prometheus(&scrape(&plain, &gw.admin_url("/metrics")).await);
    assert_eq!(
        sample(&s, "smh_gateway_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "smh_gateway_config_reloads_total",
            &[("result", "failed")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let h = Harness::start().await;
    let config = child_config(
        &h,
        "json-logs.toml",
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n",
    );
    let gw = ChildGateway::spawn(&config, "", Stdio::null());
    let lib = h.lib().to_string();
    let alice = h.session("alice", &["viewer"]);
    let r = h
        .client
        .get(gw.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let logs = gw.logs();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.len() >= 2, "{logs}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(!logs.contains(&alice), "session never logged");
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The process series come from /proc through the prometheus crate's
/// collector; checked against the process's own /proc entries.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn process_series_describe_the_gateway_process() {
    let h = Harness::start().await;
    let config = child_config(&h, "process.toml", "");
    let before = unix_now().floor();
    let gw = ChildGateway::spawn(&config, "info", Stdio::null());
    let pid = gw.child.id();
    let lib = h.lib().to_string();
    let alice = h.session("alice", &["viewer"]);
    let r = h
        .client
        .get(gw.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = parse_prometheus(&scrape(&reqwest::Client::new(), &gw.admin_url("/metrics")).await);
    let get = |name: &str| sample(&s, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
    let after = unix_now();
    let start = get("process_start_time_seconds");
    assert!(
        (before - 1.0..=after).contains(&start),
        "started at {start}, spawned between {before} and {after}"
    );
    assert!(get("process_cpu_seconds_total") >= 0.0);
    assert!(get("process_resident_memory_bytes") > 1024.0 * 1024.0);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft_nofile: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(get("process_max_fds"), soft_nofile);
    let open = get("process_open_fds");
    assert!(open > 3.0 && open <= soft_nofile, "{open}");
    assert!(
        get("process_threads") >= 2.0,
        "main and the audit writer at least"
    );
}

/// JWKS fetches (start-up, and an unknown kid's re-fetch) are counted by
/// result, with the time of the last success.
#[tokio::test]
async fn jwks_refreshes_are_counted_with_the_time_of_the_last_success() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let jwks = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let idp_down = down.clone();
    let idp = common::TestServer::start(Arc::new(move |_, _, _| {
        if idp_down.load(Ordering::SeqCst) {
            (503, "{}".to_string())
        } else {
            (200, jwks.clone())
        }
    }))
    .await;
    let session = format!(
        "[session]\ndefault_roles = [\"viewer\"]\n\n[session.jwt]\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_ca_file = \"{}\"\njwks_min_refetch_secs = 0\njwks_refresh_secs = 3600\n",
        idp.url("/.well-known/jwks.json"),
        idp.ca_file.display()
    );
    let before = unix_now().floor();
    let h = Harness::start_full(
        smh_gateway::emulator::EmulatorConfig::default(),
        "",
        Some(session),
    )
    .await;
    let plain = reqwest::Client::new();
    let s = parse_prometheus(&scrape(&plain, &h.admin_url("/metrics")).await);
    let refreshes = |s: &[_], result: &str| {
        sample(s, "smh_gateway_jwks_refreshes_total", &[("result", result)])
    };
    assert_eq!(refreshes(&s, "ok"), Some(1.0), "the start-up fetch");
    assert_eq!(refreshes(&s, "failed"), Some(0.0));
    let last = sample(&s, "smh_gateway_jwks_last_success_timestamp_seconds", &[]).unwrap();
    assert!((before..=unix_now()).contains(&last), "{last}");

    // The IdP goes down; a token with a kid nobody knows makes the gateway
    // look again, and that fetch fails.
    down.store(true, Ordering::SeqCst);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(format!("{FIXTURES}/rsa-private.pem")).unwrap(),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("not-published".into());
    let claims = serde_json::json!({"sub": "alice", "exp": 4102444800u64});
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let lib = h.lib().to_string();
    let r = h
        .get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &token)
        .await;
    assert_eq!(r.status(), 503, "an unknown kid while the IdP is down");
    let s = parse_prometheus(&scrape(&plain, &h.admin_url("/metrics")).await);
    assert_eq!(refreshes(&s, "ok"), Some(1.0));
    assert_eq!(refreshes(&s, "failed"), Some(1.0));
    assert_eq!(
        sample(&s, "smh_gateway_jwks_last_success_timestamp_seconds", &[]),
        Some(last),
        "a failure leaves the last success where it was"
    );
}

/// Gateways without a JWKS URL export no JWKS series (a last success at
/// 0 would look like an outage).
#[tokio::test]
async fn without_a_jwks_url_there_are_no_jwks_series() {
    let h = Harness::start().await;
    let text = scrape(&reqwest::Client::new(), &h.admin_url("/metrics")).await;
    assert!(!text.contains("smh_gateway_jwks_"), "{text}");
}
