//! The byte tunnel after a 101 (WebSocket): both ways until either side
//! closes or both are idle for `idle`.
//!
//! Two plain sockets split into halves and relay each way in its own loop.
//! When either side is TLS (whose reads and writes share one rustls state)
//! one loop waits for whichever side is readable (cancel-safe: readiness
//! holds no bytes) and moves what it reads.

use std::cell::Cell;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::conn::Stream;

/// Relays until either side closes or both idle for `idle`.
pub(super) async fn run(client: Stream, upstream: Stream, idle: Duration) {
    match (client.into_plain(), upstream.into_plain()) {
        (Ok(c), Ok(u)) => split(c, u, idle).await,
        (c, u) => {
            let c = c.map_or_else(|s| s, Stream::Plain);
            let u = u.map_or_else(|s| s, Stream::Plain);
            by_readiness(c, u, idle).await
        }
    }
}

async fn split(client: TcpStream, upstream: TcpStream, idle: Duration) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let last = Cell::new(Instant::now());
    monoio::select! {
        _ = relay(&mut cr, &mut uw, &last, idle) => {},
        _ = relay(&mut ur, &mut cw, &last, idle) => {},
    }
}

async fn relay<R: AsyncReadRent, W: AsyncWriteRentExt>(r: &mut R, wr: &mut W, last: &Cell<Instant>, idle: Duration) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let deadline = last.get() + idle;
        let v = std::mem::take(&mut buf);
        match monoio::time::timeout_at(monoio::time::Instant::from_std(deadline), r.read(v)).await {
            Err(_) => {
                if last.get() + idle <= Instant::now() {
                    return;
                }
                buf = Vec::with_capacity(16 * 1024);
                continue;
            }
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return,
            Ok((Ok(_), v)) => {
                last.set(Instant::now());
                let (res, v) = wr.write_all(v).await;
                if res.is_err() {
                    return;
                }
                buf = v;
                buf.clear();
            }
        }
    }
}

enum Turn {
    Client,
    Upstream,
    Gone,
}

async fn by_readiness(mut client: Stream, mut upstream: Stream, idle: Duration) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let ready = monoio::select! {
            r = client.readable() => if r.is_ok() { Turn::Client } else { Turn::Gone },
            r = upstream.readable() => if r.is_ok() { Turn::Upstream } else { Turn::Gone },
            _ = monoio::time::sleep(idle) => Turn::Gone,
        };
        let (from, to) = match ready {
            Turn::Client => (&mut client, &mut upstream),
            Turn::Upstream => (&mut upstream, &mut client),
            Turn::Gone => return,
        };
        buf.clear();
        buf.reserve(16 * 1024);
        match from.read(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let end = buf.len();
        let mut pos = 0;
        while pos < end {
            match to.write(&mut buf, pos, end).await {
                Ok(n) if n > 0 => pos += n,
                _ => return,
            }
        }
    }
}
