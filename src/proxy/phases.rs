//! The phases before a backend is picked: read the head, route it, admit
//! it, run the route's policies, and write the upstream head.

use std::rc::Rc;
use std::time::Instant;

use super::wire::{due, read_more, write_range, Due, Read};
use super::{Ctx, Stop};
use crate::error::{Kind, ProxyError};
use crate::http::{
    parse_request, push_chunk, push_last_chunk, write_request_head, BodyKind, ChunkError, ChunkedDecoder, ForwardCtx,
    HeadLimits, HostOut, Method, ParseError, Persist, RequestHead, RequestView,
};
use crate::policy::Decision;
use crate::route::Permit;
use crate::route::RouteRt;
use control::model::HostHeader;

/// The request body as far as it is already in the buffer.
pub(super) struct Held {
    /// Body bytes after the head that belong to this request.
    pub(super) len: usize,
    /// The whole body is held (a retry can resend it).
    pub(super) complete: bool,
}

/// A routed request, as the later phases see it.
pub(super) struct Req {
    pub(super) head: RequestHead,
    pub(super) route: Rc<RouteRt>,
    /// The path rule that serves it (`None`: the route's own backends).
    pub(super) rule: Option<usize>,
    pub(super) held: Held,
    /// For a chunked body: the decoder, fed with what is held.
    pub(super) decoder: Option<ChunkedDecoder>,
    /// Body bytes streamed to a backend (no retry after that).
    pub(super) body_sent: bool,
    /// With `hostHeader: "backend"`: where each attempt's Host line goes in
    /// the upstream head, and how long the last one was.
    pub(super) host_slot: Option<(usize, usize)>,
}

/// Reads until a whole request head is parsed. `Err(None)`: the client
/// went away (or idled out) before sending anything; close quietly.
pub(super) async fn read_head(cx: &mut Ctx<'_>, deadline: Instant) -> Result<RequestHead, Option<ProxyError>> {
    let active = cx.w.active();
    let limits = HeadLimits { max_head_bytes: active.limits.max_head_bytes, max_headers: active.limits.max_headers };
    let b = &mut *cx.b;
    loop {
        match parse_request(&b.rbuf, &limits, &mut b.headers) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(ParseError::Version) if crate::http::newer_minor_as_11(&mut b.rbuf) => continue,
            Err(e) => return Err(Some(ProxyError::new(Kind::BadRequest(e.status()), e.reason()))),
        }
        let had = !b.rbuf.is_empty();
        let deadline = Due { timers: &cx.w.timers, at: deadline };
        match read_more(cx.client, &mut b.rbuf, limits.max_head_bytes + 1, deadline).await {
            Read::Data => {}
            Read::TimedOut if had => return Err(Some(ProxyError::new(Kind::HeadTimeout, "request head too slow"))),
            // The buffer is full: the head cannot complete.
            Read::Failed(None) if had => {
                return Err(Some(ProxyError::new(Kind::BadRequest(431), "request head over the limit")))
            }
            _ => return Err(None),
        }
    }
}

/// Starts the access-log line (when logging) and makes the request id.
pub(super) fn begin_log(cx: &mut Ctx<'_>, head: &RequestHead) -> [u8; 24] {
    let mut rid = [0u8; 24];
    cx.w.next_request_id(&mut rid);
    if cx.w.log.is_some() {
        let b = &mut *cx.b;
        let view = RequestView::new(&b.rbuf, head, &b.headers);
        let id = view.header(b"x-request-id").filter(|v| !v.is_empty()).unwrap_or(&rid);
        crate::accesslog::begin(&mut b.log, std::time::SystemTime::now(), id, cx.peer, view.method(), view.target());
    }
    rid
}

/// Finds the route and path rule, checks the method and body limits, and
/// sees how much of the body is already here (and, for chunked, whether
/// it is sound).
pub(super) fn route(cx: &mut Ctx<'_>, head: RequestHead) -> Result<Req, (RequestHead, Stop)> {
    let b = &mut *cx.b;
    let view = RequestView::new(&b.rbuf, &head, &b.headers);
    let Some(route) = cx.w.active().router.lookup(view.authority()).cloned() else {
        let has_body = !matches!(head.body, BodyKind::None | BodyKind::Length(0));
        let keep = (!has_body).then_some(head.head_len);
        return Err((head, Stop { err: ProxyError::new(Kind::NoRoute, "no route for host"), keep }));
    };
    let rule = route.rule_for(view.path());
    cx.ex.route = Some(route.clone());
    if head.method == Method::Connect {
        return Err((head, Stop::close(ProxyError::new(Kind::MethodNotAllowed, "CONNECT"))));
    }
    let max_body = route.settings(rule).max_body;
    if let BodyKind::Length(n) = head.body {
        if max_body > 0 && n > max_body {
            return Err((head, Stop::close(ProxyError::new(Kind::BodyTooLarge, "content-length over limit"))));
        }
    }
    let avail = b.rbuf.len() - head.head_len;
    let mut decoder = None;
    let held = match head.body {
        BodyKind::None | BodyKind::UntilClose => Held { len: 0, complete: true },
        BodyKind::Length(n) => Held { len: avail.min(n as usize), complete: avail as u64 >= n },
        BodyKind::Chunked => {
            // What is held is re-framed canonically into `ubuf` (unused
            // until the response), for `upstream_head` to send.
            let mut d = ChunkedDecoder::new(max_body);
            b.ubuf.clear();
            let staged = &mut b.ubuf;
            match d.feed(&b.rbuf[head.head_len..], &mut |data| push_chunk(staged, data)) {
                Ok((used, done)) => {
                    decoder = Some(d);
                    Held { len: used, complete: done }
                }
                Err(e) => return Err((head, Stop::close(chunk_error(e)))),
            }
        }
    };
    Ok(Req { head, route, rule, held, decoder, body_sent: false, host_slot: None })
}

/// Answers `Expect: 100-continue` when the body is still to come. False:
/// the client is gone.
pub(super) async fn continue_if_expected(cx: &mut Ctx<'_>, req: &Req) -> bool {
    // Never a 1xx to an HTTP/1.0 client (RFC 9110 15.2): it sends its body anyway.
    if !req.head.expect_continue || req.held.complete || req.head.version_minor == 0 {
        return true;
    }
    let b = &mut *cx.b;
    b.scratch.clear();
    b.scratch.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    let end = b.scratch.len();
    write_range(cx.client, &mut b.scratch, 0, end, due(cx.w, cx.w.active().timeouts.idle)).await
}

/// The route's active limit, then its bounded queue.
pub(super) async fn admit(cx: &mut Ctx<'_>, req: &Req) -> Result<Permit, Stop> {
    match req.route.state.admit(req.route.settings(req.rule).queue).await {
        Some(p) => Ok(p),
        None => {
            cx.ex.rejected = true;
            let err = ProxyError::new(Kind::Overloaded, "admission queue full or wait expired");
            Err(Stop { err, keep: req.held.complete.then_some(req.head.head_len + req.held.len) })
        }
    }
}

/// What a policy decided.
pub(super) enum Verdict {
    /// Let the request through.
    Pass,
    /// Answer it with a redirect to this scheme (the request's host and
    /// path kept byte for byte).
    RedirectHttps,
    /// Answer it with this status (and the header lines in
    /// `Bufs::policy_headers`): a preflight's 204, 401, 403, 429, 503.
    Answer(u16),
    /// Answer it from the cache.
    Cached(std::rc::Rc<crate::policy::cache::Entry>),
}

/// The route's policies, in their fixed order: the HTTPS redirect
/// (`autoHttps`), then the rule's chain (CORS preflight → auth → rate
/// limit), each answering the client itself or letting the request
/// through. A route without policies runs nothing here and allocates
/// nothing; one with policies runs them in a boxed future (inline, their
/// state would grow every request's).
pub(super) async fn policy(cx: &mut Ctx<'_>, req: &Req) -> Verdict {
    if req.route.auto_https && !cx.client.is_tls() {
        if acme_challenge(cx, req) {
            return Verdict::Answer(200);
        }
        return Verdict::RedirectHttps;
    }
    match req.route.policy(req.rule) {
        None => Verdict::Pass,
        Some(chain) => Box::pin(run_chain(cx, req, chain)).await,
    }
}

/// The CA's HTTP-01 check (`GET /.well-known/acme-challenge/TOKEN` over
/// plain HTTP) while an issuance runs: the key authorization goes into the
/// policy answer's body. False (nothing written) for any other request.
fn acme_challenge(cx: &mut Ctx<'_>, req: &Req) -> bool {
    const PREFIX: &[u8] = b"/.well-known/acme-challenge/";
    let tokens = cx.w.acme_tokens.borrow();
    if tokens.is_empty() {
        return false;
    }
    let b = &mut *cx.b;
    let view = RequestView::new(&b.rbuf, &req.head, &b.headers);
    let Some(token) = view.path().strip_prefix(PREFIX) else { return false };
    let Some((_, answer)) = tokens.iter().find(|(t, _)| t.as_bytes() == token) else { return false };
    b.policy_body.clear();
    b.policy_body.extend_from_slice(answer.as_bytes());
    b.policy_headers.clear();
    b.policy_headers.extend_from_slice(b"content-type: application/octet-stream\r\n");
    true
}

async fn run_chain(cx: &mut Ctx<'_>, req: &Req, chain: &crate::policy::Chain) -> Verdict {
    let b = &mut *cx.b;
    let view = RequestView::new(&b.rbuf, &req.head, &b.headers);
    let mut p = crate::policy::Request {
        view: &view,
        client: cx.peer.ip(),
        headers: &mut b.policy_headers,
        upstream: &mut b.policy_upstream,
        body: &mut b.policy_body,
        cache: &mut b.cache,
    };
    let decision = chain.run(&mut p).await;
    match &decision {
        Decision::Cached(_) => crate::stats::bump(&cx.w.proto.cache_hits),
        Decision::Pass if !b.cache.key.is_empty() => crate::stats::bump(&cx.w.proto.cache_misses),
        _ => {}
    }
    match decision {
        Decision::Pass => Verdict::Pass,
        Decision::Preflight => Verdict::Answer(204),
        Decision::Forbidden => Verdict::Answer(403),
        Decision::Unauthorized(challenge) => {
            b.policy_headers.clear();
            b.policy_headers.extend_from_slice(&challenge);
            Verdict::Answer(401)
        }
        Decision::Denied(status) => Verdict::Answer(status),
        Decision::Cached(entry) => Verdict::Cached(entry),
        Decision::Busy => {
            b.policy_headers.clear();
            b.policy_headers.extend_from_slice(b"retry-after: 1\r\n");
            Verdict::Answer(503)
        }
        Decision::Limited(r) => {
            use std::io::Write;
            b.policy_headers.clear();
            let _ = write!(
                b.policy_headers,
                "retry-after: {0}\r\nratelimit-limit: {1}\r\nratelimit-remaining: 0\r\nratelimit-reset: {0}\r\n",
                r.retry_after, r.limit
            );
            Verdict::Answer(429)
        }
    }
}

/// Writes a cached answer: its status and fields, `Age`, `X-Cache: HIT`,
/// the policy's header lines (CORS), and the body (not for HEAD).
pub(super) fn write_cached(
    out: &mut Vec<u8>,
    e: &crate::policy::cache::Entry,
    headers: &[u8],
    persist: Persist,
    head_only: bool,
) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", e.status, crate::http::reason_phrase(e.status));
    out.extend_from_slice(&e.head);
    let _ = write!(out, "age: {}\r\nx-cache: HIT\r\ncontent-length: {}\r\n", e.age(), e.body.len());
    out.extend_from_slice(headers);
    out.extend_from_slice(persist.line());
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&e.body);
    }
}

/// Writes a policy's own answer: `status` with the header lines the
/// policy left and its body (a 204 preflight has none; without one, the
/// others get a short text).
pub(super) fn write_policy_answer(out: &mut Vec<u8>, status: u16, headers: &[u8], body: &[u8], persist: Persist) {
    if status != 204 && body.is_empty() {
        return crate::http::write_error_response(out, status, persist, headers);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(crate::http::reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    if status != 204 {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(persist.line());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Writes a 308 to `https://host[:tlsport]/path?query` into `out`.
pub(super) fn write_https_redirect(out: &mut Vec<u8>, cx: &Ctx<'_>, req: &Req, persist: Persist) {
    let b = &*cx.b;
    let view = RequestView::new(&b.rbuf, &req.head, &b.headers);
    out.extend_from_slice(b"HTTP/1.1 308 Permanent Redirect\r\nlocation: https://");
    let host = view.authority().map(crate::http::host_part).filter(|h| !h.is_empty());
    out.extend_from_slice(host.unwrap_or(req.route.key.as_bytes()));
    if let Some(port) = cx.w.tls_port.filter(|&p| p != 443) {
        out.push(b':');
        out.extend_from_slice(port.to_string().as_bytes());
    }
    if req.head.path_missing_slash {
        out.push(b'/');
    }
    out.extend_from_slice(view.path());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\n");
    out.extend_from_slice(persist.line());
    out.extend_from_slice(b"\r\n");
}

/// Writes the head the backends get (and the held body) into `out`, once
/// for every attempt; the request's bytes then leave the read buffer (what
/// stays there is pipelined).
pub(super) fn upstream_head(cx: &mut Ctx<'_>, req: &mut Req, rid: &[u8]) {
    let b = &mut *cx.b;
    let view = RequestView::new(&b.rbuf, &req.head, &b.headers);
    let strip = req.route.strip_prefix(req.rule);
    if let Some(prefix) = strip {
        crate::http::strip_prefix_path(prefix, view.path(), &mut b.scratch);
    }
    b.out.clear();
    let host = match (req.route.host_header(req.rule), view.authority()) {
        // An HTTP/1.0 request without Host: the backend's own name (as
        // nginx sends its upstream's), not an empty Host strict servers refuse.
        (HostHeader::Client, None) => HostOut::Later,
        (HostHeader::Client, Some(_)) => HostOut::Client,
        (HostHeader::Literal(v), _) => HostOut::Value(v.as_bytes()),
        (HostHeader::Backend, _) => HostOut::Later,
    };
    let ctx = ForwardCtx {
        client_ip: cx.peer.ip(),
        proto: if cx.client.is_tls() { "https" } else { "http" },
        path_override: strip.map(|_| &b.scratch[..]),
        extra_headers: &req.route.headers,
        request_id: rid,
        host,
        policy_lines: &b.policy_upstream,
        drop_names: req.route.policy(req.rule).and_then(|c| c.provider.as_ref()).map_or(&[], |p| p.copied()),
    };
    write_request_head(&mut b.out, &view, &ctx);
    if host == HostOut::Later {
        let at = b.out.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
        req.host_slot = Some((at, 0));
    }
    let body_start = req.head.head_len;
    if req.head.body == BodyKind::Chunked {
        b.out.extend_from_slice(&b.ubuf);
        if req.held.complete {
            push_last_chunk(&mut b.out, req.decoder.as_ref().map_or(&[], |d| d.trailers()));
        }
        b.ubuf.clear();
    } else {
        b.out.extend_from_slice(&b.rbuf[body_start..body_start + req.held.len]);
    }
    b.rbuf.drain(..body_start + req.held.len);
}

/// A chunked-body error as the proxy's error.
pub(super) fn chunk_error(e: ChunkError) -> ProxyError {
    match e {
        ChunkError::TooLarge => ProxyError::new(Kind::BodyTooLarge, "chunked body over limit"),
        ChunkError::Malformed(m) => ProxyError::new(Kind::BadBody, m),
    }
}

/// With `hostHeader: "backend"`: puts this backend's Host line into the
/// upstream head, replacing the last attempt's.
pub(super) fn set_backend_host(out: &mut Vec<u8>, req: &mut Req, host: &[u8]) {
    let Some((at, len)) = req.host_slot.filter(|&(at, len)| at + len <= out.len()) else { return };
    let line_len = b"host: ".len() + host.len() + 2;
    let line = b"host: ".iter().chain(host).chain(b"\r\n").copied();
    out.splice(at..at + len, line);
    req.host_slot = Some((at, line_len));
}
