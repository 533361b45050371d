//! Per-worker statistics: plain cells bumped on the hot path (no atomics,
//! no locks), turned into a `StatsDelta` for the control thread once a
//! second and on demand, then zeroed.

use std::cell::{Cell, RefCell};

use control::stats::{bucket_of, Counters, BUCKETS};

/// A lazily allocated latency histogram (one allocation per route or
/// backend lifetime, none per request). u32 counts: it is emptied every
/// stats flush (a second at most), far below 2^32 requests.
#[derive(Default)]
pub struct Latency(RefCell<Option<Box<[u32; BUCKETS]>>>);

impl Latency {
    /// Counts one sample.
    pub fn record(&self, us: u64) {
        let mut h = self.0.borrow_mut();
        let counts = h.get_or_insert_with(|| Box::new([0; BUCKETS]));
        let c = &mut counts[bucket_of(us)];
        *c = c.saturating_add(1);
    }

    /// Non-zero buckets since the last take; zeroes them.
    pub fn take(&self) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        if let Some(counts) = self.0.borrow_mut().as_mut() {
            for (i, c) in counts.iter_mut().enumerate() {
                if *c > 0 {
                    out.push((i as u16, u64::from(*c)));
                    *c = 0;
                }
            }
        }
        out
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

    /// The counters since the last take, if any; zeroes them.
    pub fn take(&self) -> Option<(Counters, Vec<(u16, u64)>)> {
        if !self.dirty.replace(false) {
            return None;
        }
        Some((std::mem::take(&mut *self.c.borrow_mut()), self.latency.take()))
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
