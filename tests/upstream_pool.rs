//! The upstream HTTP/1.1 keep-alive pool, against real TLS servers on
//! ephemeral ports: connections are reused, a connection the server closed
//! while idle never surfaces as an error, and a response abandoned halfway
//! does not put its connection back; every framing an upstream may use is
//! read (chunked, to-the-close, bodiless answers, interim 1xx), and broken
//! answers are errors: framing outside RFC 9112, a written request whose
//! connection died (never sent twice), unsolicited bytes on an idle
//! connection, a stalled body (read timeout).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use smh_gateway::body;
use smh_gateway::server::{serve_tls, ConnInfo, ConnObserver, Limits, Shutdown};
use smh_gateway::tls::{ThrowAwayPki, ALPN_H2_H1};
use smh_gateway::upstream::Upstream;

#[derive(Default)]
struct Opened(AtomicUsize);
impl ConnObserver for Opened {
    fn opened(&self, _info: &ConnInfo) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const BIG: usize = 4 * 1024 * 1024;

/// A keep-alive HTTPS server (h2 and http/1.1): `/big` answers 4 MiB,
/// `/wire` describes the request as it arrived, anything else "ok".
async fn keep_alive_server(pki: &ThrowAwayPki) -> (u16, Arc<Opened>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let opened = Arc::new(Opened::default());
    let tls = Arc::new(pki.server_config(ALPN_H2_H1).unwrap());
    let svc = |_: &ConnInfo| {
        tower::service_fn(|req: Request<Incoming>| {
            let body = if req.uri().path() == "/big" {
                Bytes::from(vec![b'x'; BIG])
            } else if req.uri().path() == "/wire" {
                let host = req
                    .headers()
                    .get("host")
                    .map(|h| h.to_str().unwrap().to_owned());
                let authority = req.uri().authority().map(|a| a.to_string());
                Bytes::from(format!(
                    "{:?} host={host:?} authority={authority:?}",
                    req.version()
                ))
            } else {
                Bytes::from_static(b"ok")
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                body,
            ))))
        })
    };
    tokio::spawn(serve_tls(
        listener,
        tls,
        svc,
        opened.clone(),
        Shutdown::default(),
        Limits::default(),
    ));
    (port, opened)
}

fn upstream(pki: &ThrowAwayPki, port: u16) -> Upstream {
    upstream_with(pki, port, false)
}

fn upstream_with(pki: &ThrowAwayPki, port: u16, http2: bool) -> Upstream {
    smh_gateway::tls::install_crypto_provider();
    Upstream::new(
        &format!("https://localhost:{port}"),
        &[pki.ca_der()],
        Duration::from_secs(5),
        Duration::from_secs(90),
        Duration::from_secs(30),
        http2,
    )
    .unwrap()
}

/// HTTP/1.1 carries the upstream's host in `Host`; h2 (`upstream.http2`)
/// carries it in `:authority` only — nginx answers 400 to an h2 request
/// that also has a `host` header.
#[tokio::test]
async fn each_transport_names_the_host_the_way_its_protocol_does() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, _) = keep_alive_server(&pki).await;
    let (_, h1) = get(&upstream_with(&pki, port, false), "/wire").await;
    assert_eq!(
        h1,
        format!("HTTP/1.1 host=Some(\"localhost:{port}\") authority=None")
    );
    let (_, h2) = get(&upstream_with(&pki, port, true), "/wire").await;
    assert_eq!(
        h2,
        format!("HTTP/2.0 host=None authority=Some(\"localhost:{port}\")")
    );
}

async fn get(up: &Upstream, path: &str) -> (u16, Bytes) {
    let mut req = Request::new(body::empty());
    *req.uri_mut() = up.uri(path).unwrap();
    let resp = up.send(req).await.expect("upstream answered");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, opened) = keep_alive_server(&pki).await;
    let up = upstream(&pki, port);
    for _ in 0..20 {
        assert_eq!(get(&up, "/x").await, (200, Bytes::from_static(b"ok")));
    }
    assert_eq!(opened.0.load(Ordering::SeqCst), 1);
    // Concurrent requests need as many connections, and no more later.
    let up = Arc::new(up);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let up = up.clone();
            tokio::spawn(async move { get(&up, "/big").await })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!((status, body.len()), (200, BIG));
    }
    let after_burst = opened.0.load(Ordering::SeqCst);
    assert!((2..=5).contains(&after_burst), "{after_burst} connections");
    for _ in 0..10 {
        get(&up, "/x").await;
    }
    assert_eq!(opened.0.load(Ordering::SeqCst), after_burst);
}

#[tokio::test]
async fn an_abandoned_response_does_not_return_its_connection() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, opened) = keep_alive_server(&pki).await;
    let up = upstream(&pki, port);
    let mut req = Request::new(body::empty());
    *req.uri_mut() = up.uri("/big").unwrap();
    let resp = up.send(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| d.len() < BIG));
    drop(body);
    // The half-read connection is gone; the next request gets a fresh one
    // and a whole, correct answer.
    assert_eq!(get(&up, "/x").await, (200, Bytes::from_static(b"ok")));
    assert_eq!(opened.0.load(Ordering::SeqCst), 2);
}

/// A server that answers one request per connection and then closes the
/// socket without saying so (no `Connection: close`): every pooled
/// connection is stale by the time it is reused.
#[tokio::test]
async fn connections_closed_while_idle_are_replaced_without_errors() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[]).unwrap()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                tls.flush().await.unwrap();
                // Let the client pool the connection, then drop it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let up = upstream(&pki, port);
    for i in 0..10 {
        assert_eq!(
            get(&up, "/x").await,
            (200, Bytes::from_static(b"ok")),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
}

/// What a scripted upstream answers to one request head: raw bytes, and
/// whether it closes the connection afterwards.
type Script = fn(&str) -> (Vec<u8>, bool);

/// A TLS server that answers each request head with whatever `script`
/// says, byte for byte. Records the request heads and counts connections.
async fn scripted_server(pki: &ThrowAwayPki, script: Script) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[]).unwrap()));
    let seen = Arc::new(Seen::default());
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            record.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = pending.drain(..end + 4).collect();
                    let head = String::from_utf8(head).unwrap();
                    let (answer, close) = script(&head);
                    record.heads.lock().unwrap().push(head);
                    if tls.write_all(&answer).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                    if close {
                        let _ = tls.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    heads: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn request(up: &Upstream, method: http::Method, path: &str) -> Result<(u16, Bytes), String> {
    let mut req = Request::new(body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = up.uri(path).unwrap();
    let resp = up.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

#[tokio::test]
async fn chunked_bodies_arrive_whole_and_keep_their_connection() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |_| {
        let body = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n";
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        (format!("{head}{body}").into_bytes(), false)
    })
    .await;
    let up = upstream(&pki, port);
    for _ in 0..3 {
        let answer = request(&up, http::Method::GET, "/c").await;
        assert_eq!(answer, Ok((200, Bytes::from_static(b"hello world"))));
    }
    assert_eq!(seen.connections(), 1);
}

#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_the_end_and_not_reused() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |_| {
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), true)
    })
    .await;
    let up = upstream(&pki, port);
    for _ in 0..2 {
        let answer = request(&up, http::Method::GET, "/c").await;
        assert_eq!(answer, Ok((200, Bytes::from_static(b"until the end"))));
    }
    assert_eq!(seen.connections(), 2);
}

/// HEAD, 204 and interim 1xx answers carry no body (whatever their
/// Content-Length says), so the connection stays in step for the next.
#[tokio::test]
async fn answers_without_a_body_keep_the_connection_in_step() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |head| {
        let answer: &[u8] = if head.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        } else if head.starts_with("DELETE ") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else {
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        (answer.to_vec(), false)
    })
    .await;
    let up = upstream(&pki, port);
    for _ in 0..2 {
        assert_eq!(
            request(&up, http::Method::HEAD, "/h").await,
            Ok((200, Bytes::new()))
        );
        assert_eq!(
            request(&up, http::Method::DELETE, "/d").await,
            Ok((204, Bytes::new()))
        );
        assert_eq!(
            request(&up, http::Method::GET, "/g").await,
            Ok((200, Bytes::from_static(b"ok")))
        );
    }
    assert_eq!(seen.connections(), 1);
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_are_not_reused() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |head| {
        let answer: &[u8] = if head.starts_with("GET /close ") {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        (answer.to_vec(), false)
    })
    .await;
    let up = upstream(&pki, port);
    for path in ["/close", "/close", "/old", "/old"] {
        assert_eq!(
            request(&up, http::Method::GET, path).await,
            Ok((200, Bytes::from_static(b"ok")))
        );
    }
    assert_eq!(seen.connections(), 4);
}

/// A broken upstream answer is an error for that request, never a hang
/// and never a connection reused out of step.
#[tokio::test]
async fn broken_answers_are_errors() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |head| {
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            "/garbage" => (b"HTTP/1.1 two hundred\r\n\r\n".to_vec(), false),
            "/conflict" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!".to_vec(),
                false,
            ),
            "/truncated" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
                true,
            ),
            "/bad-chunk" => (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
                false,
            ),
            "/huge-head" => {
                let filler = "x".repeat(40 * 1024);
                (
                    format!("HTTP/1.1 200 OK\r\nx-filler: {filler}\r\ncontent-length: 0\r\n\r\n")
                        .into_bytes(),
                    false,
                )
            }
            "/silent" => (Vec::new(), true),
            _ => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                false,
            ),
        }
    })
    .await;
    let up = upstream(&pki, port);
    for path in [
        "/garbage",
        "/conflict",
        "/truncated",
        "/bad-chunk",
        "/huge-head",
        "/silent",
    ] {
        let answer = request(&up, http::Method::GET, path).await;
        assert!(answer.is_err(), "{path}: {answer:?}");
        // Each failure costs its connection; the next request is whole.
        assert_eq!(
            request(&up, http::Method::GET, "/fine").await,
            Ok((200, Bytes::from_static(b"ok"))),
            "after {path}"
        );
    }
    // One connection per failure and one for the first "/fine": "/silent"
    // met a pooled connection that closed after the request was written,
    // which is that request's error — a request that reached the upstream
    // is never sent again, whatever its method.
    assert_eq!(seen.connections(), 7);
}

#[tokio::test]
async fn bodiless_requests_are_framed_for_their_method() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            false,
        )
    })
    .await;
    let up = upstream(&pki, port);
    request(&up, http::Method::POST, "/p?x=1").await.unwrap();
    request(&up, http::Method::GET, "/g").await.unwrap();
    let heads = seen.heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("POST /p?x=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains("\r\ncontent-length: 0\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains(&format!("\r\nhost: localhost:{port}\r\n")),
        "{}",
        heads[0]
    );
    assert!(heads[1].starts_with("GET /g HTTP/1.1\r\n"), "{}", heads[1]);
    assert!(!heads[1].contains("content-length"), "{}", heads[1]);
}

/// A request whose bytes reached SMH is never sent again: SMH may have
/// acted on it. The pooled connection dies after the whole `DELETE` was
/// written, and the caller gets the error instead of a second `DELETE`.
#[tokio::test]
async fn a_written_request_is_not_sent_again_when_its_connection_dies() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |head| {
        if head.starts_with("DELETE") || head.starts_with("PUT") {
            // Read, then gone without a word.
            (Vec::new(), true)
        } else {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                false,
            )
        }
    })
    .await;
    let up = upstream(&pki, port);
    for method in [http::Method::DELETE, http::Method::PUT] {
        // Warm a pooled connection, then send on it.
        assert!(request(&up, http::Method::GET, "/warm").await.is_ok());
        let answer = request(&up, method.clone(), "/api/v1/file/lib/-/a").await;
        assert!(answer.is_err(), "{method}: {answer:?}");
    }
    let heads = seen.heads.lock().unwrap();
    let sent = |m: &str| heads.iter().filter(|h| h.starts_with(m)).count();
    assert_eq!((sent("DELETE"), sent("PUT")), (1, 1), "{heads:?}");
}

/// Framing the RFC forbids is an error, not a guess: a signed
/// `Content-Length`, and a chunk-size line ended by a bare LF with junk.
#[tokio::test]
async fn framing_outside_rfc_9112_is_refused() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, _) =
        scripted_server(&pki, |head| {
            let path = head.split(' ').nth(1).unwrap_or("");
            match path {
            "/plus" => (
                b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello".to_vec(),
                false,
            ),
            "/bare-lf" => (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 junk\nhello\r\n0\r\n\r\n"
                    .to_vec(),
                false,
            ),
            _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false),
        }
        })
        .await;
    let up = upstream(&pki, port);
    for path in ["/plus", "/bare-lf"] {
        let answer = request(&up, http::Method::GET, path).await;
        assert!(answer.is_err(), "{path}: {answer:?}");
    }
}

/// Bytes an upstream sends on an idle connection (here a whole forged
/// response right after the real one) close that connection: the next
/// request goes on a fresh one and gets its own answer.
#[tokio::test]
async fn unsolicited_bytes_on_an_idle_connection_retire_it() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let (port, seen) = scripted_server(&pki, |head| {
        if head.starts_with("GET /first") {
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
                    .to_vec(),
                false,
            )
        } else {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal".to_vec(), false)
        }
    })
    .await;
    let up = upstream(&pki, port);
    assert_eq!(
        request(&up, http::Method::GET, "/first").await,
        Ok((200, Bytes::from_static(b"ok")))
    );
    assert_eq!(
        request(&up, http::Method::GET, "/second").await,
        Ok((200, Bytes::from_static(b"real")))
    );
    assert_eq!(seen.connections(), 2);
}

/// A response body that stops arriving ends with an error after
/// `upstream.read_timeout_secs` instead of holding the client forever.
#[tokio::test]
async fn a_stalled_response_body_times_out() {
    let pki = ThrowAwayPki::generate(&[]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(&[]).unwrap()));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await;
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        // Never the other half; hold the connection open.
        std::future::pending::<()>().await;
    });
    smh_gateway::tls::install_crypto_provider();
    let up = Upstream::new(
        &format!("https://localhost:{port}"),
        &[pki.ca_der()],
        Duration::from_secs(5),
        Duration::from_secs(90),
        Duration::from_secs(1),
        false,
    )
    .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        request(&up, http::Method::GET, "/slow"),
    )
    .await
    .expect("the body gives up");
    let err = answer.unwrap_err();
    assert!(err.contains("upstream.read_timeout_secs"), "{err}");
}
