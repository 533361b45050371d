//! Pick a backend, forward the request, retry where the error says it is
//! safe, and hand the response to `relay`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::phases::{self, chunk_error, Req};
use super::wire::{due, read_more, write_range, Read};
use super::{fail, relay, Ctx, Next, Stop};
use crate::balance::Tried;
use crate::error::{Kind, ProxyError};
use crate::http::{
    parse_response, push_chunk, push_last_chunk, write_response_head, BodyKind, HeadLimits, Persist, ResponseHead,
};
use crate::upstream::{Backend, Upstream};

/// Streams an HTTP/2 backend may refuse per request before it counts as a
/// failed attempt (a refused stream was not processed: RFC 9113 §8.7 makes
/// it safe to send again). Each retry waits a little longer (1, 2, … ms),
/// so a burst past the backend's limit waits for streams to finish instead
/// of failing: at most 36 ms in all.
const MAX_REFUSED: u32 = 8;

/// Picks backends until one answers or the error forbids another try;
/// answers the last error when none did.
pub(super) async fn run(cx: &mut Ctx<'_>, req: &mut Req) -> Next {
    let route = req.route.clone();
    let pool = route.pool(req.rule);
    let idempotent_and_held = req.head.method.is_idempotent() && req.held.complete;
    let mut tried = panic_mode(pool, route.panic_threshold);
    let mut attempts = 0u32;
    let mut last: Option<ProxyError> = None;
    while let Some(i) = pool.balancer.pick(&pool.backends, cx.peer.ip(), tried) {
        tried.insert(i);
        let backend = &pool.backends[i];
        let started = Instant::now();
        backend.node.start();
        if pool.breaker.is_some() {
            backend.breaker.on_pick();
        }
        match attempt(cx, req, backend, started).await {
            Ok((next, rtt)) => {
                backend.node.finish(rtt, started + rtt);
                cx.w.record_attempt(backend, true, rtt.as_micros() as u64);
                if cx.w.log.is_some() {
                    cx.ex.backend = Some(backend.clone());
                }
                if let Some(cfg) = &pool.breaker {
                    let ok = !(cfg.count_5xx && cx.ex.status >= 500);
                    if let Some(change) = backend.breaker.record(ok, cfg, Instant::now()) {
                        cx.w.breaker_changed(backend, change);
                    }
                }
                return next;
            }
            Err(e) => {
                let now = Instant::now();
                backend.node.finish(now - started, now);
                cx.w.record_attempt(backend, false, 0);
                if let (Some(cfg), crate::error::Side::Upstream) = (&pool.breaker, e.side()) {
                    if let Some(change) = backend.breaker.record(false, cfg, now) {
                        cx.w.breaker_changed(backend, change);
                    }
                }
                if matches!(e.kind, Kind::ConnectTimeout | Kind::ResponseTimeout) {
                    cx.ex.timeouts += 1;
                }
                if e.is_passive_failure() {
                    cx.w.passive_failure(backend);
                }
                tracing::debug!(worker = cx.w.index, backend = %backend.key.backend, error = %e, "attempt failed");
                let again =
                    e.retry_safe(idempotent_and_held, req.body_sent) && attempts < route.settings(req.rule).retries;
                last = Some(e);
                if !again {
                    break;
                }
                attempts += 1;
                cx.ex.retries += 1;
            }
        }
    }
    let err = last.unwrap_or(ProxyError::new(Kind::NoBackend, "no backend is up"));
    // The request's bytes already left the read buffer (they were copied
    // to `out`): keep-alive only if the whole body was held.
    let keep = req.held.complete.then_some(0);
    fail(cx, Some(&req.head), Stop { err, keep }).await
}

/// Panic mode (Envoy's): when fewer than `threshold` percent of the pool's
/// backends are up, health is ignored for this request and all of them
/// take traffic, rather than the few left being overwhelmed or a 503.
/// Costs nothing on routes without it (threshold 0).
fn panic_mode(pool: &crate::route::PoolRt, threshold: u8) -> Tried {
    if threshold == 0 || pool.backends.is_empty() {
        return Tried::default();
    }
    let up = pool.backends.iter().filter(|b| b.node.is_up()).count();
    if up * 100 < usize::from(threshold) * pool.backends.len() {
        Tried::ignoring_health()
    } else {
        Tried::default()
    }
}

/// One attempt on one backend. `Err` only while nothing has reached the
/// client; afterwards failures close the connection (`Ok(Next::Close)`).
/// Also returns the time to the response head (for latency balancing).
async fn attempt(
    cx: &mut Ctx<'_>,
    req: &mut Req,
    backend: &Rc<Backend>,
    t0: Instant,
) -> Result<(Next, Duration), ProxyError> {
    let connect = req.route.settings(req.rule).connect;
    if req.host_slot.is_some() {
        phases::set_backend_host(&mut cx.b.out, req, &backend.host);
    }
    let mut up = backend.connect(connect, t0, !req.held.complete).await?;
    let mut refused = 0;
    let resp = loop {
        match send_and_read_head(cx, req, &mut up).await {
            Err(e) if e.kind == Kind::StaleConnection && up.reused && !req.body_sent => {
                // A pooled connection the backend had closed: once more, fresh.
                up = backend.connect_fresh(connect).await?;
            }
            Err(e) if e.kind == Kind::StreamRefused && !req.body_sent && refused < MAX_REFUSED => {
                // Not processed (an HTTP/2 backend at its stream limit):
                // a new stream on the same backend, whatever the method.
                refused += 1;
                monoio::time::sleep(Duration::from_millis(u64::from(refused))).await;
                up = backend.connect_fresh(connect).await?;
            }
            Err(e) if e.kind == Kind::StaleConnection => {
                return Err(ProxyError::new(Kind::UpstreamIo, "backend closed the connection before answering"))
            }
            other => break other?,
        }
    };
    let rtt = t0.elapsed();
    if resp.status == 101 {
        return Ok((upgrade(cx, req, up, &resp).await?, rtt));
    }
    cx.ex.status = resp.status;
    let next = relay::response(cx, req, backend, up, &resp).await;
    Ok((next, rtt))
}

/// A 101 answer to a WebSocket upgrade: the head goes to the client, what
/// the client sent after its request goes to the backend, and the
/// connection becomes a tunnel.
async fn upgrade(cx: &mut Ctx<'_>, req: &Req, mut up: Upstream, resp: &ResponseHead) -> Result<Next, ProxyError> {
    if !req.head.upgrade_websocket {
        return Err(ProxyError::new(Kind::BadResponse, "101 without an upgrade request"));
    }
    let b = &mut *cx.b;
    let idle = cx.w.active().timeouts.idle;
    b.scratch.clear();
    write_response_head(&mut b.scratch, &b.ubuf, resp, &b.uheaders, Persist::KeepAlive, false);
    b.scratch.extend_from_slice(&b.ubuf[resp.head_len..]);
    let end = b.scratch.len();
    if !write_range(cx.client, &mut b.scratch, 0, end, due(cx.w, idle)).await {
        return Ok(Next::Close);
    }
    let end = b.rbuf.len();
    if !write_range(&mut up.stream, &mut b.rbuf, 0, end, due(cx.w, req.route.settings(req.rule).upstream)).await {
        return Ok(Next::Close);
    }
    b.rbuf.clear();
    cx.ex.status = 101;
    Ok(Next::Upgrade(up.stream))
}

/// Writes the request (head, held body, then the streamed rest) and reads
/// the response head into `ubuf`, skipping interim 1xx responses.
async fn send_and_read_head(cx: &mut Ctx<'_>, req: &mut Req, up: &mut Upstream) -> Result<ResponseHead, ProxyError> {
    let stale_or = |reused: bool, kind: Kind, ctx: &'static str| {
        ProxyError::new(if reused { Kind::StaleConnection } else { kind }, ctx)
    };
    let upstream = req.route.settings(req.rule).upstream;
    // One deadline for the request write and the whole response head
    // (renewed after a streamed body): a backend that drips its head a
    // byte at a time does not extend it.
    let mut head_due = due(cx.w, upstream);
    let end = cx.b.out.len();
    if !write_range(&mut up.stream, &mut cx.b.out, 0, end, head_due).await {
        if cx.b.out.is_empty() {
            // The timed-out write kept the request's bytes: another attempt
            // would have nothing to send, so none is made.
            req.body_sent = true;
            return Err(ProxyError::new(Kind::ResponseTimeout, "request write timed out"));
        }
        return Err(stale_or(up.reused, Kind::UpstreamIo, "request write failed"));
    }
    if !req.held.complete {
        req.body_sent = true;
        stream_request_body(cx, req, up).await?;
        head_due = due(cx.w, upstream);
    }
    let active = cx.w.active();
    let limits = HeadLimits { max_head_bytes: active.limits.max_head_bytes.max(16 * 1024), max_headers: 256 };
    let b = &mut *cx.b;
    b.ubuf.clear();
    loop {
        match parse_response(&b.ubuf, &limits, req.head.method, &mut b.uheaders) {
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
            // An HTTP/2 backend refused the stream: it was not processed
            // (RFC 9113 8.7), so any request may go again.
            Read::Failed(Some(std::io::ErrorKind::ConnectionRefused)) if fresh => {
                return Err(ProxyError::new(Kind::StreamRefused, "backend refused the stream"))
            }
            Read::Eof | Read::Failed(_) if fresh => {
                return Err(stale_or(up.reused, Kind::UpstreamIo, "backend closed before answering"))
            }
            Read::Eof | Read::Failed(_) => return Err(ProxyError::new(Kind::BadResponse, "truncated response head")),
        }
    }
}

/// Streams the part of the request body that was not held.
async fn stream_request_body(cx: &mut Ctx<'_>, req: &mut Req, up: &mut Upstream) -> Result<(), ProxyError> {
    let idle = cx.w.active().timeouts.idle;
    let upstream = req.route.settings(req.rule).upstream;
    let client_err = ProxyError::new(Kind::ClientIo, "client body read failed");
    let up_err = ProxyError::new(Kind::UpstreamIo, "request body write failed");
    let b = &mut *cx.b;
    let mut remaining = match req.head.body {
        BodyKind::Length(n) => n - req.held.len as u64,
        _ => 0,
    };
    loop {
        let done = match req.head.body {
            BodyKind::Length(_) => remaining == 0,
            BodyKind::Chunked => req.decoder.as_ref().is_none_or(|d| d.is_done()),
            BodyKind::None | BodyKind::UntilClose => true,
        };
        if done {
            return Ok(());
        }
        if b.rbuf.is_empty() {
            b.rbuf.reserve(crate::worker::BUF_SIZE);
            if !matches!(read_more(cx.client, &mut b.rbuf, usize::MAX, due(cx.w, idle)).await, Read::Data) {
                return Err(client_err);
            }
        }
        let used = match (&mut req.decoder, req.head.body) {
            // Chunked: re-framed canonically (lowercase hex sizes, no
            // extensions, no trailers) in `scratch`; the client's own
            // framing never reaches the backend.
            (Some(d), BodyKind::Chunked) => {
                b.scratch.clear();
                let scratch = &mut b.scratch;
                let used = d.feed(&b.rbuf, &mut |data| push_chunk(scratch, data)).map_err(chunk_error)?.0;
                if d.is_done() {
                    push_last_chunk(&mut b.scratch, d.trailers());
                }
                let end = b.scratch.len();
                if !write_range(&mut up.stream, &mut b.scratch, 0, end, due(cx.w, upstream)).await {
                    return Err(up_err);
                }
                used
            }
            _ => {
                let take = remaining.min(b.rbuf.len() as u64) as usize;
                remaining -= take as u64;
                if !write_range(&mut up.stream, &mut b.rbuf, 0, take, due(cx.w, upstream)).await {
                    return Err(up_err);
                }
                take
            }
        };
        b.rbuf.drain(..used);
    }
}
