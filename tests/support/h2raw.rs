//! A raw HTTP/2 client over plain TCP (h2c with prior knowledge), std only:
//! frames written byte for byte (`frame`, `H2Client::send`), a minimal
//! HPACK encoder (literal names and values, never indexed, no Huffman) and
//! a complete HPACK decoder (static and dynamic tables, Huffman) for what
//! the server sends. The client keeps just enough state to be a polite
//! peer when asked to (ACKs for SETTINGS and PING, flow-control windows
//! both ways) and to be a rude one otherwise: every write and read is
//! explicit, and every read is bounded by a timeout.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

// SETTINGS identifiers.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

// Error codes.
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An error code's name, for messages.
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN",
    }
}

fn type_name(kind: u8) -> &'static str {
    match kind {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => "UNKNOWN",
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// One frame as read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    fn u32_at(&self, at: usize) -> u32 {
        match self.payload.get(at..at + 4) {
            Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            None => 0,
        }
    }

    /// RST_STREAM's or GOAWAY's error code.
    pub fn error_code(&self) -> u32 {
        match self.kind {
            RST_STREAM => self.u32_at(0),
            GOAWAY => self.u32_at(4),
            _ => 0,
        }
    }

    /// GOAWAY's last stream id.
    pub fn last_stream(&self) -> u32 {
        self.u32_at(0) & 0x7fff_ffff
    }

    /// GOAWAY's debug data, as text.
    pub fn debug_data(&self) -> String {
        String::from_utf8_lossy(self.payload.get(8..).unwrap_or(&[])).to_string()
    }

    /// A one-line description, e.g. `GOAWAY(last=3, ENHANCE_YOUR_CALM, "too_many_resets")`.
    pub fn describe(&self) -> String {
        match self.kind {
            GOAWAY => format!(
                "GOAWAY(last={}, {}, {:?})",
                self.last_stream(),
                error_name(self.error_code()),
                self.debug_data()
            ),
            RST_STREAM => format!("RST_STREAM(stream={}, {})", self.stream, error_name(self.error_code())),
            k => {
                format!("{}(stream={}, flags={:#x}, len={})", type_name(k), self.stream, self.flags, self.payload.len())
            }
        }
    }

    /// The payload of DATA, HEADERS or PUSH_PROMISE without padding (and
    /// HEADERS without its priority fields).
    pub fn content(&self) -> &[u8] {
        let mut p = &self.payload[..];
        let mut pad = 0;
        if matches!(self.kind, DATA | HEADERS | PUSH_PROMISE) && self.has(PADDED) && !p.is_empty() {
            pad = p[0] as usize;
            p = &p[1..];
        }
        if self.kind == HEADERS && self.has(PRIORITY_FLAG) && p.len() >= 5 {
            p = &p[5..];
        }
        &p[..p.len().saturating_sub(pad)]
    }
}

/// A frame's bytes: the 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    push_frame(&mut out, kind, flags, stream, payload);
    out
}

/// Appends a frame's bytes to `out` (for building large batches).
pub fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload of {len} bytes");
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A SETTINGS payload.
pub fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::with_capacity(settings.len() * 6);
    for (id, v) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

/// A RST_STREAM or WINDOW_UPDATE payload (one 32-bit word).
pub fn u32_payload(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// A GOAWAY payload.
pub fn goaway_payload(last_stream: u32, code: u32) -> Vec<u8> {
    let mut p = last_stream.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

// ---------------------------------------------------------------------------
// HPACK: encoding (literal, never indexed, no Huffman)
// ---------------------------------------------------------------------------

/// An HPACK integer with an N-bit prefix; `first` holds the bits above it.
pub fn hpack_int(out: &mut Vec<u8>, prefix_bits: u32, first: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// One field as a literal never-indexed field with a literal name.
pub fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x10);
    hpack_string(out, name);
    hpack_string(out, value);
}

/// A header block of literal fields, in order.
pub fn hpack_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        hpack_literal(&mut out, n.as_bytes(), v.as_bytes());
    }
    out
}

/// A request's header block: `:method`, `:scheme` http, `:path`,
/// `:authority`, then `extra`.
pub fn request_block(method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)];
    fields.extend_from_slice(extra);
    hpack_block(&fields)
}

// ---------------------------------------------------------------------------
// HPACK: decoding
// ---------------------------------------------------------------------------

const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 Appendix B: each byte's Huffman code, and its length in bits.
const HUFFMAN_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8, 0xffffea,
    0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0,
    0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9,
    0xffffffa, 0xffffffb, 0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16,
    0x17, 0x18, 0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
    0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
    0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4,
    0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
    0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3,
    0x3fffd4, 0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
    0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, 0x7fffe4, 0x1fffdc, 0x3fffd8,
    0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8,
    0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0,
    0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8,
    0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2,
    0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8,
    0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7,
    0x1fffe8, 0x7ffff3, 0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb, 0xffffffe, 0x7ffffec,
    0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

const HUFFMAN_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26,
];

fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    static TABLE: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    let table =
        TABLE.get_or_init(|| (0..256).map(|sym| ((HUFFMAN_LENGTHS[sym], HUFFMAN_CODES[sym]), sym as u8)).collect());
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u8);
    for byte in src {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if let Some(sym) = table.get(&(len, code)) {
                out.push(*sym);
                code = 0;
                len = 0;
            } else if len >= 30 {
                return Err("bad Huffman code".into());
            }
        }
    }
    // What is left is padding: fewer than 8 bits, all ones.
    if len >= 8 || code != (1u32 << len) - 1 {
        return Err("bad Huffman padding".into());
    }
    Ok(out)
}

/// An HPACK decoder with its dynamic table.
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max: 4096 }
    }

    fn int(src: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, String> {
        let max = (1usize << prefix_bits) - 1;
        let first = *src.get(*pos).ok_or("truncated integer")? as usize & max;
        *pos += 1;
        if first < max {
            return Ok(first);
        }
        let (mut value, mut shift) = (max, 0);
        loop {
            let b = *src.get(*pos).ok_or("truncated integer")?;
            *pos += 1;
            value += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            if shift > 28 {
                return Err("integer too large".into());
            }
        }
    }

    fn string(src: &[u8], pos: &mut usize) -> Result<String, String> {
        let huffman = src.get(*pos).ok_or("truncated string")? & 0x80 != 0;
        let len = Decoder::int(src, pos, 7)?;
        let raw = src.get(*pos..*pos + len).ok_or("truncated string")?;
        *pos += len;
        let bytes = if huffman { huffman_decode(raw)? } else { raw.to_vec() };
        Ok(String::from_utf8_lossy(&bytes).to_string())
    }

    fn entry(&self, index: usize) -> Result<(String, String), String> {
        match index {
            0 => Err("index 0".into()),
            i if i <= STATIC_TABLE.len() => {
                let (n, v) = STATIC_TABLE[i - 1];
                Ok((n.to_string(), v.to_string()))
            }
            i => self.table.get(i - STATIC_TABLE.len() - 1).cloned().ok_or_else(|| format!("no table entry {i}")),
        }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= 32 + n.len() + v.len(),
                None => break,
            }
        }
    }

    fn insert(&mut self, name: &str, value: &str) {
        self.table.push_front((name.to_string(), value.to_string()));
        self.size += 32 + name.len() + value.len();
        self.evict();
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, src: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < src.len() {
            let b = src[pos];
            if b & 0x80 != 0 {
                let i = Decoder::int(src, &mut pos, 7)?;
                out.push(self.entry(i)?);
            } else if b & 0xc0 == 0x40 {
                let i = Decoder::int(src, &mut pos, 6)?;
                let name = if i == 0 { Decoder::string(src, &mut pos)? } else { self.entry(i)?.0 };
                let value = Decoder::string(src, &mut pos)?;
                self.insert(&name, &value);
                out.push((name, value));
            } else if b & 0xe0 == 0x20 {
                self.max = Decoder::int(src, &mut pos, 5)?;
                self.evict();
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let i = Decoder::int(src, &mut pos, 4)?;
                let name = if i == 0 { Decoder::string(src, &mut pos)? } else { self.entry(i)?.0 };
                let value = Decoder::string(src, &mut pos)?;
                out.push((name, value));
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// Why a read returned no frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Nothing (complete) arrived in time.
    Timeout,
    /// The peer closed (EOF) or reset the connection; the text says which.
    Closed(String),
}

/// What one stream's answer looked like.
#[derive(Clone, Debug, Default)]
pub struct H2Response {
    /// The final `:status`; 0 when no response head arrived.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The DATA (empty when a callback took it).
    pub body: Vec<u8>,
    pub body_len: usize,
    pub data_frames: usize,
    /// Whether a response HEADERS frame carried END_STREAM.
    pub headers_ended_stream: bool,
    pub trailers: Vec<(String, String)>,
    /// Whether the stream ended cleanly (END_STREAM).
    pub ended: bool,
    /// RST_STREAM's error code, if the stream was reset.
    pub reset: Option<u32>,
    /// A GOAWAY seen meanwhile: (last stream id, error code).
    pub goaway: Option<(u32, u32)>,
    /// The connection closed before the stream ended.
    pub closed: Option<String>,
    pub timed_out: bool,
}

impl H2Response {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A trailer's value.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// A short summary for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "status {} headers {:?} body {} bytes in {} DATA frames, trailers {:?}, ended {}, reset {:?}, goaway {:?}, \
             closed {:?}, timed out {}",
            self.status,
            self.headers,
            self.body_len,
            self.data_frames,
            self.trailers,
            self.ended,
            self.reset.map(error_name),
            self.goaway.map(|(l, c)| (l, error_name(c))),
            self.closed,
            self.timed_out
        )
    }
}

/// One HTTP/2 connection over plain TCP, with explicit control of every
/// byte. Reads answer the server's SETTINGS and PINGs (unless `auto_ack` is
/// off) and track flow-control windows; nothing happens behind the test's
/// back otherwise.
pub struct H2Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Frames read while waiting for window, handed out first.
    backlog: VecDeque<Frame>,
    decoder: Decoder,
    next_id: u32,
    /// Our send windows: the connection's and each stream's.
    conn_window: i64,
    initial_window: i64,
    windows: HashMap<u32, i64>,
    /// The server's SETTINGS_MAX_FRAME_SIZE.
    pub peer_max_frame: usize,
    /// Answer SETTINGS and PING as they are read.
    pub auto_ack: bool,
    /// Whether the server's first SETTINGS arrived.
    pub got_settings: bool,
    /// Frames read so far, by type (index = frame type, 10 = other).
    pub counts: [usize; 11],
    /// Our window for each stream's DATA (0 = never open it); WINDOW_UPDATEs
    /// are sent as `response` consumes DATA unless `auto_window` is off.
    pub auto_window: bool,
}

impl H2Client {
    /// A TCP connection (nothing sent yet).
    pub fn connect(addr: SocketAddr) -> H2Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        H2Client {
            stream,
            buf: Vec::new(),
            backlog: VecDeque::new(),
            decoder: Decoder::new(),
            next_id: 1,
            conn_window: 65_535,
            initial_window: 65_535,
            windows: HashMap::new(),
            peer_max_frame: 16_384,
            auto_ack: true,
            got_settings: false,
            counts: [0; 11],
            auto_window: true,
        }
    }

    /// Connects and sends the preface and our SETTINGS (nothing read).
    pub fn start(addr: SocketAddr, settings: &[(u16, u32)]) -> H2Client {
        let mut c = H2Client::connect(addr);
        let mut hello = PREFACE.to_vec();
        push_frame(&mut hello, SETTINGS, 0, 0, &settings_payload(settings));
        c.send_raw(&hello);
        c
    }

    /// `start`, then reads until the server's SETTINGS arrived (and ACKs it).
    pub fn handshake(addr: SocketAddr, settings: &[(u16, u32)]) -> H2Client {
        let mut c = H2Client::start(addr, settings);
        let deadline = Instant::now() + IO_TIMEOUT;
        while !c.got_settings {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.read_frame(left) {
                Ok(f) => c.backlog_keep(f),
                Err(e) => panic!("no SETTINGS from the server: {e:?}"),
            }
        }
        c
    }

    fn backlog_keep(&mut self, f: Frame) {
        // Connection-level frames were handled when read; keep the rest.
        if f.stream != 0 {
            self.backlog.push_back(f);
        }
    }

    /// Our side's address (as the server sees it).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// The next client stream id (1, 3, 5, …).
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        id
    }

    /// Writes `bytes`; panics on failure.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to ringway: {e}"));
    }

    /// Writes `bytes`; the peer may have closed.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame; panics on failure.
    pub fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.send_raw(&frame(kind, flags, stream, payload));
    }

    /// Writes one frame; the peer may have closed.
    pub fn try_send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        self.try_send_raw(&frame(kind, flags, stream, payload))
    }

    /// Sends a header block on `stream` as HEADERS and as many
    /// CONTINUATIONs as `max_frame` needs.
    pub fn send_headers(&mut self, stream: u32, block: &[u8], end_stream: bool, max_frame: usize) {
        let mut out = Vec::with_capacity(block.len() + 9 * (block.len() / max_frame + 1));
        let mut pieces = block.chunks(max_frame.max(1)).peekable();
        let first = pieces.next().unwrap_or(&[]);
        let mut flags = if end_stream { END_STREAM } else { 0 };
        if pieces.peek().is_none() {
            flags |= END_HEADERS;
        }
        push_frame(&mut out, HEADERS, flags, stream, first);
        while let Some(p) = pieces.next() {
            let flags = if pieces.peek().is_none() { END_HEADERS } else { 0 };
            push_frame(&mut out, CONTINUATION, flags, stream, p);
        }
        self.windows.entry(stream).or_insert(self.initial_window);
        self.send_raw(&out);
    }

    /// Opens a stream with a request (END_STREAM when `end_stream`); its id.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        authority: &str,
        extra: &[(&str, &str)],
        end_stream: bool,
    ) -> u32 {
        let id = self.next_stream_id();
        let block = request_block(method, path, authority, extra);
        let max = self.peer_max_frame;
        self.send_headers(id, &block, end_stream, max);
        id
    }

    /// A GET on a new stream (END_STREAM); its id.
    pub fn get(&mut self, path: &str, authority: &str) -> u32 {
        self.request("GET", path, authority, &[], true)
    }

    /// Sends `data` on `stream` as DATA frames within the server's windows
    /// (reading frames while waiting for WINDOW_UPDATEs), the last one with
    /// END_STREAM when `end`. Panics when the window stays shut past `timeout`.
    pub fn send_body(&mut self, stream: u32, mut data: &[u8], end: bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if data.is_empty() && end {
            self.send(DATA, END_STREAM, stream, &[]);
            return;
        }
        while !data.is_empty() {
            let window = self.conn_window.min(*self.windows.entry(stream).or_insert(self.initial_window));
            if window <= 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "the server's window for stream {stream} stayed shut for {timeout:?}");
                match self.read_frame_wire(left.min(Duration::from_millis(500))) {
                    Ok(f) => self.backlog_keep(f),
                    Err(ReadEnd::Timeout) => {}
                    Err(e) => panic!("connection ended while sending stream {stream}'s body: {e:?}"),
                }
                continue;
            }
            let n = (window as usize).min(data.len()).min(self.peer_max_frame);
            let last = end && n == data.len();
            self.send(DATA, if last { END_STREAM } else { 0 }, stream, &data[..n]);
            self.conn_window -= n as i64;
            if let Some(w) = self.windows.get_mut(&stream) {
                *w -= n as i64;
            }
            data = &data[n..];
        }
    }

    /// Sends trailers (a HEADERS frame with END_STREAM).
    pub fn send_trailers(&mut self, stream: u32, fields: &[(&str, &str)]) {
        let block = hpack_block(fields);
        let max = self.peer_max_frame;
        self.send_headers(stream, &block, true, max);
    }

    /// The next frame (from the backlog first), within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        if let Some(f) = self.backlog.pop_front() {
            return Ok(f);
        }
        self.read_frame_wire(timeout)
    }

    fn read_frame_wire(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        let deadline = Instant::now() + timeout;
        let mut tmp = [0u8; 64 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16 | (self.buf[1] as usize) << 8 | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    self.observe(&f);
                    return Ok(f);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout);
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err(ReadEnd::Closed("EOF".into())),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadEnd::Closed(format!("{e}"))),
            }
        }
    }

    /// Bookkeeping for a frame just read: windows, settings, ACKs.
    fn observe(&mut self, f: &Frame) {
        self.counts[(f.kind as usize).min(10)] += 1;
        match f.kind {
            SETTINGS if !f.has(ACK) => {
                for s in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([s[0], s[1]]);
                    let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                    match id {
                        SETTINGS_INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(v) - self.initial_window;
                            self.initial_window = i64::from(v);
                            for w in self.windows.values_mut() {
                                *w += delta;
                            }
                        }
                        SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = v as usize,
                        _ => {}
                    }
                }
                self.got_settings = true;
                if self.auto_ack {
                    let _ = self.try_send(SETTINGS, ACK, 0, &[]);
                }
            }
            PING if !f.has(ACK) && self.auto_ack => {
                let _ = self.try_send(PING, ACK, 0, &f.payload);
            }
            WINDOW_UPDATE => {
                let inc = i64::from(f.u32_at(0) & 0x7fff_ffff);
                if f.stream == 0 {
                    self.conn_window += inc;
                } else if let Some(w) = self.windows.get_mut(&f.stream) {
                    *w += inc;
                }
            }
            _ => {}
        }
    }

    /// Decodes a header block (HPACK state is per connection: every block
    /// must go through here, in order).
    pub fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        self.decoder.decode(block).unwrap_or_else(|e| panic!("HPACK decoding failed: {e}"))
    }

    /// Reads `stream`'s response, collecting the body.
    pub fn response(&mut self, stream: u32, timeout: Duration) -> H2Response {
        let mut body = Vec::new();
        let mut r = self.response_with(stream, timeout, |d| body.extend_from_slice(d));
        r.body = body;
        r
    }

    /// Reads `stream`'s response until it ends (END_STREAM or RST_STREAM),
    /// the connection closes, or `timeout`; hands each DATA payload to
    /// `on_data` and only then (with `auto_window`) opens the windows again.
    /// Frames of other streams are decoded (HPACK state) and dropped.
    pub fn response_with(&mut self, stream: u32, timeout: Duration, mut on_data: impl FnMut(&[u8])) -> H2Response {
        let deadline = Instant::now() + timeout;
        let mut r = H2Response::default();
        let mut block: Option<(u32, u8, Vec<u8>)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = match self.read_frame(left) {
                Ok(f) => f,
                Err(ReadEnd::Timeout) => {
                    r.timed_out = true;
                    return r;
                }
                Err(ReadEnd::Closed(why)) => {
                    r.closed = Some(why);
                    return r;
                }
            };
            match f.kind {
                HEADERS | CONTINUATION => {
                    let (id, flags, mut bytes) = match (f.kind, block.take()) {
                        (HEADERS, _) => (f.stream, f.flags, Vec::new()),
                        (_, Some(b)) => b,
                        (_, None) => panic!("CONTINUATION without HEADERS: {}", f.describe()),
                    };
                    bytes.extend_from_slice(f.content());
                    if !f.has(END_HEADERS) {
                        block = Some((id, flags, bytes));
                        continue;
                    }
                    let fields = self.decode(&bytes);
                    if id != stream {
                        continue;
                    }
                    let status = fields.iter().find(|(n, _)| n == ":status").and_then(|(_, v)| v.parse::<u16>().ok());
                    let end = flags & END_STREAM != 0;
                    match status {
                        Some(s) if (100..200).contains(&s) => {}
                        Some(s) => {
                            r.status = s;
                            r.headers = fields.into_iter().filter(|(n, _)| n != ":status").collect();
                            r.headers_ended_stream = end;
                        }
                        None => r.trailers = fields,
                    }
                    if end {
                        r.ended = true;
                        return r;
                    }
                }
                DATA => {
                    let n = f.payload.len();
                    if f.stream == stream {
                        r.data_frames += 1;
                        r.body_len += f.content().len();
                        on_data(f.content());
                    }
                    if self.auto_window && n > 0 {
                        let _ = self.try_send(WINDOW_UPDATE, 0, 0, &u32_payload(n as u32));
                        if !f.has(END_STREAM) {
                            let _ = self.try_send(WINDOW_UPDATE, 0, f.stream, &u32_payload(n as u32));
                        }
                    }
                    if f.stream == stream && f.has(END_STREAM) {
                        r.ended = true;
                        return r;
                    }
                }
                RST_STREAM if f.stream == stream => {
                    r.reset = Some(f.error_code());
                    return r;
                }
                GOAWAY => {
                    r.goaway = Some((f.last_stream(), f.error_code()));
                    if f.last_stream() < stream {
                        return r;
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads the responses of several streams at once, until each ended or
    /// was reset (or the connection closed, or `timeout`: the unfinished
    /// ones say so). Bodies are collected; windows reopened as with
    /// `response_with`.
    pub fn responses(&mut self, ids: &[u32], timeout: Duration) -> HashMap<u32, H2Response> {
        let deadline = Instant::now() + timeout;
        let mut out: HashMap<u32, H2Response> = ids.iter().map(|id| (*id, H2Response::default())).collect();
        let mut open: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let mut block: Option<(u32, u8, Vec<u8>)> = None;
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = match self.read_frame(left) {
                Ok(f) => f,
                Err(e) => {
                    for id in &open {
                        let r = out.get_mut(id).unwrap();
                        match &e {
                            ReadEnd::Timeout => r.timed_out = true,
                            ReadEnd::Closed(why) => r.closed = Some(why.clone()),
                        }
                    }
                    break;
                }
            };
            match f.kind {
                HEADERS | CONTINUATION => {
                    let (id, flags, mut bytes) = match (f.kind, block.take()) {
                        (HEADERS, _) => (f.stream, f.flags, Vec::new()),
                        (_, Some(b)) => b,
                        (_, None) => panic!("CONTINUATION without HEADERS: {}", f.describe()),
                    };
                    bytes.extend_from_slice(f.content());
                    if !f.has(END_HEADERS) {
                        block = Some((id, flags, bytes));
                        continue;
                    }
                    let fields = self.decode(&bytes);
                    let Some(r) = out.get_mut(&id) else { continue };
                    let status = fields.iter().find(|(n, _)| n == ":status").and_then(|(_, v)| v.parse::<u16>().ok());
                    let end = flags & END_STREAM != 0;
                    match status {
                        Some(s) if (100..200).contains(&s) => {}
                        Some(s) => {
                            r.status = s;
                            r.headers = fields.into_iter().filter(|(n, _)| n != ":status").collect();
                            r.headers_ended_stream = end;
                        }
                        None => r.trailers = fields,
                    }
                    if end {
                        r.ended = true;
                        open.remove(&id);
                    }
                }
                DATA => {
                    let n = f.payload.len();
                    if let Some(r) = out.get_mut(&f.stream) {
                        r.data_frames += 1;
                        r.body_len += f.content().len();
                        r.body.extend_from_slice(f.content());
                    }
                    if self.auto_window && n > 0 {
                        let _ = self.try_send(WINDOW_UPDATE, 0, 0, &u32_payload(n as u32));
                        if !f.has(END_STREAM) {
                            let _ = self.try_send(WINDOW_UPDATE, 0, f.stream, &u32_payload(n as u32));
                        }
                    }
                    if f.has(END_STREAM) {
                        if let Some(r) = out.get_mut(&f.stream) {
                            r.ended = true;
                            open.remove(&f.stream);
                        }
                    }
                }
                RST_STREAM => {
                    if let Some(r) = out.get_mut(&f.stream) {
                        r.reset = Some(f.error_code());
                        open.remove(&f.stream);
                    }
                }
                GOAWAY => {
                    for (id, r) in out.iter_mut() {
                        r.goaway = Some((f.last_stream(), f.error_code()));
                        if *id > f.last_stream() {
                            open.remove(id);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Reads (and drops) frames until one matches `pred`; that frame.
    pub fn read_until(&mut self, timeout: Duration, mut pred: impl FnMut(&Frame) -> bool) -> Result<Frame, ReadEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left)?;
            if f.kind == HEADERS && f.has(END_HEADERS) {
                // Keep the HPACK state in step even for blocks we skip.
                let content = f.content().to_vec();
                let _ = self.decoder.decode(&content);
            }
            if pred(&f) {
                return Ok(f);
            }
        }
    }

    /// Reads until a GOAWAY arrives (the GOAWAY) or the connection ends.
    pub fn goaway_within(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        self.read_until(timeout, |f| f.kind == GOAWAY)
    }

    /// Reads and drops everything until the connection closes (EOF or a
    /// reset): the frames seen and why it ended; `Timeout` if it stays open.
    pub fn drain_until_closed(&mut self, timeout: Duration) -> (Vec<Frame>, ReadEnd) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) => {
                    // Do not keep large payloads around.
                    let keep = Frame { payload: f.payload.iter().take(64).copied().collect(), ..f };
                    seen.push(keep);
                }
                Err(e) => return (seen, e),
            }
        }
    }
}
