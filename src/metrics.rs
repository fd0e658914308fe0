//! One Prometheus registry and typed handles. Every label is bounded —
//! library (from config), resource (SMH's known list or "other"), method
//! (standard methods or "other"), status code (a fixed list or "other"),
//! status class, failure cause — and the request path holds its library's
//! handles ([`LibraryMetrics`]) and indexes into them, no label hashing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    PullingGauge, Registry,
};

use crate::session::jwks::JwksObserver;
use crate::sync::lock;
use crate::upstream::{UpstreamFailure, UpstreamObserver};

/// SMH resources labelled by name; the last entry, "other", takes the rest.
pub use crate::smh::RESOURCES;
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "other",
];
pub const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The statuses the gateway and SMH answer with (its API reference and
/// the gateway's own error mapping), each its own `code` label value,
/// sorted. Anything else is `code="other"` (its `status_class` still
/// says which class): an upstream cannot grow the label set.
pub const STATUS_CODES: &[(u16, &str)] = &[
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (206, "206"),
    (207, "207"),
    (302, "302"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (409, "409"),
    (412, "412"),
    (413, "413"),
    (414, "414"),
    (416, "416"),
    (429, "429"),
    (431, "431"),
    (451, "451"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];
/// The `code` of a status outside [`STATUS_CODES`].
pub const OTHER_CODE: &str = "other";
/// One slot per listed status, then one `other` per status class.
const CODE_SLOTS: usize = STATUS_CODES.len() + STATUS_CLASSES.len();
/// Label for requests whose library is not configured (bounded: one value).
/// Only the request series carry it: nothing is sent upstream or minted
/// for a library that does not exist.
pub const UNKNOWN_LIBRARY: &str = "unknown";
const MINT_OUTCOMES: [&str; 3] = ["ok", "unavailable", "rejected"];

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

/// A status's slot among the `code` label values.
fn code_slot(status: u16) -> usize {
    match STATUS_CODES.binary_search_by_key(&status, |(c, _)| *c) {
        Ok(i) => i,
        Err(_) => STATUS_CODES.len() + status_class_index(status),
    }
}

/// The `code` and `status_class` label values of a slot.
fn code_labels(slot: usize) -> (&'static str, &'static str) {
    match STATUS_CODES.get(slot) {
        Some((status, text)) => (text, STATUS_CLASSES[status_class_index(*status)]),
        None => (OTHER_CODE, STATUS_CLASSES[slot - STATUS_CODES.len()]),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The labelled families every library's handles come from.
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_failures: IntCounterVec,
    upstream_idle: IntGaugeVec,
    mints: IntCounterVec,
    mint_duration: HistogramVec,
    remints: IntCounterVec,
}

/// One request counter per `code` slot, for one resource and method.
type CodeSlots = Box<[OnceLock<IntCounter>]>;

/// One library's handles. The request path holds an `Arc` of these (from
/// [`Metrics::library`]) and only indexes. Request series are made on
/// first use (once per slot), so the exposition lists only what happened;
/// the upstream series exist from the start for configured libraries and
/// not at all for [`UNKNOWN_LIBRARY`].
pub struct LibraryMetrics {
    name: Arc<str>,
    families: Arc<Families>,
    /// [resource][method] -> [code slot]; the inner table is allocated the
    /// first time its resource and method are seen.
    requests: Box<[OnceLock<CodeSlots>]>,
    /// [resource][method]
    duration: Box<[OnceLock<Histogram>]>,
    upstream: Option<UpstreamSeries>,
    /// Which request series exist, so that forgetting the library removes
    /// exactly those; and whether it was forgotten, so a request still
    /// holding these handles cannot bring a removed series back.
    made: Mutex<Made>,
}

#[derive(Default)]
struct Made {
    forgotten: bool,
    requests: Vec<(usize, usize, usize)>,
    durations: Vec<(usize, usize)>,
}

struct UpstreamSeries {
    duration: Histogram,
    /// By [`UpstreamFailure::index`].
    failures: Vec<IntCounter>,
    idle: IntGauge,
    /// In [`MINT_OUTCOMES`] order.
    mints: [IntCounter; 3],
    mint_duration: Histogram,
    remints: IntCounter,
}

impl std::fmt::Debug for LibraryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibraryMetrics")
            .field("library", &self.name)
            .finish_non_exhaustive()
    }
}

/// A counter registered nowhere: what a forgotten library's handles make.
fn detached_counter() -> IntCounter {
    IntCounter::new("smh_gateway_detached", "not exported").expect("valid metric")
}

fn detached_histogram() -> Histogram {
    Histogram::with_opts(HistogramOpts::new("smh_gateway_detached", "not exported"))
        .expect("valid metric")
}

impl LibraryMetrics {
    fn new(name: &str, families: Arc<Families>, upstream: bool) -> Self {
        let upstream = upstream.then(|| {
            let f = &families;
            UpstreamSeries {
                duration: f.upstream_duration.with_label_values(&[name]),
                failures: UpstreamFailure::ALL
                    .iter()
                    .map(|c| f.upstream_failures.with_label_values(&[name, c.as_str()]))
                    .collect(),
                idle: f.upstream_idle.with_label_values(&[name]),
                mints: MINT_OUTCOMES.map(|o| f.mints.with_label_values(&[name, o])),
                mint_duration: f.mint_duration.with_label_values(&[name]),
                remints: f.remints.with_label_values(&[name]),
            }
        });
        let slots = RESOURCES.len() * METHODS.len();
        Self {
            name: Arc::from(name),
            families,
            requests: (0..slots).map(|_| OnceLock::new()).collect(),
            duration: (0..slots).map(|_| OnceLock::new()).collect(),
            upstream,
            made: Mutex::new(Made::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn observe_request(&self, resource: usize, method: usize, status: u16, elapsed: Duration) {
        let rm = resource * METHODS.len() + method;
        let code = code_slot(status);
        self.requests[rm].get_or_init(|| (0..CODE_SLOTS).map(|_| OnceLock::new()).collect())[code]
            .get_or_init(|| self.make_request_series(resource, method, code))
            .inc();
        self.duration[rm]
            .get_or_init(|| self.make_duration_series(resource, method))
            .observe(elapsed.as_secs_f64());
    }

    fn make_request_series(&self, resource: usize, method: usize, code: usize) -> IntCounter {
        let mut made = lock(&self.made);
        if made.forgotten {
            return detached_counter();
        }
        made.requests.push((resource, method, code));
        let (code, class) = code_labels(code);
        self.families.requests.with_label_values(&[
            &self.name,
            RESOURCES[resource].0,
            METHODS[method],
            code,
            class,
        ])
    }

    fn make_duration_series(&self, resource: usize, method: usize) -> Histogram {
        let mut made = lock(&self.made);
        if made.forgotten {
            return detached_histogram();
        }
        made.durations.push((resource, method));
        self.families.duration.with_label_values(&[
            &self.name,
            RESOURCES[resource].0,
            METHODS[method],
        ])
    }

    pub fn observe_upstream(&self, elapsed: Duration) {
        if let Some(u) = &self.upstream {
            u.duration.observe(elapsed.as_secs_f64());
        }
    }

    pub fn observe_mint(&self, outcome: MintOutcome, elapsed: Duration) {
        if let Some(u) = &self.upstream {
            u.mints[outcome as usize].inc();
            u.mint_duration.observe(elapsed.as_secs_f64());
        }
    }

    pub fn remint(&self) {
        if let Some(u) = &self.upstream {
            u.remints.inc();
        }
    }

    /// Removes every series of this library from the exposition. Handles
    /// still held (by requests in flight) keep counting into series nobody
    /// exports.
    fn forget(&self) {
        let mut made = lock(&self.made);
        made.forgotten = true;
        let f = &self.families;
        let name: &str = &self.name;
        // Errors only mean "no such series": nothing to remove.
        for &(r, m, c) in &made.requests {
            let (code, class) = code_labels(c);
            let _ =
                f.requests
                    .remove_label_values(&[name, RESOURCES[r].0, METHODS[m], code, class]);
        }
        for &(r, m) in &made.durations {
            let _ = f
                .duration
                .remove_label_values(&[name, RESOURCES[r].0, METHODS[m]]);
        }
        made.requests.clear();
        made.durations.clear();
        if self.upstream.is_some() {
            let _ = f.upstream_duration.remove_label_values(&[name]);
            for c in UpstreamFailure::ALL {
                let _ = f.upstream_failures.remove_label_values(&[name, c.as_str()]);
            }
            let _ = f.upstream_idle.remove_label_values(&[name]);
            for o in MINT_OUTCOMES {
                let _ = f.mints.remove_label_values(&[name, o]);
            }
            let _ = f.mint_duration.remove_label_values(&[name]);
            let _ = f.remints.remove_label_values(&[name]);
        }
    }
}

impl UpstreamObserver for LibraryMetrics {
    fn failed(&self, cause: UpstreamFailure) {
        if let Some(u) = &self.upstream {
            u.failures[cause.index()].inc();
        }
    }

    fn idle_connections(&self, n: usize) {
        if let Some(u) = &self.upstream {
            u.idle.set(n as i64);
        }
    }
}

/// The JWKS series, registered with the first fetch: a gateway without a
/// JWKS URL exports none (a last-success time of 0 would page someone).
struct JwksSeries {
    ok: IntCounter,
    failed: IntCounter,
    last_success: IntGauge,
}

/// Reads the audit queue's depth at scrape time (set by the audit sink).
type DepthSource = Box<dyn Fn() -> usize + Send + Sync>;

pub struct Metrics {
    pub registry: Registry,
    families: Arc<Families>,
    libraries: RwLock<HashMap<String, Arc<LibraryMetrics>>>,
    unknown: Arc<LibraryMetrics>,
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
    pub audit_failed: IntCounter,
    audit_queue: Arc<RwLock<Option<DepthSource>>>,
    jwks: OnceLock<JwksSeries>,
    pub config_reload_ok: IntCounter,
    pub config_reload_failed: IntCounter,
    pub config_last_reload_success: IntGauge,
    pub certificate_not_after: IntGauge,
    pub revocation: RevocationMetrics,
}

/// Revocations: applied, their SMH deletes, and the Redis link.
pub struct RevocationMetrics {
    /// Made on this replica (admin route or logout).
    pub applied_local: IntCounter,
    /// Received from another replica through Redis.
    pub applied_replica: IntCounter,
    pub active: IntGauge,
    /// SMH token deletes by library and result.
    pub deletions: IntCounterVec,
    /// SMH deletes not yet confirmed, retried in the background.
    pub pending_deletions: IntGauge,
    redis_state: IntGaugeVec,
    pub redis_lag_seconds: prometheus::Gauge,
    pub pending_publish: IntGauge,
}

/// The states `smh_gateway_revocation_redis_state` has a series for.
pub const REDIS_STATES: &[&str] = &["disabled", "connecting", "connected", "degraded"];

impl RevocationMetrics {
    fn new(reg: &Registry) -> Self {
        let applied = counter_vec(
            reg,
            "smh_gateway_revocations_total",
            "Revocations applied on this replica: made here (local) or received from another replica through Redis (replica).",
            &["source"],
        );
        let redis_state = gauge_vec(
            reg,
            "smh_gateway_revocation_redis_state",
            "1 for the current state of the link to the revocation store (disabled: no revocation.redis_url; degraded: Redis unreachable, serving on the local list).",
            &["state"],
        );
        let lag = prometheus::Gauge::new(
            "smh_gateway_revocation_redis_lag_seconds",
            "Time from publication on another replica to application here, of the last revocation received.",
        )
        .expect("valid metric");
        reg.register(Box::new(lag.clone()))
            .expect("registered once");
        let m = Self {
            applied_local: applied.with_label_values(&["local"]),
            applied_replica: applied.with_label_values(&["replica"]),
            active: gauge(
                reg,
                "smh_gateway_revocations_active",
                "Revocations in force on this replica (they expire after the longest session lifetime).",
            ),
            deletions: counter_vec(
                reg,
                "smh_gateway_revocation_smh_deletions_total",
                "Calls that delete a revoked user's tokens at SMH, by library and result (confirmed, refused by SMH, failed after retries).",
                &["library", "result"],
            ),
            pending_deletions: gauge(
                reg,
                "smh_gateway_revocation_pending_deletions",
                "SMH token deletes not confirmed yet, retried in the background until they succeed or the revocation expires.",
            ),
            redis_state,
            redis_lag_seconds: lag,
            pending_publish: gauge(
                reg,
                "smh_gateway_revocation_pending_publish",
                "Revocations made here that wait for Redis to be shared with the other replicas.",
            ),
        };
        m.set_redis_state("disabled");
        m
    }

    /// Sets the state series: 1 for `state`, 0 for the others.
    pub fn set_redis_state(&self, state: &str) {
        for s in REDIS_STATES {
            self.redis_state
                .with_label_values(&[s])
                .set(i64::from(*s == state));
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let libraries: Vec<String> = self
            .libraries
            .read()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Metrics")
            .field("libraries", &libraries)
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

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("registered once");
    g
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
    /// Registers every series and the handles of `libraries`.
    pub fn new(libraries: &[String]) -> Self {
        let reg = Registry::new();
        let families = Arc::new(Families {
            requests: counter_vec(
                &reg,
                "smh_gateway_requests_total",
                "Client requests answered, by library, SMH resource, method, status code and status class.",
                &["library", "resource", "method", "code", "status_class"],
            ),
            duration: histogram_vec(
                &reg,
                "smh_gateway_request_duration_seconds",
                "Time from request arrival to the end of the response body.",
                &["library", "resource", "method"],
            ),
            upstream_duration: histogram_vec(
                &reg,
                "smh_gateway_upstream_duration_seconds",
                "Time from sending a request to SMH to its response headers.",
                &["library"],
            ),
            upstream_failures: counter_vec(
                &reg,
                "smh_gateway_upstream_failures_total",
                "Calls to SMH (API and token API) that failed, by cause: connect, tls, timeout, reset, protocol.",
                &["library", "cause"],
            ),
            upstream_idle: gauge_vec(
                &reg,
                "smh_gateway_upstream_idle_connections",
                "Idle HTTP/1.1 connections to SMH held in the library's pool.",
                &["library"],
            ),
            mints: counter_vec(
                &reg,
                "smh_gateway_token_mints_total",
                "SMH token mints by outcome (ok, unavailable, rejected).",
                &["library", "outcome"],
            ),
            mint_duration: histogram_vec(
                &reg,
                "smh_gateway_token_mint_duration_seconds",
                "Time one SMH token mint took.",
                &["library"],
            ),
            remints: counter_vec(
                &reg,
                "smh_gateway_token_remints_total",
                "Tokens re-minted after SMH answered InvalidAccessToken.",
                &["library"],
            ),
        });
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
        let connections = gauge_vec(
            &reg,
            "smh_gateway_open_connections",
            "Open client connections by protocol.",
            &["protocol"],
        );
        let audit = counter_vec(
            &reg,
            "smh_gateway_audit_records_total",
            "Audit records by fate: written, dropped (the queue was full), failed (the sink refused the write).",
            &["fate"],
        );
        let audit_queue: Arc<RwLock<Option<DepthSource>>> = Arc::default();
        let source = audit_queue.clone();
        let depth = PullingGauge::new(
            "smh_gateway_audit_queue_depth",
            "Audit records queued for the writer and not yet written.",
            Box::new(
                move || match &*source.read().unwrap_or_else(|e| e.into_inner()) {
                    Some(f) => f() as f64,
                    None => 0.0,
                },
            ),
        )
        .expect("valid metric");
        reg.register(Box::new(depth)).expect("registered once");
        // CPU seconds, resident memory, open and maximum descriptors, start
        // time, threads, read from /proc at scrape by the crate's own
        // collector (`process` feature; Linux only).
        #[cfg(target_os = "linux")]
        reg.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
        let reloads = counter_vec(
            &reg,
            "smh_gateway_config_reloads_total",
            "Configuration reloads (SIGHUP, POST /admin/v1/reload) by result.",
            &["result"],
        );
        let build = gauge_vec(
            &reg,
            "smh_gateway_build_info",
            "Build information; the value is always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let unknown = Arc::new(LibraryMetrics::new(
            UNKNOWN_LIBRARY,
            families.clone(),
            false,
        ));
        let metrics = Metrics {
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
            audit_failed: audit.with_label_values(&["failed"]),
            audit_queue,
            jwks: OnceLock::new(),
            config_reload_ok: reloads.with_label_values(&["ok"]),
            config_reload_failed: reloads.with_label_values(&["failed"]),
            config_last_reload_success: gauge(
                &reg,
                "smh_gateway_config_last_reload_success_timestamp_seconds",
                "Unix time the configuration was last loaded successfully (start-up or reload).",
            ),
            certificate_not_after: gauge(
                &reg,
                "smh_gateway_certificate_not_after_timestamp_seconds",
                "Unix time the client listener's certificate expires.",
            ),
            revocation: RevocationMetrics::new(&reg),
            families,
            libraries: RwLock::new(HashMap::new()),
            unknown,
            registry: reg,
        };
        for id in libraries {
            metrics.library(id);
        }
        metrics
    }

    /// The handles of configured library `id`, made (with its upstream
    /// series) on the first call; later calls return the same handles.
    pub fn library(&self, id: &str) -> Arc<LibraryMetrics> {
        if let Some(lib) = self
            .libraries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return lib.clone();
        }
        self.libraries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(LibraryMetrics::new(id, self.families.clone(), true)))
            .clone()
    }

    /// Removes library `id`'s series from the exposition (a reload dropped
    /// it). A later [`Metrics::library`] for the same id starts afresh.
    pub fn forget_library(&self, id: &str) {
        let removed = self
            .libraries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(lib) = removed {
            lib.forget();
        }
        for result in ["confirmed", "refused", "failed"] {
            let _ = self.revocation.deletions.remove_label_values(&[id, result]);
        }
    }

    /// The handles for requests naming a library that is not configured.
    pub fn unknown_library(&self) -> &Arc<LibraryMetrics> {
        &self.unknown
    }

    /// Where `smh_gateway_audit_queue_depth` reads the queue's depth.
    pub fn sample_audit_queue(&self, depth: impl Fn() -> usize + Send + Sync + 'static) {
        *self.audit_queue.write().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(depth));
    }

    fn jwks_series(&self) -> &JwksSeries {
        self.jwks.get_or_init(|| {
            let reg = &self.registry;
            let fetches = counter_vec(
                reg,
                "smh_gateway_jwks_refreshes_total",
                "Fetches of the JWKS URL (start-up, periodic, unknown kid) by result.",
                &["result"],
            );
            JwksSeries {
                ok: fetches.with_label_values(&["ok"]),
                failed: fetches.with_label_values(&["failed"]),
                last_success: gauge(
                    reg,
                    "smh_gateway_jwks_last_success_timestamp_seconds",
                    "Unix time the JWKS URL was last fetched successfully.",
                ),
            }
        })
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

impl JwksObserver for Metrics {
    fn fetched(&self, ok: bool) {
        let s = self.jwks_series();
        if ok {
            s.ok.inc();
            s.last_success.set(unix_now());
        } else {
            s.failed.inc();
        }
    }
}

/// In [`MINT_OUTCOMES`] order: the discriminant indexes the handles.
pub use crate::smh::token::MintOutcome;

impl crate::smh::token::MintObserver for LibraryMetrics {
    fn minted(&self, outcome: MintOutcome, elapsed: Duration) {
        self.observe_mint(outcome, elapsed);
    }
}

impl crate::smh::token::TokenObserver for Metrics {
    fn refusal_remembered(&self) {
        self.token_mints_refused_cached.inc();
    }
    fn keys_refused(&self) {
        self.token_keys_refused.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_of(text: &str, library: &str) -> Vec<String> {
        let label = format!("library=\"{library}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn handles_land_on_the_right_series() {
        let m = Metrics::new(&["lib1".to_string()]);
        let lib = m.library("lib1");
        lib.observe_request(
            resource_index("file"),
            method_index(&http::Method::PUT),
            201,
            Duration::from_millis(3),
        );
        m.unknown_library().observe_request(
            resource_index("weird"),
            method_index(&http::Method::GET),
            404,
            Duration::ZERO,
        );
        let text = m.render().unwrap();
        assert!(text.contains(r#"smh_gateway_requests_total{code="201",library="lib1",method="PUT",resource="file",status_class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"smh_gateway_requests_total{code="404",library="unknown",method="GET",resource="other",status_class="4xx"} 1"#), "{text}");
        assert!(text.contains("smh_gateway_build_info{version="));
    }

    #[test]
    fn statuses_outside_the_list_are_other_within_their_class() {
        assert!(STATUS_CODES.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        for (status, text) in STATUS_CODES {
            assert_eq!(text.parse::<u16>().unwrap(), *status);
            assert_eq!(code_labels(code_slot(*status)).0, *text);
        }
        for (status, class) in [(101, "1xx"), (299, "2xx"), (418, "4xx"), (599, "5xx")] {
            assert_eq!(code_labels(code_slot(status)), (OTHER_CODE, class));
        }
        let m = Metrics::new(&["lib1".to_string()]);
        let lib = m.library("lib1");
        for status in [418, 419, 420, 302] {
            lib.observe_request(0, 0, status, Duration::ZERO);
        }
        let text = m.render().unwrap();
        assert!(text.contains(r#"code="other",library="lib1",method="GET",resource="authority",status_class="4xx"} 3"#), "{text}");
        assert!(text.contains(r#"code="302",library="lib1",method="GET",resource="authority",status_class="3xx"} 1"#), "{text}");
    }

    #[test]
    fn the_unknown_library_has_request_series_only() {
        let m = Metrics::new(&["lib1".to_string()]);
        let unknown = m.unknown_library();
        unknown.observe_upstream(Duration::from_millis(1));
        unknown.observe_mint(MintOutcome::Ok, Duration::from_millis(1));
        unknown.remint();
        unknown.failed(UpstreamFailure::Reset);
        unknown.idle_connections(3);
        let text = m.render().unwrap();
        assert!(series_of(&text, UNKNOWN_LIBRARY).is_empty(), "{text}");
        unknown.observe_request(0, 0, 404, Duration::ZERO);
        let text = m.render().unwrap();
        let series = series_of(&text, UNKNOWN_LIBRARY);
        assert!(!series.is_empty());
        assert!(
            series
                .iter()
                .all(|l| l.starts_with("smh_gateway_requests_total")
                    || l.starts_with("smh_gateway_request_duration_seconds")),
            "{series:?}"
        );
        // A configured library has its upstream series from the start.
        for cause in UpstreamFailure::ALL {
            let line = format!(
                "smh_gateway_upstream_failures_total{{cause=\"{cause}\",library=\"lib1\"}} 0"
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(text.contains("smh_gateway_upstream_idle_connections{library=\"lib1\"} 0"));
    }

    #[test]
    fn libraries_are_added_once_and_forgotten_whole() {
        let m = Metrics::new(&["lib1".to_string()]);
        let a = m.library("lib2");
        assert!(
            Arc::ptr_eq(&a, &m.library("lib2")),
            "one set of handles per id"
        );
        a.observe_request(2, 1, 200, Duration::ZERO);
        a.observe_upstream(Duration::ZERO);
        a.observe_mint(MintOutcome::Rejected, Duration::ZERO);
        a.failed(UpstreamFailure::Tls);
        m.library("lib1").observe_request(2, 1, 200, Duration::ZERO);
        assert!(!series_of(&m.render().unwrap(), "lib2").is_empty());

        m.forget_library("lib2");
        let text = m.render().unwrap();
        assert_eq!(series_of(&text, "lib2"), Vec::<String>::new(), "{text}");
        assert!(!series_of(&text, "lib1").is_empty(), "other libraries stay");
        // A request still holding the old handles does not bring any back.
        a.observe_request(2, 1, 200, Duration::ZERO);
        a.observe_request(3, 0, 503, Duration::ZERO);
        a.failed(UpstreamFailure::Tls);
        assert!(series_of(&m.render().unwrap(), "lib2").is_empty());
        // Added again (a reload brought it back), it starts afresh.
        let b = m.library("lib2");
        assert!(!Arc::ptr_eq(&a, &b));
        b.observe_request(2, 1, 200, Duration::ZERO);
        let text = m.render().unwrap();
        assert!(
            text.contains(r#"smh_gateway_requests_total{code="200",library="lib2",method="HEAD",resource="directory",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"smh_gateway_upstream_failures_total{cause="tls",library="lib2"} 0"#)
        );
    }

    #[test]
    fn jwks_series_appear_with_the_first_fetch() {
        let m = Metrics::new(&[]);
        assert!(!m.render().unwrap().contains("smh_gateway_jwks"));
        m.fetched(false);
        let text = m.render().unwrap();
        assert!(text.contains(r#"smh_gateway_jwks_refreshes_total{result="failed"} 1"#));
        assert!(text.contains("smh_gateway_jwks_last_success_timestamp_seconds 0"));
        m.fetched(true);
        let text = m.render().unwrap();
        assert!(text.contains(r#"smh_gateway_jwks_refreshes_total{result="ok"} 1"#));
        assert!(!text.contains("smh_gateway_jwks_last_success_timestamp_seconds 0"));
    }
}
