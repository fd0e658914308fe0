//! Micro-benchmarks of the work the gateway does per request. What each
//! guards is written in benches/README.md.

use std::borrow::Cow;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};

use http::Method;
use smh_gateway::audit::{AuditRecord, Target};
use smh_gateway::emulator::{Emulator, EmulatorConfig};
use smh_gateway::error::GatewayError;
use smh_gateway::gateway::route::SmhRoute;
use smh_gateway::gateway::{query, rewrite};
use smh_gateway::metrics::Metrics;
use smh_gateway::request_id::RequestId;
use smh_gateway::session::{SessionMemo, SessionValidator};
use smh_gateway::smh::token::{MintTarget, TokenKey, TokenMemo, TokenService};
use smh_gateway::upstream::Upstream;

/// The PyJWT vectors, signed now (the gateway bounds `exp - iat`, so
/// checked-in tokens would expire) into a folder of this run's own.
fn fixtures() -> String {
    let dir = std::env::temp_dir().join(format!("smh-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt/generate.py"
        ))
        .env("JWT_FIXTURES_OUT", &dir)
        .env("JWT_FIXTURES_IAT", (now - 60).to_string())
        .output()
        .expect("python3 with PyJWT and cryptography (scripts/test installs them)");
    assert!(
        out.status.success(),
        "generate.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.display().to_string()
}

fn route_and_rewrite(c: &mut Criterion) {
    let path = "/api/v1/file/smh1a2b3c4d/-/photos%2F2026%2Fsummer%2FIMG_0042.jpg";
    let query = "info&access_token=acctkSTOLEN&period=600&with_short_link=1&user_id=root";
    c.bench_function("route_parse", |b| {
        b.iter(|| SmhRoute::parse(&http::Method::GET, black_box(path)).unwrap())
    });
    c.bench_function("query_judge", |b| {
        b.iter(|| query::judge(black_box(Some(query))).unwrap())
    });
    c.bench_function("query_rewrite", |b| {
        b.iter(|| {
            rewrite::upstream_path_and_query(
                black_box(path),
                black_box(Some(query)),
                "acctk01f7af4f07me88u2svxwp9tszuekqlprquuejx",
            )
        })
    });
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("authorization", "Bearer eyJhbGciOi.x.y"),
        ("cookie", "a=b"),
        ("user-agent", "smh-sdk-js/1.0.16"),
        ("accept", "application/json"),
        ("x-request-id", "abc"),
        ("x-smh-meta-album", "summer"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    c.bench_function("upstream_request_headers", |b| {
        b.iter(|| rewrite::upstream_request_headers(black_box(&headers)))
    });
}

fn token_cache_hit(c: &mut Criterion) {
    smh_gateway::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(Emulator::start(
            EmulatorConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .unwrap();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(emu.ca_pem().as_bytes()).unwrap();
    let upstream = rt
        .block_on(async {
            Upstream::new(
                &emu.base_url(),
                &[ca],
                Duration::from_secs(5),
                Duration::from_secs(90),
                Duration::from_secs(30),
                true,
            )
        })
        .unwrap();
    let metrics = Arc::new(Metrics::new(&[emu.library_id().to_string()]));
    let lib: Arc<str> = Arc::from(emu.library_id());
    let target = MintTarget {
        upstream,
        secret: smh_gateway::secret::Secret::new(emu.library_secret()),
        generation: 0,
        metrics: metrics.library(emu.library_id()),
    };
    let tokens = TokenService::new(
        smh_gateway::smh::token::CacheLimits {
            capacity: 100_000,
            max_bytes: 64 << 20,
            max_keys_per_user: 32,
            refused_retry: Duration::from_secs(10),
        },
        Duration::from_secs(60),
        Duration::from_secs(43200),
        metrics,
    );
    let key = TokenKey {
        library: lib,
        spaces: Arc::from(""),
        user_id: Arc::from("alice"),
        client_id: Arc::from("phone"),
        session_id: Arc::from(""),
        grant: Arc::from("create_directory,upload_file"),
        period_secs: 3600,
        target: 0,
    };
    rt.block_on(tokens.get(&key, &target)).unwrap();
    c.bench_function("token_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { tokens.get(black_box(&key), &target).await.unwrap() })
    });
    let mut memo = TokenMemo::default();
    let now = Instant::now();
    c.bench_function("token_memo_hit", |b| {
        b.iter(|| {
            rt.block_on(tokens.get_memoized(black_box(&key), &target, &mut memo, now))
                .unwrap()
        })
    });
    emu.shutdown();
}

fn sessions(c: &mut Criterion) {
    smh_gateway::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fixtures = fixtures();
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/vectors.json")).unwrap())
            .unwrap();
    let toml = format!(
        r#"
[[library]]
id = "lib"
secret_file = "{fixtures}/hs-secret.txt"
[[role]]
name = "editor"
[session]
client_claim = "cid"
[session.jwt]
algorithms = ["HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA"]
hmac_secret_file = "{fixtures}/hs-secret.txt"
jwks_file = "{fixtures}/jwks.json"
issuer = "https://login.example.test"
audience = "smh-gateway"
"#
    );
    // A whole configuration needs a listener certificate.
    let tls = std::env::temp_dir().join(format!("smh-bench-tls-{}", std::process::id()));
    smh_gateway::tls::ThrowAwayPki::generate(&[])
        .unwrap()
        .write_to(&tls)
        .unwrap();
    let toml = format!(
        "[listener]\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n{toml}",
        d = tls.display()
    );
    let cfg = smh_gateway::config::parse(
        &toml,
        "bench.toml",
        &smh_gateway::config::Environment::from_pairs::<&str, &str>([]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let validator = rt
        .block_on(SessionValidator::new(
            cfg.session,
            Duration::from_secs(5),
            Vec::new(),
            None,
            false,
        ))
        .unwrap();
    let mut group = c.benchmark_group("session");
    for (case, alg) in [
        ("hs256_valid", "HS256"),
        ("rs256_valid", "RS256"),
        ("ps256_valid", "PS256"),
        ("es256_valid", "ES256"),
        ("es384_valid", "ES384"),
        ("eddsa_valid", "EdDSA"),
    ] {
        let token = vectors["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == case)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let parts = http::Request::builder()
            .uri("/api/v1/directory/lib/-/")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        group.bench_function(format!("{alg}_cold"), |b| {
            b.iter(|| {
                rt.block_on(validator.authenticate_uncached(black_box(&parts)))
                    .unwrap()
            })
        });
        let now = Instant::now();
        rt.block_on(validator.authenticate(&parts, &mut SessionMemo::default(), now))
            .unwrap();
        // A new connection's first request: digest + shared cache.
        group.bench_function(format!("{alg}_cached"), |b| {
            b.iter(|| {
                let mut memo = SessionMemo::default();
                rt.block_on(validator.authenticate(black_box(&parts), &mut memo, now))
                    .unwrap()
            })
        });
        // The next requests on that connection: the connection's memo.
        let mut memo = SessionMemo::default();
        group.bench_function(format!("{alg}_memo"), |b| {
            b.iter(|| {
                rt.block_on(validator.authenticate(black_box(&parts), &mut memo, now))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn error_rendering(c: &mut Criterion) {
    c.bench_function("error_to_response", |b| {
        b.iter(|| {
            GatewayError::SpaceNotAllowed(black_box("team9").to_string())
                .to_response("0123456789abcdef0123456789abcdef")
        })
    });
}

fn audit_encoding(c: &mut Criterion) {
    let rec = AuditRecord {
        time: SystemTime::now(),
        request_id: RequestId::generate(),
        user_id: Some(Arc::from("alice")),
        client_id: Some(Arc::from("phone")),
        session_id: Some(Arc::from("sess-42")),
        library: Some(Arc::from("smh1a2b3c4d")),
        target: Some(Target::new(Some("-"), "photos/2026/summer/IMG_0042.jpg")),
        method: Method::PUT,
        resource: Some(Cow::Borrowed("file")),
        operation: Some("upload"),
        status: 201,
        code: None,
        request_bytes: 120,
        response_bytes: 312,
        latency: Duration::from_micros(4250),
        upstream_latency: Some(Duration::from_micros(3500)),
        token: Some("hit"),
        client_addr: Some(SocketAddr::from(([203, 0, 113, 7], 53000))),
    };
    let mut buf = Vec::with_capacity(1024);
    c.bench_function("audit_record_encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&rec).write_json_line(&mut buf);
            buf.len()
        })
    });
}

criterion_group!(
    benches,
    route_and_rewrite,
    token_cache_hit,
    sessions,
    error_rendering,
    audit_encoding
);
criterion_main!(benches);
