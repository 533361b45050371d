//! A client connection (plain or TLS) as monoio's owned-buffer I/O traits,
//! so monoio-compat's `StreamWrapper` can offer it to the `h2` crate as
//! tokio's `AsyncRead`/`AsyncWrite` (no tokio runtime involved). Plain
//! sockets pass straight through; TLS plaintext is copied out of a small
//! buffer of our own.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use super::{Stream, TLS_READ};

/// A connection for the h2 crate.
pub struct CompatIo {
    stream: Stream,
    /// TLS plaintext read but not yet taken.
    plain: Vec<u8>,
    pos: usize,
    /// Watches the client's first bytes for the end of its SETTINGS frame.
    opening: Option<Opening>,
}

/// The first bytes a server reads: the 24-byte preface, then the client's
/// SETTINGS frame (a 9-byte frame header and its payload). h2's handshake
/// ends with the preface; this tells when the SETTINGS is in too, so the
/// connection's handshake deadline covers both.
struct Opening {
    first: [u8; 33],
    seen: usize,
    done: Rc<Cell<bool>>,
}

impl Opening {
    fn feed(&mut self, data: &[u8]) {
        let take = data.len().min(self.first.len().saturating_sub(self.seen));
        if let (Some(dst), Some(src)) = (self.first.get_mut(self.seen..self.seen + take), data.get(..take)) {
            dst.copy_from_slice(src);
        }
        let before = self.seen;
        self.seen += data.len();
        if before < 33 && self.seen < 33 {
            return;
        }
        let len = u32::from_be_bytes([0, self.first[24], self.first[25], self.first[26]]) as usize;
        if self.seen >= 33 + len {
            self.done.set(true);
        }
    }
}

impl CompatIo {
    /// Wraps a plain or TLS connection.
    pub fn new(stream: Stream) -> CompatIo {
        CompatIo { stream, plain: Vec::new(), pos: 0, opening: None }
    }

    /// Wraps a server-side connection; `done` turns true once the client's
    /// preface and first SETTINGS frame have been read.
    pub fn server(stream: Stream, done: Rc<Cell<bool>>) -> CompatIo {
        CompatIo { stream, plain: Vec::new(), pos: 0, opening: Some(Opening { first: [0; 33], seen: 0, done }) }
    }

    fn opened(&mut self, data: &[u8]) {
        if let Some(o) = &mut self.opening {
            o.feed(data);
            if o.done.get() {
                self.opening = None;
            }
        }
    }
}

impl AsyncReadRent for CompatIo {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let tls = match &mut self.stream {
            Stream::Plain(s) => {
                let (r, mut buf) = s.read(buf).await;
                if let (Ok(n), true) = (&r, self.opening.is_some()) {
                    // SAFETY: the read wrote `n` bytes at the buffer's start (`write_ptr()`).
                    let got = unsafe { std::slice::from_raw_parts(buf.write_ptr().cast_const(), *n) };
                    self.opened(got);
                }
                return (r, buf);
            }
            Stream::Tls(t) => t,
            Stream::H2(_) | Stream::H2Up(_) => return (Err(io::ErrorKind::Unsupported.into()), buf),
        };
        if self.pos >= self.plain.len() {
            // Wait without a buffer: an idle connection holds none.
            if !tls.holds_input() {
                if let Err(e) = tls.tcp.readable(false).await {
                    return (Err(e), buf);
                }
            }
            self.plain.clear();
            self.pos = 0;
            self.plain.reserve(TLS_READ);
            match tls.read(&mut self.plain).await {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        let n = (self.plain.len() - self.pos).min(buf.bytes_total());
        let avail = &self.plain[self.pos..self.pos + n];
        // SAFETY: `buf` has room for `bytes_total()` bytes at `write_ptr()`,
        // and `n` is at most that; the source is a live slice of `n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(avail.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        if let Some(o) = &mut self.opening {
            o.feed(&self.plain[self.pos..self.pos + n]);
            if o.done.get() {
                self.opening = None;
            }
        }
        self.pos += n;
        if self.pos >= self.plain.len() {
            // Drained: an idle connection keeps no plaintext buffer.
            self.plain = Vec::new();
            self.pos = 0;
        }
        (Ok(n), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Plain(s) => s.readv(buf).await,
            _ => (Err(io::ErrorKind::Unsupported.into()), buf),
        }
    }
}

impl AsyncWriteRent for CompatIo {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(t) => {
                // SAFETY: an `IoBuf` holds `bytes_init()` initialised bytes at `read_ptr()`.
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let r = t.write(data).await;
                (r, buf)
            }
            Stream::H2(_) | Stream::H2Up(_) => (Err(io::ErrorKind::Unsupported.into()), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Plain(s) => s.writev(buf).await,
            _ => (Err(io::ErrorKind::Unsupported.into()), buf),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Tls(t) => t.flush().await,
            _ => Ok(()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.close_write().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_is_seen_however_the_bytes_arrive() {
        let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        all.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        all.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        for split in [1, 24, 33, 34, 38] {
            let done = Rc::new(Cell::new(false));
            let mut o = Opening { first: [0; 33], seen: 0, done: done.clone() };
            let (a, b) = all.split_at(split);
            o.feed(a);
            for byte in b {
                o.feed(std::slice::from_ref(byte));
            }
            assert!(done.get(), "split at {split}");
        }
    }
}
