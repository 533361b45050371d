//! Strict HTTP/1.x request head parsing.

use std::mem::MaybeUninit;

use super::{
    classify, collect_headers, conn_accumulate, first_line_complete, map_httparse_err, parse_decimal, slice, span_of,
    te_accumulate, BodyKind, ConnTokens, HeadLimits, HeaderSpan, Hk, Method, ParseError, Span, TeSummary,
    MAX_HEADERS_CAP,
};

/// A parsed request head. All spans index the buffer given to `parse_request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the final CRLFCRLF (body / next request starts here).
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    /// Raw request-target bytes.
    pub target: Span,
    /// origin-form: the whole target. absolute-form: the path+query part, which
    /// may be empty or start with '?' (then `path_missing_slash` is true and a
    /// "/" must be prepended). asterisk-form / authority-form: the target.
    pub path: Span,
    /// True when `path` lacks its leading '/' (absolute-form without a path).
    pub path_missing_slash: bool,
    /// 0 or 1.
    pub version_minor: u8,
    /// Authority from an absolute-form target if present, else the Host header value.
    pub host: Option<Span>,
    /// True when `host` came from an absolute-form target (the client's Host
    /// header, if any, must then be replaced when forwarding).
    pub host_from_target: bool,
    pub body: BodyKind,
    pub keep_alive: bool,
    /// GET + HTTP/1.1 + `Upgrade: websocket` + `Connection: upgrade`.
    pub upgrade_websocket: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Number of Connection tokens other than close / keep-alive / upgrade,
    /// i.e. header names nominated as hop-by-hop. When non-zero, rewrite
    /// re-scans the Connection values in `headers` to drop those fields.
    pub connection_tokens: u32,
}

impl RequestHead {
    /// Raw bytes of the path span (see `path_missing_slash`).
    pub fn path_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        slice(buf, self.path)
    }
}

fn is_unreserved_or_subdelim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
}

fn valid_reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        let b = h[i];
        if b == b'%' {
            match h.get(i + 1..i + 3) {
                Some([x, y]) if x.is_ascii_hexdigit() && y.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if is_unreserved_or_subdelim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `authority = host [ ":" port ]` without userinfo. `host` is an IP-literal
/// in brackets or a non-empty reg-name; port is at most 5 digits.
pub(crate) fn valid_authority(a: &[u8], require_port: bool) -> bool {
    let port = match a.first() {
        None => return false,
        Some(b'[') => {
            let close = match a.iter().position(|&b| b == b']') {
                Some(i) => i,
                None => return false,
            };
            let inner = &a[1..close];
            if inner.is_empty()
                || !inner.contains(&b':')
                || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return false;
            }
            match &a[close + 1..] {
                [] => None,
                [b':', p @ ..] => Some(p),
                _ => return false,
            }
        }
        Some(_) => {
            let (h, p) = match a.iter().position(|&b| b == b':') {
                Some(i) => (&a[..i], Some(&a[i + 1..])),
                None => (a, None),
            };
            if h.is_empty() || !valid_reg_name(h) {
                return false;
            }
            p
        }
    };
    match port {
        None => !require_port,
        Some(p) => p.len() <= 5 && p.iter().all(|b| b.is_ascii_digit()) && !(require_port && p.is_empty()),
    }
}

/// For an absolute-form target (`http://` or `https://`), the authority range
/// `[start, end)` within the target.
fn split_absolute(t: &[u8]) -> Option<(usize, usize)> {
    let colon = t.iter().position(|&b| b == b':')?;
    let scheme = &t[..colon];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    if !t[colon..].starts_with(b"://") {
        return None;
    }
    let start = colon + 3;
    let end = t[start..].iter().position(|&b| b == b'/' || b == b'?').map_or(t.len(), |i| start + i);
    Some((start, end))
}

/// Parse a request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (only while `buf.len() < max_head_bytes`).
/// `headers` is cleared and filled with the header spans in order.
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, ParseError> {
    headers.clear();
    let max = limits.max_head_bytes.min(u32::MAX as usize);
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let window = &buf[..buf.len().min(max)];

    // Uninitialised stack array: no 8 KiB memset per request.
    let mut raw = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS_CAP + 1];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, &mut raw[..max_headers + 1]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max {
                return Err(if first_line_complete(window) {
                    ParseError::HeaderTooLarge
                } else {
                    ParseError::UriTooLong
                });
            }
            return Ok(None);
        }
        Err(e) => return Err(map_httparse_err(e)),
    };
    if req.headers.len() > max_headers {
        return Err(ParseError::HeaderTooLarge);
    }
    let (method_str, target_str, version) = match (req.method, req.path, req.version) {
        (Some(m), Some(p), Some(v)) => (m, p, v),
        _ => return Err(ParseError::BadRequest("invalid request line")),
    };
    if version > 1 {
        return Err(ParseError::Version);
    }
    let method = Method::from_bytes(method_str.as_bytes());
    let method_span = span_of(buf, method_str.as_bytes());
    let target_bytes = target_str.as_bytes();
    let target = span_of(buf, target_bytes);
    if target_bytes.is_empty() {
        return Err(ParseError::BadRequest("empty request target"));
    }
    if target_bytes.len() > max {
        return Err(ParseError::UriTooLong);
    }
    // httparse allows '#' and obs-text in the target; neither is valid there.
    if target_bytes.iter().any(|&b| b == b'#' || b >= 0x80) {
        return Err(ParseError::BadRequest("invalid byte in request target"));
    }

    collect_headers(buf, req.headers, headers)?;

    // --- header semantics ---
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0u32;
    let mut te = TeSummary::default();
    let mut host_hdr: Option<Span> = None;
    let mut conn = ConnTokens::default();
    let mut upgrade_ws = false;
    let mut expect_continue = false;

    for h in headers.iter() {
        let name = slice(buf, h.name);
        let value = slice(buf, h.value);
        match classify(name) {
            Hk::Host => {
                if host_hdr.is_some() {
                    return Err(ParseError::BadRequest("duplicate Host"));
                }
                if !valid_authority(value, false) {
                    return Err(ParseError::BadRequest("invalid Host"));
                }
                host_hdr = Some(h.value);
            }
            Hk::Expect if value.eq_ignore_ascii_case(b"100-continue") => {
                expect_continue = true;
            }
            Hk::Upgrade if super::list_items(value).any(|p| p.eq_ignore_ascii_case(b"websocket")) => {
                upgrade_ws = true;
            }
            Hk::Connection => conn_accumulate(&mut conn, value),
            Hk::ContentLength => {
                cl_count += 1;
                if cl_count > 1 {
                    return Err(ParseError::BadRequest("duplicate Content-Length"));
                }
                match parse_decimal(value) {
                    Some(n) => content_length = Some(n),
                    None => return Err(ParseError::BadRequest("invalid Content-Length")),
                }
            }
            Hk::TransferEncoding => te_accumulate(&mut te, value),
            _ => {}
        }
    }

    // --- framing ---
    let body = if te.present {
        if version == 0 {
            return Err(ParseError::BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        if content_length.is_some() {
            return Err(ParseError::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if te.invalid || te.items == 0 {
            return Err(ParseError::BadRequest("invalid Transfer-Encoding"));
        }
        if !te.last_is_chunked {
            return Err(ParseError::BadRequest("final transfer-coding is not chunked"));
        }
        if te.chunked_count > 1 {
            return Err(ParseError::BadRequest("chunked applied more than once"));
        }
        if te.items > 1 {
            return Err(ParseError::NotImplemented("unsupported transfer-coding"));
        }
        BodyKind::Chunked
    } else if let Some(n) = content_length {
        BodyKind::Length(n)
    } else {
        BodyKind::None
    };

    // --- request-target form ---
    let tstart = target.0 as usize;
    let mut path = target;
    let mut path_missing_slash = false;
    let mut host = host_hdr;
    let mut host_from_target = false;
    if method == Method::Connect {
        if !valid_authority(target_bytes, true) {
            return Err(ParseError::BadRequest("CONNECT requires authority-form target"));
        }
    } else if target_bytes[0] == b'/' {
        // origin-form
    } else if target_bytes == b"*" {
        if method != Method::Options {
            return Err(ParseError::BadRequest("asterisk-form only allowed with OPTIONS"));
        }
    } else if let Some((a0, a1)) = split_absolute(target_bytes) {
        let auth = &target_bytes[a0..a1];
        if !valid_authority(auth, false) {
            return Err(ParseError::BadRequest("invalid authority in request target"));
        }
        host = Some(((tstart + a0) as u32, (tstart + a1) as u32));
        host_from_target = true;
        path = ((tstart + a1) as u32, target.1);
        path_missing_slash = target_bytes.get(a1) != Some(&b'/');
    } else {
        return Err(ParseError::BadRequest("invalid request target"));
    }

    if version == 1 && host.is_none() {
        return Err(ParseError::BadRequest("missing Host"));
    }

    let keep_alive = if version == 1 { !conn.close } else { conn.keep_alive && !conn.close };
    let upgrade_websocket = upgrade_ws && conn.upgrade && version == 1 && method == Method::Get;

    Ok(Some(RequestHead {
        head_len,
        method,
        method_span,
        target,
        path,
        path_missing_slash,
        version_minor: version,
        host,
        host_from_target,
        body,
        keep_alive,
        upgrade_websocket,
        expect_continue,
        connection_tokens: conn.others,
    }))
}

/// RFC 9112 2.3: a request naming a later HTTP/1 minor version (`HTTP/1.2`)
/// is answered as 1.1. Rewrites that version in the request line of `buf`
/// to `HTTP/1.1` (the head is forwarded as 1.1 anyway); false when the
/// line names no such version.
pub fn newer_minor_as_11(buf: &mut [u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else { return false };
    let v = &line[sp + 1..];
    let later = v.len() >= 8
        && v.starts_with(b"HTTP/1.")
        && (b'2'..=b'9').contains(&v[7])
        && (v.len() == 8 || (v.len() == 9 && v[8] == b'\r'));
    if later {
        buf[sp + 1 + 7] = b'1';
    }
    later
}

/// A parsed request as the request path reads it: method, authority,
/// path and headers through accessors, whatever the wire format. An
/// HTTP/1.1 head is a view over the read buffer and its header spans; the
/// upstream head is written from a view (`write_request_head`).
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    buf: &'a [u8],
    head: &'a RequestHead,
    headers: &'a [HeaderSpan],
}

impl<'a> RequestView<'a> {
    /// A view of `head`, parsed from `buf` with `headers`.
    pub fn new(buf: &'a [u8], head: &'a RequestHead, headers: &'a [HeaderSpan]) -> RequestView<'a> {
        RequestView { buf, head, headers }
    }

    /// The parsed framing facts (method, version, body kind, keep-alive).
    pub fn head(&self) -> &'a RequestHead {
        self.head
    }

    /// The method's bytes.
    pub fn method(&self) -> &'a [u8] {
        slice(self.buf, self.head.method_span)
    }

    /// The request target as sent.
    pub fn target(&self) -> &'a [u8] {
        slice(self.buf, self.head.target)
    }

    /// The authority: an absolute-form target's host, else the Host header.
    pub fn authority(&self) -> Option<&'a [u8]> {
        self.head.host.map(|s| slice(self.buf, s))
    }

    /// Path and query (see `RequestHead::path_missing_slash`).
    pub fn path(&self) -> &'a [u8] {
        slice(self.buf, self.head.path)
    }

    /// The headers as (name, value) pairs, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let buf = self.buf;
        self.headers.iter().map(move |h| (slice(buf, h.name), slice(buf, h.value)))
    }

    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The raw parts, for the codec's writer.
    pub(crate) fn parts(&self) -> (&'a [u8], &'a RequestHead, &'a [HeaderSpan]) {
        (self.buf, self.head, self.headers)
    }
}
