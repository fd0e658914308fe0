//! The admin listener: `/healthz` (process alive), `/readyz` (listeners,
//! config and upstream trust are up), `/metrics` (Prometheus text).
//! It runs on its own address so it can stay private.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::server::Shutdown;

/// Set once start-up has finished; read by `/readyz`.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves the admin routes over plain HTTP (loopback by default).
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    registry: prometheus::Registry,
    shutdown: Shutdown,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
            _ = shutdown.wait() => return,
        };
        let readiness = readiness.clone();
        let registry = registry.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = route(&req, &readiness, &registry);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

fn route(
    req: &Request<Incoming>,
    readiness: &Readiness,
    registry: &prometheus::Registry,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        "/metrics" => {
            let mut out = String::new();
            let families = registry.gather();
            match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
                Ok(()) => Response::builder()
                    .header(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)
                    .body(body::full(out))
                    .expect("static response"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body::full(msg.to_string()))
        .expect("static response")
}
