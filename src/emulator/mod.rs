//! SMH + COS emulator for `dev` mode and integration tests.
//!
//! One HTTPS listener (h1 + h2, throw-away PKI) serves two surfaces:
//! the SMH business API under `/api/v1/…` (tokens with sliding expiry and
//! grants, directories, the upload flow, 302 downloads, SMH error shapes)
//! and a COS stand-in under `/cos/<key>` that upload targets and signed
//! download links point at. Real SMH hands out `https://{domain}{path}` on a
//! COS bucket domain; the emulator's `domain` is `localhost:<port>` and its
//! `path` is `/cos/<object-key>`, so the same client code works against both.
//! It follows `/work/shared/smh-api.md`; [`Hooks`] lets tests steer and
//! observe it (clock, counters, fault injection, request/operation logs).
//!
//! # Decisions where smh-api.md is silent
//!
//! Open questions of smh-api.md section 8, settled as follows:
//!
//! 1. **`access_token` vs `Authorization: Bearer`.** Both are accepted on data
//!    requests; a non-empty `access_token` query parameter wins and the header
//!    is then ignored. Token endpoints ignore the bearer header entirely: they
//!    authenticate by `library_secret` or by the token in the path.
//! 2. **`period` bounds.** Clamped into `[period_min, period_max]` (defaults
//!    300 and 315 360 000 s, from the iOS SDK; both configurable). Absent,
//!    empty, zero or negative means the default 86 400 s; a non-integer is
//!    400 `ParamInvalid`. There is no absolute lifetime cap: a token used at
//!    least once per period lives for ever.
//! 3. **Renew** returns the same token string with `expiresIn` = its period,
//!    and slides expiry to now + period. Unknown or expired: 403
//!    `InvalidAccessToken`.
//! 4. **Delete statuses.** Delete-user-tokens answers 204, also when nothing
//!    matched. Deleting an unknown or already deleted token answers 204 too
//!    (state converges; repeats are harmless). Using a revoked token gives 403
//!    `InvalidAccessToken`. `user_id` is required on delete-user-tokens (400
//!    `ParamInvalid` without it).
//! 5. **Grant table.** Section 3.3 as written; `space_admin` covers everything
//!    except space creation. Unknown grant strings (`read_only`, `acl`, …) are
//!    stored and confer nothing beyond read. Overwriting an existing file
//!    (`conflict_resolution_strategy=overwrite`) additionally needs the
//!    operation's `_force` grant, `admin` or `space_admin` (403
//!    `NoPermission` otherwise).
//! 6. **`library_secret` on data endpoints** is not a credential: it is
//!    ignored and a token is still required (400 `EmptyAccessToken`). A
//!    gateway that leaks it is caught through [`Hooks::requests`] rather than
//!    silently authorised.
//! 7. **5xx codes.** 503 carries `ServerOverloaded`, every other 5xx
//!    `InternalServerError`.
//! 8. **COS upload headers.** One `Authorization` header in COS q-sign style
//!    (`q-sign-algorithm=emulator-crc64&q-key-time=<start>;<end>&q-signature=…`),
//!    checked by the COS surface (403 `AccessDenied` XML when missing or
//!    altered, 403 "Request has expired" after `<end>`). Upload targets live
//!    one hour; `expiration` is RFC 3339 UTC with milliseconds.
//! 9. **Download status.** `GET` on a file answers 302 with `Location` = a
//!    signed COS URL and the `x-smh-*` headers; with
//!    `EmulatorConfig::download_direct` it answers 200 with the bytes instead
//!    (the old doc page). `Range` is honoured on the COS URL always and on the
//!    SMH URL only in direct mode (in 302 mode the client re-sends it to
//!    `Location`).
//! 10. **Request id.** Every API response carries `x-smh-request-id`; every
//!     error body carries the same fresh value as `requestId`. COS-surface
//!     errors are COS-style XML without an SMH request id.
//! 11. **Path encoding.** The path tail may be raw (`a/b/c`) or encoded
//!     (`a%2Fb%2Fc`); it is percent-decoded once, then empty segments are
//!     dropped (leading, trailing and doubled slashes are tolerated). The root
//!     is an empty tail, `/` or `%2F`. `.` and `..` segments are refused with
//!     400 `IllegalFileName`. LibraryId and SpaceId segments are decoded too.
//! 12. **JWT-bearer issuance** is not emulated (its route answers 404
//!     `RouteNotFound`).
//! 13. **Public read** is not emulated: every data request needs a token.
//!
//! Further choices the brief or the doc leave open:
//!
//! - Clock: the wall clock plus everything [`Hooks::advance`]d, so `dev` mode
//!   behaves in real time while tests move time without sleeping.
//! - Expiry slides on every data request whose token is valid, even when the
//!   request is then refused for space, grant or a missing path: the token was
//!   used. Forced failures ([`Hooks::fail_next_uses`]) do not slide it.
//! - [`Hooks::token_uses`] counts every data request carrying the token
//!   string, valid or not.
//! - Single-tenant libraries accept only SpaceId `-` (404 `SpaceNotFound`
//!   otherwise); on multi-tenant libraries `-` is not a space. A token minted
//!   without `space_id` on a multi-tenant library reaches every space only
//!   with `admin`.
//! - No recycle bin: `DELETE` removes for good and answers 204, whatever
//!   `permanent` says. Deleting a non-empty directory removes its subtree.
//! - Conflict defaults: `ask` for directory create/move/copy and file
//!   move/copy/symlink (so retries cannot silently duplicate), `rename` for
//!   uploads (SMH's documented default for most file operations). Conflicts
//!   are checked at upload start and again at confirm.
//! - `eTag` is the CRC-64 in quotes (no MD5 in the dependency set); `crc64`
//!   is CRC-64/XZ (COS crc64ecma) as a decimal string; `size` is a string.
//! - Listings are ordered by name, directories and files merged (SMH's
//!   `sort_type=union`); `nextMarker` is the decimal index of the next entry
//!   and is absent on the last page; `filter`, `prefix`, `order_by_type=desc`
//!   and `by-page` are supported.
//! - API bodies up to 1 MiB are parsed as JSON (malformed: 400 `BadRequest`;
//!   not an object: 400 `ParamInvalid`). A larger body is read to its end,
//!   counted and dropped as it streams, then answered 413
//!   `RequestEntityTooLarge`, so proxy tests can push 100 MiB through.
//! - Confirm is refused with 403 `UploadNotBelongYou` when the operator
//!   differs from the one who started the upload.
//! - Multipart uploads, upload status, abort and renew are emulated; form
//!   uploads, `?convert` and `?virtual_file` answer 404 `RouteNotFound`.
//! - Symlinks are real nodes; `GET`/`HEAD`/`?info` follow one hop.
//! - Mints and renews are counted ([`Hooks::mints`], [`Hooks::renews`]) but
//!   not logged as operations; token deletes are.
//! - [`Hooks::requests`] logs the SMH API surface only, not COS traffic.

mod api;
mod cos;
mod dirs;
mod files;
mod fs;
mod hooks;
mod proto;
mod tokens;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sync::lock;

use ::http::{Request, Response};
use hyper::body::Incoming;
use rand::distributions::{Alphanumeric, DistString};

use crate::body::Body;
use crate::server::{bind, serve_tls, NoObserver, Shutdown};
use crate::tls::{ThrowAwayPki, ALPN_H2_H1};

pub use api::DEFAULT_PERIOD;
pub use hooks::{Hooks, OperationRecord, SeenRequest};
pub use proto::{MAX_JSON_BODY, REQUEST_ID_HEADER};
pub use tokens::{grant, TokenRecord, TOKEN_PREFIX};

/// Library id used when none is configured; any alphanumeric id works.
pub const DEFAULT_LIBRARY_ID: &str = "smhemulator";
/// Length of the generated library secret, matching console-issued secrets.
pub const LIBRARY_SECRET_LEN: usize = 32;
/// Shortest token `period`, from the iOS SDK's documented range.
pub const DEFAULT_PERIOD_MIN: u64 = 300;
/// Longest token `period` (10 years), from the iOS SDK's documented range.
pub const DEFAULT_PERIOD_MAX: u64 = 315_360_000;

/// Names used in [`OperationRecord::operation`].
pub mod op {
    pub const CREATE_DIRECTORY: &str = "createDirectory";
    pub const DELETE_DIRECTORY: &str = "deleteDirectory";
    pub const MOVE_DIRECTORY: &str = "moveDirectory";
    pub const COPY_DIRECTORY: &str = "copyDirectory";
    pub const BEGIN_UPLOAD: &str = "beginUpload";
    pub const CONFIRM_UPLOAD: &str = "confirmUpload";
    pub const ABORT_UPLOAD: &str = "abortUpload";
    pub const DELETE_FILE: &str = "deleteFile";
    pub const MOVE_FILE: &str = "moveFile";
    pub const COPY_FILE: &str = "copyFile";
    pub const CREATE_SYMLINK: &str = "createSymlink";
    pub const DELETE_TOKEN: &str = "deleteToken";
    pub const DELETE_USER_TOKENS: &str = "deleteUserTokens";
    pub const CREATE_SPACE: &str = "createSpace";
}

#[derive(Clone)]
pub struct EmulatorConfig {
    pub library_id: String,
    pub library_secret: String,
    /// Multi-tenant library: spaces must exist; single-tenant uses SpaceId `-`.
    pub multi_tenant: bool,
    /// Spaces that exist from the start when `multi_tenant`.
    pub spaces: Vec<String>,
    /// Clamp bounds for the token `period` parameter.
    pub period_min: u64,
    pub period_max: u64,
    /// `false`: file GET answers 302 to a signed COS URL (current docs).
    /// `true`: 200 with the bytes streamed (old docs; gateway streaming tests).
    pub download_direct: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            library_id: DEFAULT_LIBRARY_ID.to_string(),
            library_secret: Alphanumeric.sample_string(&mut rand::thread_rng(), LIBRARY_SECRET_LEN),
            multi_tenant: false,
            spaces: Vec::new(),
            period_min: DEFAULT_PERIOD_MIN,
            period_max: DEFAULT_PERIOD_MAX,
            download_direct: false,
        }
    }
}

// The secret must never reach logs through a `{:?}` of the config.
impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("library_id", &self.library_id)
            .field("library_secret", &"<redacted>")
            .field("multi_tenant", &self.multi_tenant)
            .field("spaces", &self.spaces)
            .field("period_min", &self.period_min)
            .field("period_max", &self.period_max)
            .field("download_direct", &self.download_direct)
            .finish()
    }
}

/// Shared state behind both surfaces. Locks are never held across an await;
/// when two are needed the order is `fs` before `cos`.
pub(crate) struct State {
    pub config: EmulatorConfig,
    pub port: u16,
    pub hooks: Arc<Hooks>,
    pub signer: cos::Signer,
    fs: Mutex<fs::Fs>,
    cos: Mutex<cos::CosStore>,
    spaces: Mutex<BTreeSet<String>>,
}

impl State {
    pub fn fs(&self) -> MutexGuard<'_, fs::Fs> {
        lock(&self.fs)
    }

    pub fn cos(&self) -> MutexGuard<'_, cos::CosStore> {
        lock(&self.cos)
    }

    pub fn spaces(&self) -> MutexGuard<'_, BTreeSet<String>> {
        lock(&self.spaces)
    }
}

/// A running emulator. Dropping it leaves it running until the runtime
/// ends; call [`Emulator::shutdown`] to stop it.
pub struct Emulator {
    addr: SocketAddr,
    pki: ThrowAwayPki,
    state: Arc<State>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Generates TLS material (valid for localhost and
    /// `<library_id>.api.tencentsmh.cn`), binds `listen` and serves in a
    /// spawned task.
    pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> anyhow::Result<Emulator> {
        let pki = ThrowAwayPki::generate(&[format!("{}.api.tencentsmh.cn", config.library_id)])?;
        let tls = Arc::new(pki.server_config(ALPN_H2_H1)?);
        let listener = bind(listen).await?;
        let addr = listener.local_addr()?;
        let spaces = if config.multi_tenant {
            config.spaces.iter().cloned().collect()
        } else {
            BTreeSet::new()
        };
        let state = Arc::new(State {
            port: addr.port(),
            hooks: Arc::new(Hooks::new(Default::default())),
            signer: cos::Signer::new(),
            fs: Mutex::new(fs::Fs::default()),
            cos: Mutex::new(cos::CosStore::default()),
            spaces: Mutex::new(spaces),
            config,
        });
        let shutdown = Shutdown::default();
        let svc_state = state.clone();
        let make_service = move |_info: &_| {
            let state = svc_state.clone();
            tower::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                Box::pin(async move { Ok::<_, Infallible>(handle(state, req).await) })
            })
        };
        tokio::spawn(serve_tls(
            listener,
            tls,
            make_service,
            Arc::new(NoObserver),
            shutdown.clone(),
            crate::server::Limits::default(),
        ));
        Ok(Emulator {
            addr,
            pki,
            state,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>`, which the generated certificate covers.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The full throw-away PKI, for writing to disk in `dev` mode.
    pub fn pki(&self) -> &ThrowAwayPki {
        &self.pki
    }

    pub fn library_id(&self) -> &str {
        &self.state.config.library_id
    }

    pub fn library_secret(&self) -> &str {
        &self.state.config.library_secret
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.state.config
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.state.hooks
    }

    /// Stops accepting and drains in-flight requests.
    pub fn shutdown(&self) {
        self.shutdown.trigger_at_once();
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let latency = state.hooks.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if req.uri().path().starts_with(cos::COS_PREFIX) {
        cos::handle(&state, req).await
    } else {
        api::handle(&state, req).await
    }
}
