//! What crosses the channels between the control thread and the workers.
//! Snapshots are immutable data behind `Arc`; each worker builds its own
//! `Rc` structures from them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Limits, Route, Timeouts};

pub use crate::model::BackendKey;

/// Data the data plane built for a snapshot that this crate cannot name:
/// the TLS certificate resolver and upstream TLS settings (this crate does
/// no crypto). Shared by every worker; the same `Arc` across snapshots
/// while the certificates are unchanged, so workers rebuild only then.
#[derive(Clone)]
pub struct Opaque(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opaque")
    }
}

/// One generation of the running config, as a worker needs it.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every accepted change.
    pub generation: u64,
    /// Routes in config order (shared with the control state: unchanged
    /// routes are the same `Arc` from one snapshot to the next).
    pub routes: Vec<Arc<Route>>,
    /// Resolved addresses, for backends whose hostname is not an IP literal.
    /// A backend with neither a literal nor an entry here is down.
    pub resolved: Vec<(String, u16, SocketAddr)>,
    /// Backends that are down (health, maintenance) at this generation.
    pub down: HashSet<BackendKey>,
    /// Global timeouts.
    pub timeouts: Timeouts,
    /// Global limits.
    pub limits: Limits,
    /// HTTP/2 settings.
    pub http2: crate::model::Http2,
    /// TLS state built by the data plane's controller (see `Opaque`).
    pub tls: Option<Opaque>,
}

impl Snapshot {
    /// The address a backend should be reached at, if known.
    pub fn address_of(&self, b: &crate::model::Backend) -> Option<SocketAddr> {
        b.literal_addr()
            .or_else(|| self.resolved.iter().find(|(h, p, _)| *h == b.hostname && *p == b.port).map(|(_, _, a)| *a))
    }
}

/// Control thread → one worker.
#[derive(Debug, Clone)]
pub enum ControlMsg {
    /// Swap in this snapshot and ack its generation.
    Apply(Arc<Snapshot>),
    /// A backend's health flipped (all workers hear it).
    Health {
        /// Which backend.
        key: BackendKey,
        /// Up or down now.
        up: bool,
    },
    /// Send a `Stats` event now, tagged with `id`.
    FlushStats {
        /// Echoed in the answer.
        id: u64,
    },
    /// Drop response-cache entries of a route and answer with `Purged`.
    PurgeCache {
        /// Echoed in the answer.
        id: u64,
        /// The route's key.
        route: String,
        /// A path (query included), or a prefix ending in `*`; `None`: all.
        path: Option<String>,
    },
    /// The HTTP-01 answers to serve on plain listeners from now on:
    /// (token, key authorization); empty when no issuance is running.
    AcmeTokens(Arc<Vec<(String, String)>>),
    /// Stop accepting, finish in-flight requests within `drain`, exit.
    Shutdown {
        /// Drain budget.
        drain: Duration,
    },
}

/// A worker → the control thread.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// The worker applied this generation.
    Ack {
        /// Worker index.
        worker: usize,
        /// Generation applied.
        generation: u64,
    },
    /// A backend failed to connect or timed out on this worker.
    PassiveFailure {
        /// Worker index.
        worker: usize,
        /// Which backend.
        key: BackendKey,
    },
    /// The worker's listener failed to start.
    Failed {
        /// Worker index.
        worker: usize,
        /// Why.
        reason: String,
    },
    /// Counters since the last flush.
    Stats {
        /// Worker index.
        worker: usize,
        /// The `FlushStats` id answered, if any.
        id: Option<u64>,
        /// The delta.
        delta: Box<crate::stats::StatsDelta>,
    },
    /// The answer to `PurgeCache`.
    Purged {
        /// Worker index.
        worker: usize,
        /// The `PurgeCache` id.
        id: u64,
        /// Entries dropped.
        entries: u64,
    },
    /// The worker finished draining and is exiting.
    Exited {
        /// Worker index.
        worker: usize,
    },
}
