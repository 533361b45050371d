//! HTTP/2 from clients: one connection's frames (the `h2` crate, over our
//! own readiness-driven plain or TLS I/O, `conn::h2io`; no tokio
//! runtime), its settings and the timeouts h2 lacks (preface and SETTINGS,
//! idle), a graceful GOAWAY on drain, and one task per stream on the worker
//! that accepted the connection, running the ordinary request path (see
//! `conn::h2stream`). The h2 crate carries the flood defences (rapid
//! reset, CONTINUATION floods, excess resets); a connection it gives up on
//! is logged once, as a warning with the peer's address.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::h2io::H2Io;
use crate::conn::h2stream::{ConnInfo, H2Stream};
use crate::conn::Stream;
use crate::stats::bump;
use crate::worker::{idle, ConnGuard, Worker};

/// The HTTP/2 connection preface's first bytes (a plain listener with h2c
/// tells HTTP/2 from HTTP/1.1 by them).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most response bytes h2 buffers per stream before a write waits.
const SEND_BUFFER: usize = 64 * 1024;

/// Serves one HTTP/2 connection until it closes, idles out or drains.
pub async fn serve(guard: ConnGuard, stream: Stream, peer: SocketAddr) {
    let w = guard.worker().clone();
    let s = w.active().http2;
    let info = Rc::new(ConnInfo {
        tls: stream.tls_info(),
        sni: stream.sni().map(Box::from),
        counters: w.proto.clone(),
        spans: Default::default(),
    });
    let opened = Rc::new(Cell::new(false));
    let Ok(io) = H2Io::server(stream, opened.clone()) else { return };
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.max_concurrent_streams)
        .max_header_list_size(s.max_header_list_bytes)
        .initial_window_size(s.initial_stream_window)
        .initial_connection_window_size(s.initial_connection_window)
        .max_frame_size(s.max_frame_size)
        .max_send_buffer_size(SEND_BUFFER);
    let handshake = Box::pin(b.handshake::<_, Bytes>(io));
    // The preface and the client's SETTINGS, within `handshakeMs`.
    let opening_deadline = Instant::now() + s.handshake;
    let mut conn = match idle::before(&w.timers, opening_deadline, handshake).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::debug!(worker = w.index, %peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        None => {
            tracing::debug!(worker = w.index, %peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    bump(&w.proto.h2_connections);
    let streams = Rc::new(Streams { open: Cell::new(0), last: Cell::new(Instant::now()) });
    let mut closing: Option<Instant> = None;
    // When to look at the idle, SETTINGS and drain deadlines next: a slot in
    // the worker's idle-wait table, kept across accepted streams (a fresh
    // monoio sleep per stream cost a timer-wheel insert and remove each).
    // Once draining has closed that table, a plain sleep.
    let next_check = |now: Instant| {
        let at = now + s.idle.min(Duration::from_secs(1));
        if opened.get() {
            at
        } else {
            at.min(opening_deadline)
        }
    };
    let mut check_at = next_check(Instant::now());
    loop {
        let next = monoio::select! {
            r = conn.accept() => Some(r),
            _ = w.drain.wait(), if closing.is_none() => None,
            _ = tick(&w, check_at) => None,
        };
        match next {
            Some(Some(Ok((req, respond)))) => {
                let stream = H2Stream::new(req, respond, info.clone());
                monoio::spawn(run_stream(w.clone(), stream, peer, streams.clone()));
            }
            Some(Some(Err(e))) => {
                if e.is_io() || e.reason() == Some(h2::Reason::NO_ERROR) {
                    tracing::debug!(worker = w.index, %peer, error = %e, "HTTP/2 connection ended");
                } else {
                    bump(&w.proto.h2_connection_errors);
                    tracing::warn!(worker = w.index, %peer, error = %e, "HTTP/2 connection closed on error");
                }
                return;
            }
            Some(None) => return,
            None => {
                check_at = next_check(Instant::now());
                if !opened.get() && Instant::now() >= opening_deadline {
                    tracing::debug!(worker = w.index, %peer, "HTTP/2 SETTINGS did not arrive in time");
                    return;
                }
                let idle = streams.open.get() == 0 && streams.last.get().elapsed() >= s.idle;
                if closing.is_none() && (w.drain.is_fired() || idle) {
                    // GOAWAY; open streams finish within the drain budget.
                    conn.graceful_shutdown();
                    closing = Some(Instant::now() + w.active().timeouts.drain);
                }
                if closing.is_some_and(|t| Instant::now() >= t) {
                    return;
                }
            }
        }
    }
}

/// Resolves at `at` (up to an idle tick late).
async fn tick(w: &Worker, at: Instant) {
    if w.idle.is_closed() {
        monoio::time::sleep(at.saturating_duration_since(Instant::now())).await;
    } else {
        w.idle.wait(at).await;
    }
}

/// A connection's open streams, and when the last one ended.
struct Streams {
    open: Cell<usize>,
    last: Cell<Instant>,
}

/// One stream through the ordinary request path.
async fn run_stream(w: std::rc::Rc<Worker>, stream: H2Stream, peer: SocketAddr, streams: Rc<Streams>) {
    streams.open.set(streams.open.get() + 1);
    crate::proxy::serve_client(w.stream_guard(), Stream::H2(Box::new(stream)), peer).await;
    streams.open.set(streams.open.get() - 1);
    streams.last.set(Instant::now());
}
