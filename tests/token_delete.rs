//! The pieces revocation stands on: minted tokens name the session, the
//! gateway drops a user's (or device's, or session's) cached tokens, and
//! SMH's "delete a user's tokens" call is made with bounded retries and
//! reports what SMH answered.

mod common;

use std::sync::Arc;

use common::Harness;
use smh_gateway::smh::delete::{delete_user_tokens, DeleteOutcome, DeleteScope, DELETE_ATTEMPTS};
use smh_gateway::smh::token::TokenKey;

fn key(lib: &str, user: &str, client: &str, session: &str) -> TokenKey {
    TokenKey {
        library: Arc::from(lib),
        spaces: Arc::from(""),
        user_id: Arc::from(user),
        client_id: Arc::from(client),
        session_id: Arc::from(session),
        grant: Arc::from(""),
        period_secs: 3600,
        target: 0,
    }
}

fn sessions_at_smh(h: &Harness, user: &str) -> Vec<String> {
    let mut v: Vec<String> = h
        .hooks()
        .tokens_for_user(user)
        .into_iter()
        .map(|t| format!("{}/{}", t.client_id, t.session_id))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_session_id_reaches_smh_and_deletes_hit_exactly_their_scope() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let active = h.env.running.gateway.active();
    let target = &active.libraries[&lib].mint;
    let tokens = &h.env.running.gateway.tokens;
    for (client, session) in [("phone", "s1"), ("laptop", "s2"), ("phone", "s3")] {
        tokens
            .get(&key(&lib, "uma", client, session), target)
            .await
            .unwrap();
    }
    tokens
        .get(&key(&lib, "other", "phone", "s9"), target)
        .await
        .unwrap();
    assert_eq!(
        sessions_at_smh(&h, "uma"),
        ["laptop/s2", "phone/s1", "phone/s3"],
        "each token names its device and session at SMH"
    );
    let scope = |client: Option<&'static str>, session: Option<&'static str>| DeleteScope {
        library: h.lib(),
        user_id: "uma",
        client_id: client,
        session_id: session,
    };
    // One session.
    let out = delete_user_tokens(target, &scope(Some("phone"), Some("s1"))).await;
    assert_eq!(out, DeleteOutcome::Confirmed { attempts: 1 });
    assert_eq!(sessions_at_smh(&h, "uma"), ["laptop/s2", "phone/s3"]);
    // One device.
    assert!(delete_user_tokens(target, &scope(Some("phone"), None))
        .await
        .confirmed());
    assert_eq!(sessions_at_smh(&h, "uma"), ["laptop/s2"]);
    // Everything of the user, nobody else's.
    assert!(delete_user_tokens(target, &scope(None, None))
        .await
        .confirmed());
    assert!(sessions_at_smh(&h, "uma").is_empty());
    assert_eq!(sessions_at_smh(&h, "other"), ["phone/s9"]);
}

#[tokio::test]
async fn deletes_retry_outages_and_do_not_retry_refusals() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let active = h.env.running.gateway.active();
    let target = &active.libraries[&lib].mint;
    let scope = DeleteScope {
        library: &lib,
        user_id: "vic",
        client_id: None,
        session_id: None,
    };
    h.hooks().set_token_api_down(true);
    let before = h.hooks().token_api_calls();
    let out = delete_user_tokens(target, &scope).await;
    assert!(
        matches!(&out, DeleteOutcome::Failed { attempts, reason } if *attempts == DELETE_ATTEMPTS && reason.contains("503")),
        "{out:?}"
    );
    assert_eq!(
        h.hooks().token_api_calls() - before,
        u64::from(DELETE_ATTEMPTS)
    );
    h.hooks().set_token_api_down(false);
    assert!(delete_user_tokens(target, &scope).await.confirmed());
    // A library SMH does not know: refused once, not retried.
    let before = h.hooks().token_api_calls();
    let wrong = DeleteScope {
        library: "nosuchlib",
        ..scope
    };
    let out = delete_user_tokens(target, &wrong).await;
    assert!(
        matches!(out, DeleteOutcome::Refused { status: 404, .. }),
        "{out:?}"
    );
    assert_eq!(h.hooks().token_api_calls() - before, 1);
}

#[tokio::test]
async fn forgetting_a_user_drops_only_their_cached_tokens_in_scope() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let active = h.env.running.gateway.active();
    let target = &active.libraries[&lib].mint;
    let tokens = &h.env.running.gateway.tokens;
    for (user, client, session) in [
        ("wes", "phone", "a"),
        ("wes", "laptop", "b"),
        ("xia", "phone", "c"),
    ] {
        tokens
            .get(&key(&lib, user, client, session), target)
            .await
            .unwrap();
    }
    let mints = h.hooks().mints();
    tokens.forget_user("wes", Some("phone"), None);
    tokens
        .get(&key(&lib, "wes", "laptop", "b"), target)
        .await
        .unwrap();
    tokens
        .get(&key(&lib, "xia", "phone", "c"), target)
        .await
        .unwrap();
    assert_eq!(
        h.hooks().mints(),
        mints,
        "other devices and users keep their tokens"
    );
    tokens
        .get(&key(&lib, "wes", "phone", "a"), target)
        .await
        .unwrap();
    assert_eq!(
        h.hooks().mints(),
        mints + 1,
        "the forgotten device mints anew"
    );
    tokens.forget_user("wes", None, None);
    tokens
        .get(&key(&lib, "wes", "laptop", "b"), target)
        .await
        .unwrap();
    assert_eq!(h.hooks().mints(), mints + 2);
}

/// Through the gateway: a session with `sid` gets a token naming it.
#[tokio::test]
async fn the_gateway_mints_tokens_naming_the_session() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "yan", "sid": "sess-42", "roles": ["viewer"], "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap();
    let r = h
        .get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &jwt)
        .await;
    assert_eq!(r.status(), 200);
    let t = &h.hooks().tokens_for_user("yan")[0];
    assert_eq!(t.session_id, "sess-42");
}
