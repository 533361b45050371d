//! The request path: one client connection, and each of its requests as a
//! run of phases over one per-request context (`Ctx`).
//!
//! ```text
//! serve_client (this file)    wait for bytes without a buffer; per request:
//!   phases::read_head         head parsed by our HTTP/1.1 codec
//!   phases::route             Host → vHost → longest path prefix, limits
//!   phases::admit             the route's active/queued limits
//!   phases::policy            empty hook: auth, rate limits, cache, CORS
//!   forward::run              pick, forward, retry where the error allows
//!   relay                     the response, one function per body framing
//!   exchange (this file)      record: stats and access log
//! ```
//!
//! The connection is a `conn::Stream` (plain or TLS); the phases never see
//! a socket type. The request is read through `RequestView` accessors and
//! the upstream head is written from it (`http::write_request_head`), so a
//! future HTTP/2 stream can enter at `route` with its own view.
//!
//! Buffers: an idle keep-alive connection holds none. It waits for
//! readability, then borrows a `Bufs` from its worker and returns it when
//! the request is done and no pipelined bytes are left. Nothing here
//! allocates per request in steady state.
//!
//! Errors: everything that can fail before the first response byte reaches
//! the client is a `ProxyError` and is answered in one place (`fail`);
//! after that, a failure just closes the connection.

mod forward;
mod phases;
mod relay;
mod tunnel;
mod wire;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::conn::Stream;
use crate::error::ProxyError;
use crate::http::{write_error_response, Persist, RequestHead};
use crate::route::RouteRt;
use crate::worker::{Bufs, ConnGuard, Worker};
use wire::{due, send_last};

/// What one exchange came to (for the access log and stats).
struct Exchange {
    status: u16,
    bytes: u64,
    backend: Option<Rc<crate::upstream::Backend>>,
    started: Instant,
    route: Option<Rc<RouteRt>>,
    retries: u32,
    timeouts: u32,
    rejected: bool,
    /// The answer closed the connection early: linger before closing
    /// (after the exchange is recorded, so its duration excludes it).
    linger: bool,
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    Upgrade(Stream),
}

/// One request's context, carried through the phases.
struct Ctx<'a> {
    w: &'a Rc<Worker>,
    client: &'a mut Stream,
    peer: SocketAddr,
    b: &'a mut Bufs,
    ex: &'a mut Exchange,
}

/// A phase that ends the request early: the error to answer, and how many
/// bytes of the read buffer the request used when the connection may stay
/// open (the whole body was in the buffer); `None` closes.
struct Stop {
    err: ProxyError,
    keep: Option<usize>,
}

impl Stop {
    fn close(err: ProxyError) -> Stop {
        Stop { err, keep: None }
    }
}

/// Serves one client connection until it closes, errs or drains; the
/// guard (which counts the connection) drops with it.
///
/// Not an `async fn`: an async fn keeps its arguments twice in its state
/// machine (once as captured, once moved into its body's locals; rustc
/// #62958), and this state is what every idle connection holds. The
/// `async move` block below works on its captures in place.
#[allow(clippy::manual_async_fn)]
pub fn serve_client(guard: ConnGuard, mut client: Stream, peer: SocketAddr) -> impl std::future::Future<Output = ()> {
    async move {
        let w = guard.worker();
        client.set_nodelay();
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
                client.shed();
                // Wait for the next request without holding a buffer. While
                // draining this wait still runs for a moment (until the
                // worker closes idle waits): a request already on its way is
                // answered, with `connection: close`, rather than met by a
                // close the client could not tell from a failure.
                let timeouts = w.active().timeouts;
                let wait = if first { timeouts.client_head } else { timeouts.idle };
                let ready = monoio::select! {
                    r = client.readable() => r.is_ok(),
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
                    Box::pin(tunnel::run(client, upstream, w.active().timeouts.idle)).await;
                    return;
                }
            }
        }
    }
}

/// One request/response exchange, owning what it works on (so that it can
/// live in a pooled slot); records it (stats, access log).
async fn exchange(
    w: Rc<Worker>,
    mut client: Stream,
    peer: SocketAddr,
    mut b: Box<Bufs>,
    started: Instant,
    head_deadline: Instant,
) -> (Stream, Box<Bufs>, Next) {
    let mut ex = Exchange {
        status: 0,
        bytes: 0,
        backend: None,
        started,
        route: None,
        retries: 0,
        timeouts: 0,
        rejected: false,
        linger: false,
    };
    b.log.clear();
    b.policy_headers.clear();
    b.policy_upstream.clear();
    b.policy_body.clear();
    b.cache.reset();
    let next = {
        let mut cx = Ctx { w: &w, client: &mut client, peer, b: &mut b, ex: &mut ex };
        handle_request(&mut cx, head_deadline).await
    };
    // A fetch others waited for is over, stored or not.
    b.cache.fill = None;
    if ex.status != 0 {
        record(&w, &client, peer, &mut b, &ex);
    }
    if ex.linger {
        // Boxed: rare, and inline it would grow every request's future.
        Box::pin(linger(&w, &mut client, &mut b)).await;
    }
    (client, b, next)
}

/// The last phase: stats and the access log.
fn record(w: &Worker, client: &Stream, peer: SocketAddr, b: &mut Bufs, ex: &Exchange) {
    let us = ex.started.elapsed().as_micros() as u64;
    let outcome = crate::stats::Outcome {
        status: ex.status,
        bytes: ex.bytes,
        retries: ex.retries,
        timeouts: ex.timeouts,
        rejected: ex.rejected,
        duration_us: us,
    };
    w.record_exchange(ex.route.as_deref(), &outcome);
    crate::stats::bump(if client.protocol() == "h2" { &w.proto.h2 } else { &w.proto.h1 });
    if let Some(log) = &w.log {
        if b.log.is_empty() {
            crate::accesslog::begin(&mut b.log, std::time::SystemTime::now(), b"-", peer, b"-", b"-");
        }
        let tls = client.tls_info().map(|i| crate::accesslog::TlsFields { version: i.version, sni: client.sni() });
        let conn = crate::accesslog::ConnFields { protocol: client.protocol(), tls };
        crate::accesslog::finish(
            &mut b.log,
            ex.status,
            ex.backend.as_ref().map(|b| &*b.key.backend),
            ex.bytes,
            us,
            conn,
        );
        log.push(&b.log);
    }
}

/// One request, phase by phase.
async fn handle_request(cx: &mut Ctx<'_>, head_deadline: Instant) -> Next {
    let head = match phases::read_head(cx, head_deadline).await {
        Ok(h) => h,
        Err(None) => return Next::Close,
        Err(Some(e)) => return fail(cx, None, Stop::close(e)).await,
    };
    let rid = phases::begin_log(cx, &head);
    let mut req = match phases::route(cx, head) {
        Ok(r) => r,
        Err((head, stop)) => return fail(cx, Some(&head), stop).await,
    };
    if !phases::continue_if_expected(cx, &req).await {
        return Next::Close;
    }
    let _permit = match phases::admit(cx, &req).await {
        Ok(p) => p,
        Err(stop) => return fail(cx, Some(&req.head), stop).await,
    };
    match phases::policy(cx, &req).await {
        phases::Verdict::Pass => {}
        phases::Verdict::RedirectHttps => {
            let keep = req.held.complete.then_some(req.head.head_len + req.held.len);
            return answer(cx, Some(&req.head), 308, keep, |out, cx, persist| {
                phases::write_https_redirect(out, cx, &req, persist)
            })
            .await;
        }
        phases::Verdict::Cached(entry) => {
            let keep = req.held.complete.then_some(req.head.head_len + req.held.len);
            let head_only = req.head.method == crate::http::Method::Head;
            return answer(cx, Some(&req.head), entry.status, keep, |out, cx, persist| {
                phases::write_cached(out, &entry, &cx.b.policy_headers, persist, head_only)
            })
            .await;
        }
        phases::Verdict::Answer(status) => {
            let keep = req.held.complete.then_some(req.head.head_len + req.held.len);
            return answer(cx, Some(&req.head), status, keep, |out, cx, persist| {
                phases::write_policy_answer(out, status, &cx.b.policy_headers, &cx.b.policy_body, persist)
            })
            .await;
        }
    }
    phases::upstream_head(cx, &mut req, &rid);
    forward::run(cx, &mut req).await
}

/// Answers `stop.err`. Every early error answer goes through here.
async fn fail(cx: &mut Ctx<'_>, head: Option<&RequestHead>, stop: Stop) -> Next {
    if stop.err.side() == crate::error::Side::Upstream {
        tracing::debug!(worker = cx.w.index, error = %stop.err, "request failed");
    }
    let status = stop.err.status();
    answer(cx, head, status, stop.keep, |out, _, persist| {
        let extra: &[u8] = if status == 503 { b"retry-after: 1\r\n" } else { b"" };
        write_error_response(out, status, persist, extra)
    })
    .await
}

/// Answers the request from ringway itself (an error, a redirect, later a
/// policy's answer) with what `write` puts in the buffer. Keeps the
/// connection only when `keep` (the bytes of the read buffer this request
/// used) allows and the client does.
async fn answer(
    cx: &mut Ctx<'_>,
    head: Option<&RequestHead>,
    status: u16,
    keep: Option<usize>,
    write: impl FnOnce(&mut Vec<u8>, &Ctx<'_>, Persist),
) -> Next {
    let keep = keep.filter(|_| head.is_some_and(|h| h.keep_alive));
    let close = keep.is_none();
    cx.ex.status = status;
    cx.ex.bytes = 0;
    let mut out = std::mem::take(&mut cx.b.scratch);
    out.clear();
    write(&mut out, cx, Persist::of(close, head.is_some_and(|h| h.version_minor == 0)));
    let end = out.len();
    let deadline = due(cx.w, cx.w.active().timeouts.idle);
    let sent = send_last(cx.client, cx.ex, &mut out, end, close, deadline).await;
    cx.b.scratch = out;
    cx.ex.linger = sent && close && status >= 400;
    match keep {
        Some(used) if sent => {
            // Drop the request's bytes so the next parse starts at the next request.
            cx.b.rbuf.drain(..used.min(cx.b.rbuf.len()));
            Next::KeepAlive
        }
        _ => Next::Close,
    }
}

/// Longest lingering close, and the silence that ends it early.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_QUIET: std::time::Duration = std::time::Duration::from_millis(500);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 64 << 20;

/// After an error answer that closes while the client may still be sending
/// (a body over the limit, a bad head): reads and discards what comes, until
/// the client closes, goes quiet for `LINGER_QUIET`, or `LINGER` or
/// `LINGER_BYTES` is reached. Closing with unread bytes would reset the
/// connection, and the client could lose the answer before reading it (as
/// nginx's lingering close avoids).
async fn linger(w: &Worker, client: &mut Stream, b: &mut Bufs) {
    let end = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let at = (Instant::now() + LINGER_QUIET).min(end);
        b.rbuf.clear();
        b.rbuf.reserve(crate::worker::BUF_SIZE);
        match wire::read_more(client, &mut b.rbuf, usize::MAX, wire::Due { timers: &w.timers, at }).await {
            wire::Read::Data => drained += b.rbuf.len(),
            _ => return,
        }
    }
}
