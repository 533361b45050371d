//! Per-route admission on one worker: at most `limit` active requests, then
//! a bounded FIFO of waiters, each waiting at most the route's `queueMs`.
//! A full queue or an expired wait is refused (the proxy answers 503 with
//! Retry-After). Limits are per worker: each enforces ceil(limit ÷ workers),
//! so the whole process admits about the configured number.
//!
//! A permit released while others wait is handed straight to the oldest
//! waiter (the active count does not dip), so the queue is strictly FIFO.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// One queued request.
struct Slot {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Admission state of one route on one worker (carried across snapshots).
/// `limit` first: an unlimited route reads only it.
#[derive(Default)]
#[repr(C)]
pub struct Admission {
    limit: Cell<u32>,
    active: Cell<u32>,
    queue_limit: Cell<u32>,
    queue: RefCell<VecDeque<Rc<Slot>>>,
}

/// How a request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The route has no limit: nothing to give back.
    Unlimited,
    /// It holds one of the active places: `release` when done.
    Counted,
}

impl Admission {
    /// Sets this worker's share of the route's limits (0 = unlimited).
    pub fn set_limits(&self, active: u32, queue: u32, workers: usize) {
        let share = |n: u32| if n == 0 { 0 } else { n.div_ceil(workers.max(1) as u32) };
        self.limit.set(share(active));
        self.queue_limit.set(share(queue));
    }

    /// Requests active now.
    pub fn active(&self) -> u32 {
        self.active.get()
    }

    /// Gives back a `Counted` place (to the oldest waiter, if any).
    pub fn release(&self) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            match next {
                Some(slot) => {
                    // Skip waiters that gave up (their Rc is the only other owner).
                    if Rc::strong_count(&slot) == 1 {
                        continue;
                    }
                    slot.granted.set(true);
                    if let Some(w) = slot.waker.borrow_mut().take() {
                        w.wake();
                    }
                    return;
                }
                None => {
                    self.active.set(self.active.get().saturating_sub(1));
                    return;
                }
            }
        }
    }

    /// Admits now, or after a bounded wait; `None` = refused.
    pub async fn acquire(&self, wait: Duration) -> Option<Admitted> {
        let limit = self.limit.get();
        if limit == 0 {
            return Some(Admitted::Unlimited);
        }
        if self.active.get() < limit && self.queue.borrow().is_empty() {
            self.active.set(self.active.get() + 1);
            return Some(Admitted::Counted);
        }
        if self.queue.borrow().len() >= self.queue_limit.get() as usize {
            return None;
        }
        let slot = Rc::new(Slot { granted: Cell::new(false), waker: RefCell::new(None) });
        self.queue.borrow_mut().push_back(slot.clone());
        let granted = poll_fn(|cx| {
            if slot.granted.get() {
                Poll::Ready(())
            } else {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let _ = monoio::time::timeout(wait, granted).await;
        if slot.granted.get() {
            return Some(Admitted::Counted);
        }
        // Gave up: leave the queue.
        self.queue.borrow_mut().retain(|s| !Rc::ptr_eq(s, &slot));
        None
    }
}
