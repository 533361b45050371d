//! A client connection (plain or TLS) as monoio's owned-buffer I/O traits,
//! so monoio-compat's `StreamWrapper` can offer it to the `h2` crate as
//! tokio's `AsyncRead`/`AsyncWrite` (no tokio runtime involved). Plain
//! sockets pass straight through; TLS plaintext is copied out of a small
//! buffer of our own.

use std::io;

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
}

impl CompatIo {
    /// Wraps a plain or TLS connection.
    pub fn new(stream: Stream) -> CompatIo {
        CompatIo { stream, plain: Vec::new(), pos: 0 }
    }
}

impl AsyncReadRent for CompatIo {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let tls = match &mut self.stream {
            Stream::Plain(s) => return s.read(buf).await,
            Stream::Tls(t) => t,
            Stream::H2(_) => return (Err(io::ErrorKind::Unsupported.into()), buf),
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
        let avail = &self.plain[self.pos..];
        let n = avail.len().min(buf.bytes_total());
        // SAFETY: `buf` has room for `bytes_total()` bytes at `write_ptr()`,
        // and `n` is at most that; the source is a live slice of `n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(avail.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
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
            Stream::H2(_) => (Err(io::ErrorKind::Unsupported.into()), buf),
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
