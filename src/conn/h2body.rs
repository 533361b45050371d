//! What both HTTP/2 adapters share (`h2stream` for clients, `h2up` for
//! backends): which fields never cross between HTTP/2 and HTTP/1.1, an
//! HTTP/2 body read as HTTP/1.1 bytes (raw, or chunked with its trailers),
//! and HTTP/1.1 body bytes sent as DATA frames under flow control.

use std::future::poll_fn;
use std::io;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::http::{push_chunk, ChunkedDecoder};

/// Fields that never cross between HTTP/2 and HTTP/1.1 (RFC 9113 8.2.2),
/// and Host (`:authority` carries it) and Expect (flow control does its job).
pub(super) const CONNECTION_SPECIFIC: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te", "expect"];

pub(super) fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// How the HTTP/1.1 body bytes being sent as DATA are framed.
pub(super) enum Framing {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

/// An HTTP/1.1 message read from HTTP/2: a head written up front, then
/// the body one DATA frame at a time (the window released as it is taken),
/// chunked with its trailers when the length is not known.
pub(super) struct Inbound {
    buf: Vec<u8>,
    pos: usize,
    body: Option<RecvStream>,
    chunked: bool,
}

impl Inbound {
    pub(super) fn new(head: Vec<u8>, body: Option<RecvStream>, chunked: bool) -> Inbound {
        Inbound { buf: head, pos: 0, body, chunked }
    }

    /// Makes bytes available (the next DATA frame, or the end of the
    /// body); false at the end of the message.
    pub(super) async fn fill(&mut self) -> Result<bool, h2::Error> {
        if self.pos < self.buf.len() {
            return Ok(true);
        }
        self.buf.clear();
        self.pos = 0;
        let Some(body) = &mut self.body else { return Ok(false) };
        match poll_fn(|cx| body.poll_data(cx)).await {
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if self.chunked {
                    push_chunk(&mut self.buf, &data);
                } else {
                    self.buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                let trailers = poll_fn(|cx| body.poll_trailers(cx)).await?;
                self.body = None;
                if self.chunked {
                    self.buf.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers.iter().flatten() {
                        self.buf.extend_from_slice(name.as_str().as_bytes());
                        self.buf.extend_from_slice(b": ");
                        self.buf.extend_from_slice(value.as_bytes());
                        self.buf.extend_from_slice(b"\r\n");
                    }
                    self.buf.extend_from_slice(b"\r\n");
                }
            }
        }
        Ok(true)
    }

    /// Reads onto the end of `buf` (into its spare capacity, or all of the
    /// next piece when there is none); `Ok(0)` at the end.
    pub(super) async fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, h2::Error> {
        while self.pos >= self.buf.len() {
            if !self.fill().await? {
                return Ok(0);
            }
        }
        let avail = &self.buf[self.pos..];
        let room = buf.capacity() - buf.len();
        let n = if room == 0 { avail.len() } else { avail.len().min(room) };
        buf.extend_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends body bytes by their HTTP/1.1 framing; returns how many
/// of `data` were taken and whether the body is complete (END_STREAM sent).
pub(super) async fn send_body(
    send: &mut SendStream<Bytes>,
    framing: &mut Framing,
    data: &[u8],
) -> io::Result<(usize, bool)> {
    match framing {
        Framing::Length(left) => {
            let take = (*left).min(data.len() as u64) as usize;
            *left -= take as u64;
            let end = *left == 0;
            send_flow(send, &data[..take], end).await?;
            Ok((take, end))
        }
        Framing::UntilClose => {
            send_flow(send, data, false).await?;
            Ok((data.len(), false))
        }
        Framing::Chunked(d) => {
            let mut pieces: Vec<u8> = Vec::new();
            let (used, fin) = d.feed(data, &mut |p| pieces.extend_from_slice(p)).map_err(|_| other("bad chunk"))?;
            send_flow(send, &pieces, false).await?;
            if fin {
                let trailers = trailer_map(d.trailers());
                if trailers.is_empty() {
                    send.send_data(Bytes::new(), true).map_err(other)?;
                } else {
                    send.send_trailers(trailers).map_err(other)?;
                }
            }
            Ok((used, fin))
        }
    }
}

/// Trailer fields (`name:value\r\n` each, as the chunked decoder keeps
/// them) as a header map; fields HTTP/2 cannot carry are dropped.
pub(super) fn trailer_map(raw: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else { continue };
        if !CONNECTION_SPECIFIC.contains(&name.as_str()) {
            map.append(name, value);
        }
    }
    map
}

/// Sends `data` as DATA frames as the client's window allows (waiting for
/// it to open); `end` ends the stream with the last of it.
pub(super) async fn send_flow(send: &mut SendStream<Bytes>, mut data: &[u8], end: bool) -> io::Result<()> {
    if data.is_empty() {
        if end {
            send.send_data(Bytes::new(), true).map_err(other)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.is_reset() && e.is_remote() => {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, e.to_string()))
            }
            Some(Err(e)) => return Err(other(e)),
            None => return Err(io::ErrorKind::BrokenPipe.into()),
        };
        if granted == 0 {
            continue;
        }
        let n = granted.min(data.len());
        let last = end && n == data.len();
        send.send_data(Bytes::copy_from_slice(&data[..n]), last).map_err(other)?;
        data = &data[n..];
    }
    Ok(())
}
