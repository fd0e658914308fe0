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
        // No session: SMH's EmptyAccessToken (SDK-compatible errors, the default).
        assert_eq!(r.status(), 400);
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
    assert_eq!(req("directory", "GET", "400", "4xx"), 2.0);
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
    assert_eq!(statuses, [200, 200, 200, 400, 403, 200, 500, 201]);

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
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    assert_eq!(records[3]["code"], "EmptyAccessToken");
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
    // Every record is written, dropped, or still waiting (queued, or in
    // the batch the stuck writer holds); the last ones are handed over as
    // their responses end, so look until all are accounted for.
    let mut seen = Vec::new();
    for _ in 0..100 {
        let text = scrape(&reqwest::Client::new(), &gw.admin_url("/metrics")).await;
        let s = parse_prometheus(&text);
        let fate = |f: &str| sample(&s, "smh_gateway_audit_records_total", &[("fate", f)]).unwrap();
        let waiting = sample(&s, "smh_gateway_audit_queue_depth", &[]).unwrap();
        seen = vec![fate("written"), fate("dropped"), fate("failed"), waiting];
        if seen.iter().sum::<f64>() == total as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let [written, dropped, failed, waiting] = seen[..] else {
        unreachable!()
    };
    assert_eq!(
        written + dropped + failed + waiting,
        total as f64,
        "written {written} dropped {dropped} failed {failed} waiting {waiting}"
    );
    assert!(dropped > 0.0, "the queue filled up");
    assert_eq!(failed, 0.0, "a blocked write is not a failed one");
    assert!(waiting >= 16.0, "a full queue and a stuck batch: {waiting}");
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
    let mut cfg: toml::Table = text.parse().unwrap();
    cfg["admin"]["address"] = format!("127.0.0.1:{admin_port}").into();
    let jwt = cfg["session"]["jwt"].as_table_mut().unwrap();
    jwt.insert(
        "algorithms".into(),
        toml::Value::Array(vec!["HS256".into(), "RS256".into()]),
    );
    jwt.insert(
        "jwks_url".into(),
        format!("https://localhost:{stall_port}/jwks.json").into(),
    );
    let text = toml::to_string(&cfg).unwrap();
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
    // The refused reload is counted: wait for that, not for a guess.
    let admin = gw.admin_url("");
    let mut refused = false;
    for _ in 0..500 {
        let n = common::scrape_sample(
            &admin,
            "smh_gateway_config_reloads_total",
            &[("result", "failed")],
        )
        .await;
        if n >= 1.0 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the broken certificate's reload is refused");
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
    let claims = serde_json::json!({"sub": "alice", "iat": smh_gateway::revocation::unix_now(), "exp": smh_gateway::revocation::unix_now() + 3600});
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

/// Polls (a bounded number of times) until `path` holds `n` JSON lines.
async fn audit_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(lines.len(), n, "{}", path.display());
    lines
}

async fn list_once(h: &Harness, gw: &common::GatewayProcess, session: &str) -> String {
    let lib = h.lib().to_string();
    let r = h
        .client
        .get(gw.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
        .bearer_auth(session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    r.bytes().await.unwrap();
    id
}

/// logrotate's `create` mode: move the file away, send SIGUSR1; records
/// before the signal stay in the moved file, later ones go to a new file
/// at the configured path.
#[tokio::test]
async fn sigusr1_reopens_the_audit_file_after_logrotate_moves_it() {
    let h = Harness::start().await;
    let dir = h.env.dir.join(format!("rotate-{}", common::rand_suffix()));
    let path = dir.join("audit.jsonl");
    let moved = dir.join("audit.jsonl.1");
    let gw = common::GatewayProcess::spawn(
        &h,
        &format!("[audit]\nsink = \"file\"\nfile = \"{}\"\n", path.display()),
        None,
    );
    let alice = h.session("alice", &["viewer"]);
    let first = list_once(&h, &gw, &alice).await;
    assert_eq!(audit_lines(&path, 1).await[0]["request_id"], first.as_str());
    std::fs::rename(&path, &moved).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-USR1", &gw.child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The reopen creates the file: once it exists, the signal was handled.
    for _ in 0..200 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        path.exists(),
        "SIGUSR1 made a new file at the configured path"
    );
    let second = list_once(&h, &gw, &alice).await;
    let new = audit_lines(&path, 1).await;
    assert_eq!(new[0]["request_id"], second.as_str());
    let old = audit_lines(&moved, 1).await;
    assert_eq!(old[0]["request_id"], first.as_str());
    assert!(
        gw.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("audit file reopened")),
        "the reopen is logged"
    );
    // The process is alive and serving: SIGUSR1 did not terminate it.
    list_once(&h, &gw, &alice).await;
}

/// `/dev/full` refuses every write with ENOSPC, like a full disk: every
/// record is counted `failed`, none `written`, and the log says so at most
/// once per minute, with the number of records lost.
#[tokio::test]
async fn a_full_disk_fails_records_and_is_logged_once_per_interval() {
    let h = Harness::start().await;
    let started = std::time::Instant::now();
    let gw =
        common::GatewayProcess::spawn(&h, "[audit]\nsink = \"file\"\nfile = \"/dev/full\"\n", None);
    let alice = h.session("alice", &["viewer"]);
    let total = 20;
    for _ in 0..total {
        list_once(&h, &gw, &alice).await;
    }
    let plain = reqwest::Client::new();
    let mut fates = (0.0, 0.0);
    for _ in 0..200 {
        let s = parse_prometheus(&scrape(&plain, &gw.admin_url("/metrics")).await);
        let fate = |f: &str| sample(&s, "smh_gateway_audit_records_total", &[("fate", f)]).unwrap();
        fates = (fate("failed"), fate("written"));
        if fates.0 == total as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fates, (total as f64, 0.0), "(failed, written)");
    let reports: Vec<serde_json::Value> = gw
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("audit sink write failed"))
        })
        .collect();
    // One line per minute at most (the test may, on a slow machine, run
    // into a second minute).
    let minutes = started.elapsed().as_secs() / 60;
    assert!(
        !reports.is_empty() && reports.len() as u64 <= 1 + minutes,
        "{} report lines in {minutes} min: {reports:?}",
        reports.len()
    );
    let lost = reports[0]["fields"]["lost"].as_u64().unwrap();
    assert!((1..=total).contains(&lost), "{reports:?}");
    assert!(reports[0]["fields"]["error"]
        .as_str()
        .unwrap()
        .contains("No space left on device"));
}

/// An idle gateway's audit writer sleeps on its queue (a futex wait with
/// no timeout) and is not woken until a record comes: its count of
/// voluntary context switches does not move while nothing happens. The
/// old writer woke every 10 ms to poll.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[tokio::test]
async fn an_idle_audit_writer_is_never_woken() {
    #[cfg(target_arch = "x86_64")]
    const SYS_FUTEX: &str = "202";
    #[cfg(target_arch = "aarch64")]
    const SYS_FUTEX: &str = "98";
    let h = Harness::start().await;
    let dir = h.env.dir.join(format!("idle-{}", common::rand_suffix()));
    let path = dir.join("audit.jsonl");
    let gw = common::GatewayProcess::spawn(
        &h,
        &format!("[audit]\nsink = \"file\"\nfile = \"{}\"\n", path.display()),
        None,
    );
    let pid = gw.child.0.id();
    let task = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "smh-audit"))
        .expect("the audit writer thread");
    let alice = h.session("alice", &["viewer"]);
    list_once(&h, &gw, &alice).await;
    audit_lines(&path, 1).await;
    let in_futex = || {
        std::fs::read_to_string(task.join("syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(SYS_FUTEX))
    };
    let switches = || -> u64 {
        std::fs::read_to_string(task.join("status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // After its last batch the writer naps once, finds nothing and waits.
    let mut waiting = false;
    for _ in 0..200 {
        if in_futex() {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        waiting,
        "the idle writer waits on its queue, not in a timed sleep"
    );
    let before = switches();
    // Long enough for a 10 ms poller to have woken 30 times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(in_futex());
    assert_eq!(switches(), before, "woken while idle");
    // And a record still wakes it.
    list_once(&h, &gw, &alice).await;
    audit_lines(&path, 2).await;
    assert!(switches() > before);
}
