//! The health state machine, with hysteresis.
//!
//! Lifecycle of one backend: it starts `Up`. Each probe result is recorded;
//! `fall` consecutive failures flip it `Down`, `rise` consecutive passes flip
//! it back `Up`. A result that does not complete a run changes nothing, so a
//! single failed probe never flaps a backend. Only flips are returned (and
//! broadcast by the control thread). A passive failure reported by a worker
//! takes the backend down at once and resets the pass count.

/// Hysteresis counter for one backend.
#[derive(Debug, Clone)]
pub struct HealthState {
    up: bool,
    passes: u32,
    failures: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState { up: true, passes: 0, failures: 0 }
    }
}

impl HealthState {
    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records a probe result; returns `Some(new_state)` when it flips.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.up && self.passes >= rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.up && self.failures >= fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }

    /// A worker saw a connect failure or timeout: down at once.
    /// Returns `Some(false)` when that is a flip.
    pub fn passive_failure(&mut self) -> Option<bool> {
        self.passes = 0;
        if self.up {
            self.up = false;
            self.failures = 0;
            Some(false)
        } else {
            None
        }
    }

    /// Forces the state (used when a rested backend is given a trial).
    pub fn set_up(&mut self, up: bool) -> Option<bool> {
        self.passes = 0;
        self.failures = 0;
        (self.up != up).then(|| {
            self.up = up;
            up
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_does_not_flap() {
        let mut h = HealthState::default();
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), Some(false));
        assert_eq!(h.record(false, 2, 3), None);
    }

    #[test]
    fn rise_brings_it_back() {
        let mut h = HealthState::default();
        assert_eq!(h.passive_failure(), Some(false));
        assert_eq!(h.passive_failure(), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(true));
    }
}
