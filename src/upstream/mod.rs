//! Backends and their per-worker connection pools (plain or TLS).
//!
//! A `Backend` is one configured backend as one worker sees it: balancer
//! state (`Node`), its address, and the worker's `ConnPool` for that
//! address: a bounded LIFO of idle keep-alive connections. Pools are keyed
//! by address, so routes that share a backend address share its
//! connections (10,000 vHosts in front of one service keep one warm pool).
//! Workers carry a `Backend` (counters, balancer state) over to the next
//! snapshot when its id, address and weight are unchanged, and a pool
//! whenever its address is still in use, so a config change causes no
//! reconnect storm.

pub mod exchange;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use control::messages::BackendKey;
use monoio::net::TcpStream;

use crate::conn::Stream;

use crate::balance::Node;
use crate::error::{Kind, ProxyError};

/// Most idle connections one worker keeps per backend.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

/// How long an idle pooled connection is trusted.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle longer than this, a pooled connection is checked before reuse.
const PEEK_AFTER: Duration = Duration::from_millis(500);

/// How a pool reaches its address over TLS: the client config and the
/// server name (SNI, and the name verified).
#[derive(Clone)]
pub struct UpstreamTls {
    /// Client config (trust roots).
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// SNI and verified name.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("name", &self.name).finish()
    }
}

/// What a pool is keyed by: the address, for TLS the trust setting and
/// server name, and the protocol (connections differ in all of them).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PoolKey {
    /// Where.
    pub addr: SocketAddr,
    /// TLS trust and name, if TLS.
    pub tls: Option<(crate::tls::upstream::Trust, Box<str>)>,
    /// HTTP/2 (streams multiplexed over one connection) rather than
    /// HTTP/1.1 (a connection per request in flight).
    pub h2: bool,
}

/// One worker's connections to one address: idle HTTP/1.1 keep-alive
/// connections, or the HTTP/2 connection its streams share.
pub struct ConnPool {
    key: PoolKey,
    tls: Option<UpstreamTls>,
    idle: RefCell<VecDeque<(Stream, Instant)>>,
    /// The HTTP/2 connections' request handles and open streams (HTTP/2
    /// pools): a new connection only when every one is at the backend's
    /// concurrent-stream limit.
    h2: RefCell<Vec<H2Conn>>,
    /// HTTP/2 connections being opened now (they count toward the limit).
    h2_connecting: Cell<usize>,
    /// Connections opened (for tests and stats).
    pub connects: Cell<u64>,
}

/// Most HTTP/2 connections one worker opens to one backend.
const MAX_H2_CONNECTIONS: usize = 8;

/// Where a new HTTP/2 stream goes.
enum H2Pick {
    /// On this connection.
    Use(h2::client::SendRequest<bytes::Bytes>, Rc<Cell<usize>>),
    /// Only connections still opening: wait for one.
    Wait,
    /// On a new connection.
    Open,
}

/// One HTTP/2 connection of a pool.
struct H2Conn {
    send: h2::client::SendRequest<bytes::Bytes>,
    /// Streams open on it now.
    open: Rc<Cell<usize>>,
}

impl ConnPool {
    /// An empty pool for `key` (over TLS when `tls` is set).
    pub fn new(key: PoolKey, tls: Option<UpstreamTls>) -> ConnPool {
        ConnPool {
            key,
            tls,
            idle: RefCell::new(VecDeque::new()),
            h2: RefCell::new(Vec::new()),
            h2_connecting: Cell::new(0),
            connects: Cell::new(0),
        }
    }

    /// Which HTTP/2 connection a new stream goes on.
    fn h2_pick(&self) -> H2Pick {
        let conns = self.h2.borrow();
        let best = conns.iter().min_by_key(|c| c.open.get());
        let full = best.is_none_or(|c| c.open.get() >= c.send.current_max_send_streams());
        let at_limit = conns.len() + self.h2_connecting.get() >= MAX_H2_CONNECTIONS;
        match best {
            Some(c) if !full || at_limit => H2Pick::Use(c.send.clone(), c.open.clone()),
            None if self.h2_connecting.get() > 0 => H2Pick::Wait,
            _ => H2Pick::Open,
        }
    }

    /// A new stream on this pool's HTTP/2 connection, opening one when
    /// there is none or it failed (a GOAWAY'd connection is replaced).
    /// `reused`: the connection existed before this request.
    async fn h2_stream(&self, timeout: Duration) -> Result<Upstream, ProxyError> {
        let give_up = Instant::now() + timeout;
        // The least busy connection with room (or, when all are full and no
        // more may be opened, the least busy one: its streams queue). While
        // the limit is taken by connections still opening, wait for them.
        let pick = loop {
            match self.h2_pick() {
                H2Pick::Use(send, open) => break Some((send, open)),
                H2Pick::Wait if Instant::now() < give_up => monoio::time::sleep(Duration::from_millis(1)).await,
                H2Pick::Wait | H2Pick::Open => break None,
            }
        };
        if let Some((mut send, open)) = pick {
            if std::future::poll_fn(|cx| send.poll_ready(cx)).await.is_ok() {
                let up = crate::conn::h2up::H2Up::new(send, open, self.tls.is_some());
                return Ok(Upstream { stream: Stream::H2Up(Box::new(up)), reused: true });
            }
            // Failed or gone away: new streams go to another connection.
            self.h2.borrow_mut().retain(|c| !Rc::ptr_eq(&c.open, &open));
        }
        let handshake = async {
            let tcp = connect_to(self).await?;
            let io = crate::conn::h2io::H2Io::new(tcp)
                .map_err(|e| ProxyError::new(Kind::ConnectFailed, "not a socket").caused_by(&e))?;
            h2::client::Builder::new()
                // One stream until the backend's SETTINGS say how many: a
                // burst past its real limit is refused (gRPC servers answer
                // ENHANCE_YOUR_CALM); meanwhile more streams open more
                // connections (up to MAX_H2_CONNECTIONS) or wait.
                .initial_max_send_streams(1)
                .initial_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .handshake::<_, bytes::Bytes>(io)
                .await
                .map_err(|e| {
                    ProxyError::new(Kind::ConnectFailed, "HTTP/2 handshake with the backend failed")
                        .caused_by(&std::io::Error::other(e))
                })
        };
        self.h2_connecting.set(self.h2_connecting.get() + 1);
        let opened = monoio::time::timeout(timeout, Box::pin(handshake)).await;
        self.h2_connecting.set(self.h2_connecting.get() - 1);
        let (send, conn) = match opened {
            Err(_) => return Err(ProxyError::new(Kind::ConnectTimeout, "connect timed out")),
            Ok(r) => r?,
        };
        // The connection runs as its own task until every handle and stream is gone.
        monoio::spawn(async move {
            let _ = conn.await;
        });
        self.connects.set(self.connects.get() + 1);
        let open = Rc::new(Cell::new(0));
        self.h2.borrow_mut().push(H2Conn { send: send.clone(), open: open.clone() });
        let up = crate::conn::h2up::H2Up::new(send, open, self.tls.is_some());
        Ok(Upstream { stream: Stream::H2Up(Box::new(up)), reused: false })
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    /// What the pool is keyed by.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Takes a pooled connection (newest first, expired or closed ones dropped).
    /// With `careful` (a request body that cannot be sent twice), every
    /// connection is checked, however briefly it rested.
    pub fn take_idle(&self, now: Instant, careful: bool) -> Option<Stream> {
        let mut idle = self.idle.borrow_mut();
        while let Some((mut s, since)) = idle.pop_back() {
            let rested = now.saturating_duration_since(since);
            if rested >= POOL_IDLE_TIMEOUT {
                continue;
            }
            // A connection reused at once is almost surely alive; one that
            // rested may have been closed by the backend meanwhile: peek.
            if (rested < PEEK_AFTER && !careful) || s.still_open() {
                return Some(s);
            }
        }
        None
    }

    /// Returns a reusable connection (the oldest is dropped when full). An
    /// HTTP/2 stream is not reusable (its connection stays in the pool).
    pub fn put_idle(&self, stream: Stream, now: Instant) {
        if matches!(stream, Stream::H2Up(_)) {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= MAX_IDLE_PER_BACKEND {
            idle.pop_front();
        }
        idle.push_back((stream, now));
    }

    /// Idle connections held.
    pub fn idle_len(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Closes every idle connection (and lets go of the HTTP/2 one: open
    /// streams finish on it, new ones get a new connection).
    pub fn clear_idle(&self) {
        self.idle.borrow_mut().clear();
        self.h2.borrow_mut().clear();
    }
}

/// One backend, as one worker sees it.
pub struct Backend {
    /// Balancer state.
    pub node: Node,
    /// The worker's pool for `addr`.
    pub pool: Option<Rc<ConnPool>>,
    /// Its circuit breaker on this worker (closed unless its pool breaks).
    pub breaker: crate::policy::breaker::Breaker,
    /// Counters for the stats pipeline.
    pub stats: crate::stats::BackendStats,
    /// Route key and backend id.
    pub key: BackendKey,
    /// Where to connect; `None` = not resolved (down).
    pub addr: Option<SocketAddr>,
    /// Weight as configured (part of the carry-over identity).
    pub weight: u32,
    /// Set by a passive failure on this worker; cleared by the control thread.
    pub local_down_since: Cell<Option<Instant>>,
    /// Its Host value (`hostname[:port]`, the port left out when it is
    /// the scheme's default), for `hostHeader: "backend"`.
    pub host: Box<[u8]>,
    /// The configured hostname (with address, weight and TLS settings, what
    /// decides whether the next snapshot carries this backend over).
    pub hostname: Box<str>,
}

impl crate::balance::AsNode for Backend {
    fn node(&self) -> &Node {
        &self.node
    }

    fn admits(&self) -> bool {
        self.breaker.admits()
    }
}

/// An upstream connection and whether it came from the pool.
pub struct Upstream {
    /// The connection.
    pub stream: Stream,
    /// Reused from the pool (a failure before any response byte may be a
    /// stale connection, worth one retry on a fresh one).
    pub reused: bool,
}

impl Backend {
    /// A backend using `pool` (the worker's pool for its address, if known).
    pub fn new(key: BackendKey, pool: Option<Rc<ConnPool>>, cfg: &control::model::Backend) -> Backend {
        let weight = cfg.weight;
        let node = Node::new(&key.backend, weight);
        let addr = pool.as_ref().map(|p| p.addr());
        if addr.is_none() {
            node.set_up(false);
        }
        let host = Backend::host_of(cfg);
        Backend {
            node,
            key,
            addr,
            weight,
            local_down_since: Cell::new(None),
            pool,
            stats: Default::default(),
            host: host.into_bytes().into_boxed_slice(),
            hostname: cfg.hostname.as_str().into(),
            breaker: Default::default(),
        }
    }

    /// The Host value for a configured backend: `hostname[:port]`, the
    /// port left out when it is the scheme's default.
    pub fn host_of(cfg: &control::model::Backend) -> String {
        let default_port = if cfg.tls.is_some() { 443 } else { 80 };
        let name = if cfg.hostname.contains(':') && !cfg.hostname.starts_with('[') {
            format!("[{}]", cfg.hostname)
        } else {
            cfg.hostname.clone()
        };
        if cfg.port == default_port {
            name
        } else {
            format!("{name}:{}", cfg.port)
        }
    }

    /// Returns a reusable connection to the pool.
    pub fn put_idle(&self, stream: Stream, now: Instant) {
        if let Some(p) = &self.pool {
            p.put_idle(stream, now);
        }
    }

    /// Closes the pool's idle connections (the backend failed).
    pub fn clear_idle(&self) {
        if let Some(p) = &self.pool {
            p.clear_idle();
        }
    }

    /// A pooled connection (as of `now`), or a fresh one within `timeout`.
    /// `careful`: the request's body will be streamed and cannot be sent
    /// again, so a pooled connection is checked before it is trusted (a
    /// backend that just died then costs a retry elsewhere, not a 502).
    pub async fn connect(&self, timeout: Duration, now: Instant, careful: bool) -> Result<Upstream, ProxyError> {
        if let Some(stream) = self.pool.as_ref().and_then(|p| p.take_idle(now, careful)) {
            return Ok(Upstream { stream, reused: true });
        }
        self.connect_fresh(timeout).await
    }

    /// Always a new connection.
    pub async fn connect_fresh(&self, timeout: Duration) -> Result<Upstream, ProxyError> {
        let Some(pool) = &self.pool else {
            return Err(ProxyError::new(Kind::ConnectFailed, "backend address not resolved"));
        };
        if pool.key.h2 {
            // Boxed: rare, and inline it would grow every request's future.
            return Box::pin(pool.h2_stream(timeout)).await;
        }
        // One budget for the TCP connect and, for TLS, the handshake.
        match monoio::time::timeout(timeout, connect_to(pool)).await {
            Err(_) => Err(ProxyError::new(Kind::ConnectTimeout, "connect timed out")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(stream)) => {
                pool.connects.set(pool.connects.get() + 1);
                Ok(Upstream { stream, reused: false })
            }
        }
    }
}

/// A new connection to the pool's address, with a TLS handshake when the
/// pool is TLS.
async fn connect_to(pool: &ConnPool) -> Result<Stream, ProxyError> {
    if pool.tls.is_none() && pool.key.tls.is_some() {
        // Its CA file could not be read: never fall back to plain.
        return Err(ProxyError::new(Kind::ConnectFailed, "backend TLS settings unusable (see the log)"));
    }
    open(pool.addr(), pool.tls.as_ref()).await
}

/// A new connection to `addr`, with a TLS handshake when `tls` is set
/// (the data plane's pools and the health probes both connect here).
pub async fn open(addr: SocketAddr, tls: Option<&UpstreamTls>) -> Result<Stream, ProxyError> {
    let tcp = TcpStream::connect_addr(addr)
        .await
        .map_err(|e| ProxyError::new(Kind::ConnectFailed, "connect failed").caused_by(&e))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::plain(tcp));
    };
    let mut scratch = Vec::new();
    // Boxed: inline, the handshake's state would grow every request's
    // future (plain ones too), which is copied into a slot per request.
    Box::pin(crate::tls::upstream::connect(tcp, tls.config.clone(), tls.name.clone(), &mut scratch))
        .await
        .map_err(|e| ProxyError::new(Kind::ConnectFailed, "TLS handshake with the backend failed").caused_by(&e))
}
