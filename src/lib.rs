//! smh-gateway: a reverse proxy in front of Tencent Cloud Smart Media Hosting
//! that turns business sessions into cached per-user SMH access tokens.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod build_info;
pub mod config;
pub mod dev;
pub mod emulator;
pub mod error;
pub mod fdlimit;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod metrics;
pub mod policy;
pub mod request_id;
pub mod revocation;
pub mod revoke;
pub mod secret;
pub mod server;
pub mod session;
pub mod smh;
pub mod sync;
pub mod tls;
pub mod upstream;
