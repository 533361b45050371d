//! A small HTTP/1.1 client exchange over a `Stream`, for the control side's
//! own requests to backends and services (health probes, the auth
//! provider): write a request, read the final response head with the data
//! plane's parser, read the body by its framing up to a limit. The request
//! path proper uses `proxy::wire` (deadlines on the worker's timers); these
//! callers bound the whole exchange with one timeout instead.

use crate::conn::Stream;
use crate::http::{parse_response, BodyKind, ChunkedDecoder, HeadLimits, HeaderSpan, Method, ResponseHead};

/// Writes all of `buf`; `false` on an error or a closed stream.
pub async fn write_all(s: &mut Stream, buf: &mut Vec<u8>) -> bool {
    let mut pos = 0;
    while pos < buf.len() {
        let end = buf.len();
        match s.write(buf, pos, end).await {
            Ok(n) if n > 0 => pos += n,
            _ => return false,
        }
    }
    true
}

/// Reads more onto `buf` (making room first); `false` at the end of the
/// stream or on an error.
pub async fn read_more(s: &mut Stream, buf: &mut Vec<u8>) -> bool {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    matches!(s.read(buf).await, Ok(n) if n > 0)
}

/// Reads until the final (non-1xx) response head is in `buf` (1xx heads
/// are dropped from it); `spans` index `buf`. `None` on a bad head or a
/// closed stream.
pub async fn read_final_head(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    limits: &HeadLimits,
    method: Method,
    spans: &mut Vec<HeaderSpan>,
) -> Option<ResponseHead> {
    loop {
        match parse_response(buf, limits, method, spans) {
            Ok(Some(h)) if h.status < 200 => {
                buf.drain(..h.head_len);
                continue;
            }
            Ok(Some(h)) => return Some(h),
            Ok(None) => {}
            Err(_) => return None,
        }
        if !read_more(s, buf).await {
            return None;
        }
    }
}

/// Reads a body of framing `kind`, starting with what is already in `buf`
/// (the bytes after the head), handing each piece of payload to `data`, up
/// to `max` bytes of it. Returns whether the whole body was read and
/// nothing follows it (the connection could be reused).
pub async fn read_body(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    kind: BodyKind,
    max: usize,
    data: &mut dyn FnMut(&[u8]),
) -> bool {
    match kind {
        BodyKind::None => buf.is_empty(),
        BodyKind::Length(n) => {
            let mut total = 0u64;
            loop {
                let take = n.saturating_sub(total).min(buf.len() as u64) as usize;
                data(&buf[..take]);
                total += take as u64;
                let extra = buf.len() > take;
                buf.clear();
                if total >= n {
                    return !extra;
                }
                if total >= max as u64 || !read_more(s, buf).await {
                    return false;
                }
            }
        }
        BodyKind::Chunked => {
            let mut d = ChunkedDecoder::new(max as u64);
            loop {
                match d.feed(buf, &mut *data) {
                    Ok((used, true)) => return used == buf.len(),
                    Ok((used, false)) => {
                        buf.drain(..used);
                    }
                    Err(_) => return false,
                }
                if !read_more(s, buf).await {
                    return false;
                }
            }
        }
        BodyKind::UntilClose => {
            let mut total = 0;
            loop {
                data(&buf[..buf.len().min(max - total.min(max))]);
                total += buf.len();
                buf.clear();
                if total >= max || !read_more(s, buf).await {
                    return false;
                }
            }
        }
    }
}
