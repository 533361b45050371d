//! HTTP/1.1 codec for ringway: strict request parsing, tolerant-but-safe
//! response parsing, an incremental chunked decoder and head rewriting for
//! forwarding.
//!
//! Everything here works on byte ranges into caller-owned buffers; nothing in
//! the parse/rewrite paths allocates (callers pass reusable `Vec`s that are
//! cleared, and only grow if their capacity is too small).

mod chunked;
mod request;
mod response;
mod rewrite;

#[cfg(test)]
mod tests;

pub use chunked::{push_chunk, push_last_chunk, ChunkError, ChunkedDecoder, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
pub use request::{newer_minor_as_11, parse_request, RequestHead, RequestView};
pub use response::{parse_response, ResponseHead};
pub use rewrite::{
    strip_prefix_path, write_error_response, write_request_head, write_response_head, ForwardCtx, HostOut, Persist,
};

/// `[start, end)` byte offsets into the head buffer.
pub type Span = (u32, u32);

/// One header field: name and value as byte ranges into the head buffer.
/// Values are stripped of surrounding whitespace (by httparse).
/// A configured header to set on forwarded requests: (name, value).
pub type HeaderPair = (Box<[u8]>, Box<[u8]>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// Limits applied while parsing a message head.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Maximum size of the whole head including the final CRLFCRLF.
    pub max_head_bytes: usize,
    /// Maximum number of header fields (clamped to 256).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_head_bytes: 16 * 1024, max_headers: 100 }
    }
}

/// Hard upper bound on `HeadLimits::max_headers`.
pub const MAX_HEADERS_CAP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    Other,
}

impl Method {
    /// Methods are case-sensitive (`get` is `Other`).
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// GET HEAD PUT DELETE OPTIONS TRACE.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Put | Method::Delete | Method::Options | Method::Trace)
    }
}

/// How the message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    UntilClose,
}

/// Why a head was rejected. For requests the proxy answers `status()`; for
/// responses any error means 502.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    BadRequest(&'static str),
    UriTooLong,
    /// 431: head too big or too many headers.
    HeaderTooLarge,
    /// 501
    NotImplemented(&'static str),
    /// 400: an HTTP version other than 1.0 and 1.1 (see `newer_minor_as_11`).
    Version,
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadRequest(_) => 400,
            ParseError::UriTooLong => 414,
            ParseError::HeaderTooLarge => 431,
            ParseError::NotImplemented(_) => 501,
            ParseError::Version => 400,
        }
    }

    /// A short human-readable explanation (for logs), e.g. "duplicate Content-Length".
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::BadRequest(r) => r,
            ParseError::UriTooLong => "request line too long",
            ParseError::HeaderTooLarge => "request header fields too large",
            ParseError::NotImplemented(r) => r,
            ParseError::Version => "invalid HTTP version",
        }
    }
}

/// Standard reason phrase for a status code ("Unknown" when not listed).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// The bytes of `span` in `buf` (empty if out of range; never panics).
#[inline]
pub fn slice(buf: &[u8], span: Span) -> &[u8] {
    buf.get(span.0 as usize..span.1 as usize).unwrap_or(&[])
}

/// Offsets of `sub` inside `buf`; `(0, 0)` if `sub` is not a sub-slice of
/// `buf` (e.g. httparse's static empty reason phrase).
#[inline]
pub(crate) fn span_of(buf: &[u8], sub: &[u8]) -> Span {
    let base = buf.as_ptr() as usize;
    let p = sub.as_ptr() as usize;
    if sub.is_empty() || p < base {
        return (0, 0);
    }
    let start = p - base;
    match start.checked_add(sub.len()) {
        Some(end) if end <= buf.len() && end <= u32::MAX as usize => (start as u32, end as u32),
        _ => (0, 0),
    }
}

/// RFC 9110 tchar.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' |
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' |
        b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// field-value bytes: HTAB, SP, VCHAR, obs-text.
#[inline]
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// Branch-free `all(is_field_value_byte)` (vectorizes; no early exit).
#[inline]
pub(crate) fn all_field_value_bytes(v: &[u8]) -> bool {
    let bad = v.iter().fold(0u8, |acc, &b| acc | (((b < 0x20) & (b != b'\t')) | (b == 0x7f)) as u8);
    bad == 0
}

#[inline]
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ows(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ows(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Non-empty, OWS-trimmed elements of a comma-separated list (RFC 9110 5.6.1:
/// empty elements are ignored).
pub(crate) fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows).filter(|s| !s.is_empty())
}

/// Strict decimal: 1+ ASCII digits, no sign, no whitespace, no overflow.
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Result of interpreting all Transfer-Encoding headers as one list.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TeSummary {
    pub present: bool,
    pub items: u32,
    pub chunked_count: u32,
    pub last_is_chunked: bool,
    pub invalid: bool,
}

/// Fold one Transfer-Encoding field value into `te`.
pub(crate) fn te_accumulate(te: &mut TeSummary, value: &[u8]) {
    te.present = true;
    for item in list_items(value) {
        te.items += 1;
        // transfer-coding = token *( OWS ";" OWS transfer-parameter )
        let mut parts = item.splitn(2, |&b| b == b';');
        let name = trim_ows(parts.next().unwrap_or(&[]));
        let has_params = parts.next().is_some();
        if !is_token(name) {
            te.invalid = true;
            te.last_is_chunked = false;
            continue;
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            te.chunked_count += 1;
            if has_params {
                te.invalid = true;
            }
            te.last_is_chunked = true;
        } else {
            te.last_is_chunked = false;
        }
    }
}

/// Connection header tokens of interest.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConnTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Tokens other than close / keep-alive / upgrade: header names the
    /// sender nominated as hop-by-hop.
    pub others: u32,
}

pub(crate) fn conn_accumulate(c: &mut ConnTokens, value: &[u8]) {
    for t in list_items(value) {
        if t.eq_ignore_ascii_case(b"close") {
            c.close = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            c.keep_alive = true;
        } else if t.eq_ignore_ascii_case(b"upgrade") {
            c.upgrade = true;
        } else {
            c.others = c.others.saturating_add(1);
        }
    }
}

/// Header names this module cares about, classified once per header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hk {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XRealIp,
    XRequestId,
}

#[inline]
pub(crate) fn classify(name: &[u8]) -> Hk {
    let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
    match name.len() {
        2 if is(b"te") => Hk::Te,
        4 if is(b"host") => Hk::Host,
        6 if is(b"expect") => Hk::Expect,
        7 if is(b"upgrade") => Hk::Upgrade,
        7 if is(b"trailer") => Hk::Trailer,
        9 if is(b"x-real-ip") => Hk::XRealIp,
        10 if is(b"connection") => Hk::Connection,
        10 if is(b"keep-alive") => Hk::KeepAlive,
        12 if is(b"x-request-id") => Hk::XRequestId,
        14 if is(b"content-length") => Hk::ContentLength,
        15 if is(b"x-forwarded-for") => Hk::XForwardedFor,
        16 if is(b"proxy-connection") => Hk::ProxyConnection,
        17 if is(b"transfer-encoding") => Hk::TransferEncoding,
        17 if is(b"x-forwarded-proto") => Hk::XForwardedProto,
        _ => Hk::Other,
    }
}

/// Convert httparse headers into spans, double-checking value bytes.
pub(crate) fn collect_headers(
    buf: &[u8],
    raw: &[httparse::Header<'_>],
    out: &mut Vec<HeaderSpan>,
) -> Result<(), ParseError> {
    for h in raw {
        // httparse already enforces tchar names and field-value bytes; the
        // value re-check is branchless so it vectorizes.
        let name = h.name.as_bytes();
        if name.is_empty() {
            return Err(ParseError::BadRequest("invalid header name"));
        }
        if !all_field_value_bytes(h.value) {
            return Err(ParseError::BadRequest("invalid byte in header value"));
        }
        let value = if h.value.is_empty() {
            // Anchor empty values right after the name so the span stays in-buffer.
            let n = span_of(buf, name);
            (n.1, n.1)
        } else {
            span_of(buf, h.value)
        };
        out.push(HeaderSpan { name: span_of(buf, name), value });
    }
    Ok(())
}

pub(crate) fn map_httparse_err(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::HeaderName => ParseError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => ParseError::BadRequest("invalid header value"),
        httparse::Error::NewLine => ParseError::BadRequest("invalid line ending"),
        httparse::Error::Status => ParseError::BadRequest("invalid status"),
        httparse::Error::Token => ParseError::BadRequest("invalid token in start line"),
        httparse::Error::TooManyHeaders => ParseError::HeaderTooLarge,
        httparse::Error::Version => ParseError::Version,
    }
}

/// Whether the first line (after optional leading empty lines, which
/// httparse skips) has a line feed inside `window`.
pub(crate) fn first_line_complete(window: &[u8]) -> bool {
    let start = window.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(window.len());
    window[start..].contains(&b'\n')
}

/// A Host value without its port: `[v6]:port` → `[v6]`, `name:port` →
/// `name` (the one place this rule lives; the router, redirects and
/// upstream SNI use it).
pub fn host_part(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// `host_part` for text.
pub fn host_without_port(host: &str) -> &str {
    let n = host_part(host.as_bytes()).len();
    host.get(..n).unwrap_or(host)
}
