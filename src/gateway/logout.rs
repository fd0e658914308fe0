//! `POST /gateway/v1/logout`: the caller ends its own access, with the
//! same effects as the admin revocation of that scope.
//!
//! Scope: the caller's device when the session proves one (a verified
//! client id); otherwise the session itself when it names one (`sid`);
//! otherwise all of the user's devices, the only scope left that surely
//! covers the caller. `{"all_devices": true}` asks for all devices. A
//! device id from the client header is not proof: revoking "that device"
//! would let a caller end another device's access by naming it, and would
//! miss its own session.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::record::{lock, LogSlot};
use super::{Active, ConnMemo, Gateway};
use crate::body::Body;
use crate::error::GatewayError;
use crate::revoke::{RevokeError, RevokeRequest};

pub const PATH: &str = "/gateway/v1/logout";

/// A logout body is `{}` or `{"all_devices": true}`.
const MAX_BODY_BYTES: usize = 1024;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    all_devices: bool,
}

impl Gateway {
    pub(super) async fn logout(
        &self,
        active: &Active,
        parts: &http::request::Parts,
        incoming: Incoming,
        log: &LogSlot,
        conn: &ConnMemo,
        now: Instant,
    ) -> Result<Response<Body>, GatewayError> {
        lock(log).operation = Some("gateway.logout");
        if parts.method != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let (session, memo) = self.session(active, parts, conn, now).await?;
        drop(memo);
        {
            let mut l = lock(log);
            l.user_id = Some(session.user_id.clone());
            l.client_id = Some(session.client_id.clone());
            l.session_id = Some(session.session_id.clone());
        }
        let body = read_body(incoming).await?;
        let all = body.all_devices;
        let (client_id, session_id) = if all {
            (None, None)
        } else if session.client_id_verified {
            (Some(session.client_id.to_string()), None)
        } else if !session.session_id.is_empty() {
            (None, Some(session.session_id.to_string()))
        } else {
            (None, None)
        };
        let report = self
            .revoker
            .revoke(RevokeRequest {
                user_id: session.user_id.to_string(),
                client_id,
                session_id,
                reason: Some(
                    if all {
                        "logout (all devices)"
                    } else {
                        "logout"
                    }
                    .into(),
                ),
                requested_by: crate::revoke::LOGOUT.into(),
                lifetime: active.sessions.revocation_lifetime(),
            })
            .await
            .map_err(|e| match e {
                RevokeError::Invalid(m) => GatewayError::BadRequest(m),
                RevokeError::Full(m) => GatewayError::RevocationRefused(m),
                RevokeError::Internal => GatewayError::Internal,
            })?;
        tracing::debug!(revocation = %report.revocation.id, "logout");
        Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(crate::body::empty())
            .expect("static response"))
    }
}

async fn read_body(incoming: Incoming) -> Result<LogoutBody, GatewayError> {
    let bytes: Bytes = http_body_util::Limited::new(incoming, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            GatewayError::BadRequest(format!(
                "a logout body is at most {MAX_BODY_BYTES} bytes of JSON"
            ))
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(LogoutBody::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        GatewayError::BadRequest(format!(
            "logout body must be {{}} or {{\"all_devices\": true}}: {e}"
        ))
    })
}
