//! A throw-away `redis-server` for tests: a free loopback port, no
//! persistence, killed on drop. Tests that need Redis fail (never skip)
//! when `redis-server` is missing, with a message saying how to install
//! it (`scripts/test` installs it when run as root).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to say it is ready; it
/// takes milliseconds, so reaching this means it will not.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// How the server is started.
#[derive(Default, Clone)]
pub struct RedisOptions {
    /// `requirepass`: clients must AUTH with it.
    pub password: Option<String>,
    /// Serve TLS only (`--port 0 --tls-port <p>`), with this certificate
    /// and key (PEM); clients are not asked for certificates.
    pub tls: Option<(String, String)>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A running `redis-server` child.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl RedisServer {
    /// Plain TCP, no password.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with(options: RedisOptions) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "smh-gateway-redis-{}-{port}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create the Redis test directory");
        let mut server = Self {
            child: None,
            port,
            dir,
            options,
        };
        server.spawn();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a client uses, with the configured password if any.
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(p) => self.url_with_password(p),
            None => format!("{}://127.0.0.1:{}/", self.scheme(), self.port),
        }
    }

    /// The URL with `password` (right or wrong) in its user-info.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("{}://:{password}@127.0.0.1:{}/", self.scheme(), self.port)
    }

    fn scheme(&self) -> &'static str {
        if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its sockets stay open, nothing is
    /// answered, as with a hung host or a silently dropped route.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("redis-server running");
        let status = Command::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} redis-server");
    }

    /// Starts it again on the same port with the same options. Nothing
    /// was persisted: the new server is empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.dir.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            path_arg(&self.dir),
            "--logfile".into(),
            path_arg(&log),
            "--daemonize".into(),
            "no".into(),
        ];
        match &self.options.tls {
            None => args.extend(["--port".into(), self.port.to_string()]),
            Some((cert, key)) => {
                let cert_file = self.dir.join("cert.pem");
                let key_file = self.dir.join("key.pem");
                std::fs::write(&cert_file, cert).expect("write the Redis certificate");
                std::fs::write(&key_file, key).expect("write the Redis key");
                args.extend([
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    self.port.to_string(),
                    "--tls-cert-file".into(),
                    path_arg(&cert_file),
                    "--tls-key-file".into(),
                    path_arg(&key_file),
                    "--tls-ca-cert-file".into(),
                    path_arg(&cert_file),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]);
            }
        }
        if let Some(p) = &self.options.password {
            args.extend(["--requirepass".into(), p.clone()]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH): the revocation tests need a real \
                 Redis. Install it (`apt-get install redis-server`; scripts/test does this when \
                 run as root) and run the tests again."
            ),
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        // Ready when its log says so (the process is ours, the log file is
        // ours: no polling of the port, which a TLS server would not answer
        // in plain text anyway).
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "redis-server exited ({status}) before it was ready on port {}:\n{err}\n{text}",
                    self.port
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} not ready within {READY_WITHIN:?}:\n{text}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }
}

/// A free loopback port below the kernel's ephemeral range, so that a
/// server killed and restarted on it (`restart`) cannot meanwhile lose it
/// to a listener elsewhere in the test suite that binds port 0 (those get
/// ephemeral ports). Checked free by binding it; random, so parallel tests
/// rarely even try the same one. Falls back to a kernel-chosen port.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FROM: u16 = 20_000;
    if low > FROM + 1000 {
        for _ in 0..200 {
            let port = FROM + rand::random::<u16>() % (low - FROM);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
