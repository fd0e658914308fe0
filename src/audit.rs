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

/// How often the writer thread looks for queued records: short enough that
/// the audit trail is current, long enough to write records in batches.
const WRITER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{AuditConfig, AuditSink};
use crate::metrics::Metrics;

/// One request, as the audit trail records it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub client_id: Option<Arc<str>>,
    pub session_id: Option<Arc<str>>,
    pub library: Option<Arc<str>>,
    pub space: Option<String>,
    pub method: String,
    pub resource: Option<String>,
    pub operation: Option<String>,
    /// The target path below the space, as sent (no query string).
    pub path: Option<String>,
    pub status: u16,
    /// SMH's error code, or the gateway's own for refusals.
    pub code: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub latency_ms: f64,
    pub upstream_latency_ms: Option<f64>,
    /// hit, miss or reminted.
    pub token: Option<&'static str>,
    pub client_addr: Option<String>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let dt = time::OffsetDateTime::from(*t);
    let text = dt
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
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
    let mut out = stdout.then(|| BufWriter::new(std::io::stdout()));
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
                    if serde_json::to_writer(&mut line, &rec).is_ok() {
                        line.push(b'\n');
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
            file: BufWriter::new(file),
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
        self.file = BufWriter::new(open_append(&self.path)?);
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
