//! A single-threaded, fire-once signal that many tasks can wait on. Waiters
//! that go away (a connection closing) free their slot, so a long-lived
//! worker does not accumulate dead wakers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Fire-once signal for one worker's tasks.
#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalSignal {
    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Fires it and wakes every waiter.
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self.slots.borrow_mut().iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait { sig: self, slot: None }
    }
}

/// Future of [`LocalSignal::wait`].
pub struct Wait<'a> {
    sig: &'a LocalSignal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sig.fired.get() {
            return Poll::Ready(());
        }
        let sig = self.sig;
        let mut slots = sig.slots.borrow_mut();
        match self.slot {
            Some(i) => {
                if let Some(s) = slots.get_mut(i) {
                    *s = Some(cx.waker().clone());
                }
            }
            None => {
                let i = match sig.free.borrow_mut().pop() {
                    Some(i) => i,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                };
                slots[i] = Some(cx.waker().clone());
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(s) = self.sig.slots.borrow_mut().get_mut(i) {
                *s = None;
            }
            self.sig.free.borrow_mut().push(i);
        }
    }
}
