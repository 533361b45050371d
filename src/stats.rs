//! Per-worker statistics: plain cells bumped on the hot path (no atomics,
//! no locks), turned into a `StatsDelta` for the control thread once a
//! second and on demand, then zeroed.

use std::cell::{Cell, OnceCell};

use control::stats::{bucket_of, Counters, BUCKETS};

/// A lazily allocated latency histogram (one allocation per route or
/// backend lifetime, none per request). u32 counts: it is emptied every
/// stats flush (a second at most), far below 2^32 requests. A bitmap of
/// touched buckets lets a flush visit only those (a route with a few
/// requests a second touches one or two of 128); it sits inline, beside
/// its owner's counters, so a sample touches one line of the counts.
#[derive(Default)]
pub struct Latency {
    touched: [Cell<u64>; 2],
    counts: OnceCell<Box<[Cell<u32>; BUCKETS]>>,
}

const _: () = assert!(BUCKETS <= 128, "one bit per bucket in `touched`");

impl Latency {
    /// Counts one sample.
    pub fn record(&self, us: u64) {
        let counts = self.counts.get_or_init(|| Box::new(std::array::from_fn(|_| Cell::new(0))));
        let i = bucket_of(us);
        counts[i].set(counts[i].get().saturating_add(1));
        let word = &self.touched[i / 64];
        word.set(word.get() | 1 << (i % 64));
    }

    /// Appends the non-zero buckets since the last take to `out` and
    /// zeroes them; returns where in `out` they are.
    pub fn take_into(&self, out: &mut Vec<(u16, u64)>) -> std::ops::Range<u32> {
        let start = out.len() as u32;
        if let Some(counts) = self.counts.get() {
            for (w, word) in self.touched.iter().enumerate() {
                let mut t = word.take();
                while t != 0 {
                    let i = w * 64 + t.trailing_zeros() as usize;
                    t &= t - 1;
                    let c = counts[i].take();
                    if c > 0 {
                        out.push((i as u16, u64::from(c)));
                    }
                }
            }
        }
        start..out.len() as u32
    }
}

/// One route's counters on one worker, laid out for the request path:
/// what every request adds (count, status class, bytes, duration, the
/// histogram's bitmap) fills the first 64 bytes, the rare ones follow.
/// u32 counts: they are emptied every stats flush, far below 2^32.
#[derive(Default)]
#[repr(C)]
pub struct RouteStats {
    requests: Cell<u32>,
    dirty: Cell<bool>,
    /// By status class: 1xx … 5xx.
    status: [Cell<u32>; 5],
    bytes: Cell<u64>,
    latency_sum_us: Cell<u64>,
    /// Request duration.
    pub latency: Latency,
    /// 502, 503, 504 answers; timeouts, retries, admission refusals.
    rare: [Cell<u32>; 6],
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
        add(&self.requests, 1);
        if (100..600).contains(&o.status) {
            add(&self.status[usize::from(o.status / 100 - 1)], 1);
        }
        self.bytes.set(self.bytes.get() + o.bytes);
        self.latency_sum_us.set(self.latency_sum_us.get() + o.duration_us);
        self.latency.record(o.duration_us);
        let rare = [
            u32::from(o.status == 502),
            u32::from(o.status == 503),
            u32::from(o.status == 504),
            o.timeouts,
            o.retries,
            u32::from(o.rejected),
        ];
        for (cell, n) in self.rare.iter().zip(rare) {
            if n > 0 {
                add(cell, n);
            }
        }
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
        let n = |c: &Cell<u32>| u64::from(c.take());
        let [e502, e503, e504, timeouts, retries, rejected] = &self.rare;
        let c = Counters {
            requests: n(&self.requests),
            status: self.status.each_ref().map(n),
            e502: n(e502),
            e503: n(e503),
            e504: n(e504),
            timeouts: n(timeouts),
            retries: n(retries),
            rejected: n(rejected),
            bytes: self.bytes.take(),
            latency_sum_us: self.latency_sum_us.take(),
        };
        Some((c, self.latency.take_into(lat)))
    }
}

/// Adds to a u32 counter (saturating: a count that stops is better than
/// one that wraps).
fn add(c: &Cell<u32>, n: u32) {
    c.set(c.get().saturating_add(n));
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
