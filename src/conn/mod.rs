//! The connection layer: one stream type for both sides of the proxy,
//! plain TCP or TLS, so the request path never names a socket type.
//!
//! Every read and write moves bytes through the caller's reused buffers
//! (monoio's owned-buffer I/O underneath). The raw-fd tricks live here and
//! nowhere else: the direct non-blocking final send, the readiness wait of
//! an idle connection and the pool's liveness peek.
//!
//! TLS is rustls driven by hand rather than through monoio-rustls: that
//! wrapper pins two 16 KiB buffers per connection for its whole life, which
//! an idle keep-alive connection cannot afford. Here ciphertext lands in
//! the caller's read buffer (its spare capacity), is handed to rustls, and
//! the decrypted bytes are copied back into the same buffer; outgoing
//! ciphertext goes through a small buffer of the stream's own that is freed
//! when the connection goes idle (`shed`). An idle TLS connection holds the
//! socket, the rustls state (keys and a small deframer buffer) and nothing
//! else.
//!
//! Readiness: a TLS stream can hold decrypted bytes that the socket no
//! longer shows, so `readable` answers at once when rustls holds plaintext
//! (or a close) and only otherwise waits on the socket.

mod h2body;
pub mod h2io;
pub mod h2stream;
pub mod h2up;

use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Most ciphertext read from the socket at once: rustls refuses more input
/// while it holds over 16 KiB of undelivered plaintext.
const TLS_READ: usize = 16 * 1024;

/// Reads during a handshake: flights are small, and a stalled handshake
/// should pin little.
pub const HANDSHAKE_READ: usize = 4096;

/// A connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the rustls state is large and plain
    /// connections should not pay for it).
    Tls(Box<TlsStream>),
    /// One HTTP/2 stream, carrying one HTTP/1.1 exchange (see `h2stream`).
    H2(Box<h2stream::H2Stream>),
    /// One HTTP/2 stream to a backend, as an HTTP/1.1 connection (see `h2up`).
    H2Up(Box<h2up::H2Up>),
}

/// A TLS connection: the socket, the rustls state, and outgoing ciphertext.
pub struct TlsStream {
    tcp: TcpStream,
    tls: rustls::Connection,
    /// Ciphertext on its way to the socket; freed when idle.
    out: Vec<u8>,
    /// Ciphertext read but not yet taken by rustls (it was holding too much
    /// plaintext); rare, fed first on the next read.
    pending: Vec<u8>,
}

/// What a TLS connection negotiated (for the access log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TlsInfo {
    /// "TLSv1.2" or "TLSv1.3".
    pub version: &'static str,
}

fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Stream {
    /// Wraps a plain socket.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream::Plain(tcp)
    }

    /// The underlying socket (none for an HTTP/2 stream).
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(&t.tcp),
            Stream::H2(_) | Stream::H2Up(_) => None,
        }
    }

    /// The ALPN protocol a TLS client and we agreed on.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(t) => t.tls.alpn_protocol(),
            _ => None,
        }
    }

    /// The protocol the client speaks: `"h2"` for an HTTP/2 stream.
    pub fn protocol(&self) -> &'static str {
        match self {
            Stream::H2(_) => "h2",
            _ => "h1",
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// TLS version, when TLS.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(TlsInfo { version: version_name(t.tls.protocol_version()) }),
            Stream::H2(h) => h.info().tls,
            Stream::H2Up(_) => None,
        }
    }

    /// The SNI name the client sent (server side of TLS), if any.
    pub fn sni(&self) -> Option<&str> {
        match self {
            Stream::Tls(t) => match &t.tls {
                rustls::Connection::Server(s) => s.server_name(),
                rustls::Connection::Client(_) => None,
            },
            Stream::Plain(_) | Stream::H2Up(_) => None,
            Stream::H2(h) => h.info().sni.as_deref(),
        }
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self) {
        if let Some(tcp) = self.tcp() {
            let _ = tcp.set_nodelay(true);
        }
    }

    /// Reads more bytes onto the end of `buf`, into its spare capacity
    /// (the caller makes sure there is some). `Ok(0)` is the end of the
    /// stream (a TLS peer that closes without close_notify too: HTTP
    /// framing, not TLS, decides whether a message was truncated). If the
    /// future is dropped mid-read, `buf` is left empty.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => loop {
                let len = buf.len();
                let v = std::mem::take(buf);
                let (res, slice) = s.read(v.slice_mut(len..)).await;
                *buf = slice.into_inner();
                match res {
                    Err(e) if is_interrupted(&e) => continue,
                    other => return other,
                }
            },
            Stream::Tls(t) => t.read(buf).await,
            // Inline: smaller than the TLS read, so free for every request
            // (a Box here cost an allocation per read of an HTTP/2 stream).
            Stream::H2(h) => h.read(buf).await,
            Stream::H2Up(h) => h.read(buf).await,
        }
    }

    /// Writes some of `buf[start..end]`; returns how much was taken. If the
    /// future is dropped mid-write, `buf` is left empty.
    pub async fn write(&mut self, buf: &mut Vec<u8>, start: usize, end: usize) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => loop {
                let v = std::mem::take(buf);
                let (res, slice) = s.write(v.slice(start..end)).await;
                *buf = slice.into_inner();
                match res {
                    Err(e) if is_interrupted(&e) => continue,
                    other => return other,
                }
            },
            Stream::Tls(t) => t.write(&buf[start..end]).await,
            Stream::H2(h) => h.write(&buf[start..end]).await,
            // Boxed: inline, its state would grow every request's future.
            Stream::H2Up(h) => Box::pin(h.write(&buf[start..end])).await,
        }
    }

    /// Waits until a read would find something: bytes (or a close) on the
    /// socket, or plaintext a TLS stream already holds. Holds no buffer.
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable(false).await,
            Stream::Tls(t) => {
                if t.holds_input() {
                    return Ok(());
                }
                t.tcp.readable(false).await
            }
            Stream::H2(h) => h.readable().await,
            Stream::H2Up(h) => h.readable().await,
        }
    }

    /// Sends what the socket takes at once, without waiting (a direct
    /// non-blocking `send`); returns how much. Plain only: a TLS stream
    /// returns 0 and its bytes go the usual way.
    pub fn send_now(&mut self, data: &[u8]) -> usize {
        let Stream::Plain(s) = self else { return 0 };
        let fd = s.as_raw_fd();
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            // SAFETY: `fd` is the open socket `s` owns; `rest` is a live slice.
            let n =
                unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n > 0 {
                pos += n as usize;
                continue;
            }
            if n < 0 && is_interrupted(&io::Error::last_os_error()) {
                continue;
            }
            break;
        }
        pos
    }

    /// TLS: writes `data` as the last bytes of the stream, with the
    /// close_notify in the same socket write, then a FIN. (Plain streams
    /// use `send_now` and `close_write`.)
    pub async fn write_last_tls(&mut self, data: &[u8]) -> io::Result<()> {
        let Stream::Tls(t) = self else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let mut pos = 0;
        while pos < data.len() {
            pos += t.tls.writer().write(&data[pos..])?;
            if pos < data.len() {
                t.flush().await?;
            }
        }
        t.tls.send_close_notify();
        t.flush().await?;
        // SAFETY: shutting down the write half of a socket we own only sends a FIN.
        unsafe { libc::shutdown(t.tcp.as_raw_fd(), libc::SHUT_WR) };
        Ok(())
    }

    /// Ends our side of the stream: a TLS close_notify (best effort), then
    /// a FIN, so the peer sees the end of the response and of the stream
    /// together and this side closes first.
    pub async fn close_write(&mut self) {
        match self {
            Stream::Tls(t) => {
                t.tls.send_close_notify();
                let _ = Box::pin(t.flush()).await;
            }
            Stream::H2(h) => return h.finish(),
            Stream::H2Up(_) => return,
            Stream::Plain(_) => {}
        }
        if let Some(tcp) = self.tcp() {
            // SAFETY: shutting down the write half of a socket we own only sends a FIN.
            unsafe { libc::shutdown(tcp.as_raw_fd(), libc::SHUT_WR) };
        }
    }

    /// Whether the peer has neither closed nor written on an idle
    /// connection: a non-blocking peek that finds nothing to read.
    pub fn still_open(&mut self) -> bool {
        if let Stream::Tls(t) = self {
            if t.holds_input() {
                return false;
            }
        }
        let Some(tcp) = self.tcp() else { return false };
        let fd = tcp.as_raw_fd();
        let mut byte = 0u8;
        // SAFETY: recv into a one-byte local buffer on a socket we own.
        let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Frees what an idle connection does not need (a TLS stream's
    /// outgoing ciphertext buffer).
    pub fn shed(&mut self) {
        if let Stream::Tls(t) = self {
            t.out = Vec::new();
        }
    }

    /// The plain socket, for the upgrade tunnel's split halves.
    pub fn into_plain(self) -> Result<TcpStream, Stream> {
        match self {
            Stream::Plain(s) => Ok(s),
            other => Err(other),
        }
    }
}

/// Hands ciphertext to rustls and decrypts it. What rustls will not take
/// yet (it holds too much undelivered plaintext) waits in `pending`, to be
/// fed first next time.
fn feed_tls(tls: &mut rustls::Connection, pending: &mut Vec<u8>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match tls.read_tls(&mut data) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Other => {
                pending.extend_from_slice(data);
                break;
            }
            Err(e) => return Err(e),
        }
        tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(())
}

/// A `recv` that does not wait: `None` when the socket has nothing yet.
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_now(fd: std::os::fd::RawFd, ptr: *mut u8, len: usize) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: the caller's promise on `ptr` and `len`.
        let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(Some(n));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "-",
    }
}

impl TlsStream {
    /// A stream over `tcp` driven by `tls` (handshake not yet done).
    pub fn new(tcp: TcpStream, tls: rustls::Connection) -> TlsStream {
        TlsStream { tcp, tls, out: Vec::new(), pending: Vec::new() }
    }

    /// Runs the handshake to its end, reading ciphertext through `scratch`
    /// (a reused buffer; left empty). On a protocol error the alert rustls
    /// queued is sent before the error returns. The caller bounds the time.
    pub async fn handshake(&mut self, scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        scratch.reserve(HANDSHAKE_READ);
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.flush().await?;
                continue;
            }
            let v = std::mem::take(scratch);
            let end = v.capacity().min(TLS_READ);
            let (res, slice) = self.tcp.read(v.slice_mut(0..end)).await;
            *scratch = slice.into_inner();
            let n = match res {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            };
            let fed = self.feed(&scratch[..n]);
            scratch.clear();
            if let Err(e) = fed {
                let _ = self.flush().await;
                return Err(e);
            }
        }
        // The last flight. A TLS 1.3 server has sent its flight already and
        // only holds session tickets now: they go out with the first
        // response instead of in a write of their own.
        let tls13_server = matches!(self.tls, rustls::Connection::Server(_))
            && self.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if tls13_server {
            return Ok(());
        }
        self.flush().await
    }

    /// rustls holds plaintext, a close_notify or an error to report.
    fn holds_input(&mut self) -> bool {
        !self.pending.is_empty()
            || !matches!(self.tls.reader().fill_buf(), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Hands ciphertext to rustls and processes it (see `feed_tls`).
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        feed_tls(&mut self.tls, &mut self.pending, data)
    }

    async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let len = buf.len();
        loop {
            match self.tls.reader().fill_buf() {
                Ok(chunk) if !chunk.is_empty() => {
                    let room = buf.capacity() - len;
                    let n = if room == 0 { chunk.len() } else { chunk.len().min(room) };
                    buf.extend_from_slice(&chunk[..n]);
                    self.tls.reader().consume(n);
                    return Ok(n);
                }
                Ok(_) => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.pending.is_empty() {
                let pending = std::mem::take(&mut self.pending);
                self.feed(&pending)?;
                continue;
            }
            // Ciphertext lands in the buffer's spare capacity, then rustls
            // copies it in and the plaintext comes back to the same place.
            if buf.capacity() == len {
                buf.reserve(TLS_READ);
            }
            let end = buf.capacity().min(len + TLS_READ);
            let v = std::mem::take(buf);
            let (res, slice) = self.tcp.read(v.slice_mut(len..end)).await;
            *buf = slice.into_inner();
            let n = match res {
                Ok(n) => n,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // Marks the TCP end; the reader then reports it.
                let _ = self.tls.read_tls(&mut &[][..]);
                continue;
            }
            let fed = self.feed(&buf[len..len + n]);
            buf.truncate(len);
            if let Err(e) = fed {
                let _ = self.flush().await;
                return Err(e);
            }
            // Records rustls queued meanwhile (session tickets, a KeyUpdate
            // answer) go out with the next write.
        }
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tls.wants_write() {
            self.flush().await?;
        }
        let n = self.tls.writer().write(data)?;
        self.flush().await?;
        Ok(n)
    }

    /// Sends every queued TLS record.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.out.clear();
            self.tls.write_tls(&mut self.out)?;
            let v = std::mem::take(&mut self.out);
            let (res, v) = self.tcp.write_all(v).await;
            self.out = v;
            res?;
        }
        Ok(())
    }
}
