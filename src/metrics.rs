//! One Prometheus registry and typed handles. Every label is bounded —
//! library (from config), resource (SMH's known list or "other"), method
//! (standard methods or "other"), status class — and every per-request
//! handle is resolved once at start-up into an index, so the request path
//! does array indexing, not label hashing.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// SMH resources labelled by name; the last entry, "other", takes the rest.
pub use crate::smh::RESOURCES;
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "other",
];
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Label for requests whose library is not configured (bounded: one value).
pub const UNKNOWN_LIBRARY: &str = "unknown";

/// Latency buckets from 1 ms to 30 s: SMH API calls are tens of ms, token
/// mints a little more, and the tail matters.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub fn resource_index(resource: &str) -> usize {
    crate::smh::resource(resource).0
}

pub fn method_index(method: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

pub fn status_class_index(status: u16) -> usize {
    ((status / 100).clamp(1, 5) - 1) as usize
}

/// Per-request handles for one library. Request series are resolved on
/// first use (once per slot) so the exposition lists only series that
/// happened; after that the request path only indexes.
struct LibraryHandles {
    name: String,
    /// [resource][method][status class]
    requests: Vec<OnceLock<IntCounter>>,
    /// [resource][method]
    duration: Vec<OnceLock<Histogram>>,
    upstream_duration: Histogram,
    mints_ok: IntCounter,
    mints_unavailable: IntCounter,
    mints_rejected: IntCounter,
    mint_duration: Histogram,
    remints: IntCounter,
}

pub struct Metrics {
    pub registry: Registry,
    libraries: Vec<String>,
    handles: Vec<LibraryHandles>,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub in_flight: IntGauge,
    pub connections_h1: IntGauge,
    pub connections_h2: IntGauge,
    pub tls_handshake_failures: IntCounter,
    pub connections_refused: IntCounter,
    pub accept_failures: IntCounter,
    pub connection_timeouts: IntCounterVec,
    pub token_mints_refused_cached: IntCounter,
    pub token_keys_refused: IntCounter,
    pub body_too_large: IntCounter,
    pub panics: IntCounter,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub token_cache_entries: IntGauge,
    pub sessions_cached: IntCounter,
    pub sessions_validated: IntCounter,
    pub sessions_missing: IntCounter,
    pub sessions_invalid: IntCounter,
    pub sessions_unavailable: IntCounter,
    pub session_cache_entries: IntGauge,
    pub audit_written: IntCounter,
    pub audit_dropped: IntCounter,
    pub config_reload_ok: IntCounter,
    pub config_reload_failed: IntCounter,
    pub config_last_reload_success: IntGauge,
    pub certificate_not_after: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("libraries", &self.libraries)
            .finish_non_exhaustive()
    }
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    reg.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    /// Registers every series and resolves the per-library handles.
    pub fn new(libraries: &[String]) -> Self {
        let reg = Registry::new();
        let requests = counter_vec(
            &reg,
            "smh_gateway_requests_total",
            "Client requests answered, by library, SMH resource, method and status class.",
            &["library", "resource", "method", "status_class"],
        );
        let duration = histogram_vec(
            &reg,
            "smh_gateway_request_duration_seconds",
            "Time from request arrival to the end of the response body.",
            &["library", "resource", "method"],
        );
        let upstream = histogram_vec(
            &reg,
            "smh_gateway_upstream_duration_seconds",
            "Time from sending a request to SMH to its response headers.",
            &["library"],
        );
        let mints = counter_vec(
            &reg,
            "smh_gateway_token_mints_total",
            "SMH token mints by outcome (ok, unavailable, rejected).",
            &["library", "outcome"],
        );
        let mint_duration = histogram_vec(
            &reg,
            "smh_gateway_token_mint_duration_seconds",
            "Time one SMH token mint took.",
            &["library"],
        );
        let remints = counter_vec(
            &reg,
            "smh_gateway_token_remints_total",
            "Tokens re-minted after SMH answered InvalidAccessToken.",
            &["library"],
        );
        let sessions = counter_vec(
            &reg,
            "smh_gateway_session_validations_total",
            "Session checks by outcome (cached, validated, missing, invalid, unavailable).",
            &["outcome"],
        );
        let token_lookups = counter_vec(
            &reg,
            "smh_gateway_token_cache_lookups_total",
            "Token cache lookups by result (hit, miss).",
            &["result"],
        );
        let connections = IntGaugeVec::new(
            Opts::new(
                "smh_gateway_open_connections",
                "Open client connections by protocol.",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        reg.register(Box::new(connections.clone()))
            .expect("registered once");
        let audit = counter_vec(
            &reg,
            "smh_gateway_audit_records_total",
            "Audit records by fate (written, dropped when the queue was full).",
            &["fate"],
        );
        let reloads = counter_vec(
            &reg,
            "smh_gateway_config_reloads_total",
            "Configuration reloads (SIGHUP) by result.",
            &["result"],
        );
        let build = IntGaugeVec::new(
            Opts::new(
                "smh_gateway_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid metric");
        reg.register(Box::new(build.clone()))
            .expect("registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let mut libs: Vec<String> = libraries.to_vec();
        libs.push(UNKNOWN_LIBRARY.to_string());
        let handles = libs
            .iter()
            .map(|lib| {
                let slots = RESOURCES.len() * METHODS.len();
                LibraryHandles {
                    name: lib.clone(),
                    requests: (0..slots * STATUS_CLASSES.len())
                        .map(|_| OnceLock::new())
                        .collect(),
                    duration: (0..slots).map(|_| OnceLock::new()).collect(),
                    upstream_duration: upstream.with_label_values(&[lib]),
                    mints_ok: mints.with_label_values(&[lib, "ok"]),
                    mints_unavailable: mints.with_label_values(&[lib, "unavailable"]),
                    mints_rejected: mints.with_label_values(&[lib, "rejected"]),
                    mint_duration: mint_duration.with_label_values(&[lib]),
                    remints: remints.with_label_values(&[lib]),
                }
            })
            .collect();

        Metrics {
            in_flight: gauge(
                &reg,
                "smh_gateway_requests_in_flight",
                "Client requests being served.",
            ),
            connections_h1: connections.with_label_values(&["http1"]),
            connections_h2: connections.with_label_values(&["http2"]),
            tls_handshake_failures: counter(
                &reg,
                "smh_gateway_tls_handshake_failures_total",
                "Client TLS handshakes that failed or timed out.",
            ),
            connections_refused: counter(
                &reg,
                "smh_gateway_connections_refused_total",
                "Client connections closed at once because limits.max_connections were open.",
            ),
            accept_failures: counter(
                &reg,
                "smh_gateway_accept_failures_total",
                "accept() failures for lack of descriptors or memory (the listener backs off).",
            ),
            connection_timeouts: counter_vec(
                &reg,
                "smh_gateway_connection_timeouts_total",
                "HTTP/2 connections closed by a limit: idle, first_request (none sent in time), header_block (an unfinished header block).",
                &["reason"],
            ),
            token_mints_refused_cached: counter(
                &reg,
                "smh_gateway_token_mints_refused_cached_total",
                "Requests answered from the memory of a mint SMH refused, without asking SMH again.",
            ),
            token_keys_refused: counter(
                &reg,
                "smh_gateway_token_keys_refused_total",
                "Requests refused because the user already holds tokens.max_keys_per_user token keys.",
            ),
            body_too_large: counter(
                &reg,
                "smh_gateway_request_body_too_large_total",
                "Requests refused because the body is over limits.max_body_bytes.",
            ),
            panics: counter(
                &reg,
                "smh_gateway_panics_total",
                "Requests whose handling panicked (answered 500; the process keeps serving).",
            ),
            token_cache_hits: token_lookups.with_label_values(&["hit"]),
            token_cache_misses: token_lookups.with_label_values(&["miss"]),
            token_cache_entries: gauge(
                &reg,
                "smh_gateway_token_cache_entries",
                "SMH tokens cached now.",
            ),
            sessions_cached: sessions.with_label_values(&["cached"]),
            sessions_validated: sessions.with_label_values(&["validated"]),
            sessions_missing: sessions.with_label_values(&["missing"]),
            sessions_invalid: sessions.with_label_values(&["invalid"]),
            sessions_unavailable: sessions.with_label_values(&["unavailable"]),
            session_cache_entries: gauge(
                &reg,
                "smh_gateway_session_cache_entries",
                "Verified sessions cached now.",
            ),
            audit_written: audit.with_label_values(&["written"]),
            audit_dropped: audit.with_label_values(&["dropped"]),
            config_reload_ok: reloads.with_label_values(&["ok"]),
            config_reload_failed: reloads.with_label_values(&["failed"]),
            config_last_reload_success: gauge(
                &reg,
                "smh_gateway_config_last_reload_success_timestamp_seconds",
                "Unix time the configuration was last loaded successfully (start-up or SIGHUP).",
            ),
            certificate_not_after: gauge(
                &reg,
                "smh_gateway_certificate_not_after_timestamp_seconds",
                "Unix time the client listener's certificate expires.",
            ),
            libraries: libs,
            handles,
            requests,
            duration,
            registry: reg,
        }
    }

    /// Index of a library's handles; unconfigured ids share "unknown".
    pub fn library_index(&self, library: &str) -> usize {
        self.libraries
            .iter()
            .position(|l| l == library)
            .unwrap_or(self.libraries.len() - 1)
    }

    pub fn observe_request(
        &self,
        lib: usize,
        resource: usize,
        method: usize,
        status: u16,
        elapsed: Duration,
    ) {
        let h = &self.handles[lib];
        let rm = resource * METHODS.len() + method;
        let class = status_class_index(status);
        h.requests[rm * STATUS_CLASSES.len() + class]
            .get_or_init(|| {
                self.requests.with_label_values(&[
                    &h.name,
                    RESOURCES[resource].0,
                    METHODS[method],
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
        h.duration[rm]
            .get_or_init(|| {
                self.duration
                    .with_label_values(&[&h.name, RESOURCES[resource].0, METHODS[method]])
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_upstream(&self, lib: usize, elapsed: Duration) {
        self.handles[lib]
            .upstream_duration
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_mint(&self, lib: usize, outcome: MintOutcome, elapsed: Duration) {
        let h = &self.handles[lib];
        match outcome {
            MintOutcome::Ok => h.mints_ok.inc(),
            MintOutcome::Unavailable => h.mints_unavailable.inc(),
            MintOutcome::Rejected => h.mints_rejected.inc(),
        }
        h.mint_duration.observe(elapsed.as_secs_f64());
    }

    pub fn remint(&self, lib: usize) {
        self.handles[lib].remints.inc();
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum MintOutcome {
    Ok,
    Unavailable,
    Rejected,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_land_on_the_right_series() {
        let m = Metrics::new(&["lib1".to_string()]);
        let lib = m.library_index("lib1");
        m.observe_request(
            lib,
            resource_index("file"),
            method_index(&http::Method::PUT),
            201,
            Duration::from_millis(3),
        );
        m.observe_request(
            m.library_index("nope"),
            resource_index("weird"),
            method_index(&http::Method::GET),
            404,
            Duration::ZERO,
        );
        let text = m.render().unwrap();
        assert!(text.contains(r#"smh_gateway_requests_total{library="lib1",method="PUT",resource="file",status_class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"smh_gateway_requests_total{library="unknown",method="GET",resource="other",status_class="4xx"} 1"#));
        assert!(text.contains("smh_gateway_build_info{version="));
    }
}
