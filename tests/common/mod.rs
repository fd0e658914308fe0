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
            fragment: None,
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
                    std::future::ready(Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(body::full(text))
                            .unwrap(),
                    ))
                })
            },
            std::sync::Arc::new(smh_gateway::server::NoObserver),
            shutdown.clone(),
            smh_gateway::server::Limits::default(),
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

/// The gateway as its own process (`smh-gateway run`), for tests that need
/// its logs, its memory or its signals. Killed on drop.
pub struct ChildGateway {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    /// Everything the process wrote to stderr so far (its logs).
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildGateway {
    /// Runs `smh-gateway run --config <config>`; `stdout` decides where the
    /// process's standard output (the audit sink `stdout`) goes.
    pub fn spawn(config: &std::path::Path, rust_log: &str, stdout: std::process::Stdio) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_smh-gateway"));
        cmd.args(["run", "--config"]).arg(config);
        // An empty `rust_log` leaves the level to the config file.
        if rust_log.is_empty() {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env("RUST_LOG", rust_log);
        }
        let mut child = cmd
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("smh-gateway listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("gateway did not start: {:?}", logs.lock().unwrap()));
        // Human format: `... addr=1.2.3.4:5 admin_addr=...`; JSON format:
        // `{"fields":{"message":"...","addr":"1.2.3.4:5",...}}`.
        let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let field = |name: &str| -> std::net::SocketAddr {
            if let Some(v) = &json {
                return v["fields"][name]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"));
            }
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.trim_matches('"').parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        ChildGateway {
            addr: field("addr"),
            admin_addr: field("admin_addr"),
            child,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses a Prometheus text exposition with the reference Python parser
/// (prometheus_client) and returns every sample as (name, labels, value).
pub fn parse_prometheus(
    text: &str,
) -> Vec<(String, std::collections::BTreeMap<String, String>, f64)> {
    use std::io::Write;
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the exposition (is prometheus_client installed? scripts/test installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Scrapes `admin_url`'s `/metrics` and reads one sample (0 when absent:
/// counters appear on first use).
pub async fn scrape_sample(admin_base: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(format!("{admin_base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sample(&parse_prometheus(&text), name, labels).unwrap_or(0.0)
}

/// The value of one sample, matching all given labels.
pub fn sample(
    samples: &[(String, std::collections::BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Harness {
    /// SMH's three-step upload through the gateway: ask for a target, PUT
    /// the bytes to it (the emulator's COS surface), confirm.
    pub async fn upload(&self, path: &str, session: &str, bytes: Vec<u8>) -> serde_json::Value {
        let lib = self.lib().to_string();
        let resp = self
            .client
            .put(self.url(&format!("/api/v1/file/{lib}/-/{path}")))
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "upload target");
        let up: serde_json::Value = resp.json().await.unwrap();
        let mut put = self
            .client
            .put(format!(
                "https://{}{}",
                up["domain"].as_str().unwrap(),
                up["path"].as_str().unwrap()
            ))
            .body(bytes);
        for (k, v) in up["headers"].as_object().unwrap() {
            put = put.header(k, v.as_str().unwrap());
        }
        assert_eq!(put.send().await.unwrap().status(), 200, "COS PUT");
        let key = up["confirmKey"].as_str().unwrap();
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/file/{lib}/-/{key}?confirm")))
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "confirm");
        up
    }
}

/// A TLS connection to the gateway offering `alpn`, trusting its CA.
pub async fn tls_connect(
    h: &Harness,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let bundle = std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(&bundle) {
        roots.add(der.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// A gateway process (`smh-gateway run`) on the harness's generated
/// configuration with `extra_toml` merged over it (`dev::merge`) and its own ephemeral ports,
/// optionally under a descriptor limit. Its JSON log lines are kept.
pub struct GatewayProcess {
    pub child: KillOnDrop,
    /// The configuration file it runs on (a reload reads it again).
    pub config: std::path::PathBuf,
    pub addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GatewayProcess {
    pub fn spawn(h: &Harness, extra_toml: &str, nofile: Option<u32>) -> Self {
        use std::io::BufRead;
        let text = std::fs::read_to_string(h.env.dir.join("gateway.toml")).unwrap();
        let mut cfg: toml::Table = text.parse().unwrap();
        cfg["listener"]["address"] = "127.0.0.1:0".into();
        cfg["admin"]["address"] = "127.0.0.1:0".into();
        smh_gateway::dev::merge(&mut cfg, extra_toml.parse().expect("extra TOML"));
        smh_gateway::dev::merge(&mut cfg, "[log]\nformat = \"json\"\n".parse().unwrap());
        let path = h
            .env
            .dir
            .join(format!("gateway-process-{}.toml", rand_suffix()));
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let bin = env!("CARGO_BIN_EXE_smh-gateway");
        let script = match nofile {
            Some(n) => format!("ulimit -n {n} && exec \"$0\" run --config \"$1\""),
            None => "exec \"$0\" run --config \"$1\"".to_string(),
        };
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(bin)
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let f = &v["fields"];
                    if f["message"] == "smh-gateway listening" {
                        let _ = tx.send((
                            f["addr"].as_str().unwrap_or_default().to_string(),
                            f["admin_addr"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
                keep.lock().unwrap().push(line);
            }
        });
        let child = KillOnDrop(child);
        let (addr, admin) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("gateway did not start: {:?}", log.lock().unwrap()));
        GatewayProcess {
            child,
            config: path,
            addr: addr.parse().unwrap(),
            admin_addr: admin.parse().unwrap(),
            log,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// Sends `signal` (`HUP`, `USR1`, `TERM`...).
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }
}
