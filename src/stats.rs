//! Per-worker statistics: plain cells bumped on the hot path (no atomics,
//! no locks), turned into a `StatsDelta` for the control thread once a
//! second and on demand, then zeroed.

use std::cell::{Cell, RefCell};

use control::stats::{bucket_of, Counters, BUCKETS};

/// Counts per bucket and which buckets are non-zero.
struct Buckets {
    counts: [u32; BUCKETS],
    touched: u128,
}

const _: () = assert!(BUCKETS <= 128, "one bit per bucket in `touched`");

/// A lazily allocated latency histogram (one allocation per route or
/// backend lifetime, none per request). u32 counts: it is emptied every
/// stats flush (a second at most), far below 2^32 requests. A bitmap of
/// touched buckets lets a flush visit only those (a route with a few
/// requests a second touches one or two of 128).
#[derive(Default)]
pub struct Latency(RefCell<Option<Box<Buckets>>>);

impl Latency {
    /// Counts one sample.
    pub fn record(&self, us: u64) {
        let mut h = self.0.borrow_mut();
        let b = h.get_or_insert_with(|| Box::new(Buckets { counts: [0; BUCKETS], touched: 0 }));
        let i = bucket_of(us);
        b.counts[i] = b.counts[i].saturating_add(1);
        b.touched |= 1u128 << i;
    }

    /// Appends the non-zero buckets since the last take to `out` and
    /// zeroes them; returns where in `out` they are.
    pub fn take_into(&self, out: &mut Vec<(u16, u64)>) -> std::ops::Range<u32> {
        let start = out.len() as u32;
        if let Some(b) = self.0.borrow_mut().as_mut() {
            let mut t = std::mem::take(&mut b.touched);
            while t != 0 {
                let i = t.trailing_zeros() as usize;
                t &= t - 1;
                let c = std::mem::take(&mut b.counts[i]);
                if c > 0 {
                    out.push((i as u16, u64::from(c)));
                }
            }
        }
        start..out.len() as u32
    }
}

/// One route's counters on one worker.
#[derive(Default)]
pub struct RouteStats {
    dirty: Cell<bool>,
    c: RefCell<Counters>,
    /// Request duration.
    pub latency: Latency,
}

/// What one finished exchange adds.
pub struct Outcome {
    /// Final status sent (0 = none).
    pub status: u16,
    /// Bytes sent.
    pub bytes: u64,
    /// Retries made.
    pub retries: u32,
    /// Attempts that timed out.
    pub timeouts: u32,
    /// Refused by admission.
    pub rejected: bool,
    /// Total duration, µs.
    pub duration_us: u64,
}

impl RouteStats {
    /// Counts one finished exchange; `true` when this made it dirty (the
    /// caller queues it for the next delta).
    pub fn record(&self, o: &Outcome) -> bool {
        let newly = !self.dirty.replace(true);
        let mut c = self.c.borrow_mut();
        c.requests += 1;
        if (100..600).contains(&o.status) {
            c.status[(o.status / 100 - 1) as usize] += 1;
        }
        match o.status {
            502 => c.e502 += 1,
            503 => c.e503 += 1,
            504 => c.e504 += 1,
            _ => {}
        }
        c.retries += u64::from(o.retries);
        c.timeouts += u64::from(o.timeouts);
        c.rejected += u64::from(o.rejected);
        c.bytes += o.bytes;
        c.latency_sum_us += o.duration_us;
        drop(c);
        self.latency.record(o.duration_us);
        newly
    }

    /// Whether anything was counted since the last take.
    pub fn latency_dirty(&self) -> bool {
        self.dirty.get()
    }

    /// The counters since the last take, if any, with the latency pairs
    /// appended to `lat`; zeroes them.
    pub fn take(&self, lat: &mut Vec<(u16, u64)>) -> Option<(Counters, std::ops::Range<u32>)> {
        if !self.dirty.replace(false) {
            return None;
        }
        Some((std::mem::take(&mut *self.c.borrow_mut()), self.latency.take_into(lat)))
    }
}

/// One backend's counters on one worker.
#[derive(Default)]
pub struct BackendStats {
    /// Changed since the last take.
    pub dirty: Cell<bool>,
    /// Attempts sent.
    pub requests: Cell<u64>,
    /// Failed attempts.
    pub errors: Cell<u64>,
    /// Time to the response head.
    pub latency: Latency,
}

impl BackendStats {
    /// Counts one attempt; `true` when this made it dirty.
    pub fn record(&self, ok: bool, head_us: u64) -> bool {
        let newly = !self.dirty.replace(true);
        self.requests.set(self.requests.get() + 1);
        if ok {
            self.latency.record(head_us);
        } else {
            self.errors.set(self.errors.get() + 1);
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_visits_touched_buckets_and_zeroes_them() {
        let l = Latency::default();
        let mut out = vec![(0, 0)];
        assert_eq!(l.take_into(&mut out), 1..1);
        for us in [3, 3, 5_000, 1_000_000_000] {
            l.record(us);
        }
        let r = l.take_into(&mut out);
        assert_eq!(r, 1..4);
        let got = &out[1..];
        assert_eq!(got[0], (bucket_of(3) as u16, 2));
        assert_eq!(got[1], (bucket_of(5_000) as u16, 1));
        assert_eq!(got[2], (bucket_of(1_000_000_000) as u16, 1));
        assert_eq!(l.take_into(&mut out), 4..4, "zeroed");
    }
}

/// Requests by protocol and HTTP/2 events on one worker (cells bumped
/// where they happen; taken and zeroed with each delta).
#[derive(Default)]
pub struct ProtoCounters {
    /// Requests over HTTP/1.x.
    pub h1: Cell<u64>,
    /// Requests over HTTP/2.
    pub h2: Cell<u64>,
    /// HTTP/2 connections accepted.
    pub h2_connections: Cell<u64>,
    /// HTTP/2 connections closed on an error or flood.
    pub h2_connection_errors: Cell<u64>,
    /// Streams the client reset.
    pub h2_reset_by_client: Cell<u64>,
    /// Streams reset because the response could not complete.
    pub h2_reset_incomplete: Cell<u64>,
    /// Answers served from a response cache.
    pub cache_hits: Cell<u64>,
    /// Cacheable requests not in the cache.
    pub cache_misses: Cell<u64>,
}

/// Adds one to a counter cell.
pub fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl ProtoCounters {
    /// Whether anything was counted since the last take.
    pub fn dirty(&self) -> bool {
        self.h1.get() != 0
            || self.h2.get() != 0
            || self.h2_connections.get() != 0
            || self.cache_hits.get() != 0
            || self.cache_misses.get() != 0
    }

    /// What was counted, zeroing it.
    pub fn take(&self) -> control::stats::Protocols {
        control::stats::Protocols {
            h1: self.h1.take(),
            h2: self.h2.take(),
            h2_connections: self.h2_connections.take(),
            h2_connection_errors: self.h2_connection_errors.take(),
            h2_reset_by_client: self.h2_reset_by_client.take(),
            h2_reset_incomplete: self.h2_reset_incomplete.take(),
            cache_hits: self.cache_hits.take(),
            cache_misses: self.cache_misses.take(),
        }
    }
}
