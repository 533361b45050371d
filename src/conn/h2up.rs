//! One HTTP/2 stream to a backend, seen by the request path as an HTTP/1.1
//! connection: the mirror of `h2stream`.
//!
//! Writing takes the HTTP/1.1 request the request path produces (the
//! upstream head, then the body in its framing), parses the head with our
//! own parser, and sends it as HEADERS (Host as `:authority`, connection-
//! specific fields dropped) and DATA under the stream's flow control.
//! Reading gives the backend's answer as HTTP/1.1: a status line and the
//! response's fields, then the body — as sent when it has a length, else
//! chunked with its trailers (gRPC's `grpc-status` travels so). The relay
//! then works as for any HTTP/1.1 backend. `TE: trailers` is always sent
//! (ringway takes trailers from any backend). A stream is never pooled: the
//! multiplexed connection it came from is (see `upstream::ConnPool`).

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Uri};

use super::h2body::{other, send_body, Framing, Inbound, CONNECTION_SPECIFIC};
use crate::http::{parse_request, slice, BodyKind, ChunkedDecoder, HeadLimits, Method};

/// An HTTP/2 stream to a backend (see the module docs).
pub struct H2Up {
    send: SendRequest<Bytes>,
    /// Streams open on this stream's connection (this one included).
    open: Rc<Cell<usize>>,
    /// `http` (h2c) or `https` (h2).
    scheme: &'static str,
    req: Req,
    /// The answer, until its head has been read.
    response: Option<ResponseFuture>,
    /// The answer as HTTP/1.1 bytes.
    inbound: Option<Inbound>,
    head_request: bool,
}

enum Req {
    /// Head bytes gathered so far.
    Head(Vec<u8>),
    /// Sending the body, by its HTTP/1.1 framing.
    Body(SendStream<Bytes>, Framing),
    Done,
}

impl H2Up {
    /// A stream on the connection behind `send` (ready for a request).
    pub fn new(send: SendRequest<Bytes>, open: Rc<Cell<usize>>, tls: bool) -> H2Up {
        open.set(open.get() + 1);
        H2Up {
            send,
            open,
            scheme: if tls { "https" } else { "http" },
            req: Req::Head(Vec::new()),
            response: None,
            inbound: None,
            head_request: false,
        }
    }

    /// Takes request bytes (HTTP/1.1, as the request path writes them).
    pub async fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            rest = match &mut self.req {
                Req::Head(_) => self.start(rest).await?,
                Req::Body(send, framing) => {
                    let (used, end) = send_body(send, framing, rest).await?;
                    if end {
                        self.req = Req::Done;
                    }
                    &rest[used..]
                }
                Req::Done => &[],
            };
        }
        Ok(data.len())
    }

    /// Gathers the request head; once complete, sends HEADERS. Returns
    /// what follows the head in `data`.
    async fn start<'d>(&mut self, data: &'d [u8]) -> io::Result<&'d [u8]> {
        let Req::Head(buf) = &mut self.req else { return Ok(data) };
        let before = buf.len();
        buf.extend_from_slice(data);
        let limits = HeadLimits { max_head_bytes: 1 << 20, max_headers: 256 };
        let mut spans = Vec::new();
        let Some(h) = parse_request(buf, &limits, &mut spans).map_err(|e| other(e.reason()))? else {
            return Ok(&[]);
        };
        let used = h.head_len.saturating_sub(before).min(data.len());
        let target = slice(buf, h.target);
        let mut host: &[u8] = b"";
        let mut req = Request::builder().method(http::Method::from_bytes(slice(buf, h.method_span)).map_err(other)?);
        if let Some(headers) = req.headers_mut() {
            for s in &spans {
                let (name, value) = (slice(buf, s.name), slice(buf, s.value));
                if name.eq_ignore_ascii_case(b"host") {
                    host = value;
                }
                let Ok(name) = HeaderName::from_bytes(name) else { continue };
                let te_trailers = name == http::header::TE && value.eq_ignore_ascii_case(b"trailers");
                if CONNECTION_SPECIFIC.contains(&name.as_str()) && !te_trailers {
                    continue;
                }
                if let Ok(v) = HeaderValue::from_bytes(value) {
                    headers.append(name, v);
                }
            }
        }
        // ringway relays trailers whatever the client said (to an HTTP/1.1
        // client in its chunked body): say so, as gRPC servers require.
        if let Some(headers) = req.headers_mut() {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        let uri = Uri::builder().scheme(self.scheme).authority(host).path_and_query(target).build().map_err(other)?;
        let req = req.uri(uri).body(()).map_err(other)?;
        self.head_request = h.method == Method::Head;
        let framing = match h.body {
            BodyKind::None | BodyKind::Length(0) | BodyKind::UntilClose => None,
            BodyKind::Length(n) => Some(Framing::Length(n)),
            BodyKind::Chunked => Some(Framing::Chunked(Box::new(ChunkedDecoder::new(0)))),
        };
        poll_fn(|cx| self.send.poll_ready(cx)).await.map_err(other)?;
        let (response, stream) = self.send.send_request(req, framing.is_none()).map_err(other)?;
        self.response = Some(response);
        self.req = match framing {
            Some(f) => Req::Body(stream, f),
            None => Req::Done,
        };
        Ok(&data[used..])
    }

    /// The response, once: its head as HTTP/1.1 bytes, then its body.
    async fn inbound(&mut self) -> io::Result<&mut Inbound> {
        if let Some(fut) = self.response.take() {
            let resp = fut.await.map_err(|e| {
                if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())
                } else {
                    other(e)
                }
            })?;
            let (parts, body) = resp.into_parts();
            let status = parts.status;
            let mut head = Vec::with_capacity(256);
            head.extend_from_slice(b"HTTP/1.1 ");
            head.extend_from_slice(status.as_str().as_bytes());
            head.push(b' ');
            head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
            head.extend_from_slice(b"\r\n");
            for (name, value) in &parts.headers {
                if CONNECTION_SPECIFIC.contains(&name.as_str()) {
                    continue;
                }
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            let bodiless = self.head_request || status.as_u16() == 204 || status.as_u16() == 304;
            let sized = parts.headers.contains_key(http::header::CONTENT_LENGTH);
            let ended = body.is_end_stream();
            let chunked = !bodiless && !sized && !ended;
            if chunked {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            } else if !bodiless && !sized {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
            head.extend_from_slice(b"\r\n");
            let body = (!bodiless && !ended).then_some(body);
            self.inbound = Some(Inbound::new(head, body, chunked));
        }
        self.inbound.as_mut().ok_or_else(|| other("no request was sent"))
    }

    /// Reads response bytes onto the end of `buf`; `Ok(0)` at the end.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.inbound().await?.read(buf).await.map_err(other)
    }

    /// Waits until a read would find something.
    pub async fn readable(&mut self) -> io::Result<()> {
        self.inbound().await?.fill().await.map(|_| ()).map_err(other)
    }
}

impl Drop for H2Up {
    /// A request abandoned mid-way (the client went away, a timeout)
    /// resets its stream, so the backend stops working on it.
    fn drop(&mut self) {
        self.open.set(self.open.get().saturating_sub(1));
        if let Req::Body(send, _) = &mut self.req {
            send.send_reset(h2::Reason::CANCEL);
        }
    }
}
