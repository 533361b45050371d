//! Reads and writes on either side under a deadline from the worker's
//! operation timers, counting what reaches the client.

use std::time::{Duration, Instant};

use super::Exchange;
use crate::conn::Stream;
use crate::worker::idle::{before, IdleTimers};
use crate::worker::Worker;

/// How a read ended.
pub(super) enum Read {
    Data,
    Eof,
    TimedOut,
    Failed(Option<std::io::ErrorKind>),
}

/// A deadline on the worker's operation timers (see `worker::idle`).
#[derive(Clone, Copy)]
pub(super) struct Due<'a> {
    pub(super) timers: &'a IdleTimers,
    pub(super) at: Instant,
}

/// `d` from now.
pub(super) fn due(w: &Worker, d: Duration) -> Due<'_> {
    Due { timers: &w.timers, at: Instant::now() + d }
}

/// Reads more bytes onto the end of `buf`, growing it to at most `max`
/// bytes of capacity. On a timeout the buffer is lost (the caller closes).
pub(super) async fn read_more(s: &mut Stream, buf: &mut Vec<u8>, max: usize, deadline: Due<'_>) -> Read {
    if buf.len() >= buf.capacity() {
        let extra = buf.capacity().max(4096).min(max.saturating_sub(buf.len()));
        if extra == 0 {
            return Read::Failed(None);
        }
        buf.reserve_exact(extra);
    }
    match before(deadline.timers, deadline.at, s.read(buf)).await {
        None => Read::TimedOut,
        Some(Ok(0)) => Read::Eof,
        Some(Ok(_)) => Read::Data,
        Some(Err(e)) => Read::Failed(Some(e.kind())),
    }
}

/// Writes `buf[start..end]` fully within `deadline`; the buffer comes back
/// unless the write timed out.
pub(super) async fn write_range(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    deadline: Due<'_>,
) -> bool {
    let mut pos = start;
    while pos < end {
        match before(deadline.timers, deadline.at, s.write(buf, pos, end)).await {
            Some(Ok(n)) if n > 0 => pos += n,
            _ => return false,
        }
    }
    true
}

/// `write_range` to the client, counting the bytes sent.
pub(super) async fn send(
    client: &mut Stream,
    ex: &mut Exchange,
    buf: &mut Vec<u8>,
    range: std::ops::Range<usize>,
    deadline: Due<'_>,
) -> bool {
    let ok = write_range(client, buf, range.start, range.end, deadline).await;
    if ok {
        ex.bytes += range.len() as u64;
    }
    ok
}

/// The last bytes of a response, `buf[..end]`. When the connection closes
/// after them (`close`) they go out at once from this thread where the
/// stream allows (a direct non-blocking send), then our side of the stream
/// ends, so the client sees the end of the response and of the stream
/// together and this side, not the client, closes first (the closing side
/// carries the TIME_WAIT work; when the client closed first, its TIME_WAIT
/// was processed on our core). What the socket does not take at once goes
/// the usual way.
pub(super) async fn send_last(
    client: &mut Stream,
    ex: &mut Exchange,
    buf: &mut Vec<u8>,
    end: usize,
    close: bool,
    deadline: Due<'_>,
) -> bool {
    if !close {
        return send(client, ex, buf, 0..end, deadline).await;
    }
    if client.is_tls() {
        let last = Box::pin(client.write_last_tls(&buf[..end]));
        let ok = matches!(before(deadline.timers, deadline.at, last).await, Some(Ok(())));
        if ok {
            ex.bytes += end as u64;
        }
        return ok;
    }
    let pos = client.send_now(&buf[..end]);
    ex.bytes += pos as u64;
    if pos < end && !send(client, ex, buf, pos..end, deadline).await {
        return false;
    }
    let _ = before(deadline.timers, deadline.at, client.close_write()).await;
    true
}
