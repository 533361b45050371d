//! Circuit breakers: per backend, per worker, on live traffic (distinct
//! from health checks, which probe). Closed → open after
//! `consecutiveFailures` in a row or an error rate over the window (with a
//! minimum of requests); open for `openMs`, doubled on each trip in a row
//! up to 64×; then half-open: `halfOpenRequests` trials pass; a success
//! closes it, a failure opens it again. Per worker, like balancer state:
//! no cross-core traffic on the request path, and each core learns on its
//! own within a few requests. A change of state is logged once per worker.

use std::cell::Cell;
use std::time::Instant;

use control::policy::CircuitBreaker;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// One backend's breaker on one worker.
pub struct Breaker {
    state: Cell<State>,
    /// Failures in a row.
    consecutive: Cell<u32>,
    window_start: Cell<Option<Instant>>,
    total: Cell<u32>,
    failed: Cell<u32>,
    /// Trips in a row (the open period doubles with each).
    trips: Cell<u32>,
    /// Half-open trials started, and how many are allowed.
    trials: Cell<u32>,
    trial_limit: Cell<u32>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Cell::new(State::Closed),
            consecutive: Cell::new(0),
            window_start: Cell::new(None),
            total: Cell::new(0),
            failed: Cell::new(0),
            trips: Cell::new(0),
            trials: Cell::new(0),
            trial_limit: Cell::new(1),
        }
    }
}

/// A state change, for the log and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

impl Breaker {
    /// Whether a request may go to the backend now (an open breaker whose
    /// period is over turns half-open and admits its trials).
    pub fn admits(&self) -> bool {
        match self.state.get() {
            State::Closed => true,
            State::Open { until } => {
                if Instant::now() < until {
                    return false;
                }
                self.state.set(State::HalfOpen);
                self.trials.set(0);
                true
            }
            State::HalfOpen => self.trials.get() < self.trial_limit.get(),
        }
    }

    /// Open (or half-open): the backend is not fully trusted.
    pub fn is_open(&self) -> bool {
        self.state.get() != State::Closed
    }

    /// A request was sent to the backend.
    pub fn on_pick(&self) {
        if self.state.get() == State::HalfOpen {
            self.trials.set(self.trials.get() + 1);
        }
    }

    /// Counts an outcome; returns a change of state.
    pub fn record(&self, ok: bool, cfg: &CircuitBreaker, now: Instant) -> Option<Change> {
        match self.state.get() {
            State::Open { .. } => None,
            State::HalfOpen if ok => {
                self.reset(now);
                self.trips.set(0);
                self.state.set(State::Closed);
                Some(Change::Closed)
            }
            State::HalfOpen => Some(self.trip(cfg, now)),
            State::Closed => {
                let fresh = self.window_start.get().is_none_or(|s| now.saturating_duration_since(s) >= cfg.window);
                if fresh {
                    self.window_start.set(Some(now));
                    self.total.set(0);
                    self.failed.set(0);
                }
                self.total.set(self.total.get() + 1);
                if ok {
                    self.consecutive.set(0);
                    return None;
                }
                self.failed.set(self.failed.get() + 1);
                self.consecutive.set(self.consecutive.get() + 1);
                let by_rate = cfg.error_rate_percent > 0
                    && self.total.get() >= cfg.min_requests
                    && u64::from(self.failed.get()) * 100
                        >= u64::from(cfg.error_rate_percent) * u64::from(self.total.get());
                (self.consecutive.get() >= cfg.consecutive_failures || by_rate).then(|| self.trip(cfg, now))
            }
        }
    }

    fn reset(&self, now: Instant) {
        self.consecutive.set(0);
        self.window_start.set(Some(now));
        self.total.set(0);
        self.failed.set(0);
    }

    fn trip(&self, cfg: &CircuitBreaker, now: Instant) -> Change {
        let trips = self.trips.get();
        let open = cfg.open * (1u32 << trips.min(6));
        self.trips.set(trips + 1);
        self.trial_limit.set(cfg.half_open_requests);
        self.reset(now);
        self.state.set(State::Open { until: now + open });
        Change::Opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> CircuitBreaker {
        CircuitBreaker {
            consecutive_failures: 3,
            error_rate_percent: 50,
            min_requests: 10,
            window: Duration::from_secs(10),
            open: Duration::from_millis(50),
            half_open_requests: 1,
            count_5xx: false,
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_and_closes_after_a_good_trial() {
        let b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.record(false, &cfg(), t), None);
        assert_eq!(b.record(false, &cfg(), t), None);
        assert_eq!(b.record(false, &cfg(), t), Some(Change::Opened));
        assert!(!b.admits(), "open");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admits(), "half-open: one trial");
        b.on_pick();
        assert!(!b.admits(), "only one trial");
        assert_eq!(b.record(true, &cfg(), Instant::now()), Some(Change::Closed));
        assert!(b.admits());
    }

    #[test]
    fn opens_on_the_error_rate_with_enough_requests() {
        let b = Breaker::default();
        let t = Instant::now();
        let mut changes = Vec::new();
        for i in 0..10 {
            changes.extend(b.record(i % 2 == 0, &cfg(), t));
        }
        assert_eq!(changes, vec![Change::Opened], "5 of 10 failed: 50 %");
    }
}
