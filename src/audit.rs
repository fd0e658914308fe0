//! Operator audit: exactly one JSON line per request, refused ones
//! included, naming who did what. Writing never blocks the request path:
//! records go through a bounded queue to a writer thread, and when the
//! queue is full the record is dropped and counted instead.
//!
//! Records never contain a token, secret, cookie or credential: they are
//! built from typed fields (no headers, no query string).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::oneshot;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::request_id::RequestId;

/// Where audit records go.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    #[default]
    Stdout,
    File,
    Both,
    Off,
}

/// What `[audit]` says, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub sink: AuditSink,
    pub file: Option<PathBuf>,
    pub max_file_bytes: u64,
    pub max_files: u32,
    pub queue_capacity: usize,
}

/// While records keep coming, the writer naps this long between batches
/// instead of waiting on the queue: a waiting writer must be woken by
/// the request that queues the next record (a futex syscall on the
/// request path, and a context switch, per record under load); a napping
/// one is not. Records reach the sink within one interval. When a nap
/// ends with nothing queued, the writer waits on the queue again, so an
/// idle gateway's writer never wakes up.
const WRITER_INTERVAL: Duration = Duration::from_millis(10);
/// Records are about 400 bytes; a batch is written out in one `write`
/// when the queue is drained or when it reaches this size, whichever
/// comes first (std's 8 KiB buffer wrote every 20-odd records).
const SINK_BUFFER_BYTES: usize = 64 * 1024;
/// A failing sink (a full disk) is reported at most once per this
/// interval, with the number of records lost since the last report: one
/// line per lost record would flood the log that is meant to say so.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// [`Audit::flush`] gives up after this: at shutdown, a sink that cannot
/// take a batch in this long is failing, and the process must still stop.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One request, as the audit trail records it. Fields stay typed until the
/// writer thread serialises them: the request path only moves values.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub time: SystemTime,
    pub request_id: RequestId,
    pub user_id: Option<Arc<str>>,
    pub client_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub library: Option<Arc<str>>,
    /// The space and the target path below it, as sent (no query string).
    pub target: Option<Target>,
    pub method: Method,
    pub resource: Option<Cow<'static, str>>,
    /// The operation without its resource: `list`, `info`, `upload`, or a
    /// full name such as `cors.preflight` when there is no resource.
    pub operation: Option<&'static str>,
    pub status: u16,
    /// SMH's error code, or the gateway's own for refusals.
    pub code: Option<Cow<'static, str>>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency: Duration,
    pub upstream_latency: Option<Duration>,
    /// hit, miss or reminted.
    pub token: Option<&'static str>,
    pub client_addr: Option<SocketAddr>,
}

/// A request's space and path below its library, copied out of the URI
/// once (one allocation) and sliced when the record is written.
#[derive(Debug, Clone)]
pub struct Target {
    text: Box<str>,
    /// Length of the space prefix of `text`, when there is a space; the path
    /// follows it after one `/`.
    space_len: Option<usize>,
}

impl Target {
    pub fn new(space: Option<&str>, path: &str) -> Self {
        match space {
            Some(sp) => {
                let mut text = String::with_capacity(sp.len() + 1 + path.len());
                text.push_str(sp);
                text.push('/');
                text.push_str(path);
                Self {
                    text: text.into_boxed_str(),
                    space_len: Some(sp.len()),
                }
            }
            None => Self {
                text: path.into(),
                space_len: None,
            },
        }
    }

    pub fn space(&self) -> Option<&str> {
        self.space_len.map(|n| &self.text[..n])
    }

    pub fn path(&self) -> &str {
        match self.space_len {
            Some(n) => &self.text[n + 1..],
            None => &self.text,
        }
    }
}

impl AuditRecord {
    /// Appends the record to `out` as one JSON object and a newline. The
    /// field order is part of the format: keep it stable.
    ///
    /// The keys are fixed ASCII and written as they are; only the values go
    /// through serde_json (string escaping, number formatting). Through a
    /// `Serialize` map every key went through the escaper too: about 40%
    /// of the cost of a record. Composite values (timestamp,
    /// operation, address) are formatted on the stack and escaped once.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut j = JsonObject::start(out);
        j.str("time", Some(rfc3339(self.time).as_str()));
        j.str("request_id", Some(self.request_id.as_str()));
        j.str("user_id", self.user_id.as_deref());
        j.str("client_id", self.client_id.as_deref());
        j.str("session_id", self.session_id.as_deref());
        j.str("library", self.library.as_deref());
        j.str("space", self.target.as_ref().and_then(Target::space));
        j.str("method", Some(self.method.as_str()));
        j.str("resource", self.resource.as_deref());
        let operation = self.operation.map(|op| match self.resource.as_deref() {
            Some(r) => StackStr::joined(&[r, ".", op]),
            None => StackStr::joined(&[op]),
        });
        j.str("operation", operation.as_ref().map(StackStr::as_str));
        j.str("path", self.target.as_ref().map(Target::path));
        j.value("status", &self.status);
        j.str("code", self.code.as_deref());
        j.value("request_bytes", &self.request_bytes);
        j.value("response_bytes", &self.response_bytes);
        j.value("latency_ms", &ms(self.latency));
        j.value("upstream_latency_ms", &self.upstream_latency.map(ms));
        j.str("token", self.token);
        let addr = self.client_addr.map(address);
        j.str("client_addr", addr.as_ref().map(StackStr::as_str));
        j.end();
    }
}

/// A flat JSON object written field by field into a byte buffer.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn start(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// `key` is one of the record's own names: plain ASCII, nothing to escape.
    fn key(&mut self, key: &'static str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !std::mem::take(&mut self.empty) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &'static str, v: Option<&str>) {
        self.value(key, &v);
    }

    fn value<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) {
        self.key(key);
        // Writing to a Vec cannot fail, and strings, integers and floats
        // always serialise (a non-finite float becomes null).
        let _ = serde_json::to_writer(&mut *self.out, v);
    }

    fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Room for the longest composite field: a resource and operation name
/// pair, or `[v6 address%scope]:port` (at most 58 bytes).
const STACK_STR_BYTES: usize = 96;

/// A short string built on the stack; what does not fit is cut at a
/// character boundary (only possible for names we do not produce).
struct StackStr {
    buf: [u8; STACK_STR_BYTES],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        Self {
            buf: [0; STACK_STR_BYTES],
            len: 0,
        }
    }
}

impl StackStr {
    fn joined(parts: &[&str]) -> Self {
        let mut b = Self::default();
        for p in parts {
            let _ = std::fmt::Write::write_str(&mut b, p);
        }
        b
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = STACK_STR_BYTES - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// `a.b.c.d:port` with `itoa` (`Display` goes through the formatting
/// machinery once per octet); IPv6, rare here, through `Display`.
fn address(a: SocketAddr) -> StackStr {
    let mut b = StackStr::default();
    let mut digits = itoa::Buffer::new();
    match a {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = std::fmt::Write::write_str(&mut b, ".");
                }
                let _ = std::fmt::Write::write_str(&mut b, digits.format(octet));
            }
            let _ = std::fmt::Write::write_str(&mut b, ":");
            let _ = std::fmt::Write::write_str(&mut b, digits.format(v4.port()));
        }
        SocketAddr::V6(_) => {
            // Cannot fail: an IPv6 address with scope and port fits.
            let _ = std::fmt::Write::write_fmt(&mut b, format_args!("{a}"));
        }
    }
    b
}

/// UTC, RFC 3339, microseconds: fixed width, so lines sort as text.
fn rfc3339(time: SystemTime) -> StackStr {
    // Digits written by hand: through `write!` padding, this was the
    // single most expensive part of encoding a record.
    fn digits(dst: &mut [u8], mut v: u32) {
        for d in dst.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let t = time::OffsetDateTime::from(time);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut b[0..4], t.year().clamp(0, 9999) as u32);
    digits(&mut b[5..7], u8::from(t.month()).into());
    digits(&mut b[8..10], t.day().into());
    digits(&mut b[11..13], t.hour().into());
    digits(&mut b[14..16], t.minute().into());
    digits(&mut b[17..19], t.second().into());
    digits(&mut b[20..26], t.microsecond());
    StackStr::joined(&[std::str::from_utf8(&b).unwrap_or_default()])
}

/// What the writer thread is sent. Records travel by value: boxing them
/// to shrink the rare variants would allocate once per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(AuditRecord),
    /// A line that is not a request ([`Audit::event`]), already encoded.
    Event(Box<[u8]>),
    /// Write what came before to the file as it is, then reopen its path.
    Reopen,
    /// Answered once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// The request path's handle: `record` never blocks.
#[derive(Clone)]
pub struct Audit {
    /// tokio's bounded channel grows in small blocks as records queue up;
    /// std's `sync_channel` would reserve every slot up front (tens of MiB
    /// for the default capacity) whether or not traffic ever needs them.
    tx: Option<Sender<Msg>>,
    /// Set by [`Audit::reopen`] when the queue had no room for the
    /// request; the writer then reopens at the end of its batch.
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.tx.is_some())
            .finish()
    }
}

/// Where the writer thread writes.
struct Sinks {
    /// Standard output (tests put other streams here).
    stdout: Option<StreamSink<Box<dyn Write + Send>>>,
    file: Option<RotatingFile>,
}

impl Audit {
    /// Starts the writer thread for `cfg` (none when the sink is `off`).
    pub fn start(cfg: &AuditSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        if cfg.sink == AuditSink::Off {
            return Ok(Self::disabled(metrics));
        }
        let file = match cfg.sink {
            AuditSink::File | AuditSink::Both => {
                let path = cfg.file.clone().ok_or_else(|| {
                    anyhow::anyhow!("audit.file is required for sink {:?}", cfg.sink)
                })?;
                Some(RotatingFile::open(path, cfg.max_file_bytes, cfg.max_files)?)
            }
            _ => None,
        };
        let stdout = matches!(cfg.sink, AuditSink::Stdout | AuditSink::Both)
            .then(|| StreamSink::new(Box::new(io::stdout()) as Box<dyn Write + Send>));
        Self::spawn(Sinks { stdout, file }, cfg.queue_capacity, metrics)
    }

    fn spawn(sinks: Sinks, capacity: usize, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let mut writer = Writer::new(sinks, reopen.clone(), metrics.clone());
        // Queued, plus taken by the writer and not yet written: with a
        // stuck sink, written + dropped + this accounts for every record.
        let weak = tx.downgrade();
        let held = writer.held.clone();
        metrics.sample_audit_queue(move || {
            let queued = weak
                .upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity());
            queued + held.load(Ordering::Relaxed)
        });
        std::thread::Builder::new()
            .name("smh-audit".into())
            .spawn(move || {
                write_loop(&mut ChannelQueue(rx), &mut writer, || {
                    std::thread::sleep(WRITER_INTERVAL)
                })
            })?;
        Ok(Self {
            tx: Some(tx),
            reopen,
            metrics,
        })
    }

    /// A sink that discards (for benches and embedded use).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self {
            tx: None,
            reopen: Arc::default(),
            metrics,
        }
    }

    /// False when the sink is `off`: callers can skip building records.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn record(&self, rec: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Record(rec)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.audit_dropped.inc(),
            Err(TrySendError::Closed(_)) => self.metrics.audit_dropped.inc(),
        }
    }

    /// Records something other than a request (a revocation, a logout): one
    /// JSON line `{"time": ..., "event": kind, ...fields}` in the same
    /// sinks, counted like request records.
    pub fn event(&self, kind: &'static str, fields: serde_json::Map<String, serde_json::Value>) {
        let Some(tx) = &self.tx else { return };
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(b"{\"time\":");
        let _ = serde_json::to_writer(&mut line, rfc3339(SystemTime::now()).as_str());
        line.extend_from_slice(b",\"event\":");
        let _ = serde_json::to_writer(&mut line, kind);
        for (k, v) in &fields {
            if k == "time" || k == "event" {
                continue;
            }
            line.push(b',');
            let _ = serde_json::to_writer(&mut line, k);
            line.push(b':');
            let _ = serde_json::to_writer(&mut line, v);
        }
        line.extend_from_slice(b"}\n");
        if tx.try_send(Msg::Event(line.into_boxed_slice())).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    /// Reopens the audit file at its path once the records queued so far
    /// are written (SIGUSR1: logrotate moved the file and wants a new one).
    /// Never blocks: with the queue full, the writer is busy and sees the
    /// request at the end of its batch instead.
    pub fn reopen(&self) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Msg::Reopen).is_err() {
            self.reopen.store(true, Ordering::Release);
        }
    }

    /// Waits until every record queued before this call has been written
    /// or has failed; false when that took longer than [`FLUSH_TIMEOUT`]
    /// or the writer is gone.
    pub async fn flush(&self) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (done, written) = oneshot::channel();
        let flushed = async { tx.send(Msg::Flush(done)).await.is_ok() && written.await.is_ok() };
        tokio::time::timeout(FLUSH_TIMEOUT, flushed)
            .await
            .unwrap_or(false)
    }
}

/// The writer's view of its queue (a channel; tests script one).
trait Queue {
    /// Waits for the next message; `None` once every sender is gone.
    fn wait(&mut self) -> Option<Msg>;
    fn poll(&mut self) -> Result<Msg, Drained>;
}

/// Why [`Queue::poll`] has no message.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    Empty,
    Closed,
}

struct ChannelQueue(Receiver<Msg>);

impl Queue for ChannelQueue {
    fn wait(&mut self) -> Option<Msg> {
        self.0.blocking_recv()
    }

    fn poll(&mut self) -> Result<Msg, Drained> {
        self.0.try_recv().map_err(|e| match e {
            TryRecvError::Empty => Drained::Empty,
            TryRecvError::Disconnected => Drained::Closed,
        })
    }
}

/// Idle, the writer waits on the queue (no timer, no wake-up until a
/// record comes). Busy, it writes what is queued as one batch, naps, and
/// looks again; a nap that ends with nothing queued puts it back to
/// waiting. See [`WRITER_INTERVAL`] for why it naps rather than waits
/// while busy.
fn write_loop(queue: &mut impl Queue, writer: &mut Writer, mut nap: impl FnMut()) {
    'idle: while let Some(first) = queue.wait() {
        writer.take(first);
        loop {
            let closed = loop {
                match queue.poll() {
                    Ok(m) => writer.take(m),
                    Err(Drained::Empty) => break false,
                    Err(Drained::Closed) => break true,
                }
            };
            writer.end_batch();
            if closed {
                return;
            }
            nap();
            match queue.poll() {
                Ok(m) => writer.take(m),
                Err(Drained::Empty) => continue 'idle,
                Err(Drained::Closed) => return,
            }
        }
    }
    writer.end_batch();
}

/// Turns records into lines, batches them, writes each batch to every
/// sink, and counts each record's fate by what the sinks did.
struct Writer {
    sinks: Sinks,
    /// The batch: whole lines, and where each record's line ends.
    batch: Vec<u8>,
    ends: Vec<usize>,
    /// Flush requests waiting for the batch they follow to be written.
    waiters: Vec<oneshot::Sender<()>>,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Records in the batch, for the queue depth gauge.
    held: Arc<AtomicUsize>,
}

impl Writer {
    fn new(sinks: Sinks, reopen: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Self {
        Self {
            sinks,
            batch: Vec::with_capacity(SINK_BUFFER_BYTES),
            ends: Vec::new(),
            waiters: Vec::new(),
            reopen,
            metrics,
            held: Arc::default(),
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Record(rec) => {
                rec.write_json_line(&mut self.batch);
                self.ends.push(self.batch.len());
                self.held.store(self.ends.len(), Ordering::Relaxed);
                if self.batch.len() >= SINK_BUFFER_BYTES {
                    self.write_batch();
                }
            }
            Msg::Event(line) => {
                self.batch.extend_from_slice(&line);
                self.ends.push(self.batch.len());
                self.held.store(self.ends.len(), Ordering::Relaxed);
            }
            Msg::Reopen => {
                self.write_batch();
                self.reopen_file();
            }
            Msg::Flush(done) => self.waiters.push(done),
        }
    }

    /// Writes the batch out, then does what waited for it: a reopen, and
    /// answering flushes.
    fn end_batch(&mut self) {
        self.write_batch();
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.reopen_file();
        }
        for done in self.waiters.drain(..) {
            let _ = done.send(());
        }
    }

    fn reopen_file(&mut self) {
        if let Some(f) = self.sinks.file.as_mut() {
            match f.reopen() {
                Ok(()) => tracing::info!(path = %f.path.display(), "audit file reopened"),
                // The old file (moved, but still open) keeps the trail.
                Err(e) => {
                    tracing::error!(path = %f.path.display(), error = %e, "cannot reopen the audit file; still writing to the old one")
                }
            }
        }
    }

    fn write_batch(&mut self) {
        let n = self.ends.len();
        if n == 0 {
            return;
        }
        let now = Instant::now();
        // A record is written when every sink took it whole.
        let mut whole = n;
        if let Some(s) = self.sinks.stdout.as_mut() {
            whole = whole.min(s.write_records(&self.batch, &self.ends, now));
        }
        if let Some(f) = self.sinks.file.as_mut() {
            whole = whole.min(f.write_records(&self.batch, &self.ends, now));
        }
        self.metrics.audit_written.inc_by(whole as u64);
        self.metrics.audit_failed.inc_by((n - whole) as u64);
        self.held.store(0, Ordering::Relaxed);
        self.batch.clear();
        self.ends.clear();
    }
}

/// How a sink's trouble reaches the log: the first failure at once, then
/// at most one line per [`FAILURE_LOG_INTERVAL`] with the records lost
/// since the last line, and one when the sink takes records again.
#[derive(Debug)]
struct FailureLog {
    sink: &'static str,
    every: Duration,
    last_line: Option<Instant>,
    failing: bool,
    /// Records lost since the last line.
    lost: u64,
}

/// A line [`FailureLog`] decided to write.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Failing { lost: u64 },
    Recovered { lost: u64 },
}

impl FailureLog {
    fn new(sink: &'static str, every: Duration) -> Self {
        Self {
            sink,
            every,
            last_line: None,
            failing: false,
            lost: 0,
        }
    }

    fn failed(&mut self, now: Instant, lost: u64) -> Option<Report> {
        self.failing = true;
        self.lost += lost;
        if self
            .last_line
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(Report::Failing {
            lost: std::mem::take(&mut self.lost),
        })
    }

    fn succeeded(&mut self) -> Option<Report> {
        if !std::mem::take(&mut self.failing) {
            return None;
        }
        Some(Report::Recovered {
            lost: std::mem::take(&mut self.lost),
        })
    }

    /// Logs what [`FailureLog::failed`] or [`FailureLog::succeeded`] decided.
    fn log(&self, report: Option<Report>, error: Option<&io::Error>) {
        match report {
            Some(Report::Failing { lost }) => tracing::error!(
                sink = self.sink,
                error = %error.map(ToString::to_string).unwrap_or_default(),
                lost,
                every_secs = self.every.as_secs(),
                "audit sink write failed; records lost since the last report (reported at most once per interval)"
            ),
            Some(Report::Recovered { lost }) => tracing::warn!(
                sink = self.sink,
                lost,
                "audit sink writes again; records lost since the last report"
            ),
            None => {}
        }
    }

    /// Records the outcome of writing `n` records, `whole` of them whole.
    fn outcome(&mut self, now: Instant, n: usize, whole: usize, error: Option<io::Error>) {
        let report = match &error {
            Some(_) => self.failed(now, (n - whole) as u64),
            None => self.succeeded(),
        };
        self.log(report, error.as_ref());
    }
}

/// Writes `buf` to `w` and says how many bytes got out, and the error
/// that stopped it (`write_all` forgets how far it got).
fn write_counted(w: &mut impl Write, buf: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < buf.len() {
        match w.write(&buf[done..]) {
            Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Lines `buf[..]` (records ending at `ends`, offsets from `base`) to `w`.
/// Returns how many records went out whole, the bytes written, and the
/// error. `torn` says a failed write may have left part of a line behind:
/// the next write starts a new line first, so a fragment never joins a
/// whole record into one unparsable line.
fn put_records(
    w: &mut impl Write,
    torn: &mut bool,
    buf: &[u8],
    ends: &[usize],
    base: usize,
) -> (usize, u64, Option<io::Error>) {
    let mut bytes = 0;
    if *torn {
        match write_counted(w, b"\n") {
            (1, None) => {
                *torn = false;
                bytes = 1;
            }
            (_, e) => return (0, 0, e),
        }
    }
    let (n, err) = write_counted(w, buf);
    bytes += n as u64;
    let whole = ends.iter().take_while(|&&end| end - base <= n).count();
    if err.is_some() {
        let whole_bytes = whole.checked_sub(1).map_or(0, |i| ends[i] - base);
        *torn = n > whole_bytes;
    }
    (whole, bytes, err)
}

/// Standard output (or any stream) as a sink.
struct StreamSink<W: Write> {
    w: W,
    torn: bool,
    failures: FailureLog,
}

impl<W: Write> StreamSink<W> {
    fn new(w: W) -> Self {
        Self {
            w,
            torn: false,
            failures: FailureLog::new("stdout", FAILURE_LOG_INTERVAL),
        }
    }

    /// Returns how many of the records went out whole.
    fn write_records(&mut self, buf: &[u8], ends: &[usize], now: Instant) -> usize {
        let (whole, _, mut err) = put_records(&mut self.w, &mut self.torn, buf, ends, 0);
        if err.is_none() {
            err = self.w.flush().err();
        }
        self.failures.outcome(now, ends.len(), whole, err);
        whole
    }
}

/// A file that rotates by size, at record boundaries: `audit.jsonl` ->
/// `audit.jsonl.1` -> ... up to `max_files` old files. Unbuffered: the
/// writer hands it whole batches.
struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    max_files: u32,
    torn: bool,
    failures: FailureLog,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let file = open_append(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
            max_files,
            torn: false,
            failures: FailureLog::new("file", FAILURE_LOG_INTERVAL),
        })
    }

    /// The file at `path` again (after it was moved away), created if need be.
    fn reopen(&mut self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = file;
        self.torn = false;
        Ok(())
    }

    /// Writes the records (ending at `ends` in `buf`), rotating between
    /// records when the next ones would pass `max_bytes` (a record larger
    /// than that still goes whole into an empty file). Returns how many
    /// went out whole.
    fn write_records(&mut self, buf: &[u8], ends: &[usize], now: Instant) -> usize {
        let (whole, err) = self.write_rotating(buf, ends);
        self.failures.outcome(now, ends.len(), whole, err);
        whole
    }

    fn write_rotating(&mut self, buf: &[u8], ends: &[usize]) -> (usize, Option<io::Error>) {
        let mut done = 0;
        let mut base = 0;
        while done < ends.len() {
            let mut fit = done;
            while fit < ends.len()
                && (self.written + (ends[fit] - base) as u64 <= self.max_bytes
                    || (fit == done && self.written == 0))
            {
                fit += 1;
            }
            if fit == done {
                if let Err(e) = self.rotate() {
                    return (done, Some(e));
                }
                continue;
            }
            let end = ends[fit - 1];
            let (whole, bytes, err) = put_records(
                &mut self.file,
                &mut self.torn,
                &buf[base..end],
                &ends[done..fit],
                base,
            );
            self.written += bytes;
            if err.is_some() {
                return (done + whole, err);
            }
            done = fit;
            base = end;
        }
        (done, None)
    }

    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.max_files).rev() {
            let from = numbered(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, i + 1))?;
            }
        }
        if self.max_files > 0 {
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.reopen()
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_852_800_123_456),
            request_id: RequestId::generate(),
            user_id: Some("alice".into()),
            client_id: None,
            session_id: None,
            library: Some("smhlib".into()),
            target: Some(Target::new(Some("-"), "photos/a \"b\".jpg")),
            method: Method::GET,
            resource: Some(Cow::Borrowed("file")),
            operation: Some("info"),
            status: 200,
            code: None,
            request_bytes: 0,
            response_bytes: 42,
            latency: Duration::from_micros(1500),
            upstream_latency: Some(Duration::from_millis(1)),
            token: Some("hit"),
            client_addr: Some("[::1]:4431".parse().unwrap()),
        }
    }

    /// The record as the writer thread writes it, checked to be one line
    /// of valid JSON, parsed.
    fn json(rec: &AuditRecord) -> serde_json::Value {
        let mut line = Vec::new();
        rec.write_json_line(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert!(!line.contains(&b'\n'), "one line per record");
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn records_serialise_typed_fields_as_one_json_object() {
        let rec = record();
        let v = json(&rec);
        assert_eq!(v["time"], "2026-11-28T08:00:00.123456Z");
        assert_eq!(v["request_id"], rec.request_id.as_str());
        assert_eq!(v["space"], "-");
        assert_eq!(v["path"], "photos/a \"b\".jpg");
        assert_eq!(v["operation"], "file.info");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["upstream_latency_ms"], 1.0);
        assert_eq!(v["client_addr"], "[::1]:4431");
        assert!(v["client_id"].is_null() && v["code"].is_null());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 19);
    }

    #[test]
    fn fields_keep_their_order_and_text_is_escaped() {
        let mut rec = record();
        rec.target = Some(Target::new(Some("-"), "a\nb\u{1}\\c\"é"));
        let v = json(&rec);
        assert_eq!(v["path"], "a\nb\u{1}\\c\"é");
        let mut line = Vec::new();
        rec.write_json_line(&mut line);
        let text = String::from_utf8(line).unwrap();
        let order = [
            "time",
            "request_id",
            "user_id",
            "client_id",
            "session_id",
            "library",
            "space",
            "method",
            "resource",
            "operation",
            "path",
            "status",
            "code",
            "request_bytes",
            "response_bytes",
            "latency_ms",
            "upstream_latency_ms",
            "token",
            "client_addr",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.starts_with("{\"time\":\"2026-11-28T08:00:00.123456Z\","));
    }

    #[test]
    fn a_record_without_resource_or_space_names_the_operation_alone() {
        let mut rec = record();
        rec.resource = None;
        rec.operation = Some("cors.preflight");
        rec.target = Some(Target::new(None, "a/b"));
        let v = json(&rec);
        assert_eq!(v["operation"], "cors.preflight");
        assert!(v["space"].is_null());
        assert_eq!(v["path"], "a/b");
    }

    #[test]
    fn client_addresses_read_as_rust_writes_them() {
        for a in [
            "0.0.0.0:0",
            "203.0.113.7:53000",
            "255.255.255.255:65535",
            "10.0.0.1:8",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(address(addr).as_str(), addr.to_string());
        }
    }

    #[test]
    fn the_longest_client_address_is_written_whole() {
        let mut rec = record();
        let addr = std::net::SocketAddrV6::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            65535,
            0,
            u32::MAX,
        );
        rec.client_addr = Some(addr.into());
        let v = json(&rec);
        assert_eq!(v["client_addr"], addr.to_string());
        assert_eq!(
            v["client_addr"],
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("smh-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Lines and their end offsets, as the writer batches them.
    fn batch(lines: &[String]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            ends.push(buf.len());
        }
        (buf, ends)
    }

    #[test]
    fn rotates_by_size_at_record_boundaries_and_keeps_max_files() {
        let lines: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i:040}}}\n")).collect();
        // One record per batch, and all of them in one batch: the same files.
        for one_batch in [false, true] {
            let dir = temp_dir(&format!("rot-{one_batch}"));
            let path = dir.join("audit.jsonl");
            let mut f = RotatingFile::open(path.clone(), 100, 2).unwrap();
            if one_batch {
                let (buf, ends) = batch(&lines);
                assert_eq!(f.write_records(&buf, &ends, Instant::now()), 10);
            } else {
                for l in &lines {
                    let (buf, ends) = batch(std::slice::from_ref(l));
                    assert_eq!(f.write_records(&buf, &ends, Instant::now()), 1);
                }
            }
            assert!(path.exists() && numbered(&path, 1).exists() && numbered(&path, 2).exists());
            assert!(
                !numbered(&path, 3).exists(),
                "only max_files old files are kept"
            );
            for p in [&path, &numbered(&path, 1), &numbered(&path, 2)] {
                let text = std::fs::read_to_string(p).unwrap();
                assert!(text.len() <= 100);
                assert!(
                    text.lines().all(|l| l.len() == 46),
                    "whole records: {text:?}"
                );
            }
            let newest = std::fs::read_to_string(&path).unwrap();
            assert!(newest.contains("\"n\":0000000000000000000000000000000000000009"));
        }
    }

    /// What a scripted queue answers, in order.
    enum Step {
        Wait(Option<Msg>),
        Poll(Result<Msg, Drained>),
    }

    struct Script {
        steps: std::collections::VecDeque<Step>,
        trace: std::rc::Rc<std::cell::RefCell<Vec<&'static str>>>,
    }

    impl Script {
        fn next(&mut self, call: &'static str) -> Step {
            self.trace.borrow_mut().push(call);
            let step = self.steps.pop_front().unwrap_or_else(|| {
                panic!(
                    "unexpected {call} after the script: {:?}",
                    self.trace.borrow()
                )
            });
            let expected = match step {
                Step::Wait(_) => "wait",
                Step::Poll(_) => "poll",
            };
            assert_eq!(call, expected, "calls so far: {:?}", self.trace.borrow());
            step
        }
    }

    impl Queue for Script {
        fn wait(&mut self) -> Option<Msg> {
            match self.next("wait") {
                Step::Wait(m) => m,
                _ => unreachable!(),
            }
        }
        fn poll(&mut self) -> Result<Msg, Drained> {
            match self.next("poll") {
                Step::Poll(p) => p,
                _ => unreachable!(),
            }
        }
    }

    /// A stream that keeps each write call apart, shared with the test.
    #[derive(Clone, Default)]
    struct Writes(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stream_writer(w: impl Write + Send + 'static, metrics: &Arc<Metrics>) -> Writer {
        let sinks = Sinks {
            stdout: Some(StreamSink::new(Box::new(w))),
            file: None,
        };
        Writer::new(sinks, Arc::default(), metrics.clone())
    }

    fn rec_msg(user: &str) -> Msg {
        let mut r = record();
        r.user_id = Some(user.into());
        Msg::Record(r)
    }

    /// Idle, the loop waits on the queue; busy, it writes a batch and naps;
    /// a nap that finds nothing queued goes back to waiting — so an idle
    /// writer has no timer and is woken only by a record.
    #[test]
    fn an_idle_writer_waits_and_a_busy_one_batches_and_naps() {
        let trace = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut queue = Script {
            steps: [
                Step::Wait(Some(rec_msg("a"))),
                Step::Poll(Ok(rec_msg("b"))),
                Step::Poll(Err(Drained::Empty)),
                // nap
                Step::Poll(Ok(rec_msg("c"))),
                Step::Poll(Err(Drained::Empty)),
                // nap
                Step::Poll(Err(Drained::Empty)),
                // Idle again: waits (it would sleep and poll if it napped
                // here, and the script would fail).
                Step::Wait(Some(rec_msg("d"))),
                Step::Poll(Err(Drained::Closed)),
            ]
            .into(),
            trace: trace.clone(),
        };
        let metrics = Arc::new(Metrics::new(&[]));
        let out = Writes::default();
        let mut writer = stream_writer(out.clone(), &metrics);
        let naps = trace.clone();
        write_loop(&mut queue, &mut writer, || naps.borrow_mut().push("nap"));
        assert!(queue.steps.is_empty());
        assert_eq!(
            *trace.borrow(),
            ["wait", "poll", "poll", "nap", "poll", "poll", "nap", "poll", "wait", "poll"]
        );
        let batches: Vec<Vec<String>> = out
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|w| {
                String::from_utf8(w.clone())
                    .unwrap()
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l).unwrap()["user_id"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            batches,
            [vec!["a", "b"], vec!["c"], vec!["d"]],
            "one write per batch"
        );
        assert_eq!(metrics.audit_written.get(), 4);
    }

    #[test]
    fn a_failing_sink_is_reported_once_per_interval_with_what_it_lost() {
        let every = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut log = FailureLog::new("file", every);
        assert_eq!(log.succeeded(), None, "nothing to say while healthy");
        assert_eq!(log.failed(t0, 3), Some(Report::Failing { lost: 3 }));
        assert_eq!(log.failed(t0 + Duration::from_secs(1), 2), None);
        assert_eq!(log.failed(t0 + Duration::from_secs(59), 1), None);
        assert_eq!(
            log.failed(t0 + every, 4),
            Some(Report::Failing { lost: 7 }),
            "the next line counts everything lost since the last"
        );
        assert_eq!(log.failed(t0 + every + Duration::from_secs(5), 2), None);
        assert_eq!(log.succeeded(), Some(Report::Recovered { lost: 2 }));
        assert_eq!(log.succeeded(), None);
        // A new failure right after recovering is within the interval of
        // the last line: it waits for the next one.
        assert_eq!(log.failed(t0 + every + Duration::from_secs(6), 1), None);
        assert_eq!(
            log.failed(t0 + every * 2, 1),
            Some(Report::Failing { lost: 2 })
        );
    }

    async fn spawn_with(sinks: Sinks, capacity: usize) -> (Audit, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&[]));
        let audit = Audit::spawn(sinks, capacity, metrics.clone()).unwrap();
        (audit, metrics)
    }

    /// `/dev/full` opens like any file and refuses every write (ENOSPC),
    /// as a full disk does.
    #[tokio::test]
    async fn records_count_as_written_only_when_the_write_succeeded() {
        let full = RotatingFile::open(PathBuf::from("/dev/full"), 100, 2).unwrap();
        let (audit, metrics) = spawn_with(
            Sinks {
                stdout: None,
                file: Some(full),
            },
            64,
        )
        .await;
        for _ in 0..5 {
            audit.record(record());
        }
        assert!(audit.flush().await);
        assert_eq!(metrics.audit_failed.get(), 5);
        assert_eq!(metrics.audit_written.get(), 0);

        let dir = temp_dir("written");
        let path = dir.join("audit.jsonl");
        let file = RotatingFile::open(path.clone(), 1 << 20, 2).unwrap();
        let (audit, metrics) = spawn_with(
            Sinks {
                stdout: None,
                file: Some(file),
            },
            64,
        )
        .await;
        for _ in 0..5 {
            audit.record(record());
        }
        assert!(audit.flush().await);
        assert_eq!(metrics.audit_written.get(), 5);
        assert_eq!(metrics.audit_failed.get(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
    }

    /// Takes `room` bytes, then fails once with ENOSPC, then takes all.
    struct FillsUp {
        room: usize,
        failed: bool,
        out: Vec<u8>,
    }

    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.failed && self.room == 0 {
                self.failed = true;
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = if self.failed {
                buf.len()
            } else {
                buf.len().min(self.room)
            };
            self.room -= n.min(self.room);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_torn_line_never_joins_the_next_record() {
        let lines: Vec<String> = (0..3).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let (buf, ends) = batch(&lines);
        let mut sink = StreamSink::new(FillsUp {
            room: 12, // the first record (8 bytes) and half the second
            failed: false,
            out: Vec::new(),
        });
        assert_eq!(sink.write_records(&buf, &ends, Instant::now()), 1);
        assert!(sink.torn);
        let (buf, ends) = batch(&["{\"n\":3}\n".to_string()]);
        assert_eq!(sink.write_records(&buf, &ends, Instant::now()), 1);
        let text = String::from_utf8(sink.w.out).unwrap();
        assert_eq!(text, "{\"n\":0}\n{\"n\"\n{\"n\":3}\n");
        let parsed: Vec<bool> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .collect();
        assert_eq!(parsed, [true, false, true], "the fragment is its own line");
    }

    #[tokio::test]
    async fn reopen_starts_a_new_file_at_the_path_after_a_move() {
        let dir = temp_dir("reopen");
        let path = dir.join("audit.jsonl");
        let moved = dir.join("audit.jsonl.moved");
        let file = RotatingFile::open(path.clone(), 1 << 20, 2).unwrap();
        let (audit, _) = spawn_with(
            Sinks {
                stdout: None,
                file: Some(file),
            },
            64,
        )
        .await;
        let mut first = record();
        first.user_id = Some("before".into());
        audit.record(first);
        assert!(audit.flush().await);
        std::fs::rename(&path, &moved).unwrap();
        audit.reopen();
        let mut second = record();
        second.user_id = Some("after".into());
        audit.record(second);
        assert!(audit.flush().await);
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains("\"before\"") && !old.contains("\"after\""),
            "{old}"
        );
        assert!(
            new.contains("\"after\"") && !new.contains("\"before\""),
            "{new}"
        );
    }

    /// A stream whose first write waits until the test lets it go.
    struct Stuck {
        entered: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_queue_depth_gauge_counts_every_record_not_yet_written() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let stuck = Stuck {
            entered: entered_tx,
            release: release_rx,
        };
        let (audit, metrics) = spawn_with(
            Sinks {
                stdout: Some(StreamSink::new(Box::new(stuck))),
                file: None,
            },
            64,
        )
        .await;
        let depth = |m: &Metrics| {
            m.render()
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("smh_gateway_audit_queue_depth ")
                        .map(str::to_string)
                })
                .unwrap()
        };
        assert_eq!(depth(&metrics), "0");
        audit.record(record());
        // The writer holds the first record in a write that does not return.
        tokio::task::spawn_blocking(move || entered.recv().unwrap())
            .await
            .unwrap();
        for _ in 0..5 {
            audit.record(record());
        }
        assert_eq!(depth(&metrics), "6", "five queued, one being written");
        for _ in 0..6 {
            release.send(()).unwrap();
        }
        assert!(audit.flush().await);
        assert_eq!(depth(&metrics), "0");
        assert_eq!(metrics.audit_written.get(), 6);
    }
}
