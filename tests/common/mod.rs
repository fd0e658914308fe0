//! Shared test harness: the emulator as upstream and the gateway on
//! ephemeral ports with real TLS, set up exactly as `smh-gateway dev` does.
#![allow(dead_code)]

use std::time::Duration;

use smh_gateway::dev::{self, DevEnvironment, DevOptions};
use smh_gateway::emulator::{EmulatorConfig, Hooks};

pub struct Harness {
    pub env: DevEnvironment,
    /// HTTP/2-capable client (ALPN picks h2) trusting the gateway's CA.
    pub client: reqwest::Client,
    /// HTTP/1.1-only client.
    pub h1: reqwest::Client,
}

pub fn loopback0() -> std::net::SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(EmulatorConfig::default(), "").await
    }

    pub async fn start_with(emulator: EmulatorConfig, extra_toml: &str) -> Self {
        Self::start_full(emulator, extra_toml, None).await
    }

    /// With the `[session]` tables replaced by `session_toml`.
    pub async fn start_full(
        emulator: EmulatorConfig,
        extra_toml: &str,
        session_toml: Option<String>,
    ) -> Self {
        smh_gateway::tls::install_crypto_provider();
        let env = dev::start(DevOptions {
            listen: loopback0(),
            admin_listen: loopback0(),
            emulator_listen: loopback0(),
            dir: None,
            emulator,
            extra_toml: extra_toml.to_string(),
            session_toml,
        })
        .await
        .expect("dev environment starts");
        let bundle = std::fs::read(env.dir.join("ca-bundle.pem")).unwrap();
        let client = client_builder(&bundle).build().unwrap();
        let h1 = client_builder(&bundle).http1_only().build().unwrap();
        Harness { env, client, h1 }
    }

    pub fn hooks(&self) -> &Hooks {
        self.env.emulator.hooks()
    }

    pub fn lib(&self) -> &str {
        self.env.emulator.library_id()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!(
            "https://localhost:{}{}",
            self.env.running.addr.port(),
            path_and_query
        )
    }

    /// A session for `user` with `roles`, signed with the gateway's key.
    pub fn session(&self, user: &str, roles: &[&str]) -> String {
        dev::sign_session(&self.env.session_secret, user, roles, 3600).unwrap()
    }

    pub async fn get(&self, path_and_query: &str, session: &str) -> reqwest::Response {
        self.client
            .get(self.url(path_and_query))
            .bearer_auth(session)
            .send()
            .await
            .unwrap()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.env.running.admin_addr, path)
    }
}

pub fn client_builder(ca_bundle: &[u8]) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    for cert in reqwest::Certificate::from_pem_bundle(ca_bundle).unwrap() {
        b = b.add_root_certificate(cert);
    }
    b
}

/// Reads an SMH-shaped error body and checks its shape.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.expect("error body is JSON");
    assert!(v["message"].is_string(), "error without message: {v}");
    assert!(v["requestId"].is_string(), "error without requestId: {v}");
    (
        status,
        v["code"].as_str().unwrap_or_default().to_string(),
        v,
    )
}

/// A small HTTPS server for tests (an IdP's JWKS endpoint, a session
/// backend): real TLS with its own throw-away CA, answers from `handler`.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub ca_file: std::path::PathBuf,
    pub shutdown: smh_gateway::server::Shutdown,
}

pub type Handler =
    std::sync::Arc<dyn Fn(http::Method, String, http::HeaderMap) -> (u16, String) + Send + Sync>;

impl TestServer {
    pub async fn start(handler: Handler) -> Self {
        use smh_gateway::body;
        smh_gateway::tls::install_crypto_provider();
        let pki = smh_gateway::tls::ThrowAwayPki::generate(&[]).unwrap();
        let dir = std::env::temp_dir().join(format!("smh-testserver-{}", rand_suffix()));
        pki.write_to(&dir).unwrap();
        let listener = tokio::net::TcpListener::bind(loopback0()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = smh_gateway::server::Shutdown::default();
        let tls = std::sync::Arc::new(pki.server_config(smh_gateway::tls::ALPN_H2_H1).unwrap());
        tokio::spawn(smh_gateway::server::serve_tls(
            listener,
            tls,
            move |_| {
                let handler = handler.clone();
                tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let (status, text) = handler(req.method().clone(), pq, req.headers().clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(body::full(text))
                                .unwrap(),
                        )
                    }
                })
            },
            std::sync::Arc::new(smh_gateway::server::NoObserver),
            shutdown.clone(),
        ));
        TestServer {
            addr,
            ca_file: dir.join("ca.pem"),
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
