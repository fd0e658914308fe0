//! `check-config` and the config loader: the shipped example is accepted, broken
//! files are refused with file:line:column and what was expected, and the
//! summary never shows a secret.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use smh_gateway::config::Environment;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.example.toml");
const LIBRARY_SECRET: &str = "lib-secret-value-that-must-not-leak";
const SESSION_SECRET: &str = "session-secret-value-that-must-not-leak";
const ADMIN_TOKEN: &str = "admin-token-value-that-must-not-leak";
const REDIS_PASSWORD: &str = "redis-password-that-must-not-leak";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smh-config-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tls_dir() -> PathBuf {
    // One directory per call: tests run in parallel, and one writing its
    // files while another reads them sees half-written PEM.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_dir(&format!("tls-{n}"));
    smh_gateway::tls::ThrowAwayPki::generate(&[])
        .unwrap()
        .write_to(&dir)
        .unwrap();
    dir
}

fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smh-gateway"));
    cmd.arg("check-config").arg("--config").arg(file);
    cmd.env_remove("SMH_LIBRARY_SECRET")
        .env_remove("SMH_GATEWAY_SESSION_SECRET")
        .env_remove("SMH_GATEWAY_ADMIN_TOKEN")
        .env_remove("SMH_GATEWAY_REDIS_URL")
        .env_remove("SMH_GATEWAY_TLS_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn full_env(tls: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SMH_LIBRARY_SECRET", LIBRARY_SECRET.to_string()),
        ("SMH_GATEWAY_SESSION_SECRET", SESSION_SECRET.to_string()),
        ("SMH_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
        ("SMH_GATEWAY_TLS_DIR", tls.display().to_string()),
        (
            "SMH_GATEWAY_REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"),
        ),
    ]
}

#[test]
fn shipped_example_is_accepted_and_summary_is_redacted() {
    smh_gateway::tls::install_crypto_provider();
    let tls = tls_dir();
    let env = full_env(&tls);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = check_config(Path::new(EXAMPLE), &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("library smh1a2b3c4d:"), "{stdout}");
    assert!(
        stdout.contains("https://smh1a2b3c4d.api.tencentsmh.cn"),
        "{stdout}"
    );
    assert!(
        stdout.contains("secret = ${SMH_LIBRARY_SECRET} (from environment)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("revocation: shared through Redis (revocation.redis_url = ${SMH_GATEWAY_REDIS_URL} (from environment))"),
        "{stdout}"
    );
    assert!(stdout.contains("max session lifetime 604800s"), "{stdout}");
    for secret in [LIBRARY_SECRET, SESSION_SECRET, ADMIN_TOKEN, REDIS_PASSWORD] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "secret leaked"
        );
    }
}

#[test]
fn example_without_its_environment_is_refused_with_locations() {
    let out = check_config(Path::new(EXAMPLE), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The first missing variable stops parsing at the listener's cert_file value.
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("cert_file"))
        .unwrap()
        + 1;
    let column = "cert_file = ".len() + 1;
    assert!(
        stderr.contains(&format!("gateway.example.toml:{line}:{column}: environment variable SMH_GATEWAY_TLS_DIR is not set")),
        "{stderr}"
    );
}

#[test]
fn broken_example_is_refused_with_line_and_column() {
    let tls = tls_dir();
    let env = full_env(&tls);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    // A typo in a key that exists in the example.
    let broken = text.replacen("cache_capacity = 100000", "cache_capacty = 100000", 1);
    let line = broken
        .lines()
        .position(|l| l.starts_with("cache_capacty"))
        .unwrap()
        + 1;
    let dir = temp_dir("broken");
    let file = dir.join("broken.toml");
    std::fs::write(&file, broken).unwrap();
    let out = check_config(&file, &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("broken.toml:{line}:1:")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `cache_capacty`"), "{stderr}");
    assert!(stderr.contains("expected one of"), "{stderr}");
}

/// An existing file to point `*_file` settings at in snippets.
const FIXTURE_SECRET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jwt/hs-secret.txt"
);

fn fixture(text: &str) -> String {
    text.replace("{FIXTURE_SECRET}", FIXTURE_SECRET)
}

/// A session key so snippets only report what they are about.
const SESSION: &str = "\n[session.jwt]\nhmac_secret_file = \"{FIXTURE_SECRET}\"\n";

fn errors(text: &str) -> Vec<String> {
    let text = fixture(&if text.contains("[session.jwt]") {
        text.to_string()
    } else {
        format!("{text}{SESSION}")
    });
    // Snippets are about something else than the listener: give it its
    // (required) certificate after the snippet, so positions stay put.
    let text = if text.contains("[listener]") {
        text
    } else {
        let tls = tls_dir();
        format!(
            "{text}\n[listener]\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n",
            d = tls.display()
        )
    };
    match smh_gateway::config::parse(&text, "t.toml", &Environment::from_pairs::<&str, &str>([])) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn wrong_types_and_bad_values_point_at_the_value() {
    let e = errors(
        "[listener]\naddress = 8443\n[[library]]\nid = \"x\"\nsecret_file = \"{FIXTURE_SECRET}\"\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:11:"), "{e:?}");
    assert!(
        e[0].contains("invalid type: integer `8443`, expected a string"),
        "{e:?}"
    );

    let e = errors("[listener]\naddress = \"not-an-address\"\n");
    assert!(
        e[0].starts_with("t.toml:2:11:") && e[0].contains("invalid socket address"),
        "{e:?}"
    );
}

#[test]
fn literal_secrets_and_missing_secrets_are_refused() {
    let e = errors("[[library]]\nid = \"lib1\"\nsecret = \"hunter2\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:3:10:"), "{e:?}");
    assert!(e[0].contains("must be an environment reference"), "{e:?}");
    assert!(
        !e[0].contains("hunter2"),
        "the refused secret is echoed: {e:?}"
    );

    let e = errors("[[library]]\nid = \"lib1\"\n");
    assert!(
        e[0].contains("`secret` or `secret_file` is required"),
        "{e:?}"
    );

    let e = errors("[[library]]\nid = \"lib1\"\nsecret_file = \"/nonexistent/secret\"\n");
    assert!(
        e[0].starts_with("t.toml:3:15:") && e[0].contains("does not exist"),
        "{e:?}"
    );
}

#[test]
fn revocation_settings_are_checked_and_never_show_a_password() {
    let lib = "[[library]]\nid = \"lib1\"\nsecret_file = \"{FIXTURE_SECRET}\"\n";
    // Accepted: no Redis, a literal URL without a password, TLS.
    for ok in [
        "",
        "[revocation]\n",
        "[revocation]\nredis_url = \"redis://10.0.0.5:6379/2\"\nreplica_id = \"gw-1\"\n",
        "[revocation]\nredis_url = \"rediss://redis.internal:6380\"\n",
    ] {
        let e = errors(&format!("{lib}{ok}"));
        assert!(e.is_empty(), "{ok:?}: {e:?}");
    }
    let e = errors(&format!(
        "{lib}[revocation]\nredis_url = \"redis://:hunter2@10.0.0.5:6379\"\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:5:13:"), "{e:?}");
    assert!(e[0].contains("carries a password"), "{e:?}");
    assert!(!e[0].contains("hunter2"), "the password is echoed: {e:?}");
    for (bad, says) in [
        (
            "redis_url = \"http://10.0.0.5\"",
            "must start with redis://",
        ),
        ("redis_url = \"redis://\"", "is not a Redis URL"),
        (
            "redis_ca_file = \"{FIXTURE_SECRET}\"",
            "needs revocation.redis_url",
        ),
        (
            "redis_url = \"redis://h:1\"\nreplica_id = \"two words\"",
            "replica_id",
        ),
        (
            "redis_url = \"redis://h:1\"\nredis_url_file = \"{FIXTURE_SECRET}\"",
            "not both",
        ),
        (
            "redis_url = \"redis://h:1\"\nredis_ca_file = \"{FIXTURE_SECRET}\"",
            "certificate",
        ),
        ("redis = \"redis://h:1\"", "unknown field `redis`"),
    ] {
        let e = errors(&format!("{lib}[revocation]\n{bad}\n"));
        assert!(e.iter().any(|m| m.contains(says)), "{bad:?}: {e:?}");
    }
    for (lifetime, ok) in [
        ("0", false),
        ("1", true),
        ("7776000", true),
        ("7776001", false),
    ] {
        let e = errors(&format!("{lib}[session]\nmax_lifetime_secs = {lifetime}\n"));
        assert_eq!(e.is_empty(), ok, "{lifetime}: {e:?}");
        if !ok {
            assert!(e[0].contains("session.max_lifetime_secs"), "{e:?}");
        }
    }
}

#[test]
fn semantic_problems_are_all_reported() {
    let text = "\
[[library]]
id = \"lib1\"
upstream = \"http://plain.example.com\"
secret_file = \"{FIXTURE_SECRET}\"
[[library]]
id = \"lib1\"
secret_file = \"{FIXTURE_SECRET}\"
[[role]]
name = \"viewer\"
period_secs = 10
[session]
default_roles = [\"ghost\"]
credentials = [\"bearer\", \"header:x\"]
[session.jwt]
algorithms = [\"HS256\", \"none\", \"RS256\"]
hmac_secret_file = \"{FIXTURE_SECRET}\"
[[role]]
name = \"ops\"
operations = [\"GET file\", \"FETCH\"]
[cors]
allowed_origins = [\"https://ok.example\", \"ftp://x\", \"https://slash.example/\"]
";
    let e = errors(text);
    assert!(
        e.iter()
            .any(|m| m.starts_with("t.toml:3:12:") && m.contains("must use https://")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("t.toml:6:6:") && m.contains("listed twice")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("t.toml:10:15:") && m.contains("must exceed")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.contains("unknown role \"ghost\"")),
        "{e:?}"
    );
}

#[test]
fn interpolation_reads_the_environment_it_is_given() {
    smh_gateway::tls::install_crypto_provider();
    let tls = tls_dir();
    let text = fixture(&format!(
        "[listener]\naddress = \"127.0.0.1:${{PORT}}\"\ncert_file = \"${{TLS}}/cert.pem\"\nkey_file = \"${{TLS}}/key.pem\"\n[[library]]\nid = \"lib1\"\nsecret_file = \"{FIXTURE_SECRET}\"\n{SESSION}"
    ));
    let env = Environment::from_pairs([
        ("PORT", "9443".to_string()),
        ("TLS", tls.display().to_string()),
    ]);
    let cfg = smh_gateway::config::parse(&text, "t.toml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listener.address.port(), 9443);
    assert_eq!(
        cfg.libraries[0].upstream_url,
        "https://lib1.api.tencentsmh.cn"
    );
    // The same file without PORT: refused at the value that needs it.
    let e = smh_gateway::config::parse(
        &text,
        "t.toml",
        &Environment::from_pairs([("TLS", tls.display().to_string())]),
    )
    .err()
    .expect("PORT is missing");
    assert_eq!(e.0[0].line, 2, "{e}");
    assert!(e.0[0].message.contains("PORT is not set"), "{e}");
}

#[test]
fn secret_debug_never_shows_the_value() {
    let s = smh_gateway::secret::Secret::new("topsecret");
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
}

#[test]
fn example_introspection_setup_is_valid_too() {
    let tls = tls_dir();
    let env = full_env(&tls);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    assert!(text.contains("mode = \"jwt\""));
    let dir = temp_dir("introspection");
    let file = dir.join("introspection.toml");
    std::fs::write(
        &file,
        text.replacen("mode = \"jwt\"", "mode = \"introspection\"", 1),
    )
    .unwrap();
    let out = check_config(&file, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("introspection: https://accounts.internal.example.com/api/session"),
        "{stdout}"
    );
}

/// `check-config` and `run` load files the same way: over a table of good
/// and bad files, both accept or both refuse (exit 78), with the same
/// problems reported.
#[test]
fn check_config_and_run_accept_and_refuse_the_same_files() {
    smh_gateway::tls::install_crypto_provider();
    let tls = tls_dir();
    let dir = temp_dir("agree");
    let good = fixture(&format!(
        "[listener]\naddress = \"127.0.0.1:0\"\ncert_file = \"{t}/cert.pem\"\nkey_file = \"{t}/key.pem\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[library]]\nid = \"lib1\"\nupstream = \"https://127.0.0.1:9\"\nsecret_file = \"{{FIXTURE_SECRET}}\"\n[[role]]\nname = \"viewer\"\n[session]\ndefault_roles = [\"viewer\"]\n[session.jwt]\nhmac_secret_file = \"{{FIXTURE_SECRET}}\"\n",
        t = tls.display()
    ));
    let cert_line = format!("cert_file = \"{}/cert.pem\"\n", tls.display());
    let key_line = format!("key_file = \"{}/key.pem\"\n", tls.display());
    let cases: Vec<(&str, String, bool)> = vec![
        ("good", good.clone(), true),
        ("no-cert", good.replace(&cert_line, "").replace(&key_line, ""), false),
        ("cert-missing", good.replace("/cert.pem", "/nope.pem"), false),
        ("key-is-a-cert", good.replace("/key.pem", "/cert.pem"), false),
        ("bad-admin-address", good.replace("[admin]\naddress = \"127.0.0.1:0\"", "[admin]\naddress = \"localhost\""), false),
        ("unknown-default-role", good.replace("default_roles = [\"viewer\"]", "default_roles = [\"ghost\"]"), false),
        ("secret-missing", good.replacen(FIXTURE_SECRET, "/nonexistent/secret", 1), false),
        ("bad-log-level", format!("{good}[log]\nlevel = \"smh_gateway=loud=1\"\n"), false),
        ("bad-jwks", good.replace("[session.jwt]\n", "[session.jwt]\njwks = \"{not json\"\n"), false),
        ("cors-origin-with-path", format!("{good}[cors]\nallowed_origins = [\"https://a.example/app\"]\n"), false),
        ("audit-dir-is-a-file", format!("{good}[audit]\nsink = \"file\"\nfile = \"{FIXTURE_SECRET}/audit.jsonl\"\n"), false),
        ("admin-on-the-listener-port", good.replace("address = \"127.0.0.1:0\"", "address = \"127.0.0.1:19443\""), false),
        ("bad-cors-header", format!("{good}[cors]\nallowed_origins = [\"https://a.example\"]\nexposed_headers = [\"bad header\"]\n"), false),
    ];
    for (name, text, ok) in cases {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, &text).unwrap();
        let check = check_config(&file, &[]);
        let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
        let problems = |stderr: &str| -> Vec<String> {
            stderr
                .lines()
                .filter(|l| {
                    l.starts_with(&file.display().to_string())
                        && !l.contains("problem(s)")
                        && !l.contains("not started")
                })
                .map(String::from)
                .collect()
        };
        let mut run = Command::new(env!("CARGO_BIN_EXE_smh-gateway"));
        run.args(["run", "--config"])
            .arg(&file)
            .env_remove("RUST_LOG");
        if ok {
            assert!(
                check.status.success(),
                "{name}: check-config refused: {check_err}"
            );
            let mut child = common_spawn(run);
            let started = wait_for_line(&mut child, "smh-gateway listening");
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                started.is_some(),
                "{name}: check-config accepted it but run did not start"
            );
        } else {
            assert_eq!(
                check.status.code(),
                Some(78),
                "{name}: check-config: {check_err}"
            );
            let out = run.output().unwrap();
            let run_err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(78), "{name}: run: {run_err}");
            assert!(
                !problems(&check_err).is_empty(),
                "{name}: no located problem: {check_err}"
            );
            assert_eq!(
                problems(&check_err),
                problems(&run_err),
                "{name}: different problems"
            );
        }
    }
}

fn common_spawn(mut cmd: Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's stderr until a line containing `needle` (or EOF).
fn wait_for_line(child: &mut std::process::Child, needle: &str) -> Option<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take()?;
    std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains(needle))
}

/// A `${VAR}` in the wrong place (a secret where a path belongs) is shown
/// as written, never as its value.
#[test]
fn problems_show_interpolated_values_as_written() {
    let tls = tls_dir();
    let text = format!(
        "[listener]\ncert_file = \"{t}/cert.pem\"\nkey_file = \"{t}/key.pem\"\n[[library]]\nid = \"lib1\"\nsecret_file = \"${{SMH_LIBRARY_SECRET}}\"\nupstream = \"${{UPSTREAM}}\"\n[session.jwt]\nhmac_secret_file = \"{}\"\n",
        FIXTURE_SECRET,
        t = tls.display()
    );
    let env = Environment::from_pairs([
        ("SMH_LIBRARY_SECRET", "sup3r-s3cret-value"),
        ("UPSTREAM", "http://user:hunter2@smh.example"),
    ]);
    let e = smh_gateway::config::parse(&text, "t.toml", &env)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("secret_file ${SMH_LIBRARY_SECRET} does not exist"),
        "{e}"
    );
    assert!(e.contains("${UPSTREAM}"), "{e}");
    for value in ["sup3r-s3cret-value", "hunter2"] {
        assert!(!e.contains(value), "{value} leaked: {e}");
    }
}
