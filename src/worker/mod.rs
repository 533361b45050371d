//! One worker's state: a pinned thread's routing table, backends, pools,
//! buffers, timers and counters, built from snapshots (`apply`). Nothing
//! here is shared with another worker except the global connection
//! counter. The thread's body (listen, accept, inbox) is `serve`; the
//! request path is `proxy`.

mod build;
pub mod idle;
pub mod inbox;
pub mod signal;
pub mod slot;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use control::messages::{BackendKey, Snapshot, WorkerEvent};
use control::model::{Limits, Timeouts};
use crossbeam_channel::Sender;

use crate::accesslog::{LogSink, WorkerLog};
use crate::balance::Strategy as BalStrategy;
use crate::http::HeaderSpan;
use crate::route::RouteRt;
use crate::router::Router;
use crate::stats;
use crate::upstream::{Backend, ConnPool, PoolKey, UpstreamTls};
use control::model::HostHeader;
use signal::LocalSignal;

/// State shared by all workers (atomics only, touched per connection).
#[derive(Default)]
pub struct Shared {
    /// Open client connections, all workers.
    pub open_connections: AtomicUsize,
    /// Connections closed at once because of `limits.maxConnections`.
    pub rejected_connections: AtomicU64,
}

/// What one snapshot gives a worker.
pub struct Active {
    /// Generation.
    pub generation: u64,
    /// Host lookup.
    pub router: Router,
    /// Global limits.
    pub limits: Limits,
    /// Global timeouts.
    pub timeouts: Timeouts,
    /// HTTP/2 settings.
    pub http2: control::model::Http2,
}

/// Reusable per-request buffers, lent to a connection only while it has
/// bytes to work on; an idle keep-alive connection holds none.
pub struct Bufs {
    /// Client bytes (request heads, bodies, pipelined requests).
    pub rbuf: Vec<u8>,
    /// Upstream bytes.
    pub ubuf: Vec<u8>,
    /// Heads being written.
    pub out: Vec<u8>,
    /// Request header spans.
    pub headers: Vec<HeaderSpan>,
    /// Response header spans.
    pub uheaders: Vec<HeaderSpan>,
    /// Scratch (rewritten paths).
    pub scratch: Vec<u8>,
    /// The access-log line being built.
    pub log: Vec<u8>,
    /// Header lines a policy adds to this request's answer (CORS; a
    /// 401's challenge, a 429's limits).
    pub policy_headers: Vec<u8>,
    /// Header lines a policy adds to the upstream request (an auth
    /// provider's copied headers).
    pub policy_upstream: Vec<u8>,
    /// The body of a policy's own answer (an auth provider's refusal).
    pub policy_body: Vec<u8>,
    /// On a cache miss: what storing the answer needs.
    pub cache: crate::policy::cache::Miss,
}

/// Size of each I/O buffer.
pub const BUF_SIZE: usize = 16 * 1024;
/// Buffer sets always kept for reuse.
const MIN_POOLED_BUFS: usize = 8;
/// Idle ticks over which the buffer pool remembers its peak use.
const PEAK_TICKS: usize = 8;

impl Bufs {
    fn new() -> Bufs {
        Bufs {
            rbuf: Vec::with_capacity(BUF_SIZE),
            ubuf: Vec::with_capacity(BUF_SIZE),
            out: Vec::with_capacity(4096),
            headers: Vec::with_capacity(64),
            uheaders: Vec::with_capacity(64),
            scratch: Vec::with_capacity(256),
            log: Vec::with_capacity(256),
            policy_headers: Vec::new(),
            policy_upstream: Vec::new(),
            policy_body: Vec::new(),
            cache: Default::default(),
        }
    }
}

/// One worker's state, shared by its tasks through `Rc`.
pub struct Worker {
    /// Worker index.
    pub index: usize,
    /// To the control thread.
    pub events: Sender<WorkerEvent>,
    /// Cross-worker counters.
    pub shared: Arc<Shared>,
    /// How many workers share the limits.
    pub workers: usize,
    /// Access log, when configured.
    pub log: Option<WorkerLog>,
    active: RefCell<Rc<Active>>,
    /// Requests answered before a route was known (400s, 404s).
    pub unrouted: stats::RouteStats,
    /// Routes and backends counted since their last delta, in order: the
    /// periodic flush takes a bounded batch, so 10,000 busy routes never
    /// stall the worker at once.
    dirty_routes: RefCell<std::collections::VecDeque<(Arc<str>, Rc<crate::route::RouteState>)>>,
    dirty_backends: RefCell<std::collections::VecDeque<Rc<Backend>>>,
    backends: RefCell<build::ConfigMap<BackendKey, Rc<Backend>>>,
    pools: RefCell<build::ConfigMap<PoolKey, Rc<ConnPool>>>,
    /// Set once shutdown starts.
    pub drain: LocalSignal,
    /// Fired when draining and the last connection closed.
    pub(crate) all_closed: LocalSignal,
    open: Cell<usize>,
    // Boxed on purpose: sets are lent out by pointer so that an idle
    // connection's state stays small.
    #[allow(clippy::vec_box)]
    bufs: RefCell<Vec<Box<Bufs>>>,
    bufs_in_use: Cell<usize>,
    /// Most sets in use at once during the current tick.
    bufs_peak: Cell<usize>,
    /// That figure for the last `PEAK_TICKS` ticks.
    bufs_ring: RefCell<[usize; PEAK_TICKS]>,
    bufs_tick: Cell<usize>,
    /// HTTP-01 answers (token, key authorization) while an ACME issuance
    /// runs; empty otherwise (then a plain request checks one length).
    pub acme_tokens: RefCell<Arc<Vec<(String, String)>>>,
    /// Heap slots for connections' active phases.
    pub slots: slot::Slots,
    /// Idle keep-alive deadlines.
    pub idle: idle::IdleTimers,
    /// Socket-operation deadlines on the request path.
    pub timers: idle::IdleTimers,
    rid_prefix: u32,
    rid_counter: Cell<u64>,
    /// The TLS state of the current snapshot and this worker's server
    /// config over it (rebuilt only when the state's `Arc` changes).
    tls: RefCell<Option<WorkerTls>>,
    /// This worker's TLS session cache (kept across certificate changes).
    session_cache: Arc<rustls::server::ServerSessionMemoryCache>,
    /// Requests by protocol and HTTP/2 events.
    pub proto: Rc<crate::stats::ProtoCounters>,
    /// Policy chains by route and rule (kept while unchanged).
    chains: crate::policy::Chains,
    /// The last snapshot's routes as built, and what besides their config
    /// they were built from.
    built: RefCell<build::Built>,
    /// The port of the first TLS listener (for `autoHttps` redirects).
    pub tls_port: Option<u16>,
}

/// A worker's TLS server side.
#[derive(Clone)]
pub struct WorkerTls {
    /// Certificates and settings, shared by every worker.
    pub state: Arc<crate::tls::TlsState>,
    /// This worker's server config over them.
    pub config: Arc<rustls::ServerConfig>,
}

/// The TLS part of a backend's pool key: trust and server name.
fn upstream_tls_key(b: &control::model::Backend, host: &HostHeader) -> Option<(crate::tls::upstream::Trust, Box<str>)> {
    let name = crate::tls::upstream::server_name(b, host)?;
    Some((crate::tls::upstream::Trust::of(b.tls.as_ref()?), name.into()))
}

/// The TLS settings of a new pool, from the snapshot's client configs.
fn upstream_tls(state: Option<&crate::tls::TlsState>, key: &PoolKey) -> Option<UpstreamTls> {
    let (trust, name) = key.tls.as_ref()?;
    let mut config = state.and_then(|s| s.upstream.get(trust))?.clone();
    if key.h2 {
        // HTTP/2 backends are asked for h2 by ALPN (once per pool).
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        config = Arc::new(c);
    }
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).ok()?;
    Some(UpstreamTls { config, name })
}

/// Decrements the connection counts when a connection ends (an HTTP/2
/// stream's guard counts nothing: its connection is counted).
pub struct ConnGuard {
    worker: Rc<Worker>,
    counted: bool,
}

impl ConnGuard {
    /// The worker the connection runs on.
    pub fn worker(&self) -> &Rc<Worker> {
        &self.worker
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let w = &self.worker;
        w.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        let n = w.open.get().saturating_sub(1);
        w.open.set(n);
        if n == 0 && w.drain.is_fired() {
            w.all_closed.fire();
        }
    }
}

fn strategy(s: control::model::Strategy) -> BalStrategy {
    use control::model::Strategy as S;
    match s {
        S::RoundRobin => BalStrategy::RoundRobin,
        S::WeightedRoundRobin => BalStrategy::WeightedRoundRobin,
        S::LeastConnections => BalStrategy::LeastConnections,
        S::Random => BalStrategy::Random,
        S::IpHash => BalStrategy::IpHash,
        S::LeastLatency => BalStrategy::LeastLatency,
    }
}

impl Worker {
    /// A worker with an empty routing table.
    pub fn new(
        index: usize,
        events: Sender<WorkerEvent>,
        shared: Arc<Shared>,
        workers: usize,
        log: Option<LogSink>,
    ) -> Worker {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        Worker {
            index,
            events,
            shared,
            workers,
            log: log.map(WorkerLog::new),
            unrouted: stats::RouteStats::default(),
            dirty_routes: RefCell::new(std::collections::VecDeque::new()),
            dirty_backends: RefCell::new(std::collections::VecDeque::new()),
            active: RefCell::new(Rc::new(Active {
                generation: 0,
                router: Router::default(),
                limits: Limits::default(),
                http2: control::model::Http2::default(),
                timeouts: Timeouts::default(),
            })),
            backends: RefCell::default(),
            pools: RefCell::default(),
            drain: LocalSignal::default(),
            all_closed: LocalSignal::default(),
            open: Cell::new(0),
            bufs: RefCell::new(Vec::new()),
            bufs_in_use: Cell::new(0),
            bufs_peak: Cell::new(0),
            bufs_ring: RefCell::new([0; PEAK_TICKS]),
            bufs_tick: Cell::new(0),
            acme_tokens: RefCell::default(),
            slots: slot::Slots::default(),
            idle: idle::IdleTimers::default(),
            timers: idle::IdleTimers::default(),
            rid_prefix: seed.wrapping_mul(0x9E37_79B9) ^ (index as u32),
            rid_counter: Cell::new(0),
            tls: RefCell::new(None),
            session_cache: rustls::server::ServerSessionMemoryCache::new(crate::tls::SESSION_CACHE),
            proto: Rc::default(),
            chains: Default::default(),
            built: Default::default(),
            tls_port: None,
        }
    }

    /// The TLS server side, when the snapshot has certificates.
    pub fn tls(&self) -> Option<WorkerTls> {
        self.tls.borrow().clone()
    }

    /// Takes the snapshot's TLS state; rebuilds this worker's server config
    /// when it changed. Returns the state (for upstream pools).
    fn apply_tls(&self, snap: &Snapshot) -> Option<Arc<crate::tls::TlsState>> {
        let state = snap.tls.as_ref().and_then(|o| o.0.clone().downcast::<crate::tls::TlsState>().ok())?;
        let mut cur = self.tls.borrow_mut();
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(&c.state, &state)) {
            return Some(state);
        }
        match crate::tls::server_config(&state, self.session_cache.clone(), snap.http2.enabled) {
            Ok(config) => *cur = Some(WorkerTls { state: state.clone(), config }),
            Err(e) => tracing::error!(worker = self.index, error = %e, "TLS config not built; keeping the last"),
        }
        Some(state)
    }

    /// The routing state current now.
    pub fn active(&self) -> Rc<Active> {
        self.active.borrow().clone()
    }

    /// Lends a set of buffers.
    pub fn take_bufs(&self) -> Box<Bufs> {
        let n = self.bufs_in_use.get() + 1;
        self.bufs_in_use.set(n);
        if n > self.bufs_peak.get() {
            self.bufs_peak.set(n);
        }
        self.bufs.borrow_mut().pop().unwrap_or_else(|| Box::new(Bufs::new()))
    }

    /// Returns lent buffers (cleared; oversized ones are shrunk). The pool
    /// keeps as many sets as were in use at the recent peak, so a steady
    /// load allocates none; `trim_bufs` lets that peak decay.
    pub fn put_bufs(&self, mut b: Box<Bufs>) {
        self.bufs_in_use.set(self.bufs_in_use.get().saturating_sub(1));
        let mut pool = self.bufs.borrow_mut();
        let cap = self.bufs_ring.borrow().iter().copied().max().unwrap_or(0).max(self.bufs_peak.get());
        if pool.len() + self.bufs_in_use.get() >= cap.max(MIN_POOLED_BUFS) {
            return;
        }
        for v in [&mut b.rbuf, &mut b.ubuf] {
            v.clear();
            if v.capacity() > 4 * BUF_SIZE || v.capacity() < BUF_SIZE {
                *v = Vec::with_capacity(BUF_SIZE);
            }
        }
        b.out.clear();
        b.scratch.clear();
        b.log.clear();
        b.policy_headers.clear();
        b.policy_upstream.clear();
        b.policy_body.clear();
        b.cache.reset();
        pool.push(b);
    }

    /// Lets the buffer pool follow load down. Called every idle tick: the
    /// pool's cap is the most sets in use at once over the last
    /// `PEAK_TICKS` ticks, so a steady load keeps its sets (no churn) and a
    /// receding burst gives its memory back about two seconds later.
    pub fn trim_bufs(&self) {
        let in_use = self.bufs_in_use.get();
        let mut ring = self.bufs_ring.borrow_mut();
        let tick = self.bufs_tick.get();
        ring[tick % PEAK_TICKS] = self.bufs_peak.get();
        self.bufs_tick.set(tick.wrapping_add(1));
        // The next tick's window starts with what is in use now.
        self.bufs_peak.set(in_use);
        let cap = ring.iter().copied().max().unwrap_or(0).max(MIN_POOLED_BUFS);
        drop(ring);
        let keep = cap.saturating_sub(in_use);
        let mut pool = self.bufs.borrow_mut();
        let freed = pool.len().saturating_sub(keep);
        pool.truncate(keep);
        drop(pool);
        if freed >= 8 && cap == MIN_POOLED_BUFS {
            // Hand the freed buffers' pages back to the system; glibc keeps
            // them otherwise. Rare: only when a burst has fully receded.
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Writes a fresh request id (24 hex digits) into `out`.
    pub fn next_request_id(&self, out: &mut [u8; 24]) {
        let n = self.rid_counter.get().wrapping_add(1);
        self.rid_counter.set(n);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hi = self.rid_prefix as u64;
        for (i, o) in out[..8].iter_mut().enumerate() {
            *o = HEX[((hi >> (28 - 4 * i)) & 0xf) as usize];
        }
        for (i, o) in out[8..].iter_mut().enumerate() {
            *o = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
    }

    /// A guard for one HTTP/2 stream (its connection holds the counted one).
    pub fn stream_guard(self: &Rc<Self>) -> ConnGuard {
        ConnGuard { worker: self.clone(), counted: false }
    }

    /// Counts a new connection; `None` when over `maxConnections`.
    pub fn admit_connection(self: &Rc<Self>, max: usize) -> Option<ConnGuard> {
        let prev = self.shared.open_connections.fetch_add(1, Ordering::Relaxed);
        if prev >= max {
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            self.shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(ConnGuard { worker: self.clone(), counted: true })
    }

    /// A health flip from the control thread.
    pub fn set_health(&self, key: &BackendKey, up: bool) {
        if let Some(b) = self.backends.borrow().get(key) {
            b.node.set_up(up && b.addr.is_some());
            if up {
                b.local_down_since.set(None);
            } else {
                b.clear_idle();
            }
        }
    }

    /// A connect failure or timeout on this worker: out at once, reported.
    pub fn passive_failure(&self, b: &Backend) {
        if b.local_down_since.get().is_none() {
            b.local_down_since.set(Some(Instant::now()));
            b.node.set_up(false);
            b.clear_idle();
            let _ = self.events.send(WorkerEvent::PassiveFailure { worker: self.index, key: b.key.clone() });
        }
    }

    /// Open connections on this worker.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// Counts a finished exchange on its route (or as unrouted).
    pub fn record_exchange(&self, route: Option<&RouteRt>, o: &stats::Outcome) {
        match route {
            Some(r) => {
                if r.state.stats.record(o) {
                    self.dirty_routes.borrow_mut().push_back((r.key.clone(), r.state.clone()));
                }
            }
            None => {
                self.unrouted.record(o);
            }
        }
    }

    /// A backend's circuit breaker changed state on this worker: logged
    /// once, and shipped with the next stats delta.
    pub fn breaker_changed(&self, b: &Rc<Backend>, change: crate::policy::breaker::Change) {
        tracing::warn!(worker = self.index, route = %b.key.route, backend = %b.key.backend, ?change, "circuit breaker");
        if !b.stats.dirty.replace(true) {
            self.dirty_backends.borrow_mut().push_back(b.clone());
        }
    }

    /// Counts one attempt on a backend.
    pub fn record_attempt(&self, b: &Rc<Backend>, ok: bool, head_us: u64) {
        if b.stats.record(ok, head_us) {
            self.dirty_backends.borrow_mut().push_back(b.clone());
        }
    }

    /// Whether any counter moved since the last delta.
    pub(crate) fn stats_dirty(&self) -> bool {
        !self.dirty_routes.borrow().is_empty()
            || !self.dirty_backends.borrow().is_empty()
            || self.unrouted.latency_dirty()
            || self.proto.dirty()
    }

    /// What was counted since the last delta, at most `batch` routes and
    /// backends of it (zeroes what it takes). With `all`, everything, plus
    /// the in-flight level of every busy backend.
    pub fn stats_delta(&self, batch: usize, all: bool) -> control::stats::StatsDelta {
        let mut d = control::stats::StatsDelta::default();
        let mut routes = self.dirty_routes.borrow_mut();
        let n = if all { routes.len() } else { batch.min(routes.len()) };
        d.routes.reserve_exact(n);
        for (key, r) in routes.drain(..n) {
            if let Some((counters, latency)) = r.stats.take(&mut d.route_latency) {
                d.routes.push(control::stats::RouteDelta { key, counters, latency });
            }
        }
        drop(routes);
        // Unrouted requests' latency joins the global histogram only.
        if let Some((c, _)) = self.unrouted.take(&mut d.route_latency) {
            d.unrouted = c;
        }
        let backend_delta = |b: &Backend, lat: &mut Vec<(u16, u64)>| control::stats::BackendDelta {
            key: b.key.clone(),
            requests: b.stats.requests.replace(0),
            errors: b.stats.errors.replace(0),
            inflight: b.node.inflight(),
            latency: b.stats.latency.take_into(lat),
            circuit_open: b.breaker.is_open(),
        };
        let mut backends = self.dirty_backends.borrow_mut();
        let n = if all { backends.len() } else { batch.min(backends.len()) };
        for b in backends.drain(..n) {
            b.stats.dirty.set(false);
            d.backends.push(backend_delta(&b, &mut d.backend_latency));
        }
        drop(backends);
        if all {
            for b in self.backends.borrow().values() {
                if b.node.inflight() > 0 && !d.backends.iter().any(|x| x.key == b.key) {
                    d.backends.push(backend_delta(b, &mut d.backend_latency));
                }
            }
        }
        d.protocols = self.proto.take();
        d.levels = control::stats::Levels {
            open_connections: self.open.get() as u64,
            buffers_in_use: self.bufs_in_use.get() as u64,
            buffers_pooled: self.bufs.borrow().len() as u64,
            upstream_idle: self.pools.borrow().values().map(|p| p.idle_len() as u64).sum(),
            cache_bytes: 0,
            cache_entries: 0,
        };
        (d.levels.cache_bytes, d.levels.cache_entries) = self.chains.cache_level();
        d
    }

    /// Drops the response-cache entries of `route` whose path matches
    /// `path` (see `CacheRt::purge`); returns how many went.
    pub(crate) fn purge_cache(&self, route: &str, path: Option<&str>) -> u64 {
        self.chains.purge(route, path)
    }

    pub(crate) fn send_stats(&self, id: Option<u64>) {
        // On demand (an id): everything, so totals are exact; periodic: a batch.
        let delta = Box::new(self.stats_delta(STATS_BATCH, id.is_some()));
        let _ = self.events.send(WorkerEvent::Stats { worker: self.index, id, delta });
    }
}

/// Routes (and backends) per periodic stats delta: bounds the worker-side
/// pause; a larger busy set catches up over a few seconds.
pub(crate) const STATS_BATCH: usize = 4000;
