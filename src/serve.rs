//! The body of a worker thread: wait for the first snapshot, listen,
//! accept (plain and TLS listeners), apply what the inbox brings, run the
//! worker's periodic tasks, and drain on shutdown. The per-core state
//! itself lives in `worker`; this module wires it to the request path
//! (`proxy`), so neither of those knows the other's insides.
//!
//! Lifecycle: wait for the first snapshot → apply → listen → ack (the ack
//! means "applied and accepting") → accept connections and apply later
//! snapshots and health flips from the inbox → on shutdown, stop accepting,
//! close idle connections, wait for in-flight requests up to the drain
//! budget, exit.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::messages::{ControlMsg, WorkerEvent};
use crossbeam_channel::Sender;
use monoio::net::TcpListener;

use crate::accesslog::LogSink;
use crate::conn::Stream;
use crate::worker::inbox::Inbox;
use crate::worker::{idle, ConnGuard, Shared, Worker};

/// Everything a worker thread needs to start.
pub struct WorkerSetup {
    /// Index.
    pub index: usize,
    /// Bound, not yet listening, sockets (one per proxy listen address).
    pub sockets: Vec<std::net::TcpListener>,
    /// The same for the TLS listen addresses.
    pub tls_sockets: Vec<std::net::TcpListener>,
    /// The first TLS listener's port (for `autoHttps` redirects).
    pub tls_port: Option<u16>,
    /// Inbox.
    pub inbox: Inbox,
    /// To the control thread.
    pub events: Sender<WorkerEvent>,
    /// Cross-worker counters.
    pub shared: Arc<Shared>,
    /// Number of workers.
    pub workers: usize,
    /// Access log sink.
    pub access_log: Option<LogSink>,
}

/// Listen backlog of each proxy socket.
const BACKLOG: i32 = 4096;

/// The body of a worker thread, on an already-built runtime.
pub async fn run(setup: WorkerSetup) {
    let WorkerSetup { index, sockets, tls_sockets, tls_port, inbox, events, shared, workers, access_log } = setup;
    let mut worker = Worker::new(index, events.clone(), shared, workers, access_log);
    worker.tls_port = tls_port;
    let worker = Rc::new(worker);
    if worker.log.is_some() {
        monoio::spawn(flush_log(worker.clone()));
    }
    monoio::spawn(flush_stats(worker.clone()));
    monoio::spawn(sweep_idle(worker.clone()));
    monoio::spawn(sweep_ops(worker.clone()));
    // 1. First snapshot.
    let first = loop {
        match inbox.recv().await {
            Some(ControlMsg::Apply(s)) => break s,
            Some(ControlMsg::Shutdown { .. }) | None => return,
            Some(ControlMsg::Health { .. } | ControlMsg::PurgeCache { .. }) => {}
            Some(ControlMsg::AcmeTokens(t)) => *worker.acme_tokens.borrow_mut() = t,
            Some(ControlMsg::FlushStats { id }) => worker.send_stats(Some(id)),
        }
    };
    worker.apply(&first);
    // 2. Listen.
    let mut listeners = Vec::new();
    let tls = std::iter::repeat_n(false, sockets.len()).chain(std::iter::repeat(true));
    for (s, tls) in sockets.into_iter().chain(tls_sockets).zip(tls) {
        match listen(s) {
            Ok(l) => listeners.push((l, tls)),
            Err(e) => {
                let _ = events.send(WorkerEvent::Failed { worker: index, reason: format!("listen: {e}") });
                return;
            }
        }
    }
    for (l, tls) in listeners {
        monoio::spawn(accept_loop(worker.clone(), l, tls));
    }
    // 3. Ack: applied and accepting.
    let _ = events.send(WorkerEvent::Ack { worker: index, generation: first.generation });
    // 4. Inbox.
    let drain_budget = loop {
        match inbox.recv().await {
            Some(ControlMsg::Apply(s)) => {
                worker.apply(&s);
                let _ = events.send(WorkerEvent::Ack { worker: index, generation: s.generation });
            }
            Some(ControlMsg::Health { key, up }) => worker.set_health(&key, up),
            Some(ControlMsg::AcmeTokens(t)) => *worker.acme_tokens.borrow_mut() = t,
            Some(ControlMsg::FlushStats { id }) => worker.send_stats(Some(id)),
            Some(ControlMsg::PurgeCache { id, route, path }) => {
                let entries = worker.purge_cache(&route, path.as_deref());
                let _ = events.send(WorkerEvent::Purged { worker: index, id, entries });
            }
            Some(ControlMsg::Shutdown { drain }) => break drain,
            None => break Duration::ZERO,
        }
    };
    // 5. Drain.
    worker.drain.fire();
    if worker.open_connections() > 0 {
        // Idle keep-alive connections (and ones accepted just now) get a
        // moment: a request already sent on one is served (with
        // `connection: close`) instead of racing a close.
        monoio::time::sleep(DRAIN_IDLE_GRACE.min(drain_budget)).await;
    }
    worker.idle.close();
    if worker.open_connections() > 0 {
        let _ = monoio::time::timeout(drain_budget, worker.all_closed.wait()).await;
    }
    if let Some(log) = &worker.log {
        log.flush_final();
    }
    // Stops the operation-deadline sweeper (it holds the worker).
    worker.timers.close();
    tracing::debug!(worker = index, left = worker.open_connections(), "worker drained");
    let _ = events.send(WorkerEvent::Exited { worker: index });
}

/// How long idle connections may still bring a request once draining starts.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(300);

fn listen(s: std::net::TcpListener) -> std::io::Result<TcpListener> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket fd we own; no memory is passed.
    let rc = unsafe { libc::listen(s.as_raw_fd(), BACKLOG) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    TcpListener::from_std(s)
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, tls: bool) {
    let mut failures = 0u64;
    let mut last_warned: Option<Instant> = None;
    // One canceller for the loop's life (its set keeps its room: no
    // allocation per accept).
    let mut canceller = monoio::io::Canceller::new();
    while !worker.drain.is_fired() {
        let (accepted, draining) = accept_or_drain(&worker, &listener, &mut canceller).await;
        match accepted {
            // Cancelled by the drain. (A connection it took just before is
            // served below; the loop ends with the drain either way.)
            Err(_) if draining => break,
            Ok((stream, peer)) => {
                let max = worker.active().limits.max_connections;
                match worker.admit_connection(max) {
                    Some(guard) if tls => {
                        monoio::spawn(serve_tls(guard, stream, peer));
                    }
                    Some(guard) if worker.active().http2.h2c => {
                        monoio::spawn(serve_plain(guard, stream, peer));
                    }
                    Some(guard) => {
                        monoio::spawn(crate::proxy::serve_client(guard, Stream::plain(stream), peer));
                    }
                    None => drop(stream),
                }
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning,
                // and say so once a second, not once per failed accept.
                failures += 1;
                if last_warned.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(worker = worker.index, error = %e, failures, "accept failing: backing off");
                    last_warned = Some(Instant::now());
                    failures = 0;
                }
                monoio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The next connection, or the drain. A drain cancels the pending accept
/// and waits for it to end: with io_uring the kernel may have taken a
/// connection for it already, and dropping the operation would lose that
/// connection (its client would see a reset). Such a late connection is
/// returned and served (its answer says `connection: close`); the
/// listening socket itself may live on in a process that took it over.
async fn accept_or_drain(
    worker: &Worker,
    listener: &TcpListener,
    canceller: &mut monoio::io::Canceller,
) -> (std::io::Result<(monoio::net::TcpStream, std::net::SocketAddr)>, bool) {
    let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
    monoio::select! {
        r = &mut accept => return (r, false),
        _ = worker.drain.wait() => {}
    }
    let _ = std::mem::take(canceller).cancel();
    (accept.as_mut().await, true)
}

/// A TLS connection: the handshake (bounded by `handshakeMs`; a client
/// that sends nothing costs no buffer), then the same request path as
/// plain HTTP.
/// Boxed handshake: its state is not part of the connection's idle state.
async fn serve_tls(guard: ConnGuard, tcp: monoio::net::TcpStream, peer: std::net::SocketAddr) {
    let w = guard.worker().clone();
    let Some(tls) = w.tls() else { return };
    let deadline = Instant::now() + tls.state.handshake;
    // Until the ClientHello arrives the connection holds only its socket;
    // the handshake's state (boxed, a few KB) exists only while it runs.
    if !matches!(idle::before(&w.timers, deadline, tcp.readable(false)).await, Some(Ok(()))) {
        return;
    }
    let handshake = Box::pin(crate::tls::accept(tcp, tls.config.clone(), &tls.state.index));
    let done = idle::before(&w.timers, deadline, handshake).await;
    match done {
        Some(Ok(stream)) if stream.alpn() == Some(b"h2") => Box::pin(crate::http2::serve(guard, stream, peer)).await,
        Some(Ok(stream)) => crate::proxy::serve_client(guard, stream, peer).await,
        Some(Err(e)) => tracing::debug!(worker = w.index, %peer, error = %e, "TLS handshake failed"),
        None => tracing::debug!(worker = w.index, %peer, "TLS handshake timed out"),
    }
}

/// A plain connection where h2c is on: HTTP/2 with prior knowledge when
/// its first bytes are the HTTP/2 preface, else HTTP/1.1.
async fn serve_plain(guard: ConnGuard, tcp: monoio::net::TcpStream, peer: std::net::SocketAddr) {
    let w = guard.worker().clone();
    let deadline = Instant::now() + w.active().timeouts.client_head;
    if !matches!(idle::before(&w.timers, deadline, tcp.readable(false)).await, Some(Ok(()))) {
        return;
    }
    if starts_with_preface(&tcp, deadline).await {
        Box::pin(crate::http2::serve(guard, Stream::plain(tcp), peer)).await;
    } else {
        crate::proxy::serve_client(guard, Stream::plain(tcp), peer).await;
    }
}

/// Whether the bytes waiting on `tcp` begin like the HTTP/2 preface (the
/// h2 handshake then checks all of it). "PRI " is enough: no HTTP/1.1
/// request ringway serves starts so. A client that sent fewer bytes, all
/// of them the preface's so far (it writes in pieces), is peeked at again
/// after a backoff (1 ms doubling to 64 ms) until `deadline`.
async fn starts_with_preface(tcp: &monoio::net::TcpStream, deadline: Instant) -> bool {
    use std::os::fd::AsRawFd;
    const SEEN: usize = 4;
    let mut pause = Duration::from_millis(1);
    loop {
        let mut first = [0u8; SEEN];
        // SAFETY: a non-blocking peek into a local buffer on a socket we own.
        let n = unsafe {
            libc::recv(tcp.as_raw_fd(), first.as_mut_ptr().cast(), first.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
        };
        let Ok(n) = usize::try_from(n) else { return false };
        let could_be = crate::http2::PREFACE.starts_with(first.get(..n).unwrap_or(&[]));
        if n == SEEN || n == 0 || !could_be || Instant::now() >= deadline {
            return n == SEEN && could_be;
        }
        monoio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// Hands buffered access-log lines to the writer every 100 ms.
async fn flush_log(worker: Rc<Worker>) {
    while !worker.drain.is_fired() {
        monoio::time::sleep(Duration::from_millis(100)).await;
        if let Some(log) = &worker.log {
            log.flush();
        }
    }
}

/// Ships counters to the control thread in bounded batches, once a second
/// while they move (on demand too: GET /stats asks every worker first).
/// With many routes each busy route costs one delta per flush, so the
/// period is a CPU cost: 250 ms here cost ~1% with 10,000 busy routes.
async fn flush_stats(worker: Rc<Worker>) {
    while !worker.drain.is_fired() {
        monoio::time::sleep(Duration::from_secs(1)).await;
        if worker.stats_dirty() {
            worker.send_stats(None);
        }
    }
}

/// Fires expired operation deadlines every `OP_TICK` while any are set
/// (in-flight requests keep their timeouts through a drain).
async fn sweep_ops(worker: Rc<Worker>) {
    loop {
        worker.timers.busy().await;
        if worker.timers.is_closed() {
            return;
        }
        monoio::time::sleep(idle::OP_TICK).await;
        worker.timers.sweep(Instant::now());
    }
}

/// Fires expired idle deadlines every tick.
async fn sweep_idle(worker: Rc<Worker>) {
    while !worker.drain.is_fired() {
        monoio::time::sleep(idle::TICK).await;
        worker.idle.sweep(Instant::now());
        worker.trim_bufs();
    }
}
