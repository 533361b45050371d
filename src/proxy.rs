//! One client connection: read a head → route → pick → pool → forward →
//! stream the response back, with retries on another backend where safe.
//!
//! Buffers: an idle keep-alive connection holds none. It waits for
//! readability, then borrows a `Bufs` from its worker and returns it when
//! the request is done and no pipelined bytes are left. Request heads and
//! bodies, response heads and bodies all move through those reused buffers;
//! nothing here allocates per request in steady state.
//!
//! Errors: everything that can fail before the first response byte reaches
//! the client is a `ProxyError` and is answered in one place
//! (`respond_error`); after that, a failure just closes the connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::balance::Tried;
use crate::error::{Kind, ProxyError};
use crate::http::{
    parse_request, parse_response, write_error_response, write_request_head, write_response_head, BodyKind, ChunkError,
    ChunkedDecoder, ForwardCtx, HeadLimits, Method, ParseError, RequestHead, ResponseHead,
};
use crate::upstream::{Backend, Upstream};
use crate::worker::idle::{before, IdleTimers};
use crate::worker::{Bufs, ConnGuard, RouteRt, Worker};

/// What one exchange came to (for the access log and stats).
struct Exchange {
    status: u16,
    bytes: u64,
    backend: Option<std::sync::Arc<str>>,
    started: Instant,
    route: Option<Rc<RouteRt>>,
    retries: u32,
    timeouts: u32,
    rejected: bool,
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    Upgrade(TcpStream),
}

enum Read {
    Data,
    Eof,
    TimedOut,
    Failed,
}

/// Largest read buffer a response body grows to (the buffer pool keeps
/// buffers up to 4 × `BUF_SIZE`).
const BIG_READ: usize = 4 * crate::worker::BUF_SIZE;

/// A deadline on the worker's operation timers (see `worker::idle`).
#[derive(Clone, Copy)]
struct Due<'a> {
    timers: &'a IdleTimers,
    at: Instant,
}

/// `d` from now.
fn due(w: &Worker, d: Duration) -> Due<'_> {
    Due { timers: &w.timers, at: Instant::now() + d }
}

/// Reads more bytes onto the end of `buf`, growing it to at most `max`
/// bytes of capacity. On a timeout the buffer is lost (the caller closes).
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, max: usize, deadline: Due<'_>) -> Read {
    if buf.len() >= buf.capacity() {
        let extra = buf.capacity().max(4096).min(max.saturating_sub(buf.len()));
        if extra == 0 {
            return Read::Failed;
        }
        buf.reserve_exact(extra);
    }
    let len = buf.len();
    loop {
        let v = std::mem::take(buf);
        let (res, slice) = match before(deadline.timers, deadline.at, s.read(v.slice_mut(len..))).await {
            Some(x) => x,
            None => return Read::TimedOut,
        };
        *buf = slice.into_inner();
        return match res {
            Ok(0) => Read::Eof,
            Ok(_) => Read::Data,
            // A signal or task-work interruption is not the peer's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => Read::Failed,
        };
    }
}

/// Writes `buf[range]` fully within `deadline`; the buffer comes back
/// unless the write timed out.
async fn write_range(s: &mut TcpStream, buf: &mut Vec<u8>, start: usize, end: usize, deadline: Due<'_>) -> bool {
    if start >= end {
        return true;
    }
    let mut v = std::mem::take(buf);
    let mut pos = start;
    while pos < end {
        let (res, slice) = match before(deadline.timers, deadline.at, s.write(v.slice(pos..end))).await {
            Some(x) => x,
            None => return false,
        };
        v = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(n) => pos += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    *buf = v;
    pos >= end
}

/// `write_range` to the client, counting the bytes sent.
async fn send(
    client: &mut TcpStream,
    ex: &mut Exchange,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    deadline: Due<'_>,
) -> bool {
    let ok = write_range(client, buf, start, end, deadline).await;
    if ok {
        ex.bytes += end.saturating_sub(start) as u64;
    }
    ok
}

/// The last bytes of a response. When the connection closes after them
/// (`close`) they are written at once from this thread (a non-blocking
/// `send`), then the FIN follows with `shutdown`, so the client sees the
/// end of the response and the end of the stream together and this side,
/// not the client, closes first (the closing side carries the TIME_WAIT
/// work; when the client closed first, its TIME_WAIT was processed on our
/// core). What the socket does not take at once goes the usual way.
async fn send_last(
    client: &mut TcpStream,
    ex: &mut Exchange,
    buf: &mut Vec<u8>,
    end: usize,
    close: bool,
    deadline: Due<'_>,
) -> bool {
    use std::os::fd::AsRawFd;
    if !close {
        return send(client, ex, buf, 0, end, deadline).await;
    }
    let fd = client.as_raw_fd();
    let mut pos = 0;
    while pos < end {
        let rest = &buf[pos..end];
        // SAFETY: `fd` is the open socket `client` owns; `rest` is a live slice.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n > 0 {
            pos += n as usize;
            continue;
        }
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break;
    }
    ex.bytes += pos as u64;
    if pos < end && !send(client, ex, buf, pos, end, deadline).await {
        return false;
    }
    // SAFETY: as above; shutting down the write half only sends a FIN.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    true
}

/// The client's own X-Request-Id value, if it sent one.
fn request_id_of<'a>(buf: &'a [u8], headers: &[crate::http::HeaderSpan]) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| span(buf, h.name).eq_ignore_ascii_case(b"x-request-id"))
        .map(|h| span(buf, h.value))
        .filter(|v| !v.is_empty())
}

/// Serves one client connection until it closes, errs or drains; the
/// guard (which counts the connection) drops with it.
///
/// Not an `async fn`: an async fn keeps its arguments twice in its state
/// machine (once as captured, once moved into its body's locals; rustc
/// #62958), and this state is what every idle connection holds. The
/// `async move` block below works on its captures in place.
#[allow(clippy::manual_async_fn)]
pub fn serve_client(
    guard: ConnGuard,
    mut client: TcpStream,
    peer: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    async move {
        let w = guard.worker();
        let _ = client.set_nodelay(true);
        // Boxed (pooled boxes): the connection's idle state holds a pointer.
        let mut bufs: Option<Box<Bufs>> = None;
        let mut first = true;
        let accepted = Instant::now();
        loop {
            let pipelined = bufs.as_ref().is_some_and(|b| !b.rbuf.is_empty());
            if !pipelined {
                if let Some(b) = bufs.take() {
                    w.put_bufs(b);
                }
                if w.drain.is_fired() {
                    return;
                }
                // Wait for the next request without holding a buffer.
                let timeouts = w.active().timeouts;
                let wait = if first { timeouts.client_head } else { timeouts.idle };
                let ready = monoio::select! {
                    r = client.readable(false) => r.is_ok(),
                    _ = w.idle.wait(Instant::now() + wait) => false,
                };
                if !ready {
                    return;
                }
            }
            let b = bufs.take().unwrap_or_else(|| w.take_bufs());
            let now = Instant::now();
            let head_deadline = if first { accepted } else { now } + w.active().timeouts.client_head;
            first = false;
            // The request runs in a pooled heap slot: between requests this
            // connection holds only its socket and a readiness wait.
            let (c, b, next) = w.slots.run(exchange(w.clone(), client, peer, b, now, head_deadline)).await;
            client = c;
            match next {
                Next::KeepAlive => bufs = Some(b),
                Next::Close => {
                    w.put_bufs(b);
                    return;
                }
                Next::Upgrade(upstream) => {
                    w.put_bufs(b);
                    // Boxed: upgrades are rare, and inline the tunnel would
                    // grow every idle connection's state.
                    Box::pin(tunnel(client, upstream, w.active().timeouts.idle)).await;
                    return;
                }
            }
        }
    }
}

/// One request/response exchange, owning what it works on (so that it can
/// live in a pooled slot); counts it and logs it.
async fn exchange(
    w: Rc<Worker>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut b: Box<Bufs>,
    started: Instant,
    head_deadline: Instant,
) -> (TcpStream, Box<Bufs>, Next) {
    let mut ex =
        Exchange { status: 0, bytes: 0, backend: None, started, route: None, retries: 0, timeouts: 0, rejected: false };
    b.log.clear();
    let next = handle_request(&w, &mut client, peer, &mut b, head_deadline, &mut ex).await;
    if ex.status != 0 {
        let us = ex.started.elapsed().as_micros() as u64;
        let outcome = crate::worker::stats::Outcome {
            status: ex.status,
            bytes: ex.bytes,
            retries: ex.retries,
            timeouts: ex.timeouts,
            rejected: ex.rejected,
            duration_us: us,
        };
        w.record_exchange(ex.route.as_deref(), &outcome);
        if let Some(log) = &w.log {
            if b.log.is_empty() {
                crate::accesslog::begin(&mut b.log, std::time::SystemTime::now(), b"-", peer, b"-", b"-");
            }
            crate::accesslog::finish(&mut b.log, ex.status, ex.backend.as_deref(), ex.bytes, us);
            log.push(&b.log);
        }
    }
    (client, b, next)
}

/// Answers an error with a short body. Returns whether the write succeeded.
async fn respond_error(
    w: &Worker,
    client: &mut TcpStream,
    b: &mut Bufs,
    ex: &mut Exchange,
    status: u16,
    close: bool,
) -> bool {
    ex.status = status;
    let extra: &[u8] = if status == 503 { b"retry-after: 1\r\n" } else { b"" };
    b.scratch.clear();
    write_error_response(&mut b.scratch, status, close, extra);
    let end = b.scratch.len();
    ex.bytes = 0;
    send_last(client, ex, &mut b.scratch, end, close, due(w, w.active().timeouts.idle)).await
}

fn span(buf: &[u8], s: (u32, u32)) -> &[u8] {
    buf.get(s.0 as usize..s.1 as usize).unwrap_or(b"")
}

/// The request body as far as it is already in the buffer.
struct Held {
    /// Body bytes after the head that belong to this request.
    len: usize,
    /// The whole body is held (a retry can resend it).
    complete: bool,
}

async fn handle_request(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    peer: SocketAddr,
    b: &mut Bufs,
    head_deadline: Instant,
    ex: &mut Exchange,
) -> Next {
    let active = w.active();
    let limits = HeadLimits { max_head_bytes: active.limits.max_head_bytes, max_headers: active.limits.max_headers };
    let idle = active.timeouts.idle;
    // 1. The head.
    let req = loop {
        match parse_request(&b.rbuf, &limits, &mut b.headers) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                respond_error(w, client, b, ex, parse_status(&e), true).await;
                return Next::Close;
            }
        }
        let had = !b.rbuf.is_empty();
        match read_more(client, &mut b.rbuf, limits.max_head_bytes + 1, Due { timers: &w.timers, at: head_deadline })
            .await
        {
            Read::Data => {}
            Read::TimedOut if had => {
                respond_error(w, client, b, ex, 408, true).await;
                return Next::Close;
            }
            Read::Failed if had => {
                // The buffer is full: the head cannot complete.
                respond_error(w, client, b, ex, 431, true).await;
                return Next::Close;
            }
            _ => return Next::Close,
        }
    };
    // The snapshot current when the head completed routes this request.
    let active = w.active();
    let mut rid = [0u8; 24];
    w.next_request_id(&mut rid);
    if w.log.is_some() {
        let id = request_id_of(&b.rbuf, &b.headers).unwrap_or(&rid);
        let method = span(&b.rbuf, req.method_span);
        let path = span(&b.rbuf, req.target);
        crate::accesslog::begin(&mut b.log, std::time::SystemTime::now(), id, peer, method, path);
    }
    let has_body = !matches!(req.body, BodyKind::None | BodyKind::Length(0));
    // 2. Route.
    let route = match active.router.lookup(req.host.map(|s| span(&b.rbuf, s))) {
        Some(r) => {
            ex.route = Some(r.clone());
            r.clone()
        }
        None => {
            let keep = (!has_body).then_some(req.head_len);
            return fail(w, client, b, ex, &req, ProxyError::new(Kind::NoRoute, "no route for host"), keep).await;
        }
    };
    if req.method == Method::Connect {
        return fail(w, client, b, ex, &req, ProxyError::new(Kind::MethodNotAllowed, "CONNECT"), None).await;
    }
    let max_body = route.cfg.max_body_bytes;
    if let BodyKind::Length(n) = req.body {
        if max_body > 0 && n > max_body {
            return fail(
                w,
                client,
                b,
                ex,
                &req,
                ProxyError::new(Kind::BodyTooLarge, "content-length over limit"),
                None,
            )
            .await;
        }
    }
    // 3. What of the body is here already (and, for chunked, is it sound).
    let avail = b.rbuf.len() - req.head_len;
    let mut decoder = None;
    let held = match req.body {
        BodyKind::None | BodyKind::UntilClose => Held { len: 0, complete: true },
        BodyKind::Length(n) => Held { len: avail.min(n as usize), complete: avail as u64 >= n },
        BodyKind::Chunked => {
            let mut d = ChunkedDecoder::new(max_body);
            match d.feed(&b.rbuf[req.head_len..], &mut |_| {}) {
                Ok((used, done)) => {
                    decoder = Some(d);
                    Held { len: used, complete: done }
                }
                Err(e) => return fail(w, client, b, ex, &req, chunk_error(e), None).await,
            }
        }
    };
    if req.expect_continue && !held.complete {
        let mut cont = std::mem::take(&mut b.scratch);
        cont.clear();
        cont.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        let end = cont.len();
        if !write_range(client, &mut cont, 0, end, due(w, idle)).await {
            return Next::Close;
        }
        b.scratch = cont;
    }
    // 4. The forwarded head (and the held body) in `out`, built once for every attempt.
    let path = span(&b.rbuf, req.path);
    let (pool, strip) = route.pool_for(path);
    if let Some(prefix) = strip {
        b.scratch.clear();
        let rest = &path[prefix.len().min(path.len())..];
        if !rest.starts_with(b"/") {
            b.scratch.push(b'/');
        }
        b.scratch.extend_from_slice(rest);
    }
    // Admission: the route's active limit, then its bounded queue.
    let _permit = match route.admission.acquire(route.cfg.queue).await {
        Some(p) => p,
        None => {
            ex.rejected = true;
            let err = ProxyError::new(Kind::Overloaded, "admission queue full or wait expired");
            let keep = held.complete.then_some(req.head_len + held.len);
            return fail(w, client, b, ex, &req, err, keep).await;
        }
    };
    b.out.clear();
    let ctx = ForwardCtx {
        client_ip: peer.ip(),
        proto: "http",
        path_override: strip.map(|_| &b.scratch[..]),
        extra_headers: &route.headers,
        request_id: &rid,
    };
    write_request_head(&mut b.out, &b.rbuf, &req, &b.headers, &ctx);
    let body_start = req.head_len;
    b.out.extend_from_slice(&b.rbuf[body_start..body_start + held.len]);
    // The request's bytes are now in `out`; what stays in rbuf is pipelined.
    b.rbuf.drain(..body_start + held.len);
    // 5. Pick, forward, retry.
    let mut tried = Tried::default();
    let mut attempts = 0u32;
    let mut last: Option<ProxyError> = None;
    let mut body_sent = false;
    while let Some(i) = pool.balancer.pick(&pool.backends, peer.ip(), tried) {
        tried.insert(i);
        let backend = pool.backends[i].clone();
        let started = Instant::now();
        backend.node.start();
        let result =
            forward(w, client, b, ex, &req, &route, &backend, &held, &mut decoder, &mut body_sent, started).await;
        match result {
            Ok((next, rtt)) => {
                backend.node.finish(rtt, started + rtt);
                w.record_attempt(&backend, true, rtt.as_micros() as u64);
                ex.backend = Some(backend.key.backend.clone());
                return next;
            }
            Err(e) => {
                let now = Instant::now();
                backend.node.finish(now - started, now);
                w.record_attempt(&backend, false, 0);
                if matches!(e.kind, Kind::ConnectTimeout | Kind::ResponseTimeout) {
                    ex.timeouts += 1;
                }
                if e.is_passive_failure() {
                    w.passive_failure(&backend);
                }
                tracing::debug!(worker = w.index, backend = %backend.key.backend, error = %e, "attempt failed");
                let safe = !body_sent
                    && (e.before_connect() || (e.before_response() && req.method.is_idempotent() && held.complete));
                last = Some(e);
                if !safe || attempts >= route.cfg.retries {
                    break;
                }
                attempts += 1;
                ex.retries += 1;
            }
        }
    }
    let err = last.unwrap_or(ProxyError::new(Kind::NoBackend, "no backend is up"));
    // The body was consumed (held or streamed): keep-alive only if it was all here.
    // The request's bytes already left rbuf (they were copied to `out`).
    fail(w, client, b, ex, &req, err, held.complete.then_some(0)).await
}

fn parse_status(e: &ParseError) -> u16 {
    e.status()
}

fn chunk_error(e: ChunkError) -> ProxyError {
    match e {
        ChunkError::TooLarge => ProxyError::new(Kind::BodyTooLarge, "chunked body over limit"),
        ChunkError::Malformed(m) => ProxyError::new(Kind::BadBody, m),
    }
}

/// Answers `err`; keeps the connection only when asked and the client allows.
async fn fail(
    w: &Worker,
    client: &mut TcpStream,
    b: &mut Bufs,
    ex: &mut Exchange,
    req: &RequestHead,
    err: ProxyError,
    keep: Option<usize>,
) -> Next {
    // `keep`: how many bytes of `rbuf` this request used, when the
    // connection may stay open (the body was wholly in the buffer). They are
    // dropped so that the next parse starts at the next request.
    let keep = keep.filter(|_| req.keep_alive && req.version_minor == 1);
    if !respond_error(w, client, b, ex, err.status(), keep.is_none()).await {
        return Next::Close;
    }
    match keep {
        Some(used) => {
            b.rbuf.drain(..used.min(b.rbuf.len()));
            Next::KeepAlive
        }
        None => Next::Close,
    }
}

/// One attempt on one backend. `Err` only while nothing has reached the
/// client; afterwards failures close the connection (`Ok(Next::Close)`).
/// Also returns the time to the response head (for latency balancing).
#[allow(clippy::too_many_arguments)]
async fn forward(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    b: &mut Bufs,
    ex: &mut Exchange,
    req: &RequestHead,
    route: &Rc<RouteRt>,
    backend: &Rc<Backend>,
    held: &Held,
    decoder: &mut Option<ChunkedDecoder>,
    body_sent: &mut bool,
    t0: Instant,
) -> Result<(Next, Duration), ProxyError> {
    let cfg = &route.cfg;
    let mut up = backend.connect(cfg.connect, t0).await?;
    let resp = loop {
        match send_and_read_head(w, client, b, req, cfg, &mut up, held, decoder, body_sent).await {
            Err(e) if e.kind == Kind::StaleConnection && up.reused && !*body_sent => {
                // A pooled connection the backend had closed: once more, fresh.
                up = backend.connect_fresh(cfg.connect).await?;
            }
            Err(e) if e.kind == Kind::StaleConnection => {
                return Err(ProxyError::new(Kind::UpstreamIo, "backend closed the connection before answering"))
            }
            other => break other?,
        }
    };
    let rtt = t0.elapsed();
    let idle = w.active().timeouts.idle;
    if resp.status == 101 {
        if !req.upgrade_websocket {
            return Err(ProxyError::new(Kind::BadResponse, "101 without an upgrade request"));
        }
        b.scratch.clear();
        write_response_head(&mut b.scratch, &b.ubuf, &resp, &b.uheaders, false, false);
        b.scratch.extend_from_slice(&b.ubuf[resp.head_len..]);
        let end = b.scratch.len();
        if !write_range(client, &mut b.scratch, 0, end, due(w, idle)).await {
            return Ok((Next::Close, rtt));
        }
        // Client bytes that followed the upgrade request go to the backend.
        let end = b.rbuf.len();
        if !write_range(&mut up.stream, &mut b.rbuf, 0, end, due(w, cfg.upstream)).await {
            return Ok((Next::Close, rtt));
        }
        b.rbuf.clear();
        ex.status = 101;
        return Ok((Next::Upgrade(up.stream), rtt));
    }
    ex.status = resp.status;
    let next = stream_response(w, client, b, ex, req, cfg, backend, up, &resp).await;
    Ok((next, rtt))
}

/// Writes the request (head, held body, then the streamed rest) and reads
/// the response head into `b.ubuf`, skipping interim 1xx responses.
#[allow(clippy::too_many_arguments)]
async fn send_and_read_head(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    b: &mut Bufs,
    req: &RequestHead,
    cfg: &control::model::Route,
    up: &mut Upstream,
    held: &Held,
    decoder: &mut Option<ChunkedDecoder>,
    body_sent: &mut bool,
) -> Result<ResponseHead, ProxyError> {
    let stale_or = |reused: bool, kind: Kind, ctx: &'static str| {
        if reused {
            ProxyError::new(Kind::StaleConnection, ctx)
        } else {
            ProxyError::new(kind, ctx)
        }
    };
    // One deadline for the request write and the whole response head
    // (renewed after a streamed body): a backend that drips its head a
    // byte at a time does not extend it.
    let mut head_due = due(w, cfg.upstream);
    let end = b.out.len();
    if !write_range(&mut up.stream, &mut b.out, 0, end, head_due).await {
        if b.out.is_empty() {
            // The timed-out write kept the request's bytes: another attempt
            // would have nothing to send, so none is made.
            *body_sent = true;
            return Err(ProxyError::new(Kind::ResponseTimeout, "request write timed out"));
        }
        return Err(stale_or(up.reused, Kind::UpstreamIo, "request write failed"));
    }
    if !held.complete {
        *body_sent = true;
        stream_request_body(w, client, b, req, cfg, up, held, decoder).await?;
        head_due = due(w, cfg.upstream);
    }
    // Response head.
    let active = w.active();
    let limits = HeadLimits { max_head_bytes: active.limits.max_head_bytes.max(16 * 1024), max_headers: 256 };
    b.ubuf.clear();
    loop {
        match parse_response(&b.ubuf, &limits, req.method, &mut b.uheaders) {
            Ok(Some(resp)) if (100..200).contains(&resp.status) && resp.status != 101 => {
                b.ubuf.drain(..resp.head_len);
                continue;
            }
            Ok(Some(resp)) => return Ok(resp),
            Ok(None) => {}
            Err(_) => return Err(ProxyError::new(Kind::BadResponse, "malformed response head")),
        }
        let fresh = b.ubuf.is_empty();
        match read_more(&mut up.stream, &mut b.ubuf, limits.max_head_bytes + 1, head_due).await {
            Read::Data => {}
            Read::TimedOut => return Err(ProxyError::new(Kind::ResponseTimeout, "no response head in time")),
            Read::Eof | Read::Failed if fresh => {
                return Err(stale_or(up.reused, Kind::UpstreamIo, "backend closed before answering"))
            }
            Read::Eof | Read::Failed => return Err(ProxyError::new(Kind::BadResponse, "truncated response head")),
        }
    }
}

/// Streams the part of the request body that was not held.
#[allow(clippy::too_many_arguments)]
async fn stream_request_body(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    b: &mut Bufs,
    req: &RequestHead,
    cfg: &control::model::Route,
    up: &mut Upstream,
    held: &Held,
    decoder: &mut Option<ChunkedDecoder>,
) -> Result<(), ProxyError> {
    let idle = w.active().timeouts.idle;
    let client_err = ProxyError::new(Kind::ClientIo, "client body read failed");
    let up_err = ProxyError::new(Kind::UpstreamIo, "request body write failed");
    match req.body {
        BodyKind::Length(n) => {
            let mut remaining = n - held.len as u64;
            while remaining > 0 {
                if b.rbuf.is_empty() {
                    b.rbuf.reserve(super::worker::BUF_SIZE);
                    match read_more(client, &mut b.rbuf, usize::MAX, due(w, idle)).await {
                        Read::Data => {}
                        _ => return Err(client_err),
                    }
                }
                let take = (remaining.min(b.rbuf.len() as u64)) as usize;
                if !write_range(&mut up.stream, &mut b.rbuf, 0, take, due(w, cfg.upstream)).await {
                    return Err(up_err);
                }
                b.rbuf.drain(..take);
                remaining -= take as u64;
            }
            Ok(())
        }
        BodyKind::Chunked => {
            let Some(d) = decoder.as_mut() else {
                return Err(ProxyError::new(Kind::BadBody, "chunked body without a decoder"));
            };
            while !d.is_done() {
                if b.rbuf.is_empty() {
                    b.rbuf.reserve(super::worker::BUF_SIZE);
                    match read_more(client, &mut b.rbuf, usize::MAX, due(w, idle)).await {
                        Read::Data => {}
                        _ => return Err(client_err),
                    }
                }
                let (used, _) = d.feed(&b.rbuf, &mut |_| {}).map_err(chunk_error)?;
                if !write_range(&mut up.stream, &mut b.rbuf, 0, used, due(w, cfg.upstream)).await {
                    return Err(up_err);
                }
                b.rbuf.drain(..used);
            }
            Ok(())
        }
        BodyKind::None | BodyKind::UntilClose => Ok(()),
    }
}

/// Sends the response head and streams the body; returns the pooled
/// connection when it is reusable.
#[allow(clippy::too_many_arguments)]
async fn stream_response(
    w: &Rc<Worker>,
    client: &mut TcpStream,
    b: &mut Bufs,
    ex: &mut Exchange,
    req: &RequestHead,
    cfg: &control::model::Route,
    backend: &Rc<Backend>,
    mut up: Upstream,
    resp: &ResponseHead,
) -> Next {
    let idle = w.active().timeouts.idle;
    let dechunk = req.version_minor == 0 && resp.body == BodyKind::Chunked;
    let close = !req.keep_alive || req.version_minor == 0 || w.drain.is_fired() || resp.body == BodyKind::UntilClose;
    b.scratch.clear();
    write_response_head(&mut b.scratch, &b.ubuf, resp, &b.uheaders, close, dechunk);
    let client_deadline = || due(w, idle);
    let up_deadline = || due(w, cfg.upstream);
    let mut reusable = resp.keep_alive;
    let extra_start = resp.head_len;
    let done = match resp.body {
        BodyKind::None => {
            reusable &= b.ubuf.len() == extra_start;
            let end = b.scratch.len();
            send_last(client, ex, &mut b.scratch, end, close, client_deadline()).await
        }
        BodyKind::Length(n) => {
            // A small body that arrived apart from its head (a backend that
            // writes head and file separately): gather it first, so the
            // client gets one write instead of two.
            let whole = extra_start.saturating_add(n as usize);
            if b.ubuf.len() < whole && whole <= b.ubuf.capacity() {
                while b.ubuf.len() < whole {
                    if !matches!(read_more(&mut up.stream, &mut b.ubuf, whole, up_deadline()).await, Read::Data) {
                        // Nothing reached the client yet, but the backend
                        // broke off: a truncated answer is worse than none.
                        ex.status = 502;
                        return Next::Close;
                    }
                }
            }
            let first = (b.ubuf.len() - extra_start).min(n as usize);
            reusable &= b.ubuf.len() - extra_start == first;
            b.scratch.extend_from_slice(&b.ubuf[extra_start..extra_start + first]);
            let end = b.scratch.len();
            let mut remaining = n - first as u64;
            let mut ok = send_last(client, ex, &mut b.scratch, end, close && remaining == 0, client_deadline()).await;
            while ok && remaining > 0 {
                b.ubuf.clear();
                // A large body moves in reads of up to 64 KiB (fewer socket
                // operations per byte); the pool keeps such a buffer.
                let want = remaining.min(BIG_READ as u64) as usize;
                if b.ubuf.capacity() < want {
                    b.ubuf.reserve_exact(want);
                }
                match read_more(&mut up.stream, &mut b.ubuf, usize::MAX, up_deadline()).await {
                    Read::Data => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
                let take = remaining.min(b.ubuf.len() as u64) as usize;
                reusable &= take == b.ubuf.len();
                ok = send(client, ex, &mut b.ubuf, 0, take, client_deadline()).await;
                remaining -= take as u64;
            }
            ok && remaining == 0
        }
        BodyKind::Chunked => {
            let mut d = ChunkedDecoder::new(0);
            let mut ok = true;
            let mut start = extra_start;
            let mut first = true;
            loop {
                // Feed what is buffered; pass it through or de-chunk it into scratch.
                let fed = if dechunk {
                    let scratch = &mut b.scratch;
                    d.feed(&b.ubuf[start..], &mut |data| scratch.extend_from_slice(data))
                } else {
                    d.feed(&b.ubuf[start..], &mut |_| {})
                };
                let Ok((used, fin)) = fed else {
                    ok = false;
                    break;
                };
                if fin {
                    reusable &= start + used == b.ubuf.len();
                }
                if !dechunk {
                    if first {
                        b.scratch.extend_from_slice(&b.ubuf[start..start + used]);
                    } else if !send(client, ex, &mut b.ubuf, start, start + used, client_deadline()).await {
                        ok = false;
                        break;
                    }
                }
                if first || dechunk {
                    let end = b.scratch.len();
                    if !send(client, ex, &mut b.scratch, 0, end, client_deadline()).await {
                        ok = false;
                        break;
                    }
                    b.scratch.clear();
                }
                first = false;
                if fin {
                    break;
                }
                b.ubuf.clear();
                start = 0;
                match read_more(&mut up.stream, &mut b.ubuf, usize::MAX, up_deadline()).await {
                    Read::Data => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            ok
        }
        BodyKind::UntilClose => {
            reusable = false;
            b.scratch.extend_from_slice(&b.ubuf[extra_start..]);
            let end = b.scratch.len();
            let mut ok = send(client, ex, &mut b.scratch, 0, end, client_deadline()).await;
            while ok {
                b.ubuf.clear();
                match read_more(&mut up.stream, &mut b.ubuf, usize::MAX, up_deadline()).await {
                    Read::Data => {}
                    Read::Eof => break,
                    _ => {
                        ok = false;
                        break;
                    }
                }
                let end = b.ubuf.len();
                ok = send(client, ex, &mut b.ubuf, 0, end, client_deadline()).await;
            }
            ok
        }
    };
    if done && reusable {
        backend.put_idle(up.stream, Instant::now());
    }
    if done && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// Relays bytes both ways after a 101 until either side closes or both are
/// idle for `idle`.
async fn tunnel(client: TcpStream, upstream: TcpStream, idle: Duration) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let last = std::cell::Cell::new(Instant::now());
    monoio::select! {
        _ = relay(&mut cr, &mut uw, &last, idle) => {},
        _ = relay(&mut ur, &mut cw, &last, idle) => {},
    }
}

async fn relay<R: AsyncReadRent, W: AsyncWriteRentExt>(
    r: &mut R,
    wr: &mut W,
    last: &std::cell::Cell<Instant>,
    idle: Duration,
) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let deadline = last.get() + idle;
        let v = std::mem::take(&mut buf);
        match monoio::time::timeout_at(monoio::time::Instant::from_std(deadline), r.read(v)).await {
            Err(_) => {
                if last.get() + idle <= Instant::now() {
                    return;
                }
                buf = Vec::with_capacity(16 * 1024);
                continue;
            }
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
            Ok((Ok(_), v)) => {
                last.set(Instant::now());
                let (res, v) = wr.write_all(v).await;
                if res.is_err() {
                    return;
                }
                buf = v;
                buf.clear();
            }
        }
    }
}
