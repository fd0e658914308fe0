//! The gateway protects itself: request-size limits answered in SMH's
//! shape, HTTP/2 idle, first-request and header-block timeouts, the
//! stream and connection caps, descriptor exhaustion, per-user token keys,
//! the token cache's byte bound, refused mints remembered, and a panic
//! that ends only its own request. Real sockets throughout: raw TLS for
//! what a well-behaved client would never send, the emulator as SMH, and
//! `smh-gateway run` processes where a descriptor limit is the subject.
//! Where a timeout is the subject it is configured to one second; the
//! tests wait for the event (the connection closing), with a generous
//! guard so a hang fails instead of stalling the suite.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{error_code, tls_connect, GatewayProcess, Harness};
use smh_gateway::emulator::EmulatorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for something the gateway must do within about
/// a second before calling it a failure.
const GUARD: Duration = Duration::from_secs(30);

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One HTTP/1.1 exchange written byte for byte: the status and the body
/// parsed as JSON (null when it is not).
async fn raw_h1(h: &Harness, head: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut tls = tls_connect(h, h.env.running.addr, &[b"http/1.1"])
        .await
        .unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, tls.read_to_end(&mut out))
        .await
        .expect("the gateway answers and closes")
        .ok();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn assert_smh_error(status: u16, json: &serde_json::Value, want: (u16, &str)) {
    assert_eq!(
        (status, json["code"].as_str().unwrap_or("")),
        want,
        "{json}"
    );
    assert!(
        json["message"].is_string() && json["requestId"].is_string(),
        "{json}"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_and_long_uris_414_in_smh_shape() {
    let h = Harness::start().await;
    let s = h.session("alice", &["viewer"]);
    let lib = h.lib().to_string();
    let seen = h.hooks().data_requests();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");

    // HTTP/1.1: 5,000 headers are answered 431 by hyper itself (it parses
    // at most 100 fields; see server::H1_MAX_HEADERS for why), not dropped;
    // one 40 KiB header is the gateway's own 431.
    let many: String = (0..5000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let head = format!(
        "GET {list} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {s}\r\n{many}connection: close\r\n\r\n"
    );
    let (status, _) = raw_h1(&h, &head, b"").await;
    assert_eq!(status, 431);
    let big = "x".repeat(40 * 1024);
    let head = format!(
        "GET {list} HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\nconnection: close\r\n\r\n"
    );
    let (status, json) = raw_h1(&h, &head, b"").await;
    assert_smh_error(status, &json, (431, "HeaderFieldsTooLarge"));
    // A 10 KiB request target.
    let long = format!("/api/v1/directory/{lib}/-/{}", "a/".repeat(5 * 1024));
    let head = format!("GET {long} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    let (status, json) = raw_h1(&h, &head, b"").await;
    assert_smh_error(status, &json, (414, "URITooLong"));

    // HTTP/2 (ALPN h2 through reqwest): the same answers.
    let mut req = h.client.get(h.url(&list)).bearer_auth(&s);
    for i in 0..5000 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (431, "HeaderFieldsTooLarge"));
    let resp = h
        .client
        .get(h.url(&long))
        .bearer_auth(&s)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (414, "URITooLong"));

    // Within the limits the same session works; SMH saw none of the above.
    assert_eq!(h.get(&list, &s).await.status(), 200);
    assert_eq!(h.hooks().data_requests(), seen + 1);
}

#[tokio::test]
async fn a_body_over_the_cap_is_413_when_declared_and_when_streamed() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nmax_body_bytes = 100000\nreplay_body_limit_bytes = 1000\n",
    )
    .await;
    let s = h.session("alice", &["editor"]);
    let lib = h.lib().to_string();
    let received = h.hooks().body_bytes_received();

    // Declared: 10 GiB, not one body byte sent; answered at once.
    let head = format!(
        "POST /api/v1/file/{lib}/-/big.bin?multipart HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {s}\r\ncontent-length: 10737418240\r\n\r\n"
    );
    let (status, json) = raw_h1(&h, &head, b"").await;
    assert_smh_error(status, &json, (413, "RequestEntityTooLarge"));

    // Streamed without a length (chunked): cut off once past the cap.
    let chunks = (0..30).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 10_000]));
    let resp =
        h.h1.post(h.url(&format!("/api/v1/file/{lib}/-/big.bin?multipart")))
            .bearer_auth(&s)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
    let (status, code, body) = error_code(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (413, "RequestEntityTooLarge"),
        "{body}"
    );
    let streamed = h.hooks().body_bytes_received() - received;
    assert!(streamed <= 100_000, "SMH received {streamed} bytes");
    let refused = h.env.running.metrics.body_too_large.get();
    assert_eq!(refused, 2);
}

/// An HTTP/2 connection spoken frame by frame.
struct H2 {
    tls: Tls,
    /// Bytes read but not yet taken as frames.
    pending: Vec<u8>,
}

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// HPACK (RFC 7541) for `GET https://localhost{path}` with only static
/// indexes and literals, no Huffman.
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87];
    b.push(0x44);
    assert!(path.len() < 127);
    b.push(path.len() as u8);
    b.extend(path.as_bytes());
    b.push(0x41);
    b.push(9);
    b.extend(b"localhost");
    b
}

impl H2 {
    async fn connect(h: &Harness) -> Self {
        let mut tls = tls_connect(h, h.env.running.addr, &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        tls.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        H2 {
            tls,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
    }

    /// The next frame, answering SETTINGS and PING as a client must;
    /// `None` once the gateway closed the connection.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.pending.len() >= 9 {
                let len = u32::from_be_bytes([0, self.pending[0], self.pending[1], self.pending[2]])
                    as usize;
                if self.pending.len() >= 9 + len {
                    let f: Vec<u8> = self.pending.drain(..9 + len).collect();
                    let (kind, flags) = (f[3], f[4]);
                    let stream = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
                    let payload = f[9..].to_vec();
                    if kind == 0x4 && flags & 1 == 0 {
                        let _ = self.tls.write_all(&frame(0x4, 1, 0, &[])).await;
                    }
                    if kind == 0x6 && flags & 1 == 0 {
                        let _ = self.tls.write_all(&frame(0x6, 1, 0, &payload)).await;
                    }
                    return Some((kind, flags, stream, payload));
                }
            }
            let mut buf = [0u8; 16 * 1024];
            match self.tls.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads until the response HEADERS of `stream`.
    async fn response_on(&mut self, stream: u32) {
        loop {
            let (kind, _, s, _) = self.next().await.expect("connection open");
            if kind == 0x1 && s == stream {
                return;
            }
        }
    }

    /// Reads until the gateway closes the connection; what it sent last.
    async fn until_closed(&mut self) -> Vec<u8> {
        let mut kinds = Vec::new();
        tokio::time::timeout(GUARD, async {
            while let Some((kind, ..)) = self.next().await {
                kinds.push(kind);
            }
        })
        .await
        .expect("the gateway closes the connection");
        kinds
    }
}

fn timeouts(h: &Harness, reason: &str) -> u64 {
    h.env
        .running
        .metrics
        .connection_timeouts
        .with_label_values(&[reason])
        .get()
}

#[tokio::test]
async fn an_h2_connection_that_sends_no_request_is_closed_after_the_header_read_timeout() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nheader_read_timeout_secs = 1\n",
    )
    .await;
    let mut c = H2::connect(&h).await;
    let kinds = c.until_closed().await;
    assert!(kinds.contains(&0x7), "closed with GOAWAY: {kinds:?}");
    assert_eq!(timeouts(&h, "first_request"), 1);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nidle_timeout_secs = 1\nheader_read_timeout_secs = 30\n",
    )
    .await;
    let mut c = H2::connect(&h).await;
    c.send(&frame(0x1, END_HEADERS | END_STREAM, 1, &get_block("/")))
        .await;
    c.response_on(1).await;
    let kinds = c.until_closed().await;
    assert!(kinds.contains(&0x7), "closed with GOAWAY: {kinds:?}");
    assert_eq!(timeouts(&h, "idle"), 1);
}

#[tokio::test]
async fn an_unfinished_h2_header_block_is_closed_within_the_header_read_timeout() {
    // Idle timeout a minute: only the header-block rule can close it soon.
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nidle_timeout_secs = 60\nheader_read_timeout_secs = 1\n",
    )
    .await;
    let mut c = H2::connect(&h).await;
    c.send(&frame(0x1, END_HEADERS | END_STREAM, 1, &get_block("/")))
        .await;
    c.response_on(1).await;
    // HEADERS without END_HEADERS, and no CONTINUATION ever.
    c.send(&frame(0x1, END_STREAM, 3, &get_block("/api/v1/x")[..6]))
        .await;
    c.until_closed().await;
    assert_eq!(timeouts(&h, "header_block"), 1);
    assert_eq!(timeouts(&h, "idle"), 0);
}

/// A client that gives HTTP/2 no flow-control window never lets its
/// response body be sent: the connection is dropped after the send
/// timeout instead of being held (with its stream) for ever.
#[tokio::test]
async fn a_response_the_client_never_lets_through_ends_its_connection() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nsend_timeout_secs = 1\nidle_timeout_secs = 60\nheader_read_timeout_secs = 60\n",
    )
    .await;
    let mut tls = tls_connect(&h, h.env.running.addr, &[b"h2"]).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    tls.write_all(&frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .await
        .unwrap();
    let mut c = H2 {
        tls,
        pending: Vec::new(),
    };
    // A 404 in SMH's shape: a JSON body that can never be sent.
    c.send(&frame(0x1, END_HEADERS | END_STREAM, 1, &get_block("/")))
        .await;
    c.response_on(1).await;
    let kinds = c.until_closed().await;
    assert!(!kinds.contains(&0x0), "no DATA could be sent: {kinds:?}");
    assert_eq!(timeouts(&h, "send"), 1);
}

#[tokio::test]
async fn the_stream_cap_is_advertised_and_enforced() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[limits]\nmax_concurrent_streams = 7\n",
    )
    .await;
    let mut c = H2::connect(&h).await;
    let (kind, _, _, payload) = c.next().await.unwrap();
    assert_eq!(kind, 0x4, "the server's preface is SETTINGS");
    let advertised = payload
        .chunks(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 0x3)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(advertised, Some(7));
    // An eighth concurrent stream (headers begun, none ended) is refused.
    for stream in (1..=15).step_by(2) {
        c.send(&frame(0x1, END_HEADERS, stream, &get_block("/")))
            .await;
    }
    let refused = tokio::time::timeout(GUARD, async {
        loop {
            let (kind, _, stream, payload) = c.next().await.expect("open");
            // RST_STREAM(REFUSED_STREAM = 0x7) on the eighth.
            if kind == 0x3 && stream == 15 {
                return u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            }
        }
    })
    .await
    .expect("the eighth stream is reset");
    assert_eq!(refused, 0x7);
}

#[tokio::test]
async fn the_connection_cap_refuses_at_once_and_frees_a_slot_when_one_closes() {
    let h = Harness::start_with(EmulatorConfig::default(), "[limits]\nmax_connections = 3\n").await;
    let addr = h.env.running.addr;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tls_connect(&h, addr, &[b"http/1.1"]).await.unwrap());
    }
    // The fourth is accepted and closed at once: its handshake fails.
    assert!(tls_connect(&h, addr, &[b"http/1.1"]).await.is_err());
    assert!(h.env.running.metrics.connections_refused.get() >= 1);
    drop(open.pop());
    // The slot comes back when the gateway sees that connection end.
    tokio::time::timeout(GUARD, async {
        while tls_connect(&h, addr, &[b"http/1.1"]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a slot frees up");
}

/// One gateway process with 64 descriptors and a connection cap above
/// them (configured, so kept): a flood exhausts the descriptors, `accept`
/// fails with EMFILE and backs off, and once the flood ends the same
/// process serves again.
#[tokio::test]
async fn descriptor_exhaustion_is_survived_and_serving_resumes_after_the_flood() {
    let h = Harness::start().await;
    let gw = GatewayProcess::spawn(
        &h,
        "[limits]\nmax_connections = 1000\nheader_read_timeout_secs = 60\n",
        Some(64),
    );
    let s = h.session("alice", &["viewer"]);
    let list = format!("/api/v1/directory/{}/-/?by-marker", h.lib());
    let ok = |client: reqwest::Client, url: String, s: String| async move {
        client
            .get(url)
            .bearer_auth(s)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    assert!(ok(h.h1.clone(), gw.url(&list), s.clone()).await);
    // 100 idle TLS connections at once: more than the process has
    // descriptors. Those it cannot accept wait in the backlog; a few
    // seconds tell the two apart (this only sets the scene: the checks
    // below wait for events).
    let attempts = (0..100).map(|_| {
        tokio::time::timeout(
            Duration::from_secs(3),
            tls_connect(&h, gw.addr, &[b"http/1.1"]),
        )
    });
    let flood: Vec<_> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.ok().and_then(Result::ok))
        .collect();
    let held = flood.len();
    assert!(
        held < 100,
        "the flood exhausted the descriptors ({held} held)"
    );
    drop(flood);
    let served = tokio::time::timeout(GUARD, async {
        loop {
            let fresh =
                common::client_builder(&std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap())
                    .http1_only()
                    .build()
                    .unwrap();
            if ok(fresh, gw.url(&list), s.clone()).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "serving resumed; log: {:?}",
        gw.log.lock().unwrap()
    );
    let metrics = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smh_gateway_accept_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "accept saw EMFILE: {failures}");
    let warned = gw
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("backing off"));
    assert!(warned, "the back-off is logged");
}

fn client_header_session() -> Option<String> {
    Some(
        "[session]\ndefault_roles = [\"viewer\"]\nclient_header = \"X-Client-Id\"\n\n[session.jwt]\nhmac_secret_file = \"{dir}/session-secret\"\n"
            .to_string(),
    )
}

#[tokio::test]
async fn one_user_holds_a_bounded_number_of_token_keys() {
    let h = Harness::start_full(
        EmulatorConfig::default(),
        "[tokens]\nmax_keys_per_user = 5\n",
        client_header_session(),
    )
    .await;
    let s = h.session("alice", &["viewer"]);
    let list = format!("/api/v1/directory/{}/-/?by-marker", h.lib());
    let mints = h.hooks().mints();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = h
            .client
            .get(h.url(&list))
            .bearer_auth(&s)
            .header("x-client-id", format!("device-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if i >= 5 {
            let (_, code, _) = error_code(resp).await;
            assert_eq!(code, "RateLimitExceeded");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(
        h.hooks().mints() - mints,
        5,
        "SMH minted one token per admitted key"
    );
    // A known device still works; another user is not affected.
    let resp = h
        .client
        .get(h.url(&list))
        .bearer_auth(&s)
        .header("x-client-id", "device-2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bob = h.session("bob", &["viewer"]);
    assert_eq!(h.get(&list, &bob).await.status(), 200);
    // A 2,000-character device id never becomes a key.
    let resp = h
        .client
        .get(h.url(&list))
        .bearer_auth(&s)
        .header("x-client-id", "d".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(h.env.running.metrics.token_keys_refused.get(), 3);
}

#[tokio::test]
async fn the_token_cache_is_bounded_by_bytes() {
    // 10,000 bytes for up to 1,000 entries: each entry weighs at least its
    // 256 bytes of overhead, so at most 39 fit whatever their count bound.
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[tokens]\ncache_capacity = 1000\ncache_max_bytes = 10000\n",
    )
    .await;
    let list = format!("/api/v1/directory/{}/-/?by-marker", h.lib());
    for i in 0..60 {
        let s = h.session(&format!("user-{i}"), &["viewer"]);
        assert_eq!(h.get(&list, &s).await.status(), 200, "user {i}");
    }
    let entries = h.env.running.gateway.tokens.entry_count().await;
    assert!(
        (1..=39).contains(&entries),
        "{entries} entries in 10,000 bytes"
    );
}

#[tokio::test]
async fn a_refused_mint_is_remembered_instead_of_asked_again() {
    let h = Harness::start().await;
    let s = h.session("alice", &["viewer"]);
    let list = format!("/api/v1/directory/{}/-/?by-marker", h.lib());
    // The LibrarySecret was rotated at SMH: the gateway's is now wrong.
    h.hooks().rotate_library_secret();
    let calls = h.hooks().token_api_calls();
    for _ in 0..6 {
        let (status, code, _) = error_code(h.get(&list, &s).await).await;
        assert_eq!((status, code.as_str()), (502, "TokenMintFailed"));
    }
    assert_eq!(h.hooks().token_api_calls() - calls, 1, "SMH asked once");
    assert_eq!(h.env.running.metrics.token_mints_refused_cached.get(), 5);
}

/// A panic in one request ends that request only: over HTTP/1.1 its
/// connection, over HTTP/2 its stream; the listener and every other
/// connection and stream keep serving.
#[tokio::test]
async fn a_panicking_request_ends_only_itself() {
    use http::{Request, Response};
    use smh_gateway::server::{serve_tls, Limits, NoObserver, Shutdown};
    smh_gateway::tls::install_crypto_provider();
    let pki = smh_gateway::tls::ThrowAwayPki::generate(&[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let svc = move |_: &smh_gateway::server::ConnInfo| {
        let count = count.clone();
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let count = count.clone();
            Box::pin(async move {
                if req.uri().path() == "/panic" {
                    panic!("a bug in one request");
                }
                count.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(Response::new(smh_gateway::body::full("ok")))
            })
        })
    };
    tokio::spawn(serve_tls(
        listener,
        Arc::new(pki.server_config(smh_gateway::tls::ALPN_H2_H1).unwrap()),
        svc,
        Arc::new(NoObserver),
        Shutdown::default(),
        Limits::default(),
    ));
    let ca = reqwest::Certificate::from_der(&pki.ca_der()).unwrap();
    let build = |h1: bool| {
        let b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone());
        if h1 { b.http1_only() } else { b }.build().unwrap()
    };
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let h1 = build(true);
    assert!(h1.get(url("/panic")).send().await.is_err());
    assert_eq!(h1.get(url("/ok")).send().await.unwrap().status(), 200);
    // HTTP/2: both on one connection, at once.
    let h2 = build(false);
    assert_eq!(
        h2.get(url("/ok")).send().await.unwrap().version(),
        reqwest::Version::HTTP_2
    );
    let (bad, good) = tokio::join!(h2.get(url("/panic")).send(), h2.get(url("/ok")).send());
    assert!(bad.is_err());
    assert_eq!(good.unwrap().status(), 200);
    assert_eq!(h2.get(url("/ok")).send().await.unwrap().status(), 200);
    assert_eq!(served.load(Ordering::SeqCst), 4);
}

/// The release build unwinds: with `panic = "abort"` the isolation above
/// would end the process instead.
#[test]
fn the_release_profile_unwinds_on_panic() {
    let manifest: toml::Value = toml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap(),
    )
    .unwrap();
    let panic = manifest["profile"]["release"]
        .get("panic")
        .and_then(|v| v.as_str());
    assert_eq!(panic.unwrap_or("unwind"), "unwind");
}
