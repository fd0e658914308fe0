//! CORS: browsers call SMH directly today, so pages moving to the gateway
//! need it to answer preflights itself (without credentials — browsers never
//! send them on OPTIONS) and to label every response, errors included, so
//! the page can read SMH's JSON, its `x-smh-*` headers and the request id.

use std::collections::HashSet;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};
use crate::error::GatewayError;

pub struct Cors {
    any_origin: bool,
    origins: HashSet<String>,
    methods: HashSet<Method>,
    methods_value: HeaderValue,
    /// Lower-case names; an entry ending in `*` is a prefix.
    headers: Vec<String>,
    exposed: HeaderValue,
    credentials: bool,
    max_age: HeaderValue,
}

/// What `[cors]` says, parsed: origins checked as `scheme://host[:port]`
/// or `*`, methods and header names valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    pub origins: Vec<String>,
    pub methods: Vec<Method>,
    /// Lower-case names; an entry ending in `*` is a prefix.
    pub headers: Vec<String>,
    pub exposed: Vec<http::HeaderName>,
    pub credentials: bool,
    pub max_age_secs: u64,
}

impl Cors {
    pub fn new(cfg: &CorsSettings) -> Self {
        let origins: HashSet<String> = cfg.origins.iter().cloned().collect();
        let methods: HashSet<Method> = cfg.methods.iter().cloned().collect();
        let mut method_list: Vec<&str> = methods.iter().map(Method::as_str).collect();
        method_list.sort_unstable();
        let exposed: Vec<&str> = cfg.exposed.iter().map(http::HeaderName::as_str).collect();
        Self {
            any_origin: origins.contains("*"),
            origins,
            // Method and header names are tokens, always valid header text.
            methods_value: HeaderValue::from_str(&method_list.join(", "))
                .expect("method names are header-safe"),
            methods,
            headers: cfg.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            exposed: HeaderValue::from_str(&exposed.join(", "))
                .expect("header names are header-safe"),
            credentials: cfg.credentials,
            max_age: HeaderValue::from(cfg.max_age_secs),
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin || origin.to_str().is_ok_and(|o| self.origins.contains(o))
    }

    fn header_allowed(&self, name: &str) -> bool {
        let name = name.trim().to_ascii_lowercase();
        self.headers
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => *allowed == name,
            })
    }

    /// Answers a preflight; `None` when `req` is not one.
    pub fn preflight<B>(&self, req: &Request<B>, request_id: &str) -> Option<Response<Body>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let origin = req.headers().get(header::ORIGIN)?;
        let wanted = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        if !self.origin_allowed(origin) {
            return Some(
                GatewayError::CorsRejected("origin not allowed".into()).to_response(request_id),
            );
        }
        let method_ok = wanted
            .to_str()
            .ok()
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        if !method_ok {
            let mut resp =
                GatewayError::CorsRejected("method not allowed".into()).to_response(request_id);
            self.decorate(Some(origin), &mut resp);
            return Some(resp);
        }
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let names: Vec<&str> = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(bad) = names.iter().find(|h| !self.header_allowed(h)) {
            let mut resp = GatewayError::CorsRejected(format!("header {bad:?} not allowed"))
                .to_response(request_id);
            self.decorate(Some(origin), &mut resp);
            return Some(resp);
        }
        let mut resp = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(body::empty())
            .expect("static response");
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if !names.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        self.decorate(Some(origin), &mut resp);
        Some(resp)
    }

    /// Labels a response for an allowed origin (no-op otherwise).
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
        let h = resp.headers_mut();
        h.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin.filter(|o| self.origin_allowed(o)) else {
            return;
        };
        let allow = if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.exposed.clone());
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}
