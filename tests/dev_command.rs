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
