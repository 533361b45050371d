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
#[derive(Clone)]
pub struct InboxSender {
    tx: Sender<ControlMsg>,
    waker: Arc<AtomicWaker>,
}

impl InboxSender {
    /// Sends and wakes the worker. `false` if the worker is gone.
    pub fn send(&self, msg: ControlMsg) -> bool {
        let ok = self.tx.send(msg).is_ok();
        self.waker.wake();
        ok
    }
}

/// The receiving side, owned by one worker.
pub struct Inbox {
    rx: Receiver<ControlMsg>,
    waker: Arc<AtomicWaker>,
}

/// A connected pair (unbounded: the control thread must never block on a
/// slow worker; messages are few and coalesced by generation).
pub fn inbox() -> (InboxSender, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    (InboxSender { tx, waker: waker.clone() }, Inbox { rx, waker })
}

impl Inbox {
    /// The next message; `None` when the control thread is gone.
    pub async fn recv(&self) -> Option<ControlMsg> {
        poll_fn(|cx| {
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
        })
        .await
    }
}
