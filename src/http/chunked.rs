//! Incremental, strict chunked transfer-coding decoder (RFC 9112 section 7.1).

use super::{is_field_value_byte, is_tchar};

/// Maximum length of one chunk-size line (size + extensions + CRLF).
pub const MAX_CHUNK_LINE: u32 = 4096;
/// Trailer fields never forwarded: framing, routing, hop-by-hop,
/// request modifiers, authentication and content description (RFC 9110
/// 6.5.1), and the forwarding headers ringway itself sets.
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"expect",
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"content-encoding",
    b"content-type",
    b"content-range",
    b"cache-control",
    b"max-forwards",
    b"range",
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"if-range",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"forwarded",
];

/// Appends the canonical last chunk: `0`, CRLF, the trailer fields of
/// `trailers` (as `ChunkedDecoder::trailers` gives them) except forbidden
/// ones, CRLF.
pub fn push_last_chunk(out: &mut Vec<u8>, trailers: &[u8]) {
    out.extend_from_slice(b"0\r\n");
    for line in trailers.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        if !FORBIDDEN_TRAILERS.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` as one canonical chunk: its size in lowercase hex without
/// leading zeros, CRLF, the data, CRLF (nothing for empty data, which
/// would read as the last chunk).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = data.len();
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4) as usize;
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Largest chunked body taken when no limit is configured (1 TiB): a
/// larger chunk size is an attack or a bug, answered 413 at once.
pub(crate) const MAX_CHUNKED_BODY: u64 = 1 << 40;

/// Maximum total size of the trailer section (including the final CRLF).
pub const MAX_TRAILER_BYTES: u32 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Bad framing: the proxy answers 400 (request) or 502 (response).
    Malformed(&'static str),
    /// Total payload exceeds `max_body`: 413.
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Size,
    SizeBws,
    ExtPre,
    ExtName,
    ExtPostName,
    ExtPreValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedEsc,
    ExtAfterQuoted,
    ExtPostValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed,
}

/// Feed it body bytes; it reports payload slices and where the body ends.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    st: St,
    /// Chunk size being parsed, then bytes remaining in the current chunk.
    size: u64,
    digits: u32,
    line_len: u32,
    trailer_bytes: u32,
    payload: u64,
    max_body: u64,
    /// The trailer section's field lines as received (`name:value\r\n`
    /// each); empty, and never allocated, without trailers.
    trailers: Vec<u8>,
}

#[inline]
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b) || b >= 0x80
}

#[inline]
fn hex_val(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl ChunkedDecoder {
    /// The trailer fields received so far (`name:value\r\n` each).
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// `max_body`: limit on the total payload; 0 = unlimited.
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            st: St::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            trailer_bytes: 0,
            payload: 0,
            max_body,
            trailers: Vec::new(),
        }
    }

    /// Reset for reuse on the next message.
    pub fn reset(&mut self, max_body: u64) {
        *self = ChunkedDecoder::new(max_body);
    }

    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Payload bytes delivered so far.
    pub fn payload_len(&self) -> u64 {
        self.payload
    }

    fn fail(&mut self, why: &'static str) -> Result<(usize, bool), ChunkError> {
        self.st = St::Failed;
        Err(ChunkError::Malformed(why))
    }

    /// Consume from `input`, calling `on_data` with payload slices. Returns the
    /// bytes consumed (all of them unless the message ended inside `input`)
    /// and whether the message is complete.
    pub fn feed(&mut self, input: &[u8], on_data: &mut dyn FnMut(&[u8])) -> Result<(usize, bool), ChunkError> {
        let mut i = 0usize;
        while i < input.len() {
            match self.st {
                St::Done => return Ok((i, true)),
                St::Failed => return Err(ChunkError::Malformed("decoder already failed")),
                St::Data => {
                    let avail = (input.len() - i) as u64;
                    let n = avail.min(self.size) as usize;
                    on_data(&input[i..i + n]);
                    i += n;
                    self.size -= n as u64;
                    self.payload += n as u64;
                    if self.size == 0 {
                        self.st = St::DataCr;
                    }
                    continue;
                }
                _ => {}
            }
            let b = input[i];
            i += 1;
            match self.st {
                St::Size
                | St::SizeBws
                | St::ExtPre
                | St::ExtName
                | St::ExtPostName
                | St::ExtPreValue
                | St::ExtToken
                | St::ExtQuoted
                | St::ExtQuotedEsc
                | St::ExtAfterQuoted
                | St::ExtPostValue
                | St::SizeLf => {
                    self.line_len += 1;
                    if self.line_len > MAX_CHUNK_LINE {
                        return self.fail("chunk size line too long");
                    }
                }
                St::TrailerStart | St::TrailerName | St::TrailerValue | St::TrailerLf | St::FinalLf => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return self.fail("trailer section too large");
                    }
                }
                _ => {}
            }
            match self.st {
                St::Size => {
                    if let Some(d) = hex_val(b) {
                        if self.size > (u64::MAX >> 4) {
                            return self.fail("chunk size overflow");
                        }
                        self.size = (self.size << 4) | d;
                        self.digits += 1;
                    } else if self.digits == 0 {
                        return self.fail("invalid chunk size");
                    } else {
                        match b {
                            b' ' | b'\t' => self.st = St::SizeBws,
                            b';' => self.st = St::ExtPre,
                            b'\r' => self.st = St::SizeLf,
                            _ => return self.fail("invalid byte after chunk size"),
                        }
                    }
                }
                St::SizeBws => match b {
                    b' ' | b'\t' => {}
                    b';' => self.st = St::ExtPre,
                    _ => return self.fail("invalid byte after chunk size"),
                },
                St::ExtPre => match b {
                    b' ' | b'\t' => {}
                    _ if is_tchar(b) => self.st = St::ExtName,
                    _ => return self.fail("invalid chunk extension"),
                },
                St::ExtName => match b {
                    _ if is_tchar(b) => {}
                    b' ' | b'\t' => self.st = St::ExtPostName,
                    b'=' => self.st = St::ExtPreValue,
                    b';' => self.st = St::ExtPre,
                    b'\r' => self.st = St::SizeLf,
                    _ => return self.fail("invalid chunk extension"),
                },
                St::ExtPostName => match b {
                    b' ' | b'\t' => {}
                    b'=' => self.st = St::ExtPreValue,
                    b';' => self.st = St::ExtPre,
                    _ => return self.fail("invalid chunk extension"),
                },
                St::ExtPreValue => match b {
                    b' ' | b'\t' => {}
                    b'"' => self.st = St::ExtQuoted,
                    _ if is_tchar(b) => self.st = St::ExtToken,
                    _ => return self.fail("invalid chunk extension value"),
                },
                St::ExtToken => match b {
                    _ if is_tchar(b) => {}
                    b' ' | b'\t' => self.st = St::ExtPostValue,
                    b';' => self.st = St::ExtPre,
                    b'\r' => self.st = St::SizeLf,
                    _ => return self.fail("invalid chunk extension value"),
                },
                St::ExtQuoted => match b {
                    b'"' => self.st = St::ExtAfterQuoted,
                    b'\\' => self.st = St::ExtQuotedEsc,
                    _ if is_qdtext(b) => {}
                    _ => return self.fail("invalid quoted chunk extension"),
                },
                St::ExtQuotedEsc => {
                    if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 {
                        self.st = St::ExtQuoted;
                    } else {
                        return self.fail("invalid quoted chunk extension");
                    }
                }
                St::ExtAfterQuoted => match b {
                    b' ' | b'\t' => self.st = St::ExtPostValue,
                    b';' => self.st = St::ExtPre,
                    b'\r' => self.st = St::SizeLf,
                    _ => return self.fail("invalid chunk extension"),
                },
                // Whitespace after a value is only allowed before another ';' (BWS).
                St::ExtPostValue => match b {
                    b' ' | b'\t' => {}
                    b';' => self.st = St::ExtPre,
                    _ => return self.fail("invalid chunk extension"),
                },
                St::SizeLf => {
                    if b != b'\n' {
                        return self.fail("expected LF after chunk size");
                    }
                    if self.size == 0 {
                        self.st = St::TrailerStart;
                        self.trailer_bytes = 0;
                    } else {
                        let total = match self.payload.checked_add(self.size) {
                            Some(t) => t,
                            None => return self.fail("chunk size overflow"),
                        };
                        // No limit configured still means a sane one: a size
                        // beyond it is refused at once, not waited for.
                        let limit = if self.max_body == 0 { MAX_CHUNKED_BODY } else { self.max_body };
                        if total > limit {
                            self.st = St::Failed;
                            return Err(ChunkError::TooLarge);
                        }
                        self.st = St::Data;
                    }
                }
                St::DataCr => {
                    if b != b'\r' {
                        return self.fail("expected CRLF after chunk data");
                    }
                    self.st = St::DataLf;
                }
                St::DataLf => {
                    if b != b'\n' {
                        return self.fail("expected CRLF after chunk data");
                    }
                    self.st = St::Size;
                    self.size = 0;
                    self.digits = 0;
                    self.line_len = 0;
                }
                St::TrailerStart => match b {
                    b'\r' => self.st = St::FinalLf,
                    _ if is_tchar(b) => {
                        self.trailers.push(b);
                        self.st = St::TrailerName
                    }
                    _ => return self.fail("invalid trailer field"),
                },
                St::TrailerName => match b {
                    _ if is_tchar(b) => self.trailers.push(b),
                    b':' => {
                        self.trailers.push(b);
                        self.st = St::TrailerValue
                    }
                    _ => return self.fail("invalid trailer field name"),
                },
                St::TrailerValue => match b {
                    b'\r' => {
                        self.trailers.push(b);
                        self.st = St::TrailerLf
                    }
                    _ if is_field_value_byte(b) => self.trailers.push(b),
                    _ => return self.fail("invalid trailer field value"),
                },
                St::TrailerLf => {
                    if b != b'\n' {
                        return self.fail("expected LF after trailer field");
                    }
                    self.trailers.push(b);
                    self.st = St::TrailerStart;
                }
                St::FinalLf => {
                    if b != b'\n' {
                        return self.fail("expected LF after last chunk");
                    }
                    self.st = St::Done;
                    return Ok((i, true));
                }
                St::Data | St::Done | St::Failed => {
                    return self.fail("internal state error");
                }
            }
        }
        match self.st {
            St::Failed => Err(ChunkError::Malformed("decoder already failed")),
            st => Ok((i, st == St::Done)),
        }
    }
}
