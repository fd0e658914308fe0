//! Operator audit: exactly one JSON line per request, refused ones
//! included, naming who did what. Writing never blocks the request path:
//! records go through a bounded queue to a writer thread, and when the
//! queue is full the record is dropped and counted instead.
//!
//! Records never contain a token, secret, cookie or credential: they are
//! built from typed fields (no headers, no query string).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{self, Receiver, Sender};

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::Method;
use serde::Serialize;

use crate::config::{AuditConfig, AuditSink};
use crate::metrics::Metrics;
use crate::request_id::RequestId;

/// How often the writer thread looks for queued records: short enough that
/// the audit trail is current, long enough to write records in batches.
const WRITER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// The writer's buffer per sink. Records are about 400 bytes, so std's
/// 8 KiB default wrote every 20-odd records under load (one `write` syscall
/// each); this writes every 160-odd, or once per batch.
const SINK_BUFFER_BYTES: usize = 64 * 1024;

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

/// The request path's handle: `record` never blocks.
#[derive(Clone)]
pub struct Audit {
    /// tokio's bounded channel grows in small blocks as records queue up;
    /// std's `sync_channel` would reserve every slot up front (tens of MiB
    /// for the default capacity) whether or not traffic ever needs them.
    tx: Option<Sender<AuditRecord>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.tx.is_some())
            .finish()
    }
}

impl Audit {
    /// Starts the writer thread for `cfg` (none when the sink is `off`).
    pub fn start(cfg: &AuditConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        if cfg.sink == AuditSink::Off {
            return Ok(Self { tx: None, metrics });
        }
        let file = match cfg.sink {
            AuditSink::File | AuditSink::Both => {
                let path = cfg
                    .file
                    .as_ref()
                    .map(|p| p.get_ref().0.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!("audit.file is required for sink {:?}", cfg.sink)
                    })?;
                Some(RotatingFile::open(path, cfg.max_file_bytes, cfg.max_files)?)
            }
            _ => None,
        };
        let stdout = matches!(cfg.sink, AuditSink::Stdout | AuditSink::Both);
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("smh-audit".into())
            .spawn(move || write_loop(rx, stdout, file, writer_metrics))?;
        Ok(Self {
            tx: Some(tx),
            metrics,
        })
    }

    /// A sink that discards (for benches and embedded use).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// False when the sink is `off`: callers can skip building records.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn record(&self, rec: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.audit_dropped.inc(),
            Err(TrySendError::Closed(_)) => self.metrics.audit_dropped.inc(),
        }
    }
}

fn write_loop(
    mut rx: Receiver<AuditRecord>,
    stdout: bool,
    mut file: Option<RotatingFile>,
    metrics: Arc<Metrics>,
) {
    let mut out = stdout.then(|| BufWriter::with_capacity(SINK_BUFFER_BYTES, std::io::stdout()));
    let mut line = Vec::with_capacity(512);
    loop {
        // Drain everything queued, then flush once and nap. Polling instead
        // of blocking on the channel means request threads never have to
        // wake this thread (a futex syscall and a context switch per record
        // under load); records reach the sink within one interval.
        let mut wrote = false;
        let closed = loop {
            match rx.try_recv() {
                Ok(rec) => {
                    line.clear();
                    rec.write_json_line(&mut line);
                    if let Some(o) = out.as_mut() {
                        let _ = o.write_all(&line);
                    }
                    if let Some(f) = file.as_mut() {
                        if let Err(e) = f.write(&line) {
                            tracing::error!(error = %e, "audit file write failed");
                        }
                    }
                    metrics.audit_written.inc();
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote {
            if let Some(o) = out.as_mut() {
                let _ = o.flush();
            }
            if let Some(f) = file.as_mut() {
                let _ = f.flush();
            }
        }
        if closed {
            return;
        }
        std::thread::sleep(WRITER_INTERVAL);
    }
}

/// A file that rotates by size: `audit.jsonl` -> `audit.jsonl.1` -> ... up
/// to `max_files` old files.
struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    written: u64,
    max_bytes: u64,
    max_files: u32,
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
            file: BufWriter::with_capacity(SINK_BUFFER_BYTES, file),
            written,
            max_bytes,
            max_files,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
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
        self.file = BufWriter::with_capacity(SINK_BUFFER_BYTES, open_append(&self.path)?);
        self.written = 0;
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> std::io::Result<File> {
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

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("smh-audit-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let mut f = RotatingFile::open(path.clone(), 100, 2).unwrap();
        for i in 0..10 {
            f.write(format!("{{\"n\":{i:040}}}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        assert!(path.exists() && numbered(&path, 1).exists() && numbered(&path, 2).exists());
        assert!(
            !numbered(&path, 3).exists(),
            "only max_files old files are kept"
        );
        for p in [&path, &numbered(&path, 1), &numbered(&path, 2)] {
            assert!(std::fs::metadata(p).unwrap().len() <= 100);
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("\"n\":0000000000000000000000000000000000000009"));
    }
}
