//! The SMH + COS emulator over real HTTPS, driven with an independent client.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use smh_gateway::emulator::{op, Emulator, EmulatorConfig};

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

struct Env {
    emu: Emulator,
    http: reqwest::Client,
}

async fn start(config: EmulatorConfig) -> Env {
    smh_gateway::tls::install_crypto_provider();
    let emu = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts");
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env { emu, http }
}

async fn single() -> Env {
    start(EmulatorConfig::default()).await
}

/// Status, JSON body (Null when empty) and the request-id header.
async fn call(rb: reqwest::RequestBuilder) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let resp = rb.send().await.expect("request succeeds at the HTTP level");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, body, headers)
}

/// Asserts an SMH error: status, code, and a request id in body and header.
fn assert_smh_error(
    got: &(StatusCode, Value, reqwest::header::HeaderMap),
    status: u16,
    code: &str,
) {
    let (s, body, headers) = got;
    assert_eq!(s.as_u16(), status, "status for {code}: body {body}");
    assert_eq!(body["code"], code, "body {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let rid = body["requestId"].as_str().expect("requestId in body");
    assert!(!rid.is_empty());
    assert_eq!(
        headers.get("x-smh-request-id").unwrap().to_str().unwrap(),
        rid
    );
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    fn lib(&self) -> &str {
        self.emu.library_id()
    }

    fn secret(&self) -> &str {
        self.emu.library_secret()
    }

    fn token_url(&self, extra: &str) -> String {
        self.url(&format!(
            "/api/v1/token?library_id={}&library_secret={}&{extra}",
            self.lib(),
            self.secret()
        ))
    }

    async fn mint(&self, extra: &str) -> String {
        let (s, body, _) = call(self.http.get(self.token_url(extra))).await;
        assert_eq!(s, StatusCode::OK, "mint {extra}: {body}");
        body["accessToken"].as_str().unwrap().to_string()
    }

    fn dir(&self, space: &str, path: &str, query: &str, token: &str) -> String {
        self.url(&format!(
            "/api/v1/directory/{}/{space}/{path}?{query}{}access_token={token}",
            self.lib(),
            if query.is_empty() { "" } else { "&" }
        ))
    }

    fn file(&self, space: &str, path: &str, query: &str, token: &str) -> String {
        self.url(&format!(
            "/api/v1/file/{}/{space}/{path}?{query}{}access_token={token}",
            self.lib(),
            if query.is_empty() { "" } else { "&" }
        ))
    }

    async fn list_root(&self, token: &str) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        call(self.http.get(self.dir("-", "", "by-marker", token))).await
    }

    async fn mkdir(
        &self,
        path: &str,
        token: &str,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        call(self.http.put(self.dir("-", path, "", token))).await
    }

    /// Simple upload, all three steps; returns the confirm answer.
    async fn upload(&self, path: &str, data: &[u8], token: &str) -> Value {
        let (s, target, _) = call(self.http.put(self.file("-", path, "", token))).await;
        assert_eq!(s, StatusCode::CREATED, "{target}");
        self.cos_put(&target, data).await;
        let key = target["confirmKey"].as_str().unwrap();
        let (s, rec, _) = call(self.http.post(self.file("-", key, "confirm", token))).await;
        assert_eq!(s, StatusCode::OK, "{rec}");
        rec
    }

    async fn cos_put(&self, target: &Value, data: &[u8]) {
        let url = format!(
            "https://{}{}",
            target["domain"].as_str().unwrap(),
            target["path"].as_str().unwrap()
        );
        let mut req = self.http.put(url).body(data.to_vec());
        for (k, v) in target["headers"].as_object().unwrap() {
            req = req.header(k.as_str(), v.as_str().unwrap());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("etag").is_some());
    }
}

#[tokio::test]
async fn token_use_slides_expiry_and_idle_tokens_die() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let (s, body, _) = call(
        env.http
            .get(env.token_url("user_id=u1&client_id=c1&period=300")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["expiresIn"], 300);
    let token = body["accessToken"].as_str().unwrap().to_string();
    assert!(token.starts_with("acctk"));
    assert!(token[5..]
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    let recs = hooks.tokens_for_user("u1");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].token, token);
    assert_eq!(recs[0].client_id, "c1");
    assert_eq!(recs[0].period, 300);
    assert_eq!(hooks.mints(), 1);

    assert_eq!(env.list_root(&token).await.0, StatusCode::OK);
    for _ in 0..3 {
        hooks.advance(Duration::from_secs(299));
        let (s, body, _) = env.list_root(&token).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "use within the period keeps it alive: {body}"
        );
    }
    hooks.advance(Duration::from_secs(301));
    let got = env.list_root(&token).await;
    assert_smh_error(&got, 403, "InvalidAccessToken");
    assert_eq!(hooks.token_uses(&token), 5);
    assert!(hooks.tokens().is_empty());
    assert_eq!(hooks.data_requests(), 5);
}

#[tokio::test]
async fn period_is_defaulted_clamped_and_validated() {
    let env = single().await;
    for (param, expect) in [
        ("", 86_400),
        ("period=0", 86_400),
        ("period=-5", 86_400),
        ("period=5", 300),
        ("period=4000", 4000),
        ("period=999999999999", 315_360_000),
    ] {
        let (s, body, _) = call(env.http.get(env.token_url(param))).await;
        assert_eq!(s, StatusCode::OK, "{param}");
        assert_eq!(body["expiresIn"], expect, "{param}");
    }
    let got = call(env.http.get(env.token_url("period=abc"))).await;
    assert_smh_error(&got, 400, "ParamInvalid");
    // POST works like GET.
    let (s, body, _) = call(env.http.post(env.token_url("period=600"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["expiresIn"], 600);
}

#[tokio::test]
async fn renew_keeps_the_token_string_and_slides_expiry() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let token = env.mint("user_id=u1&period=300").await;
    hooks.advance(Duration::from_secs(200));
    let url = env.url(&format!("/api/v1/token/{}/{token}", env.lib()));
    let (s, body, _) = call(env.http.post(&url)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["accessToken"], token.as_str());
    assert_eq!(body["expiresIn"], 300);
    assert_eq!(hooks.renews(), 1);
    hooks.advance(Duration::from_secs(200));
    assert_eq!(
        env.list_root(&token).await.0,
        StatusCode::OK,
        "400 s after mint, 200 s after renew"
    );

    let got = call(
        env.http
            .post(env.url(&format!("/api/v1/token/{}/acctknope", env.lib()))),
    )
    .await;
    assert_smh_error(&got, 403, "InvalidAccessToken");
    let got = call(
        env.http
            .post(env.url(&format!("/api/v1/token/otherlib/{token}"))),
    )
    .await;
    assert_smh_error(&got, 404, "LibraryNotFound");
    hooks.advance(Duration::from_secs(301));
    let got = call(env.http.post(&url)).await;
    assert_smh_error(&got, 403, "InvalidAccessToken");
    assert_eq!(hooks.renews(), 1);
}

#[tokio::test]
async fn delete_one_token_is_204_and_idempotent() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let token = env.mint("user_id=carol&client_id=phone").await;
    let url = env.url(&format!("/api/v1/token/{}/{token}", env.lib()));
    let (s, body, _) = call(env.http.delete(&url)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_smh_error(&env.list_root(&token).await, 403, "InvalidAccessToken");
    let (s, _, _) = call(env.http.delete(&url)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "deleting again converges");
    assert_eq!(hooks.deletes(), 2);
    let ops = hooks.operations();
    assert_eq!(ops[0].operation, op::DELETE_TOKEN);
    assert_eq!(ops[0].user_id, "carol");
    assert_eq!(ops[0].client_id, "phone");
}

#[tokio::test]
async fn delete_user_tokens_filters_by_client_and_session() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let a = env.mint("user_id=u1&client_id=c1&session_id=s1").await;
    let b = env.mint("user_id=u1&client_id=c1&session_id=s2").await;
    let c = env.mint("user_id=u1&client_id=c2&session_id=s1").await;
    let d = env.mint("user_id=u2&client_id=c1&session_id=s1").await;
    let service = env.mint("grant=admin").await;
    let live = |t: &str| hooks.tokens().iter().any(|r| r.token == t);
    let del = |q: &str| {
        env.http.delete(env.url(&format!(
            "/api/v1/token/{}?library_secret={}&{q}",
            env.lib(),
            env.secret()
        )))
    };

    assert_eq!(
        call(del("user_id=u1&client_id=c1&session_id=s1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!live(&a) && live(&b) && live(&c) && live(&d));
    assert_eq!(
        call(del("user_id=u1&client_id=c1")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(!live(&b) && live(&c) && live(&d));
    assert_eq!(call(del("user_id=u1,u2")).await.0, StatusCode::NO_CONTENT);
    assert!(!live(&c) && !live(&d));
    assert!(live(&service), "tokens without a user id are never matched");
    assert_eq!(hooks.deletes(), 3);

    let got = call(
        env.http
            .delete(env.url(&format!("/api/v1/token/{}?user_id=u1", env.lib()))),
    )
    .await;
    assert_smh_error(&got, 400, "EmptyLibrarySecret");
    let got = call(env.http.delete(env.url(&format!(
        "/api/v1/token/{}?library_secret=wrong&user_id=u1",
        env.lib()
    ))))
    .await;
    assert_smh_error(&got, 404, "WrongLibraryIdOrSecret");
    let ops = hooks.operations();
    assert_eq!(ops.len(), 3);
    assert!(ops.iter().all(|o| o.operation == op::DELETE_USER_TOKENS));
    assert_eq!(ops[2].user_id, "u1,u2");
}

#[tokio::test]
async fn grants_are_enforced() {
    let env = single().await;
    let read_only = env.mint("user_id=r").await;
    let got = env.mkdir("docs", &read_only).await;
    assert_smh_error(&got, 403, "NoPermission");
    assert_eq!(env.list_root(&read_only).await.0, StatusCode::OK);

    let maker = env
        .mint("user_id=m&grant=create_directory,some_future_grant")
        .await;
    assert_eq!(env.mkdir("docs", &maker).await.0, StatusCode::CREATED);
    let got = call(env.http.delete(env.dir("-", "docs", "", &maker))).await;
    assert_smh_error(&got, 403, "NoPermission");
    let got = call(env.http.put(env.file("-", "docs/a.txt", "", &maker))).await;
    assert_smh_error(&got, 403, "NoPermission");

    let uploader = env.mint("user_id=u&grant=begin_upload").await;
    let (s, target, _) = call(env.http.put(env.file("-", "docs/a.txt", "", &uploader))).await;
    assert_eq!(s, StatusCode::CREATED);
    env.cos_put(&target, b"x").await;
    let key = target["confirmKey"].as_str().unwrap();
    let got = call(env.http.post(env.file("-", key, "confirm", &uploader))).await;
    assert_smh_error(&got, 403, "NoPermission");

    let space_admin = env.mint("user_id=u&grant=space_admin").await;
    let (s, rec, _) = call(env.http.post(env.file("-", key, "confirm", &space_admin))).await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["name"], "a.txt");
}

#[tokio::test]
async fn tenant_spaces_are_enforced_on_multi_tenant_libraries() {
    let env = start(EmulatorConfig {
        multi_tenant: true,
        spaces: vec!["alpha".into(), "beta".into()],
        ..Default::default()
    })
    .await;
    let alpha = env.mint("space_id=alpha&grant=admin&user_id=a").await;
    assert_eq!(
        call(env.http.put(env.dir("alpha", "x", "", &alpha)))
            .await
            .0,
        StatusCode::CREATED
    );
    let got = call(env.http.put(env.dir("beta", "x", "", &alpha))).await;
    assert_smh_error(&got, 403, "AccessTokenNotMatchSpace");

    let unscoped_user = env.mint("grant=create_directory&user_id=b").await;
    let got = call(env.http.put(env.dir("beta", "x", "", &unscoped_user))).await;
    assert_smh_error(&got, 403, "AccessTokenNotMatchSpace");
    let unscoped_admin = env.mint("grant=admin").await;
    assert_eq!(
        call(env.http.put(env.dir("beta", "x", "", &unscoped_admin)))
            .await
            .0,
        StatusCode::CREATED
    );
    let got = call(env.http.get(env.dir("nope", "", "", &unscoped_admin))).await;
    assert_smh_error(&got, 404, "SpaceNotFound");

    let got = call(env.http.get(env.token_url("space_id=gamma"))).await;
    assert_smh_error(&got, 404, "SpaceNotFound");
    let (s, body, _) = call(env.http.post(env.url(&format!(
        "/api/v1/space/{}?space_id=gamma&access_token={unscoped_admin}",
        env.lib()
    ))))
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(body["spaceId"], "gamma");
    let gamma = env
        .mint("space_id=gamma,alpha&grant=create_directory")
        .await;
    assert_eq!(
        call(env.http.put(env.dir("gamma", "y", "", &gamma)))
            .await
            .0,
        StatusCode::CREATED
    );

    let single = single().await;
    let got = call(single.http.get(single.token_url("space_id=alpha"))).await;
    assert_smh_error(&got, 400, "NotMultiSpaceLibrary");
    single.mint("space_id=-").await;
}

#[tokio::test]
async fn directories_create_list_info_rename_delete() {
    let env = single().await;
    let t = env.mint("user_id=u&grant=admin").await;
    let (s, body, _) = env.mkdir("a/b", &t).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(body["path"], json!(["a", "b"]));
    assert!(body["creationTime"].as_str().unwrap().ends_with('Z'));
    assert_smh_error(
        &env.mkdir("a/b", &t).await,
        409,
        "SameNameDirectoryOrFileExists",
    );
    let (s, body, _) =
        call(
            env.http
                .put(env.dir("-", "a/b", "conflict_resolution_strategy=rename", &t)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(body["path"], json!(["a", "b (1)"]));
    env.mkdir("a/c", &t).await;

    let (s, body, _) = env.list_root(&t).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["contents"][0]["name"], "a");
    assert_eq!(body["contents"][0]["type"], "dir");
    assert!(body.get("nextMarker").is_none());

    let (_, page1, _) = call(env.http.get(env.dir("-", "a", "by-marker=1&limit=2", &t))).await;
    assert_eq!(page1["path"], json!(["a"]));
    let names: Vec<_> = page1["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("b"), json!("b (1)")]);
    let marker = page1["nextMarker"].as_str().unwrap();
    let (_, page2, _) =
        call(
            env.http
                .get(env.dir("-", "a", &format!("by-marker&limit=2&marker={marker}"), &t)),
        )
        .await;
    assert_eq!(page2["contents"].as_array().unwrap().len(), 1);
    assert_eq!(page2["contents"][0]["name"], "c");
    assert!(page2.get("nextMarker").is_none());

    let (s, info, _) = call(env.http.get(env.dir("-", "a/b", "info", &t))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["type"], "dir");
    assert_eq!(info["name"], "b");
    let head = env
        .http
        .head(env.dir("-", "a/b", "", &t))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["x-smh-type"], "dir");
    let head = env
        .http
        .head(env.dir("-", "a/zz", "", &t))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    assert!(
        head.bytes().await.unwrap().is_empty(),
        "HEAD errors carry no body"
    );

    let (s, body, _) = call(
        env.http
            .put(env.dir("-", "a/d", "", &t))
            .json(&json!({"from": "a/b"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["path"], json!(["a", "d"]));
    let got = call(env.http.get(env.dir("-", "a/b", "", &t))).await;
    assert_smh_error(&got, 404, "DirectoryNotFound");
    let got = call(
        env.http
            .put(env.dir("-", "a/e", "", &t))
            .json(&json!({"from": "a/missing"})),
    )
    .await;
    assert_smh_error(&got, 404, "SourceDirectoryNotFound");

    let (s, _, _) = call(env.http.delete(env.dir("-", "a", "", &t))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_smh_error(
        &call(env.http.get(env.dir("-", "a", "", &t))).await,
        404,
        "DirectoryNotFound",
    );
    let (_, root, _) = env.list_root(&t).await;
    assert_eq!(root["contents"], json!([]));

    let ops: Vec<_> = env
        .emu
        .hooks()
        .operations()
        .into_iter()
        .map(|o| (o.operation, o.path))
        .collect();
    assert_eq!(
        ops,
        vec![
            (op::CREATE_DIRECTORY.to_string(), "a/b".to_string()),
            (op::CREATE_DIRECTORY.to_string(), "a/b (1)".to_string()),
            (op::CREATE_DIRECTORY.to_string(), "a/c".to_string()),
            (op::MOVE_DIRECTORY.to_string(), "a/d".to_string()),
            (op::DELETE_DIRECTORY.to_string(), "a".to_string()),
        ]
    );
}

#[tokio::test]
async fn upload_confirm_and_ranged_download_through_the_302() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let t = env
        .mint("user_id=alice&client_id=web&grant=upload_file,create_directory")
        .await;
    env.mkdir("docs", &t).await;
    let data = b"hello, smart media hosting".to_vec();
    let crc = CRC64.checksum(&data);

    let got = call(env.http.put(env.file("-", "nodir/a.txt", "", &t))).await;
    assert_smh_error(&got, 404, "DirectoryNotFound");

    let (s, target, _) = call(
        env.http
            .put(env.file("-", "docs/hello.txt", "", &t))
            .header("x-smh-meta-owner", "alice"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        target["domain"],
        format!("localhost:{}", env.emu.addr().port())
    );
    assert!(target["path"].as_str().unwrap().starts_with("/cos/"));
    assert!(target["headers"]["Authorization"].is_string());
    assert!(target["expiration"].as_str().unwrap().ends_with('Z'));
    assert_eq!(target["availableDomainNum"], 1);
    let key = target["confirmKey"].as_str().unwrap().to_string();

    let got = call(env.http.post(env.file("-", &key, "confirm", &t))).await;
    assert_smh_error(&got, 404, "UploadIncomplete");
    let cos_url = format!(
        "https://{}{}",
        target["domain"].as_str().unwrap(),
        target["path"].as_str().unwrap()
    );
    let unsigned = env
        .http
        .put(&cos_url)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned.status(),
        StatusCode::FORBIDDEN,
        "COS PUT needs the returned headers"
    );
    env.cos_put(&target, &data).await;

    let got = call(
        env.http
            .post(env.file("-", &key, "confirm", &t))
            .json(&json!({"crc64": "12345"})),
    )
    .await;
    assert_smh_error(&got, 400, "BadCrc64");
    let (s, rec, _) = call(
        env.http
            .post(env.file("-", &key, "confirm=1", &t))
            .json(&json!({"crc64": crc.to_string()})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["path"], json!(["docs", "hello.txt"]));
    assert_eq!(rec["name"], "hello.txt");
    assert_eq!(rec["type"], "file");
    assert_eq!(rec["size"], data.len().to_string());
    assert_eq!(rec["crc64"], crc.to_string());
    assert_eq!(rec["contentType"], "text/plain");
    assert_eq!(rec["metaData"]["owner"], "alice");
    assert_eq!(rec["isOverwritten"], false);
    assert!(rec["eTag"].is_string());
    let got = call(env.http.post(env.file("-", &key, "confirm", &t))).await;
    assert_smh_error(&got, 409, "UploadComplete");
    let got = call(env.http.post(env.file("-", "0123abcd", "confirm", &t))).await;
    assert_smh_error(&got, 404, "ConfirmKeyNotFound");

    let resp = env
        .http
        .get(env.file("-", "docs/hello.txt", "", &t))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let h = resp.headers();
    assert_eq!(h["x-smh-type"], "file");
    assert_eq!(h["x-smh-size"], data.len().to_string().as_str());
    assert_eq!(h["x-smh-crc64"], crc.to_string().as_str());
    assert_eq!(h["x-smh-content-type"], "text/plain");
    assert_eq!(h["x-smh-meta-owner"], "alice");
    assert!(h.contains_key("x-smh-etag") && h.contains_key("x-smh-creation-time"));
    let location = h["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/cos/", env.emu.base_url())));
    assert!(resp.bytes().await.unwrap().is_empty());

    let part = env
        .http
        .get(&location)
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 0-4/{}", data.len()).as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], b"hello");
    let tail = env
        .http
        .get(&location)
        .header("range", "bytes=-7")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&tail.bytes().await.unwrap()[..], b"hosting");
    let bad = env
        .http
        .get(&location)
        .header("range", "bytes=500-")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let tampered = location.replace("sign=", "sign=0");
    assert_eq!(
        env.http.get(&tampered).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let (s, info, _) = call(env.http.get(env.file("-", "docs/hello.txt", "info", &t))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["size"], data.len().to_string());
    let whole = env
        .http
        .get(info["cosUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap().to_vec(), data);
    let head = env
        .http
        .head(env.file("-", "docs/hello.txt", "", &t))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["x-smh-size"],
        data.len().to_string().as_str()
    );

    hooks.advance(Duration::from_secs(7201));
    let expired = env.http.get(&location).send().await.unwrap();
    assert_eq!(
        expired.status(),
        StatusCode::FORBIDDEN,
        "signed links expire on the emulator clock"
    );

    let got = call(env.http.delete(env.file("-", "docs/hello.txt", "", &t))).await;
    assert_smh_error(&got, 403, "NoPermission");
    let ops = hooks.operations();
    let upload_ops: Vec<_> = ops
        .iter()
        .filter(|o| o.operation != op::CREATE_DIRECTORY)
        .collect();
    assert_eq!(upload_ops.len(), 2);
    assert_eq!(upload_ops[0].operation, op::BEGIN_UPLOAD);
    assert_eq!(upload_ops[1].operation, op::CONFIRM_UPLOAD);
    assert_eq!(upload_ops[1].path, "docs/hello.txt");
    assert_eq!(upload_ops[1].user_id, "alice");
    assert_eq!(upload_ops[1].client_id, "web");
}

#[tokio::test]
async fn file_move_copy_delete_and_rename_on_conflict() {
    let env = single().await;
    let t = env.mint("user_id=u&grant=admin").await;
    env.mkdir("d", &t).await;
    env.upload("d/a.bin", b"abc", &t).await;
    let rec = env.upload("d/a.bin", b"second", &t).await;
    assert_eq!(
        rec["name"], "a (1).bin",
        "uploads default to the rename strategy"
    );

    let got = call(
        env.http
            .put(env.file("-", "nope/b.bin", "", &t))
            .json(&json!({"from": "d/a.bin"})),
    )
    .await;
    assert_smh_error(&got, 404, "DirectoryNotFound");
    let (s, body, _) = call(
        env.http
            .put(env.file("-", "d/b.bin", "", &t))
            .json(&json!({"from": "d/a.bin"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["path"], json!(["d", "b.bin"]));
    let (s, _, _) = call(
        env.http
            .put(env.file("-", "d/c.bin", "", &t))
            .json(&json!({"copyFrom": "/d/b.bin"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, info, _) = call(env.http.get(env.file("-", "d/c.bin", "info", &t))).await;
    assert_eq!(info["size"], "3");
    assert_smh_error(
        &call(env.http.get(env.file("-", "d/a.bin", "", &t))).await,
        404,
        "FileNotFound",
    );

    let (s, _, _) = call(env.http.delete(env.file("-", "d/b.bin", "", &t))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_smh_error(
        &call(env.http.delete(env.file("-", "d/b.bin", "", &t))).await,
        404,
        "FileNotFound",
    );
    let (_, listing, _) = call(env.http.get(env.dir("-", "d", "", &t))).await;
    let names: Vec<_> = listing["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("a (1).bin"), json!("c.bin")]);
    assert_eq!(listing["contents"][1]["size"], "3");
}

#[tokio::test]
async fn encoded_paths_and_flag_forms_are_equivalent() {
    let env = single().await;
    let t = env.mint("grant=admin").await;
    let (s, body, _) = env.mkdir("x%2Fy%2Fz", &t).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(body["path"], json!(["x", "y", "z"]));
    for path in ["x/y/z", "x%2Fy%2Fz", "%2Fx%2Fy/z", "/x/y/z"] {
        let resp = env
            .http
            .head(env.dir("-", path, "", &t))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let (_, bare, _) = call(env.http.get(env.dir("-", "%2F", "by-marker", &t))).await;
    let (_, one, _) = call(env.http.get(env.dir("-", "", "by-marker=1", &t))).await;
    let (_, none, _) = call(env.http.get(env.dir("-", "", "", &t))).await;
    assert_eq!(bare["contents"][0]["name"], "x");
    assert_eq!(bare, one);
    assert_eq!(bare, none);
    for flag in ["info", "info=", "info=1"] {
        let (s, info, _) = call(env.http.get(env.dir("-", "x%2Fy", flag, &t))).await;
        assert_eq!(s, StatusCode::OK, "{flag}");
        assert_eq!(info["path"], json!(["x", "y"]), "{flag}");
        assert_eq!(info["type"], "dir");
    }
    let (_, not_flag, _) = call(env.http.get(env.dir("-", "x", "info=0", &t))).await;
    assert!(
        not_flag.get("contents").is_some(),
        "info=0 is not the info flag"
    );
    let got = env.mkdir("a%2F..%2Fb", &t).await;
    assert_smh_error(&got, 400, "IllegalFileName");
}

#[tokio::test]
async fn error_shapes_for_credentials_routes_and_bodies() {
    let env = single().await;
    let lib = env.lib().to_string();
    let got = call(
        env.http
            .get(env.url(&format!("/api/v1/token?library_id={lib}"))),
    )
    .await;
    assert_smh_error(&got, 400, "EmptyLibrarySecret");
    let got = call(env.http.get(env.url("/api/v1/token?library_secret=x"))).await;
    assert_smh_error(&got, 400, "EmptyLibraryId");
    let got = call(env.http.get(env.url("/api/v1/token"))).await;
    assert_smh_error(&got, 400, "EmptyLibraryIdOrSecret");
    let got = call(env.http.get(env.url(&format!(
        "/api/v1/token?library_id={lib}&library_secret=wrong"
    ))))
    .await;
    assert_smh_error(&got, 404, "WrongLibraryIdOrSecret");
    let got = call(env.http.get(env.url(&format!(
        "/api/v1/token?library_id=other&library_secret={}",
        env.secret()
    ))))
    .await;
    assert_smh_error(&got, 404, "WrongLibraryIdOrSecret");

    let got = call(
        env.http
            .get(env.url(&format!("/api/v1/directory/{lib}/-/"))),
    )
    .await;
    assert_smh_error(&got, 400, "EmptyAccessToken");
    let t = env.mint("grant=admin").await;
    let got = call(
        env.http
            .get(env.url(&format!("/api/v1/directory/otherlib/-/?access_token={t}"))),
    )
    .await;
    assert_smh_error(&got, 404, "LibraryNotFound");
    let got = call(env.http.get(env.url(&format!(
        "/api/v1/directory/{lib}/-/?access_token=acctkforged"
    ))))
    .await;
    assert_smh_error(&got, 403, "InvalidAccessToken");
    let got = call(
        env.http
            .get(env.url(&format!("/api/v1/nonsense/{lib}/-/x?access_token={t}"))),
    )
    .await;
    assert_smh_error(&got, 404, "RouteNotFound");
    let got = call(
        env.http
            .put(env.dir("-", "a", "", &t))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_smh_error(&got, 400, "BadRequest");
    let got = call(env.http.get(env.file("-", "missing.txt", "", &t))).await;
    assert_smh_error(&got, 404, "FileNotFound");

    // Bearer works when no access_token is present; the query wins otherwise.
    let url = env.url(&format!("/api/v1/directory/{lib}/-/"));
    let (s, _, _) = call(env.http.get(&url).bearer_auth(&t)).await;
    assert_eq!(s, StatusCode::OK);
    let got = call(
        env.http
            .get(format!("{url}?access_token=acctkforged"))
            .bearer_auth(&t),
    )
    .await;
    assert_smh_error(&got, 403, "InvalidAccessToken");

    // Each error gets its own request id.
    let a = call(env.http.get(env.url("/api/v1/token"))).await;
    let b = call(env.http.get(env.url("/api/v1/token"))).await;
    assert_ne!(a.1["requestId"], b.1["requestId"]);
}

#[tokio::test]
async fn hooks_inject_failures_and_record_operators() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let t = env.mint("user_id=alice&client_id=laptop&grant=admin").await;

    hooks.fail_next_uses(&t, 2);
    assert_smh_error(&env.list_root(&t).await, 403, "InvalidAccessToken");
    assert_smh_error(&env.list_root(&t).await, 403, "InvalidAccessToken");
    assert_eq!(
        env.list_root(&t).await.0,
        StatusCode::OK,
        "token stays valid"
    );
    assert_eq!(hooks.token_uses(&t), 3);

    hooks.fail_next_any_token(1);
    assert_smh_error(&env.list_root(&t).await, 403, "InvalidAccessToken");
    assert_eq!(env.list_root(&t).await.0, StatusCode::OK);

    hooks.fail_next_data_requests(1, 503);
    assert_smh_error(&env.list_root(&t).await, 503, "ServerOverloaded");
    hooks.fail_next_data_requests(1, 500);
    assert_smh_error(&env.list_root(&t).await, 500, "InternalServerError");
    assert_eq!(env.list_root(&t).await.0, StatusCode::OK);

    hooks.set_token_api_down(true);
    let got = call(env.http.get(env.token_url(""))).await;
    assert_smh_error(&got, 503, "ServerOverloaded");
    hooks.set_token_api_down(false);
    let service = env.mint("grant=admin").await;
    assert_eq!(hooks.mints(), 2);

    hooks.set_token_api_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    env.mint("").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    hooks.set_token_api_latency(Duration::ZERO);

    hooks.clear_logs();
    assert_eq!(env.mkdir("mine", &t).await.0, StatusCode::CREATED);
    let (s, _, _) = call(
        env.http
            .put(env.dir("-", "theirs", "user_id=bob", &service)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let ops = hooks.operations();
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (ops[0].user_id.as_str(), ops[0].client_id.as_str()),
        ("alice", "laptop")
    );
    assert_eq!(ops[0].space_id, "-");
    assert_eq!(ops[0].library_id, env.lib());
    assert_eq!(
        ops[1].user_id, "bob",
        "admin token without user id acts as user_id"
    );
    assert_eq!(ops[1].path, "theirs");

    // The request log keeps the raw query and headers.
    let raw = format!("/api/v1/directory/{}/-/a%2Fb", env.lib());
    let _ = call(
        env.http
            .get(env.url(&format!("{raw}?info&x=%2F+1&access_token={t}")))
            .header("x-probe", "yes"),
    )
    .await;
    let seen = hooks.requests().pop().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, raw);
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("info&x=%2F+1&access_token={t}").as_str())
    );
    assert_eq!(seen.header("x-probe"), Some("yes"));
    assert_eq!(seen.body_bytes, 0);
}

#[tokio::test]
async fn oversized_api_bodies_are_drained_and_refused() {
    let env = single().await;
    let hooks = env.emu.hooks();
    let t = env.mint("grant=admin").await;
    let before = hooks.body_bytes_received();
    let big = vec![b'x'; 3 * 1024 * 1024];
    let got = call(env.http.put(env.dir("-", "a", "", &t)).body(big.clone())).await;
    assert_smh_error(&got, 413, "RequestEntityTooLarge");
    assert_eq!(hooks.body_bytes_received() - before, big.len() as u64);
    assert_eq!(
        hooks.requests().last().unwrap().body_bytes,
        big.len() as u64
    );
}

#[tokio::test]
async fn direct_download_mode_streams_bytes_with_range() {
    let env = start(EmulatorConfig {
        download_direct: true,
        ..Default::default()
    })
    .await;
    let t = env.mint("grant=admin").await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    env.upload("big.bin", &data, &t).await;
    let resp = env
        .http
        .get(env.file("-", "big.bin", "", &t))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "h2 is negotiated through ALPN"
    );
    assert_eq!(resp.headers()["x-smh-size"], "200000");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), data);
    let part = env
        .http
        .get(env.file("-", "big.bin", "", &t))
        .header("range", "bytes=100000-100009")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes().await.unwrap().to_vec(),
        data[100_000..100_010].to_vec()
    );
}

#[tokio::test]
async fn multipart_upload_joins_parts_at_confirm() {
    let env = single().await;
    let t = env.mint("grant=admin").await;
    let (s, target, _) = call(env.http.post(env.file("-", "parts.bin", "multipart", &t))).await;
    assert_eq!(s, StatusCode::CREATED);
    let upload_id = target["uploadId"].as_str().unwrap();
    let base = format!(
        "https://{}{}",
        target["domain"].as_str().unwrap(),
        target["path"].as_str().unwrap()
    );
    let auth = target["headers"]["Authorization"].as_str().unwrap();
    for (n, chunk) in [(2, "world"), (1, "hello ")] {
        let resp = env
            .http
            .put(format!("{base}?partNumber={n}&uploadId={upload_id}"))
            .header("authorization", auth)
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let key = target["confirmKey"].as_str().unwrap();
    let (_, status, _) = call(env.http.get(env.file("-", key, "upload", &t))).await;
    assert_eq!(status["confirmed"], false);
    assert_eq!(status["parts"].as_array().unwrap().len(), 2);
    let (s, rec, _) = call(env.http.post(env.file("-", key, "confirm", &t))).await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["size"], "11");
    assert_eq!(rec["crc64"], CRC64.checksum(b"hello world").to_string());
}
