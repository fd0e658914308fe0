//! An unmodified SMH SDK against `dev` as shipped: the session goes where
//! the SDK puts its token (the `access_token` query parameter), the SDK's
//! own headers pass, and a stale session is answered the way SMH answers a
//! stale token (403 `InvalidAccessToken`), which is the one answer that
//! makes SDKs run their token-refresh callback.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{error_code, Harness};
use smh_gateway::emulator::EmulatorConfig;

/// What the TypeScript SDK sends on every call.
const CLIENT_VERSION: &str = "smh-js-sdk/1.0.16";

/// A session whose `exp` passed well beyond the leeway, as a client holding
/// yesterday's token has.
fn expired_session(h: &Harness, user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "roles": ["editor"], "iat": now - 7200, "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(h.env.session_secret.as_bytes()),
    )
    .unwrap()
}

/// The SDK's call loop: token in the query, its headers, and one refresh
/// through the callback when the answer is 403 `InvalidAccessToken`.
struct Sdk<'a> {
    h: &'a Harness,
    token: String,
    refresh: Box<dyn Fn() -> String + 'a>,
    refreshes: usize,
}

impl Sdk<'_> {
    async fn call(&mut self, method: reqwest::Method, path: &str, flag: &str) -> reqwest::Response {
        for attempt in 0..2 {
            let sep = if flag.is_empty() { "" } else { "&" };
            let url = self
                .h
                .url(&format!("{path}?{flag}{sep}access_token={}", self.token));
            let resp = self
                .h
                .client
                .request(method.clone(), url)
                .header("client-version", CLIENT_VERSION)
                .header("x-smh-sdk-version", "1.0.16")
                .send()
                .await
                .unwrap();
            if resp.status() == 403 && attempt == 0 {
                let (_, code, _) = error_code(resp).await;
                assert_eq!(
                    code, "InvalidAccessToken",
                    "the SDK refreshes on nothing else"
                );
                self.refreshes += 1;
                self.token = (self.refresh)();
                continue;
            }
            return resp;
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[tokio::test]
async fn an_sdk_style_client_works_against_dev_as_shipped() {
    let h = Harness::start().await;
    let lib = h.lib().to_string();
    let mut sdk = Sdk {
        h: &h,
        token: expired_session(&h, "sdk-user"),
        refresh: Box::new(|| h.session("sdk-user", &["editor"])),
        refreshes: 0,
    };
    let r = sdk
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/directory/{lib}/-/from-sdk"),
            "",
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(
        sdk.refreshes, 1,
        "the stale session made the SDK refresh once"
    );
    let r = sdk
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/directory/{lib}/-/"),
            "by-marker",
        )
        .await;
    assert_eq!(r.status(), 200);
    let listing: serde_json::Value = r.json().await.unwrap();
    assert!(
        listing["contents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "from-sdk"),
        "{listing}"
    );
    assert_eq!(sdk.refreshes, 1, "a live session needs no refresh");
    // SMH saw the user, never the session, and no access_token of ours.
    let tokens = h.hooks().tokens_for_user("sdk-user");
    assert!(!tokens.is_empty(), "a token was minted for the SDK's user");

    // A missing token is SMH's EmptyAccessToken (400), as SMH answers it.
    let r = h
        .client
        .get(h.url(&format!("/api/v1/directory/{lib}/-/?by-marker")))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "EmptyAccessToken"));
}

#[tokio::test]
async fn sessions_in_urls_and_sdk_errors_each_have_a_switch() {
    let h = Harness::start_with(
        EmulatorConfig::default(),
        "[session]\ncredentials = [\"bearer\"]\nsmh_compatible_errors = false\n",
    )
    .await;
    let lib = h.lib().to_string();
    let session = h.session("u", &["viewer"]);
    let r = h
        .client
        .get(h.url(&format!(
            "/api/v1/directory/{lib}/-/?by-marker&access_token={session}"
        )))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "MissingSession"),
        "with the query source off, a session in the URL is no session"
    );
    let r = h
        .get(
            &format!("/api/v1/directory/{lib}/-/?by-marker"),
            &expired_session(&h, "u"),
        )
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (401, "InvalidSession"));
    let r = h
        .get(&format!("/api/v1/directory/{lib}/-/?by-marker"), &session)
        .await;
    assert_eq!(r.status(), 200);
}
