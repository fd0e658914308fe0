//! The command line: `--version` names the build, every flag has an
//! environment variable, exit codes tell a bad configuration (78) from a
//! runtime failure (1) and a bad command line (2), completions and the man
//! page come from the CLI definition, and the admin port's default is not
//! Prometheus' 9090.

use std::process::{Command, Output};

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smh-gateway"));
    cmd.args(args)
        .env_remove("SMH_GATEWAY_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = gateway(&["--version"], &[]);
    assert!(out.status.success());
    let v = text(&out.stdout);
    // "smh-gateway 0.1.0 (commit 0123456789ab, built 2026-12-02)"
    let rest = v
        .strip_prefix(&format!(
            "smh-gateway {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{v}"));
    let (commit, rest) = rest.split_once(", built ").unwrap_or_else(|| panic!("{v}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{v}"
    );
    let date = rest.trim_end().trim_end_matches(')');
    assert_eq!(date.len(), 10, "{v}");
    assert!(
        date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 {
            c == '-'
        } else {
            c.is_ascii_digit()
        }),
        "{v}"
    );
}

#[test]
fn exit_codes_tell_configuration_runtime_and_usage_apart() {
    let dir = std::env::temp_dir().join(format!("smh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[listener]\naddress = 1\n").unwrap();
    for sub in ["run", "check-config"] {
        let out = gateway(&[sub, "--config", bad.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(78), "{sub}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("bad.toml:2:11:"),
            "{}",
            text(&out.stderr)
        );
    }
    // The same through the environment variable instead of the flag.
    let out = gateway(
        &["check-config"],
        &[("SMH_GATEWAY_CONFIG", bad.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    // A command-line mistake is clap's 2.
    let out = gateway(&["run", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = gateway(&["--log-format", "xml", "man"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // A runtime failure is 1: a valid file whose port is taken.
    let tls = dir.join("tls");
    smh_gateway::tls::ThrowAwayPki::generate(&[])
        .unwrap()
        .write_to(&tls)
        .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\ncert_file = \"{t}/cert.pem\"\nkey_file = \"{t}/key.pem\"\n[admin]\naddress = \"{taken}\"\n[[library]]\nid = \"lib1\"\nupstream = \"https://127.0.0.1:9\"\nsecret_file = \"{s}\"\n[session.jwt]\nhmac_secret_file = \"{s}\"\n",
            t = tls.display(),
            taken = taken.local_addr().unwrap(),
            s = secret.display()
        ),
    )
    .unwrap();
    let out = gateway(&["check-config", "--config", good.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = gateway(
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // The start-up line came first, naming what the process runs with.
    let stderr = text(&out.stderr);
    let start = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "smh-gateway starting")
        .unwrap_or_else(|| panic!("no start-up line: {stderr}"));
    let f = &start["fields"];
    assert_eq!(f["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(f["libraries"], "lib1");
    assert_eq!(f["config"], good.display().to_string());
    assert_eq!(f["admin"], taken.local_addr().unwrap().to_string());
    assert!(f["commit"].is_string() && f["built"].is_string(), "{start}");
}

#[test]
fn a_bad_log_level_flag_is_a_command_line_mistake() {
    let out = gateway(
        &[
            "--log-level",
            "smh_gateway=loud=1",
            "emulator",
            "--listen",
            "127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--log-level"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let out = gateway(&["completions", "bash"], &[]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    for word in [
        "smh-gateway",
        "check-config",
        "--config",
        "--log-level",
        "completions",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    let out = gateway(&["man"], &[]);
    assert!(out.status.success());
    let man = text(&out.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH"),
        "not roff: {}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("smh\\-gateway") || man.contains("smh-gateway"));
    assert!(man.contains("check\\-config") || man.contains("check-config"));
}

#[test]
fn the_admin_port_does_not_default_to_prometheus_9090() {
    assert_eq!(smh_gateway::config::DEFAULT_ADMIN_LISTEN, "127.0.0.1:9902");
    assert_eq!(smh_gateway::dev::DEV_ADMIN_PORT, 9902);
    let out = gateway(&["dev", "--help"], &[]);
    assert!(text(&out.stdout).contains("9902"), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("SMH_GATEWAY_DEV_ADMIN_LISTEN"),
        "every flag names its variable"
    );
}
