//! The per-connection memo of the last session and SMH token: requests on
//! one keep-alive connection reuse them, and nothing the shared caches
//! would refuse is served from it — another user's credential on the same
//! connection, a token dropped on another connection or by a flush, a
//! session past its expiry.

mod common;

use std::time::Duration;

use common::{parse_prometheus, sample, Harness};
use smh_gateway::emulator::EmulatorConfig;

/// The access token the emulator saw on its most recent request.
fn last_seen_token(h: &Harness) -> String {
    let req = h.hooks().requests().pop().expect("a request reached SMH");
    req.query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("access_token="))
        .expect("the request carried a token")
        .to_string()
}

/// Open HTTP/1.1 client connections, as the gateway's metrics say.
async fn open_h1_connections(h: &Harness) -> f64 {
    let text = reqwest::get(h.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sample(
        &parse_prometheus(&text),
        "smh_gateway_open_connections",
        &[("protocol", "http1")],
    )
    .unwrap()
}

async fn list(h: &Harness, client: &reqwest::Client, session: &str) -> u16 {
    let lib = h.lib();
    client
        .get(h.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
        .bearer_auth(session)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn users_taking_turns_on_one_connection_each_get_their_own_token() {
    let h = Harness::start().await;
    let alice = h.session("alice", &["editor"]);
    let bob = h.session("bob", &["viewer"]);
    for round in 0..3 {
        for (user, session) in [("alice", &alice), ("bob", &bob)] {
            assert_eq!(list(&h, &h.h1, session).await, 200);
            let tokens = h.hooks().tokens_for_user(user);
            assert_eq!(tokens.len(), 1, "one token for {user}");
            assert_eq!(
                last_seen_token(&h),
                tokens[0].token,
                "round {round}: {user}'s request carried {user}'s token"
            );
        }
    }
    // A credential the memo does not hold is still checked in full.
    let (forged, _) = alice.rsplit_once('.').unwrap();
    let forged = format!("{forged}.AAAA");
    // 403 InvalidAccessToken: SDK-compatible errors are the default.
    assert_eq!(list(&h, &h.h1, &forged).await, 403);
    assert_eq!(list(&h, &h.h1, &alice).await, 200);
    assert_eq!(
        open_h1_connections(&h).await,
        1.0,
        "all of it went over one keep-alive connection"
    );
}

#[tokio::test]
async fn a_token_reminted_on_one_connection_is_replaced_on_the_others_at_once() {
    let h = Harness::start().await;
    let s = h.session("carol", &["editor"]);
    // Two clients: two connections, each with carol's token memoized.
    let other = common::client_builder(&std::fs::read(h.env.dir.join("ca-bundle.pem")).unwrap())
        .http1_only()
        .build()
        .unwrap();
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    assert_eq!(list(&h, &other, &s).await, 200);
    let old = h.hooks().tokens_for_user("carol")[0].token.clone();
    assert_eq!(last_seen_token(&h), old);

    // SMH rejects the token once: the first connection re-mints and replays.
    h.hooks().fail_next_uses(&old, 1);
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    let tokens = h.hooks().tokens_for_user("carol");
    assert_eq!(tokens.len(), 2, "one re-mint");
    let new = tokens
        .iter()
        .find(|t| t.token != old)
        .unwrap()
        .token
        .clone();
    assert_eq!(last_seen_token(&h), new);

    // The second connection's very next request carries the new token, not
    // the one its memo held (within the memo's recheck interval).
    assert_eq!(list(&h, &other, &s).await, 200);
    assert_eq!(last_seen_token(&h), new);
    assert_eq!(
        h.hooks().token_uses(&old),
        3,
        "two accepted uses, one rejected"
    );
}

#[tokio::test]
async fn a_flush_reaches_a_connection_that_memoized_the_token() {
    let h = Harness::start().await;
    let s = h.session("dan", &["viewer"]);
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    let old = last_seen_token(&h);
    let mints = h.hooks().mints();
    // What `POST /admin/v1/tokens/flush` calls.
    h.env.running.gateway.tokens.clear();
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    assert_eq!(h.hooks().mints(), mints + 1, "the flush forced a new mint");
    let new = last_seen_token(&h);
    assert_ne!(new, old, "the flushed token is not used again");
    assert!(h
        .hooks()
        .tokens_for_user("dan")
        .iter()
        .any(|t| t.token == new));
    assert_eq!(open_h1_connections(&h).await, 1.0);
}

#[tokio::test]
async fn a_memoized_session_ends_when_the_session_expires() {
    let dir = std::env::temp_dir().join(format!("smh-memo-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "memo-test-session-secret-0123456789";
    std::fs::write(dir.join("secret"), secret).unwrap();
    let session_toml = format!(
        "[session]\n[session.jwt]\nhmac_secret_file = \"{}\"\nleeway_secs = 0\n",
        dir.join("secret").display()
    );
    let h = Harness::start_full(EmulatorConfig::default(), "", Some(session_toml)).await;
    // Expires at the end of the next whole second or the one after.
    let s = smh_gateway::dev::sign_session(secret, "erin", &["viewer"], 2).unwrap();
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    assert_eq!(list(&h, &h.h1, &s).await, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        list(&h, &h.h1, &s).await,
        403,
        "expired, although the connection memoized it"
    );
    assert_eq!(open_h1_connections(&h).await, 1.0);
    std::fs::remove_dir_all(&dir).ok();
}
