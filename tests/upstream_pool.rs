//! The upstream HTTP/1.1 keep-alive pool, against real TLS servers on
//! ephemeral ports: connections are reused, a connection the server closed
//! while idle never surfaces as an error, and a response abandoned halfway
//! does not put its connection back.

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
use smh_gateway::server::{serve_tls, ConnInfo, ConnObserver, Shutdown};
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
        tower::service_fn(|req: Request<Incoming>| async move {
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
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
        })
    };
    tokio::spawn(serve_tls(
        listener,
        tls,
        svc,
        opened.clone(),
        Shutdown::default(),
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
