//! Table timers: idle keep-alive waits and per-operation deadlines.
//!
//! A monoio `Sleep` carries a 512-byte, cache-aligned timer-wheel entry and
//! a wheel insert and remove; an idle connection would hold one for its
//! whole wait, and a request would set up and cancel four or more. Here a
//! wait is a slot in a per-worker table (deadline + waker) and a sweeper
//! task fires expired slots every tick (`TICK` for idle waits, `OP_TICK`
//! for socket operations), so a timeout is up to one tick late and costs a
//! few bytes. The sweeper parks while its table is empty. Draining fires
//! every idle wait at once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Sweep period of idle waits (the idle timeout's granularity).
pub const TICK: Duration = Duration::from_millis(250);

/// Sweep period of socket-operation deadlines.
pub const OP_TICK: Duration = Duration::from_millis(10);

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
    /// Slots in use.
    live: Cell<usize>,
    /// The sweeper, parked while nothing waits.
    sweeper: Cell<Option<Waker>>,
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

    /// Resolves once some wait is registered or the table is closed (the
    /// sweeper parks on it).
    pub fn busy(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.live.get() > 0 || self.closed.get() {
                Poll::Ready(())
            } else {
                self.sweeper.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Fires every wait, now and later (drain).
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.sweeper.take() {
            w.wake();
        }
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
                // No clock read here: a deadline already past fires at
                // the next sweep.
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
                t.live.set(t.live.get() + 1);
                if let Some(w) = t.sweeper.take() {
                    w.wake();
                }
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
            self.timers.live.set(self.timers.live.get().saturating_sub(1));
        }
    }
}

/// Future of [`before`].
pub struct Before<'a, F> {
    fut: F,
    wait: IdleWait<'a>,
}

/// Runs `fut` until `deadline` (one `OP_TICK` late at most): `None` when
/// the deadline came first.
pub fn before<F: Future>(timers: &IdleTimers, deadline: Instant, fut: F) -> Before<'_, F> {
    Before { fut, wait: timers.wait(deadline) }
}

impl<F: Future> Future for Before<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        // SAFETY: structural pinning: neither field is moved out of `self`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: `fut` is pinned with `self` (never moved, dropped in place).
        if let Poll::Ready(v) = unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut this.wait).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
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

    #[test]
    fn the_sweeper_parks_until_a_wait_registers() {
        let t = IdleTimers::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut busy = std::pin::pin!(t.busy());
        assert!(busy.as_mut().poll(&mut cx).is_pending());
        let mut w = std::pin::pin!(t.wait(Instant::now()));
        assert!(w.as_mut().poll(&mut cx).is_pending());
        assert!(busy.as_mut().poll(&mut cx).is_ready());
        assert_eq!(t.sweep(Instant::now()), 0);
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn before_gives_the_value_or_none_at_the_deadline() {
        let t = IdleTimers::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let now = Instant::now();
        let mut ready = std::pin::pin!(before(&t, now, std::future::ready(7)));
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
        let mut never = std::pin::pin!(before(&t, now, std::future::pending::<u8>()));
        assert!(never.as_mut().poll(&mut cx).is_pending());
        t.sweep(now);
        assert_eq!(never.as_mut().poll(&mut cx), Poll::Ready(None));
    }
}
