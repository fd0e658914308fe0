//! The README's first command: `smh-gateway dev` starts everything, prints a
//! session and curl lines, and those lines work word for word (run by bash
//! with the real curl against the real processes).

mod common;

use std::io::{BufRead, BufReader};

use common::KillOnDrop;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_banner_curl_lines_work_word_for_word() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required (scripts/test installs it)");
    }
    let child = Command::new(env!("CARGO_BIN_EXE_smh-gateway"))
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Press Ctrl-C");
        banner.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(banner.contains("smh-gateway dev is running."), "{banner}");
    // The commands are the indented lines from `export CA=` on.
    let start = banner.find("  export CA=").expect("export line");
    let script: String = banner[start..]
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| format!("{}\necho\n", &l[2..]))
        .collect();
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script failed:\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    // list, mkdir, upload target (echoed twice: assignment prints nothing, echo prints it), COS PUT is silent, confirm, download
    assert!(lines[0].contains("\"contents\""), "{stdout}");
    assert!(lines[1].contains("\"path\":[\"photos\"]"), "{stdout}");
    assert!(
        lines.iter().any(|l| l.contains("\"confirmKey\"")),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"name\":\"hello.txt\"")),
        "confirm answered the file record: {stdout}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        "hello, SMH",
        "download through the 302: {stdout}"
    );
}

/// `dev --config FRAGMENT` merges the user's settings over the generated
/// configuration: a role of theirs (with an allow-list) is enforced, a role
/// of the same name replaces dev's, their limits apply, and an unknown key
/// in the fragment is refused at its line and column in the fragment.
#[tokio::test]
async fn dev_with_a_fragment_runs_the_users_settings_against_the_emulator() {
    smh_gateway::tls::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("smh-dev-fragment-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let fragment = dir.join("mine.toml");
    std::fs::write(
        &fragment,
        "[[role]]\nname = \"lister\"\nspaces = [\"-\"]\noperations = [\"GET directory\"]\n\n[[role]]\nname = \"editor\"\ngrant = []\nspaces = [\"-\"]\n\n[limits]\nmax_uri_bytes = 200\n",
    )
    .unwrap();
    let opts = |fragment: std::path::PathBuf| smh_gateway::dev::DevOptions {
        listen: common::loopback0(),
        admin_listen: common::loopback0(),
        emulator_listen: common::loopback0(),
        fragment: Some(fragment),
        ..Default::default()
    };
    let env = smh_gateway::dev::start(opts(fragment.clone()))
        .await
        .unwrap();
    let bundle = std::fs::read(env.dir.join("ca-bundle.pem")).unwrap();
    let client = common::client_builder(&bundle).build().unwrap();
    let lib = env.emulator.library_id().to_string();
    let base = format!("https://localhost:{}", env.running.addr.port());
    let lister =
        smh_gateway::dev::sign_session(&env.session_secret, "lee", &["lister"], 600).unwrap();
    let list = client
        .get(format!("{base}/api/v1/directory/{lib}/-/?by-marker"))
        .bearer_auth(&lister)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200, "the fragment's role works");
    let mkdir = client
        .put(format!("{base}/api/v1/directory/{lib}/-/nope"))
        .bearer_auth(&lister)
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), 403, "its allow-list is enforced");
    // `editor` replaced by the fragment's read-only one: SMH refuses the
    // create for lack of a grant.
    let editor =
        smh_gateway::dev::sign_session(&env.session_secret, "ed", &["editor"], 600).unwrap();
    let r = client
        .put(format!("{base}/api/v1/directory/{lib}/-/nope"))
        .bearer_auth(&editor)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "the fragment's editor grant replaced dev's"
    );
    let long = "a".repeat(300);
    let r = client
        .get(format!("{base}/api/v1/directory/{lib}/-/{long}"))
        .bearer_auth(&lister)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414, "the fragment's limit applies");
    let written = std::fs::read_to_string(env.dir.join("gateway.toml")).unwrap();
    assert!(written.contains("mine.toml merged over it"), "{written}");
    env.running.stop_with(Duration::ZERO).await;
    env.emulator.shutdown();

    std::fs::write(&fragment, "[limits]\nmax_uri_bytes = 200\nmax_urii = 1\n").unwrap();
    let err = smh_gateway::dev::start(opts(fragment.clone()))
        .await
        .err()
        .expect("an unknown key is refused")
        .to_string();
    assert!(
        err.contains("mine.toml:3:1:") && err.contains("unknown field `max_urii`"),
        "{err}"
    );
}
