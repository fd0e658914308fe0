//! `/readyz` can include the session keys: with `[admin] check_session_keys`
//! a JWKS URL that fails makes the replica unready (and says why) until a
//! fetch succeeds; without it, the same outage leaves readiness alone.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, TestServer};
use smh_gateway::emulator::EmulatorConfig;

async fn readyz(h: &Harness) -> (u16, String) {
    let r = reqwest::get(h.admin_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn gateway_with_idp(check: bool, up: Arc<AtomicBool>) -> (Harness, TestServer) {
    let idp = TestServer::start(Arc::new(move |_, _, _| {
        if up.load(Ordering::Acquire) {
            (200, r#"{"keys": []}"#.to_string())
        } else {
            (503, "down".to_string())
        }
    }))
    .await;
    let session = format!(
        "[session]\ndefault_roles = [\"viewer\"]\n[session.jwt]\nalgorithms = [\"HS256\", \"RS256\"]\nhmac_secret_file = \"{{dir}}/session-secret\"\njwks_url = \"{}\"\njwks_ca_file = \"{}\"\njwks_refresh_secs = 1\n",
        idp.url("/jwks.json"),
        idp.ca_file.display()
    );
    let h = Harness::start_full(
        EmulatorConfig::default(),
        &format!("[admin]\ncheck_session_keys = {check}\n"),
        Some(session),
    )
    .await;
    (h, idp)
}

#[tokio::test]
async fn readiness_follows_the_session_keys_when_asked_to() {
    let up = Arc::new(AtomicBool::new(false));
    let (h, _idp) = gateway_with_idp(true, up.clone()).await;
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("session keys"), "{body}");
    // The IdP comes back; the next refresh (every second here) makes the
    // replica ready. Bounded wait on that event.
    up.store(true, Ordering::Release);
    let mut ready = false;
    for _ in 0..500 {
        if readyz(&h).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "ready once the JWKS fetch succeeded");
    up.store(false, Ordering::Release);
    let mut unready = false;
    for _ in 0..500 {
        if readyz(&h).await.0 == 503 {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(unready, "unready again when a refresh fails");
}

#[tokio::test]
async fn without_the_check_an_idp_outage_leaves_readiness_alone() {
    let up = Arc::new(AtomicBool::new(false));
    let (h, _idp) = gateway_with_idp(false, up).await;
    let (status, body) = readyz(&h).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}
