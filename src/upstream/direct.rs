//! HTTP/1.1 exchanges for requests without a body (listings, `?info`,
//! 302 downloads: nearly every call a gallery page makes), run by the
//! request itself on a pooled TLS connection.
//!
//! Through hyper's client every exchange crossed over to a task per
//! connection: a channel to hand the request over, a oneshot for the
//! answer, a body channel, and three polls of that task per request (the
//! third a wake-up from the body channel with nothing left to do). Here the
//! request's own future writes the request head and reads the response
//! head, the response body reads the rest straight from the socket, and
//! the connection goes back to the pool when the body ends — the shape of
//! nginx's upstream module. Requests with a body stay on hyper's client
//! (`pool.rs`), which keeps reading while it writes, so an early answer to
//! an upload is never stuck behind the body.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pool::Pool;
use super::{UpstreamBody, UpstreamError};
use crate::body::Body;

/// Longest response head accepted. SMH's heads are well under 2 KiB, and
/// nginx in front of an upstream allows 4 or 8 KiB by default; this leaves
/// room for long redirect URLs and cookies without letting a broken
/// upstream grow the buffer without end. Below 64 KiB, so field positions
/// fit in a `u16`.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most header fields in one response head (hyper's client allows 100).
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read: one full TLS record's plaintext.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size line or trailer field in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes skipped at the end of a chunked body.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// The pool of bare TLS connections. Boxed: a TLS connection is over a
/// kilobyte, and it moves from the pool into the exchange, the body, and
/// back.
pub type DirectPool = Pool<Box<Conn>>;

/// One TLS connection and the bytes read from it but not yet used.
pub struct Conn {
    io: TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection can carry a request: the upstream has
    /// neither closed it nor sent anything unasked. Polled without a real
    /// waker: nothing waits on an idle connection, and a `Pending` (no
    /// readiness, or tokio's budget spent) means alive; a connection that
    /// died after this check is caught by the stale-connection retry.
    fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }
}

/// Why an exchange failed, and whether a retry on a fresh connection is
/// safe: `Stale` means the upstream sent nothing at all, the signature of
/// a pooled connection it closed while idle.
enum Failure {
    Stale(String),
    Broken(String),
}

impl From<Failure> for UpstreamError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Stale(m) | Failure::Broken(m) => UpstreamError::Request(m),
        }
    }
}

impl Pool<Box<Conn>> {
    /// Sends `req` (origin-form URI, `Host` set, body empty) on an idle
    /// connection or a new one. When a pooled connection turns out to have
    /// been closed by the upstream before it answered anything, an
    /// idempotent request goes out again on a fresh connection; any other
    /// request is not repeated, since the upstream may have acted on it.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut head = Vec::with_capacity(512);
        encode_request_head(&req, &mut head);
        let head_only = req.method() == Method::HEAD;
        while let Some(conn) = self.pop(|c| c.usable()) {
            match exchange(conn, &head, head_only).await {
                Ok(answer) => return Ok(self.attach(answer)),
                Err(Failure::Stale(_)) if req.method().is_idempotent() => continue,
                Err(f) => return Err(f.into()),
            }
        }
        // Boxed: TCP + TLS + handshake is a large future, needed only
        // when no idle connection is left; inline it would size every send.
        let io = Box::pin(self.connector.connect_stream(&self.target))
            .await
            .map_err(|e| UpstreamError::Connect(super::error_chain(&e)))?;
        let conn = Box::new(Conn {
            io,
            buf: BytesMut::new(),
        });
        let answer = exchange(conn, &head, head_only).await?;
        Ok(self.attach(answer))
    }

    fn attach(self: &Arc<Self>, answer: Answer) -> Response<UpstreamBody> {
        let Answer {
            response,
            conn,
            framing,
            reusable,
        } = answer;
        let mut body = DirectBody {
            conn: Some(conn),
            framing,
            reusable,
            pool: self.clone(),
        };
        if body.is_end_stream() {
            body.finish();
        }
        response.map(|()| UpstreamBody::Direct(body))
    }
}

/// `METHOD origin-form HTTP/1.1`, the fields, a blank line. Field names
/// and values come from `http` types, which cannot hold CR or LF.
fn encode_request_head(req: &Request<Body>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §8.6: a request whose method defines a body says it is empty.
    let expects_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if expects_body && !req.headers().contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

struct Answer {
    response: Response<()>,
    conn: Box<Conn>,
    framing: Framing,
    reusable: bool,
}

async fn exchange(mut conn: Box<Conn>, head: &[u8], head_only: bool) -> Result<Answer, Failure> {
    let sent = async {
        conn.io.write_all(head).await?;
        conn.io.flush().await
    };
    // A write to a socket the upstream closed while it was idle fails
    // only sometimes; either way nothing was answered yet.
    sent.await
        .map_err(|e| Failure::Stale(format!("sending the request: {e}")))?;
    let mut received_any = false;
    loop {
        if let Some(parsed) = parse_response_head(&mut conn.buf)? {
            let (response, reusable) = parsed;
            let status = response.status();
            // Interim answers (100 Continue, 103 Early Hints) precede the
            // real one; 101 would switch protocols, which nobody asked for.
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Failure::Broken(
                    "upstream switched protocols unasked".into(),
                ));
            }
            if status.is_informational() {
                continue;
            }
            let (framing, framed_reusable) = framing(&response, head_only)?;
            return Ok(Answer {
                response,
                conn,
                framing,
                reusable: reusable && framed_reusable,
            });
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(Failure::Broken(format!(
                "upstream response head longer than {MAX_HEAD_BYTES} bytes"
            )));
        }
        conn.buf.reserve(READ_CHUNK);
        let fail = |what: String| {
            if received_any {
                Failure::Broken(what)
            } else {
                Failure::Stale(what)
            }
        };
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err(fail(
                    "upstream closed the connection before answering".into(),
                ))
            }
            Ok(_) => received_any = true,
            Err(e) => return Err(fail(format!("reading the response: {e}"))),
        }
    }
}

/// A complete response head at the front of `buf`, taken off it, with
/// whether the connection may carry another request afterwards; `None`
/// while the head is still incomplete.
fn parse_response_head(buf: &mut BytesMut) -> Result<Option<(Response<()>, bool)>, Failure> {
    // Field positions, so the values can share the head's buffer once the
    // parser's borrow of it ends. Small and uninitialised slots: zeroing
    // 100 `httparse::Header`s per response cost more than parsing.
    let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
    let (len, code, version, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            window,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(Failure::Broken(format!(
                    "malformed upstream response head: {e}"
                )))
            }
        };
        let base = window.as_ptr() as usize;
        // Offsets within `window`, which is shorter than 64 KiB.
        let at = |p: *const u8| (p as usize - base) as u16;
        for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = at(field.name.as_ptr());
            let value = at(field.value.as_ptr());
            *span = (
                name,
                name + field.name.len() as u16,
                value,
                value + field.value.len() as u16,
            );
        }
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, parsed.code.unwrap_or(0), version, parsed.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Broken(format!("upstream answered status {code}")))?;
    let mut headers = HeaderMap::with_capacity(fields);
    for &(ns, ne, vs, ve) in &spans[..fields] {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|e| Failure::Broken(format!("upstream header name: {e}")))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|e| Failure::Broken(format!("upstream header value: {e}")))?;
        headers.append(name, value);
    }
    // HTTP/1.0 closes unless told otherwise; `Connection: close` always.
    let mut reusable = version == Version::HTTP_11;
    for value in headers.get_all(CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.eq_ignore_ascii_case("close") {
                reusable = false;
            } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                reusable = true;
            }
        }
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some((response, reusable)))
}

/// How the body of `response` is delimited (RFC 9112 §6.3), and whether
/// the connection survives it.
fn framing(response: &Response<()>, head_only: bool) -> Result<(Framing, bool), Failure> {
    let status = response.status();
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), true));
    }
    let headers = response.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty())
            .unwrap_or("");
        // Chunked last: chunked; anything else runs to the end of the
        // connection. A Content-Length beside it is ignored, and such a
        // message is not trusted to leave the connection clean.
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            (
                Framing::Chunked(Chunk::Size),
                !headers.contains_key(CONTENT_LENGTH),
            )
        } else {
            (Framing::ToClose, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let n = part
                .trim()
                .parse::<u64>()
                .map_err(|_| Failure::Broken("invalid upstream Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Broken(
                    "conflicting upstream Content-Length".into(),
                ));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::ToClose, false),
    })
}

enum Framing {
    /// This many body bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    ToClose,
    Done,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of the current chunk still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// Skipping trailer fields up to the blank line; bytes skipped so far.
    Trailers(usize),
}

/// The body of a direct exchange, read from the connection as it is
/// polled. At its end the connection goes back to the pool; dropped
/// before, it is closed rather than reused mid-message.
pub struct DirectBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    reusable: bool,
    pool: Arc<DirectPool>,
}

impl DirectBody {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes beyond the message would be the start of an answer
            // nobody asked for: the connection is not trusted again.
            if self.reusable && conn.buf.is_empty() {
                self.pool.push(conn, |c| c.usable());
            }
        }
    }

    /// Ends the body here, closing the connection rather than pooling it.
    fn abandon(&mut self) {
        self.conn = None;
        self.framing = Framing::Done;
    }

    fn fail(&mut self, what: &str) -> io::Error {
        self.abandon();
        io::Error::new(io::ErrorKind::UnexpectedEof, what.to_owned())
    }

    /// The next frame from bytes already buffered, or `None` when more
    /// must be read first.
    fn next_buffered(&mut self) -> Result<Option<Bytes>, io::Error> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let buf = &mut conn.buf;
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.finish();
                    return Ok(None);
                }
                Framing::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = take_up_to(buf, n);
                    self.framing = Framing::Length(left);
                    return Ok(Some(data));
                }
                Framing::ToClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let (data, left) = take_up_to(buf, n);
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(self.fail("malformed chunked upstream body"));
                    }
                    let _ = buf.split_to(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = line_end(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(self.fail("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(end);
                    let Some(size) = chunk_size(&line) else {
                        return Err(self.fail("malformed chunk size in upstream body"));
                    };
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Trailers(seen)) => {
                    let Some(end) = line_end(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(self.fail("trailer field too long"));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(end);
                    if line.as_ref() == b"\r\n" || line.as_ref() == b"\n" {
                        self.finish();
                        return Ok(None);
                    }
                    // Trailer fields are not forwarded: the gateway's
                    // clients are told everything in the head.
                    let seen = seen + line.len();
                    if seen > MAX_TRAILER_BYTES {
                        return Err(self.fail("upstream trailers too long"));
                    }
                    self.framing = Framing::Chunked(Chunk::Trailers(seen));
                }
            }
        }
    }
}

/// Up to `n` buffered bytes off the front of `buf`, and how many of the
/// `n` are still to come.
fn take_up_to(buf: &mut BytesMut, n: u64) -> (Bytes, u64) {
    let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    (buf.split_to(take).freeze(), n - take as u64)
}

/// Length of the first line in `buf`, its LF included.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// The size in a chunk-size line (`1a;ext=1\r\n`): hex digits, then
/// optional extensions, which are ignored.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = matches!(rest.first(), Some(b';' | b'\r' | b'\n' | b' ' | b'\t'));
    if digits == 0 || digits > 16 || !rest_ok {
        return None;
    }
    let text = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(text, 16).ok()
}

impl HttpBody for DirectBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.next_buffered() {
                Ok(Some(data)) => {
                    if matches!(this.framing, Framing::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            conn.buf.reserve(READ_CHUNK);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf);
            match std::task::ready!(read) {
                Ok(n) if n > 0 => {}
                // The end of the connection ends a body delimited by it; a
                // TLS peer that skips close_notify is tolerated there.
                Ok(_) if matches!(this.framing, Framing::ToClose) => this.abandon(),
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        && matches!(this.framing, Framing::ToClose) =>
                {
                    this.abandon()
                }
                Ok(_) => {
                    return Poll::Ready(Some(Err(
                        this.fail("upstream closed the connection before the body ended")
                    )))
                }
                Err(e) => {
                    this.abandon();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
