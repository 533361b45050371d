//! Reusable heap slots for the active phase of a connection.
//!
//! An async state machine is as large as its largest suspension point, so a
//! connection that awaits its whole request handler inline carries the
//! handler's few kilobytes even while it idles between requests. Instead the
//! handler future is placed in a heap slot taken from a per-worker free list
//! and returned when it completes: an idle connection holds only its socket
//! and a readiness wait, and in steady state no slot is allocated.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Slots kept per worker.
const MAX_SLOTS: usize = 256;

/// A worker's free slots (type-erased; each holds `Option<F>` for one `F`).
#[derive(Default)]
pub struct Slots(RefCell<Vec<Box<dyn Any>>>);

/// A future running in a pooled slot.
pub struct Pooled<'a, F: Future + 'static> {
    slot: Option<Box<Option<F>>>,
    slots: &'a Slots,
}

impl Slots {
    /// Moves `fut` into a slot (reused when one of its type is free).
    pub fn run<F: Future + 'static>(&self, fut: F) -> Pooled<'_, F> {
        let reuse = {
            let mut free = self.0.borrow_mut();
            let i = free.iter().position(|b| b.is::<Option<F>>());
            i.map(|i| free.swap_remove(i))
        };
        let mut slot: Box<Option<F>> = match reuse.map(|b| b.downcast::<Option<F>>()) {
            Some(Ok(b)) => b,
            _ => Box::new(None),
        };
        *slot = Some(fut);
        Pooled { slot: Some(slot), slots: self }
    }
}

impl<F: Future + 'static> Future for Pooled<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `Pooled` never moves the `F` it owns: `F` lives inside the
        // boxed slot, whose heap address is stable however `Pooled` moves,
        // and is only dropped in place (set to `None`) after completing.
        let this = unsafe { self.get_unchecked_mut() };
        let Some(slot) = this.slot.as_mut() else { return Poll::Pending };
        let Some(fut) = slot.as_mut().as_mut() else { return Poll::Pending };
        // SAFETY: see above; the future stays at this address until dropped.
        let out = match unsafe { Pin::new_unchecked(fut) }.poll(cx) {
            Poll::Ready(v) => v,
            Poll::Pending => return Poll::Pending,
        };
        if let Some(mut slot) = this.slot.take() {
            *slot = None;
            let mut free = this.slots.0.borrow_mut();
            if free.len() < MAX_SLOTS {
                free.push(slot);
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused() {
        let slots = Slots::default();
        let make = |n: u32| async move { n + 1 };
        let run = |n| {
            let mut f = std::pin::pin!(slots.run(make(n)));
            let waker = std::task::Waker::noop();
            match f.as_mut().poll(&mut Context::from_waker(waker)) {
                Poll::Ready(v) => v,
                Poll::Pending => 0,
            }
        };
        assert_eq!(run(1), 2);
        assert_eq!(slots.0.borrow().len(), 1);
        assert_eq!(run(5), 6);
        assert_eq!(slots.0.borrow().len(), 1);
    }
}
