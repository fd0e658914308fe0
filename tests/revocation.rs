//! Revoked sessions are refused on the request path, whether they come
//! from the session cache, the connection's memo or a fresh check; other
//! sessions of the user keep working, and a session issued after the
//! revocation works. (The admin routes, logout and Redis sharing build on
//! this; see issue 16.)

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{error_code, Harness};
use smh_gateway::revocation::{unix_now, Revocation};

fn session(h: &Harness, user: &str, sid: &str, iat: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "sid": sid, "roles": ["viewer"], "iat": iat, "exp": iat + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn revoked_sessions_are_refused_and_others_keep_working() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let list = format!("/api/v1/directory/{lib}/-/?by-marker");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let a = session(&h, "rita", "s-a", now - 10);
    let b = session(&h, "rita", "s-b", now - 10);
    let other = session(&h, "sam", "s-x", now - 10);
    for s in [&a, &b, &other] {
        // Twice each: the second answer comes from the cache and the memo.
        assert_eq!(h.get(&list, s).await.status(), 200);
        assert_eq!(h.get(&list, s).await.status(), 200);
    }
    let revocations = &h.env.running.gateway.revocations;
    // One session.
    let one = Revocation::new("rita", 3600, "test", "local").session("s-a");
    assert!(revocations.insert(one, unix_now()).unwrap());
    let (status, code, _) = error_code(h.get(&list, &a).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "InvalidAccessToken"),
        "SDK-compatible refusal"
    );
    assert_eq!(
        h.get(&list, &b).await.status(),
        200,
        "the user's other session works"
    );
    // Every session of the user.
    let all = Revocation::new("rita", 3600, "test", "local");
    assert!(revocations.insert(all, unix_now()).unwrap());
    assert_eq!(h.get(&list, &b).await.status(), 403);
    assert_eq!(
        h.get(&list, &other).await.status(),
        200,
        "other users are untouched"
    );
    // A session issued after the revocation (its iat a second later).
    let fresh = session(&h, "rita", "s-c", unix_now() + 1);
    assert_eq!(h.get(&list, &fresh).await.status(), 200);
}
