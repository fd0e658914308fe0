//! Nothing accepted is lost on shutdown: an `smh-gateway run` process
//! under steady load (HTTP/1.1 keep-alive clients, as a load balancer
//! sends, and HTTP/2 clients) gets SIGTERM in the middle. `/readyz` turns
//! 503 first while the listener keeps accepting for the lame-duck period;
//! then the listener closes, in-flight requests finish, and the process
//! exits 0. The only errors clients may see are refused connections after
//! the listener closed: every request the gateway accepted is answered.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_builder, GatewayProcess, Harness};

/// Requests answered before SIGTERM is sent.
const BEFORE_SIGTERM: u64 = 1500;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Connection refused or reset before the gateway accepted it.
    refused: AtomicU64,
    /// Anything else: an accepted request that was not answered right.
    failed: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_accepted_request() {
    let h = Harness::start().await;
    // Every answer takes a little while, so some are always in flight.
    h.hooks().set_latency(Duration::from_millis(5));
    let gw = GatewayProcess::spawn(&h, "[limits]\nlame_duck_secs = 2\n", None);
    let s = h.session("alice", &["viewer"]);
    let url = gw.url(&format!("/api/v1/directory/{}/-/?by-marker", h.lib()));
    let ca = std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap();
    let tally = Arc::new(Tally::default());
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for i in 0..8 {
        let h1 = i < 6;
        let client = if h1 {
            client_builder(&ca).http1_only().build().unwrap()
        } else {
            client_builder(&ca).build().unwrap()
        };
        let (url, s, tally, failures) = (url.clone(), s.clone(), tally.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            loop {
                match client.get(&url).bearer_auth(&s).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            tally.failed.fetch_add(1, Ordering::SeqCst);
                            failures.lock().unwrap().push(format!("body: {e:?}"));
                        }
                    },
                    Ok(r) => {
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status()));
                    }
                    // The listener is closed: this client is done.
                    Err(e) if e.is_connect() => {
                        tally.refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                        failures.lock().unwrap().push(format!("{e:?}"));
                        return;
                    }
                }
            }
        }));
    }
    while tally.ok.load(Ordering::SeqCst) < BEFORE_SIGTERM {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Readiness is watched from the moment SIGTERM goes out.
    let saw_unready = Arc::new(AtomicBool::new(false));
    let ok_after_unready = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (url, saw, ok_after, tally) = (
            gw.admin_url("/readyz"),
            saw_unready.clone(),
            ok_after_unready.clone(),
            tally.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                match reqwest::get(&url).await {
                    Ok(r) if r.status() == 503 => {
                        saw.store(true, Ordering::SeqCst);
                        ok_after.store(tally.ok.load(Ordering::SeqCst), Ordering::SeqCst);
                        return;
                    }
                    Err(_) => return,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
    };
    let at_sigterm = tally.ok.load(Ordering::SeqCst);
    gw.terminate();
    watcher.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let mut child = gw.child;
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    let (ok, refused, failed) = (
        tally.ok.load(Ordering::SeqCst),
        tally.refused.load(Ordering::SeqCst),
        tally.failed.load(Ordering::SeqCst),
    );
    eprintln!(
        "drain: {ok} requests answered ({} after SIGTERM, {} after /readyz said 503), \
         {refused} clients refused after the listener closed, {failed} failed",
        ok - at_sigterm,
        ok - ok_after_unready.load(Ordering::SeqCst),
    );
    assert_eq!(
        failed,
        0,
        "accepted requests lost: {:?}",
        failures.lock().unwrap()
    );
    assert!(
        saw_unready.load(Ordering::SeqCst),
        "/readyz answered 503 before the end"
    );
    assert!(
        ok > ok_after_unready.load(Ordering::SeqCst),
        "requests were still served after /readyz turned 503 (lame duck)"
    );
    assert_eq!(refused, 8, "every client ended on a refused connection");
    assert!(
        status.success(),
        "exit status {status:?}; log: {:?}",
        gw.log.lock().unwrap()
    );
}
