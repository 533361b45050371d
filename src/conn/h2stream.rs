//! One HTTP/2 stream, seen by the request path as a connection that carries
//! one HTTP/1.1 exchange.
//!
//! Reading gives the request as HTTP/1.1: a head written from the stream's
//! decoded headers (`:authority` as Host; connection-specific fields, `TE`
//! other than `trailers` and `Expect` left out; cookie crumbs joined), then
//! the body — as sent when the client gave a Content-Length, else chunked,
//! with its trailers. Our own HTTP/1.1 parser then checks that head like any
//! other, so every phase (route, admission, policies, retries, stats, the
//! access log) runs unchanged.
//!
//! Writing takes the HTTP/1.1 response the request path produces (its head,
//! then the body in canonical framing) and turns it back into HEADERS, DATA
//! and trailers, under the stream's flow control: a write waits until the
//! client's window has room, so a slow reader holds back the backend, and
//! a stream's memory stays within its window. A response that ends before
//! its framing is complete resets the stream, so the client sees the
//! truncation.
//!
//! Memory: the request body is pulled one DATA frame at a time, and the
//! window is released as it is handed on, so at most a window's worth waits
//! in h2 and one frame here.

use std::future::poll_fn;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};

use super::h2body::{other, send_body, Framing, Inbound, CONNECTION_SPECIFIC};
use super::TlsInfo;
use crate::http::{parse_response, slice, BodyKind, ChunkedDecoder, HeadLimits, Method};
use crate::stats::{bump, ProtoCounters};

/// What the connection it came on negotiated (for the access log), and
/// where its streams' resets are counted.
#[derive(Default)]
pub struct ConnInfo {
    /// TLS version, when over TLS.
    pub tls: Option<TlsInfo>,
    /// The SNI name the client sent.
    pub sni: Option<Box<str>>,
    /// The worker's counters.
    pub counters: Rc<ProtoCounters>,
    /// Header spans of the response head being converted (one stream's at
    /// a time: borrowed only inside `take_head`, which never waits).
    pub spans: std::cell::RefCell<Vec<crate::http::HeaderSpan>>,
}

/// One stream as a connection (see the module docs).
pub struct H2Stream {
    /// The request as HTTP/1.1 bytes: the head, then the body.
    inbound: Inbound,
    respond: Option<SendResponse<Bytes>>,
    out: Out,
    /// The request was HEAD (its response has no body).
    head_request: bool,
    info: Rc<ConnInfo>,
}

/// Where the response stands.
enum Out {
    /// Head bytes gathered so far.
    Head(Vec<u8>),
    /// Sending the body, by its HTTP/1.1 framing.
    Body(SendStream<Bytes>, Framing),
    /// Complete (or abandoned after a reset).
    Done,
}

/// The HTTP/1.1 request head an HTTP/2 request becomes (one exchange, so
/// `connection: close`): `:authority` (else Host) as Host; connection-specific
/// fields dropped, `te` kept only as `trailers`; cookie crumbs joined into one
/// field; `transfer-encoding: chunked` when a body comes without a length.
/// Returns the head and whether the body goes chunked. The request path
/// parses this head like any other (and the h2_to_h1 fuzz target checks it
/// always parses, with nothing the client could smuggle).
pub fn h1_request_head(parts: &http::request::Parts, has_body: bool) -> (Vec<u8>, bool) {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => head.extend_from_slice(pq.as_str().as_bytes()),
        // CONNECT names an authority only (the request path refuses it).
        _ if parts.method == http::Method::CONNECT => {
            head.extend_from_slice(parts.uri.authority().map_or("", |a| a.as_str()).as_bytes())
        }
        _ => head.push(b'/'),
    }
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
    if let Some(h) = authority.or_else(|| parts.headers.get(http::header::HOST).map(|h| h.as_bytes())) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(h);
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let keep = !CONNECTION_SPECIFIC.contains(&n) && n != "cookie";
        if keep || (n == "te" && value.as_bytes().eq_ignore_ascii_case(b"trailers")) {
            head.extend_from_slice(n.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    // HTTP/2 may split a cookie into crumbs; HTTP/1.1 wants one field.
    for (i, c) in parts.headers.get_all(http::header::COOKIE).iter().enumerate() {
        head.extend_from_slice(if i == 0 { b"cookie: " } else { b"; " });
        head.extend_from_slice(c.as_bytes());
    }
    if parts.headers.contains_key(http::header::COOKIE) {
        head.extend_from_slice(b"\r\n");
    }
    let chunked = has_body && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    // One exchange per stream: the request path closes after it.
    head.extend_from_slice(b"connection: close\r\n\r\n");
    (head, chunked)
}

impl H2Stream {
    /// A stream for `req`, answered through `respond`.
    pub fn new(req: Request<RecvStream>, respond: SendResponse<Bytes>, info: Rc<ConnInfo>) -> H2Stream {
        let (parts, body) = req.into_parts();
        let has_body = !body.is_end_stream();
        let (head, chunked) = h1_request_head(&parts, has_body);
        H2Stream {
            inbound: Inbound::new(head, has_body.then_some(body), chunked),
            respond: Some(respond),
            out: Out::Head(Vec::new()),
            head_request: parts.method == http::Method::HEAD,
            info,
        }
    }

    /// What the connection negotiated.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Until the response starts: a stream the client has reset already
    /// (rapid reset) ends here, before it reaches a backend.
    async fn check_reset(&mut self) -> io::Result<()> {
        let (Out::Head(_), Some(respond)) = (&self.out, self.respond.as_mut()) else { return Ok(()) };
        let reset = poll_fn(|cx| std::task::Poll::Ready(respond.poll_reset(cx))).await;
        if let std::task::Poll::Ready(r) = reset {
            bump(&self.info.counters.h2_reset_by_client);
            self.out = Out::Done;
            let reason = r.map(|r| r.to_string()).unwrap_or_else(|e| e.to_string());
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, reason));
        }
        Ok(())
    }

    /// An h2 error as an I/O error, counting a client's reset.
    fn h2_error(&self, e: h2::Error) -> io::Error {
        if e.is_reset() && e.is_remote() {
            bump(&self.info.counters.h2_reset_by_client);
        }
        other(e)
    }

    /// Counts (and sends) a reset for a response that cannot complete.
    fn reset_incomplete(&mut self) {
        match std::mem::replace(&mut self.out, Out::Done) {
            Out::Done => return,
            Out::Body(mut send, _) => send.send_reset(Reason::INTERNAL_ERROR),
            Out::Head(_) => {
                if let Some(r) = self.respond.as_mut() {
                    r.send_reset(Reason::INTERNAL_ERROR);
                }
            }
        }
        bump(&self.info.counters.h2_reset_incomplete);
    }

    /// Reads request bytes onto the end of `buf` (into its spare capacity,
    /// or all of the next piece when there is none); `Ok(0)` at the end.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.check_reset().await?;
        match self.inbound.read(buf).await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.h2_error(e)),
        }
    }

    /// Waits until a read would find something (bytes or the end).
    pub async fn readable(&mut self) -> io::Result<()> {
        self.check_reset().await?;
        match self.inbound.fill().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.h2_error(e)),
        }
    }

    /// Takes response bytes (HTTP/1.1, as the request path writes them);
    /// returns once they are handed to h2 within the client's window.
    pub async fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            rest = match &mut self.out {
                Out::Head(_) => self.take_head(rest)?,
                Out::Body(send, framing) => {
                    let (used, end) = match send_body(send, framing, rest).await {
                        Ok(r) => r,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::ConnectionReset {
                                bump(&self.info.counters.h2_reset_by_client);
                            }
                            return Err(e);
                        }
                    };
                    if end {
                        self.out = Out::Done;
                    }
                    &rest[used..]
                }
                // Anything after the end is not ours to send.
                Out::Done => &[],
            };
        }
        Ok(data.len())
    }

    /// Gathers the response head; once complete, sends HEADERS. Returns
    /// what follows the head in `data`.
    fn take_head<'d>(&mut self, data: &'d [u8]) -> io::Result<&'d [u8]> {
        let Out::Head(buf) = &mut self.out else { return Ok(data) };
        let before = buf.len();
        buf.extend_from_slice(data);
        let method = if self.head_request { Method::Head } else { Method::Get };
        let limits = HeadLimits { max_head_bytes: 1 << 20, max_headers: 256 };
        let mut spans = self.info.spans.borrow_mut();
        let Some(h) = parse_response(buf, &limits, method, &mut spans).map_err(|e| other(e.reason()))? else {
            return Ok(&[]);
        };
        let used = h.head_len.saturating_sub(before).min(data.len());
        if h.status < 200 {
            // 1xx: not relayed (Expect is not forwarded, upgrades are not
            // offered over HTTP/2); the final answer follows.
            buf.clear();
            return Ok(&data[used..]);
        }
        // The head's buffer becomes the values' shared storage: no copy
        // (and no allocation) per header value.
        let head = Bytes::from(std::mem::take(buf));
        let mut resp = Response::builder().status(h.status);
        if let Some(headers) = resp.headers_mut() {
            headers.reserve(spans.len());
            for s in spans.iter() {
                let Ok(name) = HeaderName::from_bytes(slice(&head, s.name)) else { continue };
                if CONNECTION_SPECIFIC.contains(&name.as_str()) {
                    continue;
                }
                let (from, to) = (s.value.0 as usize, s.value.1 as usize);
                if from > to || to > head.len() {
                    continue;
                }
                if let Ok(v) = HeaderValue::from_maybe_shared(head.slice(from..to)) {
                    headers.append(name, v);
                }
            }
        }
        let resp = resp.body(()).map_err(other)?;
        let framing = match h.body {
            BodyKind::None => None,
            BodyKind::Length(0) => None,
            BodyKind::Length(n) => Some(Framing::Length(n)),
            BodyKind::Chunked => Some(Framing::Chunked(Box::new(ChunkedDecoder::new(0)))),
            BodyKind::UntilClose => Some(Framing::UntilClose),
        };
        let Some(respond) = self.respond.as_mut() else { return Err(io::ErrorKind::BrokenPipe.into()) };
        let send = respond.send_response(resp, framing.is_none()).map_err(other)?;
        self.out = match framing {
            Some(f) => Out::Body(send, f),
            None => Out::Done,
        };
        Ok(&data[used..])
    }

    /// The request path ends the response: a body that runs to the close
    /// ends here; anything else incomplete is reset.
    pub fn finish(&mut self) {
        if let Out::Body(send, Framing::UntilClose) = &mut self.out {
            let _ = send.send_data(Bytes::new(), true);
            self.out = Out::Done;
        }
        self.reset_incomplete();
    }
}

impl Drop for H2Stream {
    /// A response left incomplete (the backend failed mid-body, a write
    /// timed out) resets the stream: never a complete-looking body.
    fn drop(&mut self) {
        self.reset_incomplete();
    }
}
