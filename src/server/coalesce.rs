//! The client connection's I/O, handing TLS one buffer for small
//! vectored writes.
//!
//! hyper writes a response as a vectored write of its head and the body's
//! chunks. rustls turns a write of several slices into one TLS record
//! either way, but only after collecting the slices into a fresh `Vec`
//! and walking them piecewise; for the typical SMH answer (a head and a
//! few hundred bytes of JSON) copying both into one stack buffer first is
//! cheaper (measured: about 2.5% of a small proxied request). Large writes
//! stay vectored, so big bodies are not copied an extra time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use smallvec::SmallVec;

/// Vectored writes up to this many bytes in total are copied into one
/// buffer: a response head plus a small JSON body. The buffer lives on the
/// stack.
const COALESCE_BYTES: usize = 4096;

pub struct Coalescing<T>(pub T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut self.get_mut().0;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() < 2 || total > COALESCE_BYTES {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        // Not a zeroed array: clearing 4 KiB per write would cost more
        // than the copy it saves.
        let mut one = SmallVec::<[u8; COALESCE_BYTES]>::new();
        for b in bufs {
            one.extend_from_slice(b);
        }
        // A partial write reports bytes from the front of `bufs`, which is
        // what a vectored write may do too.
        Pin::new(inner).poll_write(cx, &one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `limit` bytes per call, counting the calls.
    struct Sink {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl hyper::rt::Write for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            let n = buf.len().min(this.limit);
            this.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes `parts` the way hyper does: vectored, advancing past what
    /// each call reports written, until everything is out.
    fn write_all(parts: &[Vec<u8>], limit: usize) -> Sink {
        let mut io = Coalescing(Sink {
            got: Vec::new(),
            limit,
            calls: 0,
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let whole: Vec<u8> = parts.concat();
        let mut done = 0;
        while done < whole.len() {
            // The unwritten rest, still split where the parts were split.
            let mut slices = Vec::new();
            let mut start = 0;
            for p in parts {
                let end = start + p.len();
                if end > done {
                    slices.push(io::IoSlice::new(&whole[start.max(done)..end]));
                }
                start = end;
            }
            match hyper::rt::Write::poll_write_vectored(Pin::new(&mut io), &mut cx, &slices) {
                Poll::Ready(Ok(n)) => done += n,
                other => panic!("unexpected {other:?}"),
            }
        }
        io.0
    }

    #[test]
    fn small_vectored_writes_go_out_as_one_write_in_order() {
        let parts = vec![b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![b'j'; 300]];
        let sink = write_all(&parts, usize::MAX);
        assert_eq!(sink.got, parts.concat());
        assert_eq!(sink.calls, 1);
    }

    #[test]
    fn partial_writes_and_large_writes_lose_nothing() {
        let small = vec![b"head\r\n".to_vec(), b"a".repeat(100), b"b".repeat(50)];
        let large = vec![
            b"head\r\n".to_vec(),
            b"c".repeat(COALESCE_BYTES),
            b"d".repeat(10),
        ];
        for parts in [small, large] {
            for limit in [1, 7, 64, 5000, usize::MAX] {
                assert_eq!(
                    write_all(&parts, limit).got,
                    parts.concat(),
                    "limit {limit}"
                );
            }
        }
    }
}
