//! A worker's inbox: a crossbeam channel paired with an atomic waker. The
//! control thread sends, then wakes; the worker's task drains with
//! `try_recv`. No blocking `recv` and no polling timer on a worker; monoio's
//! `sync` feature lets the wake reach the worker's runtime from another
//! thread.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use control::messages::ControlMsg;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// The sending side, held by the control thread.
pub struct InboxSender<T = ControlMsg> {
    /// `None` only while dropping.
    tx: Option<Sender<T>>,
    waker: Arc<AtomicWaker>,
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        InboxSender { tx: self.tx.clone(), waker: self.waker.clone() }
    }
}

impl<T> Drop for InboxSender<T> {
    /// The receiver hears of a closed channel at once (not at its next
    /// wake-up for another reason).
    fn drop(&mut self) {
        drop(self.tx.take());
        self.waker.wake();
    }
}

impl<T> InboxSender<T> {
    /// Sends and wakes the receiving runtime. `false` if it is gone.
    pub fn send(&self, msg: T) -> bool {
        let ok = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        self.waker.wake();
        ok
    }
}

/// The receiving side, owned by one worker (or the control side's I/O
/// runtime).
pub struct Inbox<T = ControlMsg> {
    rx: Receiver<T>,
    waker: Arc<AtomicWaker>,
}

/// A connected pair (unbounded: the control thread must never block on a
/// slow worker; messages are few and coalesced by generation).
pub fn inbox<T>() -> (InboxSender<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    (InboxSender { tx: Some(tx), waker: waker.clone() }, Inbox { rx, waker })
}

impl<T> Inbox<T> {
    /// The next message; `None` when the control thread is gone.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (`Ready(None)`: the sender is gone).
    pub fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> Poll<Option<T>> {
        match self.rx.try_recv() {
            Ok(m) => return Poll::Ready(Some(m)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.waker.register(cx.waker());
        // A send may have landed between try_recv and register.
        match self.rx.try_recv() {
            Ok(m) => Poll::Ready(Some(m)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}
