//! Response head parsing: tolerant where harmless, strict where framing is at stake.

use std::mem::MaybeUninit;

use super::{
    classify, collect_headers, conn_accumulate, map_httparse_err, parse_decimal, slice, span_of, te_accumulate,
    BodyKind, ConnTokens, HeadLimits, HeaderSpan, Hk, Method, ParseError, Span, TeSummary, MAX_HEADERS_CAP,
};

/// A parsed response head. All spans index the buffer given to `parse_response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub version_minor: u8,
    pub body: BodyKind,
    pub keep_alive: bool,
    /// Reason phrase (may be empty).
    pub reason: Span,
    /// The validated Content-Length value if one was present (also for HEAD /
    /// 304 responses where it does not frame a body). `write_response_head`
    /// re-emits it normalized.
    pub content_length: Option<u64>,
}

/// Parse a response head. `request_method` decides framing for HEAD.
/// 1xx responses (including 101, which the caller handles) get `BodyKind::None`.
/// Any error means the proxy answers 502.
pub fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
    request_method: Method,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, ParseError> {
    headers.clear();
    let max = limits.max_head_bytes.min(u32::MAX as usize);
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let window = &buf[..buf.len().min(max)];

    let mut raw = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS_CAP + 1];
    let mut resp = httparse::Response::new(&mut []);
    let mut cfg = httparse::ParserConfig::default();
    cfg.allow_spaces_after_header_name_in_responses(true).allow_multiple_spaces_in_response_status_delimiters(true);
    let head_len = match cfg.parse_response_with_uninit_headers(&mut resp, window, &mut raw[..max_headers + 1]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max {
                return Err(ParseError::HeaderTooLarge);
            }
            return Ok(None);
        }
        Err(e) => return Err(map_httparse_err(e)),
    };
    if resp.headers.len() > max_headers {
        return Err(ParseError::HeaderTooLarge);
    }
    let (version, status) = match (resp.version, resp.code) {
        (Some(v), Some(c)) => (v, c),
        _ => return Err(ParseError::BadRequest("invalid status line")),
    };
    if version > 1 {
        return Err(ParseError::BadRequest("invalid HTTP version"));
    }
    if !(100..=999).contains(&status) {
        return Err(ParseError::BadRequest("invalid status code"));
    }
    let reason = match resp.reason {
        Some(r) => span_of(buf, r.as_bytes()),
        None => (0, 0),
    };
    collect_headers(buf, resp.headers, headers)?;

    let mut content_length: Option<u64> = None;
    let mut te = TeSummary::default();
    let mut conn = ConnTokens::default();
    for h in headers.iter() {
        let name = slice(buf, h.name);
        let value = slice(buf, h.value);
        let kind = classify(name);
        if kind == Hk::ContentLength {
            // Tolerate repeated identical values ("5, 5" or two headers).
            let mut any = false;
            for item in value.split(|&b| b == b',') {
                let item = super::trim_ows(item);
                let n = match parse_decimal(item) {
                    Some(n) => n,
                    None => return Err(ParseError::BadRequest("invalid Content-Length")),
                };
                match content_length {
                    Some(prev) if prev != n => return Err(ParseError::BadRequest("conflicting Content-Length")),
                    _ => content_length = Some(n),
                }
                any = true;
            }
            if !any {
                return Err(ParseError::BadRequest("invalid Content-Length"));
            }
        } else if kind == Hk::TransferEncoding {
            te_accumulate(&mut te, value);
        } else if kind == Hk::Connection {
            conn_accumulate(&mut conn, value);
        }
    }
    if te.present && (te.invalid || te.items == 0 || te.chunked_count > 1) {
        return Err(ParseError::BadRequest("invalid Transfer-Encoding"));
    }

    let mut keep_alive = if version == 1 { !conn.close } else { conn.keep_alive && !conn.close };

    let no_body = request_method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else if te.present {
        if version == 0 || content_length.is_some() {
            // RFC 9112 6.1 / 6.3: possible smuggling attempt; never reuse.
            keep_alive = false;
        }
        if te.last_is_chunked {
            BodyKind::Chunked
        } else {
            keep_alive = false;
            BodyKind::UntilClose
        }
    } else if let Some(n) = content_length {
        BodyKind::Length(n)
    } else {
        keep_alive = false;
        BodyKind::UntilClose
    };

    Ok(Some(ResponseHead { head_len, status, version_minor: version, body, keep_alive, reason, content_length }))
}
