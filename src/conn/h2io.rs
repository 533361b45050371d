//! A connection (plain or TLS) as tokio's `AsyncRead`/`AsyncWrite`, for
//! the `h2` crate (no tokio runtime involved).
//!
//! Readiness-driven, like an epoll server: a read or write goes straight to
//! the socket without waiting (`MSG_DONTWAIT`), and only when the socket
//! has nothing (or no room) does the connection wait, through an io_uring
//! poll that holds no buffer. So an idle HTTP/2 connection pins no I/O
//! buffer of ours, and bytes are copied once each way: rustls's plaintext
//! straight into h2's read buffer, h2's frames straight into rustls, which
//! encrypts them into records sent by one `sendmsg` per flush.
//!
//! (monoio's owned-buffer I/O cannot do this: a pending read owns its
//! buffer for as long as the connection idles, and monoio-compat's adapter
//! over it kept 12 KiB of buffers per connection and copied every byte
//! twice more.)

use std::cell::Cell;
use std::future::Future;
use std::io::{self, BufRead, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{feed_tls, is_interrupted, recv_now, Stream, TlsStream, TLS_READ};

/// A wait for the socket to become readable or writable.
type Wait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// A connection for the h2 crate.
pub struct H2Io {
    tcp: Rc<TcpStream>,
    tls: Option<Box<Tls>>,
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    /// The last read found the socket empty (or took less than asked):
    /// the next one waits for readiness instead of trying first.
    drained: bool,
    /// Watches the client's first bytes for the end of its SETTINGS frame.
    opening: Option<Opening>,
}

/// The TLS side of a connection.
struct Tls {
    conn: rustls::Connection,
    /// Ciphertext read before but not yet taken by rustls; fed first.
    pending: Vec<u8>,
    /// close_notify queued (shutdown).
    closing: bool,
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

impl H2Io {
    /// Wraps a plain or TLS connection (an HTTP/2 stream is refused).
    pub fn new(stream: Stream) -> io::Result<H2Io> {
        let (tcp, tls) = match stream {
            Stream::Plain(tcp) => (tcp, None),
            // Only after the handshake: h2's frames are application data.
            Stream::Tls(t) if t.tls.is_handshaking() => return Err(io::ErrorKind::InvalidInput.into()),
            Stream::Tls(t) => {
                let TlsStream { tcp, tls, pending, .. } = *t;
                (tcp, Some(Box::new(Tls { conn: tls, pending, closing: false })))
            }
            Stream::H2(_) | Stream::H2Up(_) => return Err(io::ErrorKind::Unsupported.into()),
        };
        Ok(H2Io { tcp: Rc::new(tcp), tls, read_wait: None, write_wait: None, drained: false, opening: None })
    }

    /// Wraps a server-side connection; `done` turns true once the client's
    /// preface and first SETTINGS frame have been read.
    pub fn server(stream: Stream, done: Rc<Cell<bool>>) -> io::Result<H2Io> {
        let mut io = H2Io::new(stream)?;
        io.opening = Some(Opening { first: [0; 33], seen: 0, done });
        Ok(io)
    }

    /// Reads into `buf` without waiting: `true` once bytes were read or
    /// the stream ended (nothing read); `false` when the socket had
    /// nothing, noting whether it is drained.
    fn try_read(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        let fd = self.tcp.as_raw_fd();
        let Some(tls) = &mut self.tls else {
            return Ok(match recv_into(fd, buf)? {
                Fill::Got { short } => {
                    self.drained = short;
                    true
                }
                Fill::Empty => {
                    self.drained = true;
                    false
                }
            });
        };
        // (The caller took what rustls held already.)
        loop {
            match tls.fill(fd)? {
                Fill::Got { short } => self.drained = short,
                Fill::Empty => {
                    self.drained = true;
                    return Ok(false);
                }
            }
            // Decrypted (or the end marked); a partial record needs more.
            if tls.take(buf)? {
                return Ok(true);
            }
            if self.drained {
                return Ok(false);
            }
        }
    }

    /// Reports the bytes a read put at `buf[from..]` to the opening watch.
    fn opened(&mut self, buf: &ReadBuf<'_>, from: usize) {
        if let Some(o) = &mut self.opening {
            o.feed(&buf.filled()[from..]);
            if o.done.get() {
                self.opening = None;
            }
        }
    }

    /// Sends queued TLS records without waiting; true once none are left.
    fn try_send(&mut self) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else { return Ok(true) };
        let mut sock = Sock { fd: self.tcp.as_raw_fd() };
        while tls.conn.wants_write() {
            match tls.conn.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if is_interrupted(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let tcp = &self.tcp;
        poll_wait(&mut self.write_wait, cx, || {
            let tcp = tcp.clone();
            Box::pin(async move { tcp.writable(false).await })
        })
    }
}

impl Tls {
    /// Moves plaintext rustls holds into `buf`; `true` when it held some,
    /// or the end of the stream.
    fn take(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<bool> {
        match self.conn.reader().fill_buf() {
            Ok(chunk) if !chunk.is_empty() => {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                self.conn.reader().consume(n);
                Ok(true)
            }
            // A close_notify, or a close without one: the end either way
            // (h2's framing tells a truncated connection).
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads ciphertext from the socket without waiting (saved ciphertext
    /// first) and decrypts it. Up to a full record at once, through the
    /// stack: rustls alone would read 4 KiB per system call.
    fn fill(&mut self, fd: RawFd) -> io::Result<Fill> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.feed(fd, &pending)?;
            return Ok(Fill::Got { short: false });
        }
        let mut space = [MaybeUninit::<u8>::uninit(); TLS_READ];
        // SAFETY: `space` is valid for writes of its length.
        let Some(n) = (unsafe { recv_now(fd, space.as_mut_ptr().cast(), space.len()) })? else {
            return Ok(Fill::Empty);
        };
        if n == 0 {
            // The TCP end, marked for the reader to report.
            let _ = self.conn.read_tls(&mut &[][..]);
            return Ok(Fill::Got { short: true });
        }
        // SAFETY: recv initialised the first `n` bytes.
        let got = unsafe { std::slice::from_raw_parts(space.as_ptr().cast::<u8>(), n) };
        self.feed(fd, got)?;
        Ok(Fill::Got { short: n < TLS_READ })
    }

    /// Hands ciphertext to rustls and decrypts it (see `feed_tls`). On a
    /// protocol error the alert rustls queued is sent, best effort.
    fn feed(&mut self, fd: RawFd, data: &[u8]) -> io::Result<()> {
        let fed = feed_tls(&mut self.conn, &mut self.pending, data);
        if fed.is_err() {
            let _ = self.conn.write_tls(&mut Sock { fd });
        }
        fed
    }
}

impl AsyncRead for H2Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let from = buf.filled().len();
        loop {
            // What rustls already holds needs no system call.
            if let Some(tls) = &mut this.tls {
                if tls.take(buf)? {
                    break;
                }
            }
            if this.drained || this.read_wait.is_some() {
                let tcp = &this.tcp;
                ready!(poll_wait(&mut this.read_wait, cx, || {
                    let tcp = tcp.clone();
                    Box::pin(async move { tcp.readable(false).await })
                }))?;
                this.drained = false;
            }
            if this.try_read(buf)? {
                break;
            }
        }
        this.opened(buf, from);
        Poll::Ready(Ok(()))
    }
}

/// What a read without waiting found.
enum Fill {
    /// Bytes (or the end); `short` when the socket gave less than asked,
    /// so it is likely empty now.
    Got { short: bool },
    /// Nothing yet.
    Empty,
}

impl AsyncWrite for H2Io {
    /// Plain: sends at once. TLS: encrypts into rustls's queue (sent by
    /// `poll_flush`, which h2 calls after each batch of frames); a full
    /// queue is sent first.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        loop {
            let fd = this.tcp.as_raw_fd();
            let sent = match &mut this.tls {
                Some(tls) => tls.conn.writer().write_vectored(bufs),
                None => Sock { fd }.write_vectored(bufs),
            };
            match sent {
                Ok(n) if n > 0 => return Poll::Ready(Ok(n)),
                // rustls's queue is full: send some of it (with nothing
                // queued it would never take more).
                Ok(_) => {
                    if !this.try_send()? {
                        ready!(this.poll_writable(cx))?;
                    } else if this.tls.is_some() {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                }
                Err(e) if is_interrupted(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(this.poll_writable(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.try_send()? {
            ready!(this.poll_writable(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// A close_notify (TLS), the queue sent, then a FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(tls) = &mut this.tls {
            if !tls.closing {
                tls.closing = true;
                tls.conn.send_close_notify();
            }
        }
        while !this.try_send()? {
            ready!(this.poll_writable(cx))?;
        }
        // SAFETY: shutting down the write half of a socket we own only sends a FIN.
        unsafe { libc::shutdown(this.tcp.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(Ok(()))
    }
}

/// Polls the wait in `slot`, starting one with `start` if none is armed.
fn poll_wait(slot: &mut Option<Wait>, cx: &mut Context<'_>, start: impl FnOnce() -> Wait) -> Poll<io::Result<()>> {
    let wait = slot.get_or_insert_with(start);
    let r = ready!(wait.as_mut().poll(cx));
    *slot = None;
    Poll::Ready(r)
}

/// Reads from a plain socket into `buf`'s unfilled part without waiting.
fn recv_into(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<Fill> {
    let room = buf.remaining();
    // SAFETY: the unfilled part is valid for writes of `room` bytes.
    let Some(n) = (unsafe { recv_now(fd, buf.unfilled_mut().as_mut_ptr().cast(), room) })? else {
        return Ok(Fill::Empty);
    };
    // SAFETY: recv initialised the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(Fill::Got { short: n < room })
}

/// A socket written without waiting (by rustls, and plain writes):
/// `WouldBlock` when it has no room.
struct Sock {
    fd: RawFd,
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// One `sendmsg` for every slice.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is a valid empty message.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec; sendmsg only reads them.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(1024) as _;
        // SAFETY: `msg` points at live slices for the duration of the call.
        let n = unsafe { libc::sendmsg(self.fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
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
