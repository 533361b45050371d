//! Relaying a response: the head, then the body by its framing (one
//! function each), and the upstream connection back to the pool when it
//! is reusable.

use std::rc::Rc;
use std::time::Instant;

use super::phases::Req;
use super::wire::{due, read_more, send, send_last, Read};
use super::{Ctx, Next};
use crate::http::{push_chunk, push_last_chunk, write_response_head, BodyKind, ChunkedDecoder, Persist, ResponseHead};
use crate::upstream::{Backend, Upstream};

/// Largest read buffer a response body grows to (the buffer pool keeps
/// buffers up to 4 × `BUF_SIZE`).
const BIG_READ: usize = 4 * crate::worker::BUF_SIZE;

/// How a body relay ended.
struct Relayed {
    /// The whole body reached the client.
    done: bool,
    /// The upstream connection holds nothing more and may be pooled.
    reusable: bool,
}

/// What every body relay works with.
struct Body<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    up: &'c mut Upstream,
    /// Where the body starts in `ubuf` (after the head).
    start: usize,
    /// The connection closes after this response.
    close: bool,
    /// HTTP/1.0 client, chunked response: send the decoded bytes.
    dechunk: bool,
    /// The body is also copied into `Bufs::cache` (being stored).
    capture: bool,
    upstream: std::time::Duration,
    idle: std::time::Duration,
}

/// Sends the response head and the body; pools the upstream connection
/// when it is reusable.
pub(super) async fn response(
    cx: &mut Ctx<'_>,
    req: &Req,
    backend: &Rc<Backend>,
    mut up: Upstream,
    resp: &ResponseHead,
) -> Next {
    let head = &req.head;
    let dechunk = head.version_minor == 0 && resp.body == BodyKind::Chunked;
    // An HTTP/1.0 client that asked for keep-alive keeps it (as nginx and
    // HAProxy do) unless the body's end is the connection's end.
    let close = !head.keep_alive || dechunk || cx.w.drain.is_fired() || resp.body == BodyKind::UntilClose;
    let b = &mut *cx.b;
    b.scratch.clear();
    let persist = Persist::of(close, head.version_minor == 0);
    write_response_head(&mut b.scratch, &b.ubuf, resp, &b.uheaders, persist, dechunk);
    if !b.policy_headers.is_empty() {
        // A policy's header lines (CORS) go before the head's last CRLF.
        let end = b.scratch.len() - 2;
        b.scratch.splice(end..end, b.policy_headers.iter().copied());
    }
    let idle = cx.w.active().timeouts.idle;
    let cache = req.route.policy(req.rule).and_then(|c| c.cache.as_ref());
    let store = match cache {
        Some(c) if !cx.b.cache.key.is_empty() => c.storable(&cx.b.cache, &cx.b.ubuf, resp, &cx.b.uheaders),
        _ => None,
    };
    let mut body = Body {
        cx,
        up: &mut up,
        start: resp.head_len,
        close,
        dechunk,
        capture: store.is_some(),
        upstream: req.route.settings(req.rule).upstream,
        idle,
    };
    let r = match resp.body {
        BodyKind::None => no_body(&mut body).await,
        BodyKind::Length(n) => sized(&mut body, n).await,
        BodyKind::Chunked => chunked(&mut body).await,
        BodyKind::UntilClose => until_close(&mut body).await,
    };
    if r.done && r.reusable && resp.keep_alive {
        backend.put_idle(up.stream, Instant::now());
    }
    if let (Some(c), Some(s), true) = (cache, store, r.done) {
        let b = &mut *cx.b;
        if matches!(resp.body, BodyKind::Length(n) if n == b.cache.body.len() as u64) {
            c.store(&mut b.cache, s);
        }
    }
    // Requests waiting for this fetch look again now.
    cx.b.cache.fill = None;
    if r.done && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// No body: just the head.
async fn no_body(x: &mut Body<'_, '_>) -> Relayed {
    let reusable = x.cx.b.ubuf.len() == x.start;
    let end = x.cx.b.scratch.len();
    let d = due(x.cx.w, x.idle);
    let done = send_last(x.cx.client, x.cx.ex, &mut x.cx.b.scratch, end, x.close, d).await;
    Relayed { done, reusable }
}

/// A Content-Length body.
async fn sized(x: &mut Body<'_, '_>, n: u64) -> Relayed {
    let start = x.start;
    // A small body that arrived apart from its head (a backend that writes
    // head and file separately): gather it first, so the client gets one
    // write instead of two.
    let whole = start.saturating_add(n as usize);
    if x.cx.b.ubuf.len() < whole && whole <= x.cx.b.ubuf.capacity() {
        while x.cx.b.ubuf.len() < whole {
            let d = due(x.cx.w, x.upstream);
            if !matches!(read_more(&mut x.up.stream, &mut x.cx.b.ubuf, whole, d).await, Read::Data) {
                // Nothing reached the client yet, but the backend broke
                // off: a truncated answer is worse than none.
                x.cx.ex.status = 502;
                return Relayed { done: false, reusable: false };
            }
        }
    }
    let b = &mut *x.cx.b;
    let first = (b.ubuf.len() - start).min(n as usize);
    let mut reusable = b.ubuf.len() - start == first;
    b.scratch.extend_from_slice(&b.ubuf[start..start + first]);
    if x.capture {
        b.cache.body.extend_from_slice(&b.ubuf[start..start + first]);
    }
    let end = b.scratch.len();
    let mut remaining = n - first as u64;
    let d = due(x.cx.w, x.idle);
    let mut ok = send_last(x.cx.client, x.cx.ex, &mut x.cx.b.scratch, end, x.close && remaining == 0, d).await;
    while ok && remaining > 0 {
        let b = &mut *x.cx.b;
        b.ubuf.clear();
        // A large body moves in reads of up to 64 KiB (fewer socket
        // operations per byte); the pool keeps such a buffer.
        let want = remaining.min(BIG_READ as u64) as usize;
        if b.ubuf.capacity() < want {
            b.ubuf.reserve_exact(want);
        }
        let d = due(x.cx.w, x.upstream);
        if !matches!(read_more(&mut x.up.stream, &mut x.cx.b.ubuf, usize::MAX, d).await, Read::Data) {
            ok = false;
            break;
        }
        let take = remaining.min(x.cx.b.ubuf.len() as u64) as usize;
        reusable &= take == x.cx.b.ubuf.len();
        if x.capture {
            x.cx.b.cache.body.extend_from_slice(&x.cx.b.ubuf[..take]);
        }
        let d = due(x.cx.w, x.idle);
        ok = send(x.cx.client, x.cx.ex, &mut x.cx.b.ubuf, 0..take, d).await;
        remaining -= take as u64;
    }
    Relayed { done: ok && remaining == 0, reusable }
}

/// A chunked body, re-framed canonically (lowercase hex sizes, no
/// extensions, forbidden trailer fields dropped) as requests are: the
/// backend's own framing never reaches the client. An HTTP/1.0 client gets
/// the decoded bytes instead.
async fn chunked(x: &mut Body<'_, '_>) -> Relayed {
    let mut d = ChunkedDecoder::new(0);
    let mut start = x.start;
    loop {
        // The head is already in `scratch` on the first pass.
        let b = &mut *x.cx.b;
        let scratch = &mut b.scratch;
        let fed = if x.dechunk {
            d.feed(&b.ubuf[start..], &mut |data| scratch.extend_from_slice(data))
        } else {
            d.feed(&b.ubuf[start..], &mut |data| push_chunk(scratch, data))
        };
        let Ok((used, fin)) = fed else {
            return Relayed { done: false, reusable: false };
        };
        if fin && !x.dechunk {
            push_last_chunk(&mut b.scratch, d.trailers());
        }
        let end = b.scratch.len();
        let dl = due(x.cx.w, x.idle);
        if !send(x.cx.client, x.cx.ex, &mut x.cx.b.scratch, 0..end, dl).await {
            return Relayed { done: false, reusable: false };
        }
        x.cx.b.scratch.clear();
        if fin {
            return Relayed { done: true, reusable: start + used == x.cx.b.ubuf.len() };
        }
        x.cx.b.ubuf.clear();
        start = 0;
        let dl = due(x.cx.w, x.upstream);
        if !matches!(read_more(&mut x.up.stream, &mut x.cx.b.ubuf, usize::MAX, dl).await, Read::Data) {
            return Relayed { done: false, reusable: false };
        }
    }
}

/// A body that ends when the backend closes (never reusable).
async fn until_close(x: &mut Body<'_, '_>) -> Relayed {
    let b = &mut *x.cx.b;
    b.scratch.extend_from_slice(&b.ubuf[x.start..]);
    let end = b.scratch.len();
    let dl = due(x.cx.w, x.idle);
    let mut ok = send(x.cx.client, x.cx.ex, &mut x.cx.b.scratch, 0..end, dl).await;
    while ok {
        x.cx.b.ubuf.clear();
        let dl = due(x.cx.w, x.upstream);
        match read_more(&mut x.up.stream, &mut x.cx.b.ubuf, usize::MAX, dl).await {
            Read::Data => {}
            Read::Eof => break,
            _ => return Relayed { done: false, reusable: false },
        }
        let end = x.cx.b.ubuf.len();
        let dl = due(x.cx.w, x.idle);
        ok = send(x.cx.client, x.cx.ex, &mut x.cx.b.ubuf, 0..end, dl).await;
    }
    Relayed { done: ok, reusable: false }
}
