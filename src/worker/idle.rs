//! Coarse timers for idle keep-alive connections.
//!
//! A monoio `Sleep` carries a timer-wheel entry of a few hundred bytes; an
//! idle connection would hold one for its whole wait. Here an idle wait is
//! a slot in one per-worker table (deadline + waker) and a sweeper task
//! fires expired slots every `TICK`, so idle timeouts are up to one tick
//! late and cost a few bytes each. Draining fires every slot at once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Sweep period (the idle timeout's granularity).
pub const TICK: Duration = Duration::from_millis(250);

struct Entry {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
}

/// One worker's idle deadlines.
#[derive(Default)]
pub struct IdleTimers {
    entries: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    closed: Cell<bool>,
}

impl IdleTimers {
    /// Resolves at `deadline` (one tick late at most) or when closed.
    pub fn wait(&self, deadline: Instant) -> IdleWait<'_> {
        IdleWait { timers: self, deadline, slot: None }
    }

    /// Fires expired waits; returns how many are still pending.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut pending = 0;
        let mut wake = Vec::new();
        for e in self.entries.borrow_mut().iter_mut().flatten() {
            if e.fired {
                continue;
            }
            if e.deadline <= now {
                e.fired = true;
                if let Some(w) = e.waker.take() {
                    wake.push(w);
                }
            } else {
                pending += 1;
            }
        }
        for w in wake {
            w.wake();
        }
        pending
    }

    /// Fires every wait, now and later (drain).
    pub fn close(&self) {
        self.closed.set(true);
        self.sweep(Instant::now() + Duration::from_secs(365 * 86_400));
    }
}

/// Future of [`IdleTimers::wait`].
pub struct IdleWait<'a> {
    timers: &'a IdleTimers,
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for IdleWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = self.timers;
        if t.closed.get() {
            return Poll::Ready(());
        }
        let mut entries = t.entries.borrow_mut();
        match self.slot {
            Some(i) => match entries.get_mut(i).and_then(Option::as_mut) {
                Some(e) if e.fired => Poll::Ready(()),
                Some(e) => {
                    if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        e.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            },
            None => {
                if self.deadline <= Instant::now() {
                    return Poll::Ready(());
                }
                let entry = Entry { deadline: self.deadline, waker: Some(cx.waker().clone()), fired: false };
                let i = match t.free.borrow_mut().pop() {
                    Some(i) => {
                        entries[i] = Some(entry);
                        i
                    }
                    None => {
                        entries.push(Some(entry));
                        entries.len() - 1
                    }
                };
                drop(entries);
                self.slot = Some(i);
                Poll::Pending
            }
        }
    }
}

impl Drop for IdleWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(e) = self.timers.entries.borrow_mut().get_mut(i) {
                *e = None;
            }
            self.timers.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_deadline_and_frees_slots() {
        let t = IdleTimers::default();
        let now = Instant::now();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        {
            let mut w = std::pin::pin!(t.wait(now + Duration::from_secs(5)));
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(t.sweep(now), 1);
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(t.sweep(now + Duration::from_secs(6)), 0);
            assert!(w.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(t.free.borrow().len(), 1);
        let mut w = std::pin::pin!(t.wait(now + Duration::from_secs(5)));
        assert!(w.as_mut().poll(&mut cx).is_pending());
        t.close();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }
}
