//! A 100 MiB response and a 100 MiB request body stream through a gateway
//! running as its own process; its peak resident memory (VmHWM) must grow by
//! less than 32 MiB. Memory, not time, is asserted; the figures are printed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Harness, KillOnDrop};
use futures_util::StreamExt;
use smh_gateway::emulator::EmulatorConfig;

const SIZE: usize = 100 * 1024 * 1024;
const MAX_GROWTH_KIB: u64 = 32 * 1024;

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_with_bounded_gateway_memory() {
    let h = Harness::start_with(
        EmulatorConfig {
            download_direct: true,
            ..EmulatorConfig::default()
        },
        // Above the 100 MiB this test streams: the default cap (1 MiB) is
        // for SMH's JSON API, and streaming is what is measured here.
        "[limits]\nmax_body_bytes = 209715200\n",
    )
    .await;
    let lib = h.lib().to_string();
    let s = h.session("stream", &["editor"]);

    // Put a 100 MiB file in place through the in-process gateway (the
    // bytes themselves go straight to the emulator's COS surface).
    h.upload("big.bin", &s, vec![7u8; SIZE]).await;

    // The gateway under measurement: a separate process on the same config.
    let child = Command::new(env!("CARGO_BIN_EXE_smh-gateway"))
        .args(["run", "--config"])
        .arg(h.env.dir.join("gateway.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("gateway exited").unwrap();
        if let Some(rest) = line.split("smh-gateway listening addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let port = addr.rsplit(':').next().unwrap();
    let base = format!("https://localhost:{port}");

    // Warm up: TLS, pools, the token cache.
    let warm = h
        .client
        .get(format!("{base}/api/v1/directory/{lib}/-/?by-marker"))
        .bearer_auth(&s)
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let before = status_kib(pid, "VmRSS:");

    // 100 MiB response.
    let resp = h
        .client
        .get(format!("{base}/api/v1/file/{lib}/-/big.bin"))
        .bearer_auth(&s)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len();
    }
    assert_eq!(got, SIZE);

    // 100 MiB request body: streamed to the emulator, which reads it all.
    let received = h.hooks().body_bytes_received();
    let chunks = futures_util::stream::iter(
        (0..100).map(|_| Ok::<_, std::io::Error>(vec![1u8; 1024 * 1024])),
    );
    let resp = h
        .client
        .post(format!(
            "{base}/api/v1/file/{lib}/-/upload-body.bin?multipart"
        ))
        .bearer_auth(&s)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        413,
        "emulator refuses non-JSON bodies after reading them"
    );
    assert_eq!(h.hooks().body_bytes_received() - received, SIZE as u64);

    let peak = status_kib(pid, "VmHWM:");
    let growth = peak.saturating_sub(before);
    println!(
        "gateway RSS before {before} KiB, peak after 2 x 100 MiB {peak} KiB, growth {growth} KiB (bound {MAX_GROWTH_KIB} KiB)"
    );
    assert!(
        growth < MAX_GROWTH_KIB,
        "gateway buffered: grew {growth} KiB"
    );
}
