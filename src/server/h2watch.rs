//! The one fact about an HTTP/2 client's frames that h2 does not time: a
//! header block begun (HEADERS or PUSH_PROMISE without END_HEADERS) and
//! not yet finished by a CONTINUATION with END_HEADERS. h2 buffers such a
//! block for as long as the client likes; the connection driver closes the
//! connection when one stays open past the header-read timeout.
//!
//! This only observes the bytes h2 reads (frame headers: 9 bytes, RFC 9113
//! 4.1) and never changes them, so a misreading could at worst close a
//! connection early or late, never alter what h2 parses. Fuzzed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The client connection preface (RFC 9113 3.4) precedes the first frame.
const PREFACE_LEN: u8 = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Tracks frame boundaries across reads of any size.
#[derive(Debug, Clone)]
pub struct FrameWatch {
    preface_left: u8,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    payload_left: u32,
    block_open: bool,
    /// Header blocks begun so far: a read that ends one block and begins
    /// the next must restart the clock, though "open" reads the same.
    opened: u64,
}

impl Default for FrameWatch {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            payload_left: 0,
            block_open: false,
            opened: 0,
        }
    }
}

impl FrameWatch {
    /// Feeds the next bytes the client sent; answers whether a header
    /// block is open after them.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = data.len().min(usize::from(self.preface_left));
                data = &data[n..];
                // n <= preface_left <= 24, so this fits and cannot underflow.
                self.preface_left -= n as u8;
                continue;
            }
            if self.payload_left > 0 {
                let n = data.len().min(self.payload_left as usize);
                data = &data[n..];
                self.payload_left -= n as u32;
                continue;
            }
            let n = data.len().min(FRAME_HEADER_LEN - self.head_len);
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len == FRAME_HEADER_LEN {
                let h = self.head;
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                let (kind, flags) = (h[3], h[4]);
                match kind {
                    HEADERS | PUSH_PROMISE => {
                        self.block_open = flags & END_HEADERS == 0;
                        if self.block_open {
                            self.opened = self.opened.wrapping_add(1);
                        }
                    }
                    CONTINUATION if flags & END_HEADERS != 0 => self.block_open = false,
                    _ => {}
                }
                self.head_len = 0;
            }
        }
        self.block_open
    }

    /// How many header blocks have begun (wrapping).
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

/// What the connection driver reads: since when a header block has been
/// open (milliseconds after `epoch`, plus one; 0 when none is), and a
/// signal when one opens.
pub struct BlockState {
    epoch: Instant,
    open_since: AtomicU64,
    pub opened: Notify,
}

impl BlockState {
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            open_since: AtomicU64::new(0),
            opened: Notify::new(),
        }
    }

    /// When the open block began, if one is open.
    pub fn open_since(&self) -> Option<Instant> {
        match self.open_since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.epoch + std::time::Duration::from_millis(ms - 1)),
        }
    }

    /// After a read: whether a block is open, and whether one began in it
    /// (a new block restarts the clock even if the last one was open).
    fn set(&self, open: bool, began: bool) {
        let was = self.open_since.load(Ordering::Relaxed) != 0;
        if open == was && !(open && began) {
            return;
        }
        if open {
            let ms = self.epoch.elapsed().as_millis();
            let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1);
            self.open_since.store(ms, Ordering::Release);
            self.opened.notify_one();
        } else {
            self.open_since.store(0, Ordering::Release);
        }
    }
}

/// The client's stream with its reads fed to a [`FrameWatch`].
pub struct Watched<T> {
    inner: T,
    watch: FrameWatch,
    state: Arc<BlockState>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, state: Arc<BlockState>) -> Self {
        Self {
            inner,
            watch: FrameWatch::default(),
            state,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                let before = this.watch.opened();
                let open = this.watch.feed(fresh);
                this.state.set(open, this.watch.opened() != before);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags, 0, 0, 0, 1]);
        f.extend(payload);
        f
    }

    #[test]
    fn a_header_block_is_open_until_its_end_headers() {
        let mut w = FrameWatch::default();
        assert!(!w.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!w.feed(&frame(0x4, 0, &[0; 6]))); // SETTINGS
        assert!(w.feed(&frame(HEADERS, 0, b"abc")));
        assert!(w.feed(&frame(CONTINUATION, 0, b"d")));
        assert!(!w.feed(&frame(CONTINUATION, END_HEADERS, b"e")));
        assert!(!w.feed(&frame(HEADERS, END_HEADERS | 0x1, b"x")));
    }

    #[test]
    fn a_block_begun_in_the_read_that_ended_another_counts_as_new() {
        let mut w = FrameWatch::default();
        w.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(w.feed(&frame(HEADERS, 0, b"a")));
        let before = w.opened();
        let mut both = frame(CONTINUATION, END_HEADERS, b"b");
        both.extend(frame(HEADERS, 0, b"c"));
        assert!(w.feed(&both));
        assert_eq!(w.opened(), before + 1);
    }

    #[test]
    fn frames_split_at_every_byte_are_read_the_same() {
        let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        all.extend(frame(0x0, 0, &[7; 300]));
        all.extend(frame(HEADERS, 0, b"abc"));
        let mut w = FrameWatch::default();
        let mut open = false;
        for b in &all {
            open = w.feed(std::slice::from_ref(b));
        }
        assert!(open);
        assert!(FrameWatch::default().feed(&all));
    }
}
