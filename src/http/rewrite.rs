//! Head rewriting for forwarding. Appends to a caller-cleared `Vec<u8>`;
//! allocates nothing else.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{
    classify, is_field_value_byte, is_token, list_items, reason_phrase, slice, BodyKind, HeaderSpan, Hk, RequestView,
    ResponseHead,
};

/// Per-request forwarding parameters.
#[derive(Clone, Copy, Debug)]
pub struct ForwardCtx<'a> {
    pub client_ip: IpAddr,
    /// "http" or "https".
    pub proto: &'static str,
    /// After stripPrefix: the path+query to send instead of the request's path.
    pub path_override: Option<&'a [u8]>,
    /// The route's configured headers: set, replacing same-named client headers.
    /// Entries naming framing/hop-by-hop headers or holding invalid bytes are ignored.
    pub extra_headers: &'a [super::HeaderPair],
    /// X-Request-Id to set when the client sent none (empty = don't set).
    pub request_id: &'a [u8],
    /// The Host the backend gets.
    pub host: HostOut<'a>,
    /// Header lines a policy adds (an auth provider's copied headers),
    /// each `name: value\r\n`.
    pub policy_lines: &'a [u8],
    /// Header names (lowercase) whose client copies are dropped: a
    /// policy sets them (or they must not come from the client at all).
    pub drop_names: &'a [String],
}

/// The Host a forwarded request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostOut<'a> {
    /// The client's, as sent.
    Client,
    /// This value; the client's goes in X-Forwarded-Host.
    Value(&'a [u8]),
    /// None yet: the caller inserts one per backend (right after the
    /// request line); the client's goes in X-Forwarded-Host.
    Later,
}

#[inline]
fn is(name: &[u8], lit: &[u8]) -> bool {
    name.eq_ignore_ascii_case(lit)
}

fn is_hop_by_hop(name: &[u8]) -> bool {
    is(name, b"connection")
        || is(name, b"keep-alive")
        || is(name, b"proxy-connection")
        || is(name, b"te")
        || is(name, b"trailer")
}

/// Names a route may not set: framing and hop-by-hop fields.
fn is_forbidden_extra(name: &[u8]) -> bool {
    is_hop_by_hop(name)
        || is(name, b"content-length")
        || is(name, b"transfer-encoding")
        || is(name, b"upgrade")
        || is(name, b"expect")
}

fn extra_ok(name: &[u8], value: &[u8]) -> bool {
    is_token(name) && !is_forbidden_extra(name) && value.iter().all(|&b| is_field_value_byte(b))
}

fn in_extra(ctx: &ForwardCtx, name: &[u8]) -> bool {
    ctx.extra_headers.iter().any(|(n, v)| is(n, name) && extra_ok(n, v))
}

/// Whether a Connection header lists `name` (hop-by-hop by nomination).
fn named_in_connection(buf: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
    headers
        .iter()
        .any(|h| is(slice(buf, h.name), b"connection") && list_items(slice(buf, h.value)).any(|t| is(t, name)))
}

/// Whether any Connection header names something other than close /
/// keep-alive / upgrade.
fn has_nominated_headers(buf: &[u8], headers: &[HeaderSpan]) -> bool {
    headers.iter().any(|h| {
        is(slice(buf, h.name), b"connection")
            && list_items(slice(buf, h.value)).any(|t| !(is(t, b"close") || is(t, b"keep-alive") || is(t, b"upgrade")))
    })
}

/// Decimal without going through `fmt` (no allocation).
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A formatted IP address on the stack (IPv6 text is at most 45 bytes).
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len = end;
                Ok(())
            }
            None => Err(std::fmt::Error),
        }
    }
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText { buf: [0; 48], len: 0 };
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        t.buf[t.len] = b'.';
                        t.len += 1;
                    }
                    let o = *o;
                    if o >= 100 {
                        t.buf[t.len] = b'0' + o / 100;
                        t.len += 1;
                    }
                    if o >= 10 {
                        t.buf[t.len] = b'0' + (o / 10) % 10;
                        t.len += 1;
                    }
                    t.buf[t.len] = b'0' + o % 10;
                    t.len += 1;
                }
            }
            IpAddr::V6(v6) => {
                // Display writes through the formatter without allocating.
                let _ = write!(t, "{v6}");
            }
        }
        t
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn write_path(out: &mut Vec<u8>, path: &[u8], missing_slash: bool) {
    if missing_slash || path.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(path);
}

/// Writes "METHOD path HTTP/1.1\r\n" + client headers minus hop-by-hop +
/// forwarding headers + route headers + "\r\n".
pub fn write_request_head(out: &mut Vec<u8>, view: &RequestView<'_>, ctx: &ForwardCtx) {
    let (buf, req, headers) = view.parts();
    out.extend_from_slice(slice(buf, req.method_span));
    out.push(b' ');
    match ctx.path_override {
        Some(p) => write_path(out, p, p.first().is_some_and(|&b| b != b'/' && b != b'*')),
        None => write_path(out, slice(buf, req.path), req.path_missing_slash),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let extra_host = in_extra(ctx, b"host");
    let client_host = ctx.host == HostOut::Client;
    if let HostOut::Value(v) = ctx.host {
        write_header(out, b"host", v);
    }
    if !extra_host && client_host {
        if req.host_from_target {
            if let Some(h) = req.host {
                write_header(out, b"host", slice(buf, h));
            }
        } else if req.host.is_none() {
            // HTTP/1.0 without Host: RFC 9112 3.2 wants an empty Host on 1.1.
            out.extend_from_slice(b"host: \r\n");
        }
    }

    let check_conn = req.connection_tokens > 0;
    let mut client_rid = false;
    for h in headers {
        let name = slice(buf, h.name);
        let value = slice(buf, h.value);
        match classify(name) {
            // TE is hop-by-hop (an HTTP/2 backend gets `te: trailers` from
            // `conn::h2up`, as gRPC needs).
            Hk::Connection
            | Hk::KeepAlive
            | Hk::ProxyConnection
            | Hk::Te
            | Hk::Trailer
            | Hk::TransferEncoding
            | Hk::Expect
            | Hk::XForwardedFor
            | Hk::XForwardedProto
            | Hk::XRealIp => continue,
            Hk::Upgrade => {
                if req.upgrade_websocket {
                    write_header(out, name, value);
                }
                continue;
            }
            Hk::Host => {
                if !req.host_from_target && !extra_host && client_host {
                    write_header(out, name, value);
                }
                continue;
            }
            Hk::ContentLength => {
                // Validated and unique; re-emit normalized (no leading zeros).
                if let BodyKind::Length(n) = req.body {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    write_u64(out, n);
                    out.extend_from_slice(b"\r\n");
                }
                continue;
            }
            Hk::XRequestId => {
                if in_extra(ctx, name) || (check_conn && named_in_connection(buf, headers, name)) {
                    continue;
                }
                client_rid = true;
            }
            Hk::Other => {
                if in_extra(ctx, name) || (check_conn && named_in_connection(buf, headers, name)) {
                    continue;
                }
                if ctx.drop_names.iter().any(|d| is(d.as_bytes(), name)) {
                    continue;
                }
                if !client_host && is(name, b"x-forwarded-host") {
                    continue;
                }
            }
        }
        write_header(out, name, value);
    }

    if req.upgrade_websocket {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    if req.body == BodyKind::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let ip = IpText::new(ctx.client_ip);
    if !in_extra(ctx, b"x-forwarded-for") {
        out.extend_from_slice(b"x-forwarded-for: ");
        for h in headers {
            if is(slice(buf, h.name), b"x-forwarded-for") {
                let v = slice(buf, h.value);
                if !v.is_empty() {
                    out.extend_from_slice(v);
                    out.extend_from_slice(b", ");
                }
            }
        }
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !in_extra(ctx, b"x-forwarded-proto") {
        write_header(out, b"x-forwarded-proto", ctx.proto.as_bytes());
    }
    if !in_extra(ctx, b"x-real-ip") {
        write_header(out, b"x-real-ip", ip.as_bytes());
    }
    if let (false, Some(h)) = (client_host, req.host) {
        write_header(out, b"x-forwarded-host", slice(buf, h));
    }
    if !client_rid
        && !in_extra(ctx, b"x-request-id")
        && !ctx.request_id.is_empty()
        && ctx.request_id.iter().all(|&b| is_field_value_byte(b))
    {
        write_header(out, b"x-request-id", ctx.request_id);
    }
    for (n, v) in ctx.extra_headers {
        if extra_ok(n, v) {
            write_header(out, n, v);
        }
    }
    out.extend_from_slice(ctx.policy_lines);
    out.extend_from_slice(b"\r\n");
}

/// What a response head says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// `connection: close`.
    Close,
    /// Nothing: HTTP/1.1 keeps the connection by default.
    KeepAlive,
    /// `connection: keep-alive`: an HTTP/1.0 client closes unless told.
    KeepAlive10,
}

impl Persist {
    /// The header for a response that `close`s or not, to a client speaking
    /// HTTP/1.0 (`http10`) or 1.1.
    pub fn of(close: bool, http10: bool) -> Persist {
        match (close, http10) {
            (true, _) => Persist::Close,
            (false, true) => Persist::KeepAlive10,
            (false, false) => Persist::KeepAlive,
        }
    }

    /// The header line, if any.
    pub fn line(self) -> &'static [u8] {
        match self {
            Persist::Close => b"connection: close\r\n",
            Persist::KeepAlive => b"",
            Persist::KeepAlive10 => b"connection: keep-alive\r\n",
        }
    }
}

/// Writes "HTTP/1.1 status reason\r\n" + headers minus hop-by-hop +
/// the connection header `persist` asks for + "\r\n".
///
/// Content-Length is re-emitted once, normalized, and dropped when the body is
/// chunked (CL+TE). With `dechunk_for_http10` Transfer-Encoding is dropped
/// (the caller de-chunks and closes). A 101 keeps Upgrade and gets
/// "connection: upgrade".
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    resp: &ResponseHead,
    headers: &[HeaderSpan],
    persist: Persist,
    dechunk_for_http10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(slice(buf, resp.reason));
    out.extend_from_slice(b"\r\n");

    let switching = resp.status == 101;
    let check_conn = has_nominated_headers(buf, headers);
    let mut cl_written = false;
    for h in headers {
        let name = slice(buf, h.name);
        let value = slice(buf, h.value);
        match classify(name) {
            Hk::Connection | Hk::KeepAlive | Hk::ProxyConnection | Hk::Te | Hk::Trailer => continue,
            Hk::Upgrade => {
                if switching {
                    write_header(out, name, value);
                }
                continue;
            }
            Hk::TransferEncoding => {
                if !dechunk_for_http10 {
                    write_header(out, name, value);
                }
                continue;
            }
            Hk::ContentLength => {
                if let (Some(n), false) = (resp.content_length, resp.body == BodyKind::Chunked || cl_written) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    write_u64(out, n);
                    out.extend_from_slice(b"\r\n");
                    cl_written = true;
                }
                continue;
            }
            _ => {
                if check_conn && named_in_connection(buf, headers, name) {
                    continue;
                }
            }
        }
        write_header(out, name, value);
    }
    if switching {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else {
        out.extend_from_slice(persist.line());
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete short error response; body = reason phrase + "\n".
/// `extra` holds complete header lines, e.g. `b"retry-after: 1\r\n"`.
pub fn write_error_response(out: &mut Vec<u8>, status: u16, persist: Persist, extra: &[u8]) {
    let reason = reason_phrase(status).as_bytes();
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
    write_u64(out, reason.len() as u64 + 1);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(persist.line());
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(reason);
    out.push(b'\n');
}

/// `path` (with its query) without a rule's `prefix`, as `stripPrefix`
/// forwards it, into `out`: always starting with `/`.
pub fn strip_prefix_path(prefix: &[u8], path: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let rest = &path[prefix.len().min(path.len())..];
    if !rest.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rest);
}
