//! Upstream failures by cause (`smh_gateway_upstream_failures_total`):
//! every cause driven by a real socket — a closed port, a peer that is not
//! TLS or not trusted, one that closes, one that answers garbage, one that
//! stops sending — through the real upstream client, each asserted to
//! move exactly its own cause in the rendered exposition.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::parse_prometheus;
use smh_gateway::body;
use smh_gateway::metrics::Metrics;
use smh_gateway::tls::ThrowAwayPki;
use smh_gateway::upstream::{Upstream, UpstreamFailure};

const LIB: &str = "smhlib";
/// Long enough never to fire in a test that does not wait for it: the
/// tests that do use [`SHORT_READ_TIMEOUT`].
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The read timeout where a test waits for it to fire.
const SHORT_READ_TIMEOUT: Duration = Duration::from_millis(300);

/// What a scripted TLS server does once it has read a request head.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the connection without answering.
    Close,
    /// Writes these bytes and closes.
    AnswerAndClose(&'static [u8]),
    /// Writes these bytes (maybe none) and keeps the connection open,
    /// sending nothing more.
    AnswerAndHold(&'static [u8]),
}

/// A TLS server with `pki`'s certificate that reads one request head per
/// connection and then does `then`.
async fn tls_server(pki: &ThrowAwayPki, then: Then) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[]).unwrap()));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (answer, hold): (&[u8], bool) = match then {
                    Then::Close => (b"", false),
                    Then::AnswerAndClose(a) => (a, false),
                    Then::AnswerAndHold(a) => (a, true),
                };
                if tls.write_all(answer).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                if hold {
                    // Until the client gives up and closes.
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                } else {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// A TCP server that runs `conn` on every accepted connection.
async fn tcp_server<F, Fut>(conn: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(conn(tcp));
        }
    });
    port
}

/// An upstream for `localhost:port` trusting `ca`, reporting to fresh
/// metrics for one library.
fn observed(
    port: u16,
    ca: &ThrowAwayPki,
    read_timeout: Duration,
    http2: bool,
) -> (Upstream, Arc<Metrics>) {
    smh_gateway::tls::install_crypto_provider();
    let metrics = Arc::new(Metrics::new(&[LIB.to_string()]));
    let up = Upstream::observed(
        &format!("https://localhost:{port}"),
        &[ca.ca_der()],
        Duration::from_secs(5),
        Duration::from_secs(90),
        read_timeout,
        http2,
        metrics.library(LIB),
    )
    .unwrap();
    (up, metrics)
}

/// `smh_gateway_upstream_failures_total` by cause, as the reference
/// parser reads the exposition.
fn failures(metrics: &Metrics) -> BTreeMap<String, f64> {
    parse_prometheus(&metrics.render().unwrap())
        .into_iter()
        .filter(|(name, labels, _)| {
            name == "smh_gateway_upstream_failures_total" && labels["library"] == LIB
        })
        .map(|(_, labels, v)| (labels["cause"].clone(), v))
        .collect()
}

/// Exactly `cause` counted once, every other cause zero.
fn assert_only(metrics: &Metrics, cause: UpstreamFailure) {
    let got = failures(metrics);
    let want: BTreeMap<String, f64> = UpstreamFailure::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), if *c == cause { 1.0 } else { 0.0 }))
        .collect();
    assert_eq!(got, want);
}

/// Sends a GET and reads the whole answer; the error's cause if any.
async fn get(up: &Upstream) -> Result<Bytes, Option<UpstreamFailure>> {
    let mut req = Request::new(body::empty());
    *req.uri_mut() = up.uri("/api/v1/directory/smhlib/-/").unwrap();
    let resp = up.send(req).await.map_err(|e| e.cause())?;
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|_| None)?
        .to_bytes())
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    for http2 in [false, true] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is gone: connecting is refused.
        let (up, metrics) = observed(port, &pki, READ_TIMEOUT, http2);
        assert_eq!(
            get(&up).await,
            Err(Some(UpstreamFailure::Connect)),
            "http2 {http2}"
        );
        assert_only(&metrics, UpstreamFailure::Connect);
    }
}

#[tokio::test]
async fn an_untrusted_certificate_or_a_peer_without_tls_is_a_tls_failure() {
    let trusted = ThrowAwayPki::generate(&[]).unwrap();
    let other = ThrowAwayPki::generate(&[]).unwrap();
    let port = tls_server(
        &other,
        Then::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    )
    .await;
    let (up, metrics) = observed(port, &trusted, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(Some(UpstreamFailure::Tls)));
    assert_only(&metrics, UpstreamFailure::Tls);

    // Plain HTTP where TLS was expected.
    let port = tcp_server(|mut tcp| async move {
        let _ = tcp
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        let mut buf = [0u8; 1024];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let (up, metrics) = observed(port, &trusted, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(Some(UpstreamFailure::Tls)));
    assert_only(&metrics, UpstreamFailure::Tls);
}

#[tokio::test]
async fn a_peer_that_closes_is_a_reset() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    // Accepts the TCP connection and closes it at once (mid-handshake).
    let port = tcp_server(|tcp| async move { drop(tcp) }).await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(Some(UpstreamFailure::Reset)));
    assert_only(&metrics, UpstreamFailure::Reset);

    // Reads the request and closes without an answer.
    let port = tls_server(&pki, Then::Close).await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(Some(UpstreamFailure::Reset)));
    assert_only(&metrics, UpstreamFailure::Reset);

    // Answers a head promising 100 bytes, sends 10 and closes: the body
    // read fails after the head was passed on.
    let port = tls_server(
        &pki,
        Then::AnswerAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789"),
    )
    .await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    assert_eq!(
        get(&up).await,
        Err(None),
        "the head arrived; the body failed"
    );
    assert_only(&metrics, UpstreamFailure::Reset);
}

#[tokio::test]
async fn garbage_or_broken_framing_is_a_protocol_failure() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let port = tls_server(
        &pki,
        Then::AnswerAndClose(b"SMH? never heard of it\r\n\r\n"),
    )
    .await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(Some(UpstreamFailure::Protocol)));
    assert_only(&metrics, UpstreamFailure::Protocol);

    // A chunk size that is not hex, after a good head.
    let port = tls_server(
        &pki,
        Then::AnswerAndHold(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
    )
    .await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(None));
    assert_only(&metrics, UpstreamFailure::Protocol);
}

#[tokio::test]
async fn silence_past_the_read_timeout_is_a_timeout() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    // No response head at all, over either transport.
    let port = tls_server(&pki, Then::AnswerAndHold(b"")).await;
    for http2 in [false, true] {
        let (up, metrics) = observed(port, &pki, SHORT_READ_TIMEOUT, http2);
        assert_eq!(
            get(&up).await,
            Err(Some(UpstreamFailure::Timeout)),
            "http2 {http2}"
        );
        assert_only(&metrics, UpstreamFailure::Timeout);
    }
    // A head, then a body that stops.
    let port = tls_server(
        &pki,
        Then::AnswerAndHold(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01"),
    )
    .await;
    let (up, metrics) = observed(port, &pki, SHORT_READ_TIMEOUT, false);
    assert_eq!(get(&up).await, Err(None));
    assert_only(&metrics, UpstreamFailure::Timeout);
}

/// A request body that fails (the client's upload broke off) is not the
/// upstream's doing: nothing is counted against SMH.
#[tokio::test]
async fn a_failing_request_body_is_not_counted_against_the_upstream() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let port = tls_server(&pki, Then::AnswerAndHold(b"")).await;
    let (up, metrics) = observed(port, &pki, READ_TIMEOUT, false);
    let chunks: Vec<Result<http_body::Frame<Bytes>, body::BoxError>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"{\"a\":"))),
        Err("the client went away".into()),
    ];
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let mut req = Request::new(stream.boxed_unsync());
    *req.method_mut() = http::Method::PUT;
    *req.uri_mut() = up.uri("/api/v1/file/smhlib/-/a").unwrap();
    let Err(err) = up.send(req).await else {
        panic!("the upstream answered a request whose body failed");
    };
    assert_eq!(err.cause(), None, "{err}");
    assert!(failures(&metrics).values().all(|v| *v == 0.0));
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Through the gateway: libraries whose upstreams fail in each way, and
/// the emulator answering later than `upstream.read_timeout_secs`. Each
/// library's series move for its own cause only, the client gets the
/// outage answer (never an auth failure), and the pseudo-library of
/// unknown ids has no upstream series at all.
#[tokio::test]
async fn the_gateway_counts_upstream_failures_by_library_and_cause() {
    use common::{error_code, sample, Harness};
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let dir = std::env::temp_dir().join(format!("smh-upfail-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "not-the-real-secret").unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    let untrusted = ThrowAwayPki::generate(&[]).unwrap();
    let ok_head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let broken = [
        ("brokenconnect", closed_port(), UpstreamFailure::Connect),
        (
            "brokentls",
            tls_server(&untrusted, Then::AnswerAndClose(ok_head)).await,
            UpstreamFailure::Tls,
        ),
        (
            "brokenreset",
            tcp_server(|tcp| async move { drop(tcp) }).await,
            UpstreamFailure::Reset,
        ),
        (
            "brokenprotocol",
            tls_server(
                &pki,
                Then::AnswerAndClose(b"SMH? never heard of it\r\n\r\n"),
            )
            .await,
            UpstreamFailure::Protocol,
        ),
    ];
    let mut extra = String::from("[upstream]\nread_timeout_secs = 1\n");
    for (id, port, _) in &broken {
        extra.push_str(&format!(
            "\n[[library]]\nid = \"{id}\"\nupstream = \"https://localhost:{port}\"\nca_file = \"{ca}\"\nsecret_file = \"{secret}\"\n",
            ca = dir.join("ca.pem").display(),
            secret = dir.join("secret").display(),
        ));
    }
    let h = Harness::start_with(smh_gateway::emulator::EmulatorConfig::default(), &extra).await;
    let alice = h.session("alice", &["viewer"]);
    for (id, _, cause) in &broken {
        let r = h
            .get(&format!("/api/v1/directory/{id}/-/?by-marker"), &alice)
            .await;
        let (status, code, _) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "TokenServiceUnavailable"),
            "{id} ({cause}): the token API is unreachable"
        );
    }
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    for _ in 0..3 {
        assert_eq!(h.get(&list, &alice).await.status(), 200);
    }
    let unknown = h.get("/api/v1/directory/nolib/-/?by-marker", &alice).await;
    assert_eq!(unknown.status(), 404);
    let before_timeout = parse_prometheus(&scrape(&h).await);
    // SMH takes longer than the read timeout to answer.
    h.hooks().set_latency(Duration::from_secs(3600));
    let (status, code, _) = error_code(h.get(&list, &alice).await).await;
    assert_eq!((status, code.as_str()), (504, "RequestTimeout"));

    let s = parse_prometheus(&scrape(&h).await);
    let failures = |library: &str| -> BTreeMap<String, f64> {
        s.iter()
            .filter(|(n, l, _)| {
                n == "smh_gateway_upstream_failures_total" && l["library"] == library
            })
            .map(|(_, l, v)| (l["cause"].clone(), *v))
            .collect()
    };
    let only = |cause: UpstreamFailure| -> BTreeMap<String, f64> {
        UpstreamFailure::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), if *c == cause { 1.0 } else { 0.0 }))
            .collect()
    };
    for (id, _, cause) in &broken {
        assert_eq!(failures(id), only(*cause), "{id}");
    }
    assert_eq!(failures(&lib), only(UpstreamFailure::Timeout), "{lib}");
    // Three sequential requests share one pooled connection; the one that
    // timed out is not returned.
    assert_eq!(
        sample(
            &before_timeout,
            "smh_gateway_upstream_idle_connections",
            &[("library", &lib)]
        ),
        Some(1.0)
    );
    // The unknown library answers requests only: nothing upstream exists.
    let unknown_series: Vec<&String> = s
        .iter()
        .filter(|(_, l, _)| l.get("library").map(String::as_str) == Some("unknown"))
        .map(|(n, _, _)| n)
        .collect();
    assert!(!unknown_series.is_empty());
    assert!(
        unknown_series
            .iter()
            .all(|n| n.starts_with("smh_gateway_requests_total")
                || n.starts_with("smh_gateway_request_duration_seconds")),
        "{unknown_series:?}"
    );
}

async fn scrape(h: &common::Harness) -> String {
    reqwest::get(h.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
