//! SMH's "delete a user's tokens" call (smh-api.md 2.4,
//! `DELETE /api/v1/token/<LibraryId>?library_secret&user_id[&client_id][&session_id]`),
//! with bounded retries: how a revocation reaches the tokens SMH itself
//! holds, on top of the gateway dropping its cached copies.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::token::MintTarget;
use crate::body;

/// Attempts per library before a delete is reported failed (the caller
/// retries failed ones in the background).
pub const DELETE_ATTEMPTS: u32 = 3;
/// Back-off before the second attempt, doubled for each further one: a
/// restarting token API is back within a second or two.
pub const DELETE_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// One attempt waits this long for SMH's answer.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// SMH's error answers are small JSON objects.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Whose tokens to delete: a user's, one device's, or one session's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteScope<'a> {
    pub library: &'a str,
    pub user_id: &'a str,
    pub client_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
}

/// How a delete ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// SMH answered 2xx (it documents no body; 200 and 204 are both seen).
    Confirmed { attempts: u32 },
    /// SMH refused the call itself (a 4xx other than 429): retrying the
    /// same call cannot help. The reason names SMH's code.
    Refused { status: u16, reason: String },
    /// Every attempt failed on the way or with a 5xx/429.
    Failed { attempts: u32, reason: String },
}

impl DeleteOutcome {
    pub fn confirmed(&self) -> bool {
        matches!(self, Self::Confirmed { .. })
    }
}

/// Deletes the scope's tokens at SMH, retrying outages.
pub async fn delete_user_tokens(target: &MintTarget, scope: &DeleteScope<'_>) -> DeleteOutcome {
    let mut backoff = DELETE_RETRY_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=DELETE_ATTEMPTS {
        match tokio::time::timeout(DELETE_TIMEOUT, call(target, scope)).await {
            Ok(Ok((status, _))) if status.is_success() => {
                return DeleteOutcome::Confirmed { attempts: attempt }
            }
            Ok(Ok((status, code)))
                if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
            {
                return DeleteOutcome::Refused {
                    status: status.as_u16(),
                    reason: answered(status, code.as_deref()),
                };
            }
            Ok(Ok((status, code))) => last = answered(status, code.as_deref()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        if attempt < DELETE_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    DeleteOutcome::Failed {
        attempts: DELETE_ATTEMPTS,
        reason: last,
    }
}

/// "SMH answered 403 Forbidden (InvalidLibrarySecret)".
fn answered(status: StatusCode, code: Option<&str>) -> String {
    match code {
        Some(c) => format!("SMH answered {status} ({c})"),
        None => format!("SMH answered {status}"),
    }
}

/// One call: the status and SMH's error code, if it sent one. The URL
/// holds the secret and is never logged.
async fn call(
    target: &MintTarget,
    scope: &DeleteScope<'_>,
) -> Result<(StatusCode, Option<String>), String> {
    // Ids are printable ASCII without `,` (checked when sessions are
    // read), so SMH reads each as one id, not a list.
    let mut q = super::token::form_urlencoded_pairs();
    q.push("library_secret", target.secret.expose());
    q.push("user_id", scope.user_id);
    if let Some(c) = scope.client_id.filter(|c| !c.is_empty()) {
        q.push("client_id", c);
    }
    if let Some(s) = scope.session_id.filter(|s| !s.is_empty()) {
        q.push("session_id", s);
    }
    let path = format!(
        "/api/v1/token/{}?{}",
        percent_encoding::utf8_percent_encode(scope.library, percent_encoding::NON_ALPHANUMERIC),
        q.finish()
    );
    let uri = target.upstream.uri(&path).map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(body::empty())
        .map_err(|e| e.to_string())?;
    let resp = target.upstream.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read (bounded) so the connection goes back to the pool.
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Only a short code of SMH's own alphabet is shown, never the body.
    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("code")?.as_str().map(str::to_owned))
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
    Ok((status, code))
}
