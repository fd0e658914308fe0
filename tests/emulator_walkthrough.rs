//! The README's emulator walk-through, run word for word: start
//! `smh-gateway emulator`, take the `export` line it prints, then run the
//! README's curl lines with bash against it.

mod common;

use std::io::{BufRead, BufReader};

use common::KillOnDrop;
use std::process::{Command, Stdio};

#[test]
fn readme_emulator_walkthrough_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block_start = readme
        .find("```bash\ncargo run -- emulator")
        .expect("walk-through block")
        + 8;
    let block_end = block_start + readme[block_start..].find("```").unwrap();
    let lines: Vec<&str> = readme[block_start..block_end].lines().collect();
    assert!(lines[1].starts_with("export CA=..."), "{lines:?}");
    let state = std::env::temp_dir().join(format!("smh-walkthrough-{}", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_smh-gateway"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let mut export = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(e) = line.trim_start().strip_prefix("export CA=") {
            export = Some(format!("export CA={e}"));
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let export = export.expect("emulator printed an export line");
    let mut script = format!("{export}\n");
    for l in &lines[2..] {
        script.push_str(l);
        script.push_str("\necho\n");
    }
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "script:\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(printed[0].contains("\"path\":[\"photos\"]"), "{stdout}");
    assert!(
        printed.iter().any(|l| l.contains("\"name\":\"hello.txt\"")),
        "{stdout}"
    );
    assert_eq!(*printed.last().unwrap(), "hello, SMH", "{stdout}");
}
