//! The control thread: the single writer of the running state. It builds
//! snapshots, broadcasts them and collects acks, runs the health state
//! machine on probe results and passive failures, and broadcasts only flips.
//! Blocking work (probes, name resolution) stays off the workers.

mod acme;
pub mod admin;
mod cluster;
mod dashboard;
mod explain;
mod impact;
mod io;
pub mod probe;
mod purge;
pub mod statefile;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::api::{ApiContext, ApiRequest, Outcome};
use control::health::HealthState;
use control::messages::{BackendKey, ControlMsg, Snapshot, WorkerEvent};
use control::model::{Backend, Config, Health, Route, RouteDefaults, VHost};
use control::state::{Change, State};
use crossbeam_channel::{select, Receiver, Sender};

use crate::worker::inbox::InboxSender;
use crate::worker::Shared;
use admin::{AdminCall, AdminReply, AdminSettings};
use probe::{ProbeCmd, ProbeResult, Target};

/// Commands to the control thread from main.
#[derive(Debug)]
pub enum ControlCmd {
    /// Drain and stop.
    Shutdown,
    /// SIGHUP: apply the config file's routes now.
    Reload(Vec<control::model::Route>),
    /// A binary upgrade starts (`true`: writes answer 503 until it ends, so
    /// none is lost between the new process reading the state and this one
    /// stopping) or failed (`false`). Answered once no change is pending.
    Freeze {
        /// On or off.
        on: bool,
        /// Told once it holds.
        done: Sender<()>,
    },
}

/// Why a new generation did not reach every worker.
#[derive(Debug)]
pub enum PublishError {
    /// A worker failed outright.
    Failed(String),
    /// These workers did not ack in time (the change stays committed).
    NotAcked {
        /// Lagging worker indexes.
        workers: Vec<usize>,
        /// The generation they lag behind.
        generation: u64,
    },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Failed(r) => write!(f, "{r}"),
            PublishError::NotAcked { workers, generation } => {
                write!(f, "workers {workers:?} did not ack generation {generation}")
            }
        }
    }
}

/// Whether SIGUSR2 is blocked here (and so waited for by `ringway run`'s
/// main thread, which blocks it before starting any thread).
fn sigusr2_is_handled() -> bool {
    // SAFETY: reads this thread's signal mask into a zeroed local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) == 0
            && libc::sigismember(&set, libc::SIGUSR2) == 1
    }
}

/// How long a broadcast waits for every worker's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The control thread's state.
pub struct Controller {
    config: Config,
    state: State,
    state_file: Option<PathBuf>,
    admin: Option<(TcpListener, AdminSettings)>,
    generation: u64,
    workers: Vec<InboxSender>,
    events: Receiver<WorkerEvent>,
    cmds: Receiver<ControlCmd>,
    /// Cross-worker counters (connections refused by maxConnections).
    shared: Arc<Shared>,
    health: HashMap<BackendKey, HealthState>,
    resolved: Vec<(String, u16, SocketAddr)>,
    /// Passively failed backends of routes without active checks: when to try again.
    rest_until: HashMap<BackendKey, Instant>,
    /// New probe target lists go here.
    targets: Option<InboxSender<ProbeCmd>>,
    /// New name lists for the resolver go here, numbered.
    names_tx: Option<Sender<NameList>>,
    /// The last name list sent, and its number.
    names_sent: NameList,
    /// State file writes go here (the persister thread).
    persist_tx: Option<Sender<statefile::Job>>,
    /// Change-log records since the last snapshot, and whether the state
    /// file holds a snapshot of this run's state to append to.
    log: (usize, bool),
    /// The routes of the last publish (see `track_backends`).
    published: Vec<Arc<Route>>,
    /// When each backend that is down went down (for explain).
    down_since: HashMap<BackendKey, Instant>,
    /// A change on its way to being durable, resolved and published.
    pending: Option<Pending>,
    /// Merged statistics.
    stats: control::stats::StatsStore,
    /// Time base for the stats windows.
    started: Instant,
    /// Id of the last stats flush asked of the workers.
    flush_id: u64,
    /// When the next one-second sample of the global totals is due.
    next_sample: Instant,
    /// Automatic certificates, when `acme` is configured (started by `run`).
    acme: Option<acme::AcmeSide>,
    /// A binary upgrade is handing over: changes wait (API writes get 503).
    frozen: bool,
    /// The config file's certificates (loaded and checked at start).
    static_certs: Vec<(control::api::CertMeta, bool)>,
    /// The TLS state of the last snapshot, and a fingerprint of what it
    /// was built from (rebuilt only when that changes).
    tls: Option<(u64, control::messages::Opaque)>,
    /// Cluster mode: the etcd side's view and the write in flight.
    cluster: Option<cluster::ClusterSide>,
}

/// The channels and shared counters a controller talks through.
pub struct Channels {
    /// One inbox per worker.
    pub workers: Vec<InboxSender>,
    /// Events from every worker.
    pub events: Receiver<WorkerEvent>,
    /// Commands from main (signals).
    pub cmds: Receiver<ControlCmd>,
    /// Cross-worker counters.
    pub shared: Arc<Shared>,
}

/// Who asked for a change, and what to answer once it is applied.
enum Origin {
    /// An API write: the reply channel and the answer on success.
    Api { reply: admin::ReplyTx, ok: AdminReply },
    /// SIGHUP.
    Reload,
    /// A certificate ACME issued for this domain.
    Acme(String),
    /// A change from etcd (cluster mode), at this revision.
    Cluster(i64),
}

/// Where a change stands between "validated" and "published".
enum Stage {
    /// Being written to the state file by the persister thread.
    Persisting,
    /// Swapped in; waiting (until the deadline) for the resolver to
    /// answer for backend names the change introduced.
    Resolving { version: u64, until: Instant },
}

/// A change on its way. While one is, the control loop takes no other
/// change (API calls wait in their channel) but keeps serving workers,
/// probes and the resolver: it never blocks on the disk or on DNS.
struct Pending {
    next: Option<Box<State>>,
    origin: Origin,
    stage: Stage,
}

/// How long an API write waits for the names it introduced to resolve
/// before publishing anyway (such a backend stays down until they do).
const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Certificates expiring within this many seconds are warned about.
const EXPIRY_WARNING: i64 = 14 * 24 * 3600;

/// Whether `b`'s active checks are gRPC health checks.
fn health_grpc(r: &Route, b: &Backend) -> bool {
    r.health_of(&b.id).grpc
}

fn each_backend(route: &Route) -> impl Iterator<Item = &Backend> {
    route.pool.backends.iter().chain(route.paths.iter().flat_map(|p| p.pool.backends.iter()))
}

impl Controller {
    /// A controller for `config`, talking to these workers; `static_certs`
    /// describes the config file's certificates.
    pub fn new(
        config: Config,
        state: State,
        state_file: Option<PathBuf>,
        admin: Option<(TcpListener, AdminSettings)>,
        channels: Channels,
        static_certs: Vec<(control::api::CertMeta, bool)>,
    ) -> Controller {
        let Channels { workers, events, cmds, shared } = channels;
        Controller {
            config,
            state,
            state_file,
            admin,
            generation: 0,
            workers,
            events,
            cmds,
            shared,
            health: HashMap::new(),
            resolved: Vec::new(),
            rest_until: HashMap::new(),
            targets: None,
            names_tx: None,
            names_sent: (0, Vec::new()),
            persist_tx: None,
            log: (0, false),
            published: Vec::new(),
            down_since: HashMap::new(),
            pending: None,
            stats: control::stats::StatsStore::default(),
            started: Instant::now(),
            flush_id: 0,
            next_sample: Instant::now(),
            acme: None,
            frozen: false,
            static_certs,
            tls: None,
            cluster: None,
        }
    }

    /// The state came from the state file (and its log), so changes can
    /// be appended to them.
    pub fn resumed(mut self) -> Controller {
        self.log.1 = true;
        self
    }

    /// The TLS state for the next snapshot: the last one while the
    /// certificates and backend TLS settings are unchanged, else rebuilt
    /// (certificates parsed once here, shared by every worker).
    fn tls_state(&mut self) -> control::messages::Opaque {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut trusts = Vec::new();
        for (d, c) in &self.state.certificates {
            (d, &c.cert_pem, &c.key_pem).hash(&mut h);
        }
        for r in &self.state.routes {
            if let Some(ssl) = &r.ssl {
                (&r.key, &ssl.cert, &ssl.key).hash(&mut h);
            }
            for b in each_backend(r) {
                if let Some(t) = &b.tls {
                    let trust = crate::tls::upstream::Trust::of(t);
                    trust.hash(&mut h);
                    trusts.push(trust);
                }
            }
        }
        let fp = h.finish();
        if let Some((f, o)) = &self.tls {
            if *f == fp {
                return o.clone();
            }
        }
        let mut inputs = Vec::new();
        if let Some(t) = &self.config.tls {
            for c in &t.certificates {
                inputs.push(crate::tls::CertInput {
                    cert_pem: &c.cert,
                    key_pem: &c.key,
                    default: c.default,
                    name: None,
                });
            }
        }
        for r in &self.state.routes {
            if let Some(ssl) = &r.ssl {
                let name = Some(r.key.as_str());
                inputs.push(crate::tls::CertInput { cert_pem: &ssl.cert, key_pem: &ssl.key, default: false, name });
            }
        }
        for (d, c) in &self.state.certificates {
            let name = Some(d.as_str());
            inputs.push(crate::tls::CertInput { cert_pem: &c.cert_pem, key_pem: &c.key_pem, default: false, name });
        }
        let (index, skipped) = crate::tls::CertIndex::build(&inputs);
        for s in skipped {
            tracing::warn!(certificate = %s, "certificate not served");
        }
        let (upstream, errors) = crate::tls::upstream::ClientConfigs::build(trusts.iter());
        for e in errors {
            tracing::warn!(error = %e, "backend TLS settings unusable: those backends will fail to connect");
        }
        let (tls13_only, handshake) =
            self.config.tls.as_ref().map_or((false, Duration::from_secs(10)), |t| (t.tls13_only, t.handshake));
        let state = crate::tls::TlsState { index: Arc::new(index), tls13_only, handshake, upstream };
        let o = control::messages::Opaque(Arc::new(state));
        self.tls = Some((fp, o.clone()));
        o
    }

    /// Every served certificate's domain and expiry (config file, routes'
    /// `ssl` and the API), as the last TLS state parsed them.
    fn certificate_expiries(&self) -> Vec<(String, i64)> {
        let state = self.tls.as_ref().and_then(|(_, o)| o.0.clone().downcast::<crate::tls::TlsState>().ok());
        state.map(|s| s.index.expiries().to_vec()).unwrap_or_default()
    }

    fn key(route: &Route, b: &Backend) -> BackendKey {
        BackendKey { route: Arc::from(route.key.as_str()), backend: Arc::from(b.id.as_str()) }
    }

    /// Backend names that need resolving (not IP literals), deduplicated.
    fn names(&self) -> Vec<(String, u16)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for r in &self.state.routes {
            for b in each_backend(r) {
                if b.literal_addr().is_none() && seen.insert((b.hostname.clone(), b.port)) {
                    out.push((b.hostname.clone(), b.port));
                }
            }
        }
        out
    }

    /// Whether the backend names to resolve are surely those of the last
    /// publish: the few routes changed since name only IP literals.
    fn same_names(&self) -> bool {
        let d = control::state::diff_routes(&self.published, &self.state.routes, 64);
        d.is_some_and(|d| d.gone.iter().chain(&d.new).all(|r| each_backend(r).all(|b| b.literal_addr().is_some())))
    }

    fn snapshot(&mut self) -> Arc<Snapshot> {
        let tls = Some(self.tls_state());
        let mut down: HashSet<BackendKey> =
            self.health.iter().filter(|(_, h)| !h.is_up()).map(|(k, _)| k.clone()).collect();
        for (route, backend) in &self.state.maintenance {
            down.insert(BackendKey { route: Arc::from(route.as_str()), backend: Arc::from(backend.as_str()) });
        }
        Arc::new(Snapshot {
            generation: self.generation,
            routes: self.state.routes.clone(),
            resolved: self.resolved.clone(),
            down,
            timeouts: self.config.timeouts,
            limits: self.config.limits,
            http2: self.config.http2,
            tls,
        })
    }

    fn address_of(&self, b: &Backend) -> Option<SocketAddr> {
        b.literal_addr()
            .or_else(|| self.resolved.iter().find(|(h, p, _)| *h == b.hostname && *p == b.port).map(|(_, _, a)| *a))
    }

    /// A TLS backend's probe settings: the workers' trust and server name.
    fn probe_tls(&self, r: &Route, b: &Backend) -> Option<crate::upstream::UpstreamTls> {
        let t = b.tls.as_ref()?;
        let state = self.tls.as_ref().and_then(|(_, o)| o.0.clone().downcast::<crate::tls::TlsState>().ok())?;
        let mut config = state.upstream.get(&crate::tls::upstream::Trust::of(t))?.clone();
        if health_grpc(r, b) {
            // gRPC checks speak HTTP/2: asked for by ALPN.
            let mut c = (*config).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            config = Arc::new(c);
        }
        let name = crate::tls::upstream::server_name(b, &r.host_header)?.to_string();
        let name = rustls::pki_types::ServerName::try_from(name).ok()?;
        Some(crate::upstream::UpstreamTls { config, name })
    }

    fn probe_targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for r in &self.state.routes {
            for b in each_backend(r) {
                // A path rule's backends follow its health settings.
                let health = r.health_of(&b.id);
                let Some(interval) = health.interval else { continue };
                let Some(addr) = self.address_of(b) else { continue };
                // The backend's own name (as a strict server expects), or health.host.
                let host = health.host.clone().unwrap_or_else(|| crate::upstream::Backend::host_of(b));
                out.push(Target {
                    key: Self::key(r, b),
                    addr,
                    host,
                    path: health.path.clone(),
                    interval,
                    down_interval: health.down_interval,
                    timeout: health.timeout,
                    expect: health.expect_status,
                    tcp_only: health.tcp_only,
                    expect_body: health.expect_body.clone(),
                    headers: health.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect(),
                    method: health.method.clone(),
                    tls: self.probe_tls(r, b),
                    tls_wanted: b.tls.is_some(),
                    grpc: health.grpc,
                });
            }
        }
        out
    }

    fn health_of(&self, key: &BackendKey) -> Option<&Health> {
        self.state.routes.iter().find(|r| *r.key == *key.route).map(|r| r.health_of(&key.backend))
    }

    /// Sends to every worker; returns the indexes that are gone.
    fn broadcast(&self, msg: ControlMsg) {
        for w in &self.workers {
            w.send(msg.clone());
        }
    }

    /// Keeps a health entry for every configured backend (and none other):
    /// for the routes that changed since the last publish, or for every
    /// route after a large change.
    fn track_backends(&mut self) {
        let keys = |r: &Route| each_backend(r).map(|b| Self::key(r, b)).collect::<Vec<_>>();
        match control::state::diff_routes(&self.published, &self.state.routes, 64) {
            Some(d) => {
                let new: HashSet<BackendKey> = d.new.iter().flat_map(|r| keys(r)).collect();
                for k in d.gone.iter().flat_map(|r| keys(r)).filter(|k| !new.contains(k)) {
                    self.health.remove(&k);
                }
                for k in new {
                    self.health.entry(k).or_default();
                }
            }
            None => {
                let live: HashSet<BackendKey> = self.state.routes.iter().flat_map(|r| keys(r)).collect();
                self.health.retain(|k, _| live.contains(k));
                for k in live {
                    self.health.entry(k).or_default();
                }
            }
        }
        self.published.clone_from(&self.state.routes);
        let health = &self.health;
        self.down_since.retain(|k, _| health.contains_key(k));
    }

    /// Broadcasts a new generation and waits for every ack (bounded).
    /// Returns the workers that did not ack, or a startup failure.
    fn publish(&mut self) -> Result<(), PublishError> {
        self.generation += 1;
        self.track_backends();
        let snap = self.snapshot();
        let generation = snap.generation;
        self.broadcast(ControlMsg::Apply(snap));
        let mut acked = vec![false; self.workers.len()];
        let deadline = Instant::now() + ACK_TIMEOUT;
        while acked.iter().any(|a| !a) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(WorkerEvent::Ack { worker, generation: g }) if g >= generation => {
                    if let Some(a) = acked.get_mut(worker) {
                        *a = true;
                    }
                }
                Ok(WorkerEvent::Failed { worker, reason }) => {
                    return Err(PublishError::Failed(format!("worker {worker}: {reason}")))
                }
                Ok(other) => self.on_event(other),
                Err(_) => {
                    let workers: Vec<usize> = (0..acked.len()).filter(|&i| !acked[i]).collect();
                    return Err(PublishError::NotAcked { workers, generation });
                }
            }
        }
        Ok(())
    }

    fn in_maintenance(&self, key: &BackendKey) -> bool {
        self.state.maintenance.contains(&(key.route.to_string(), key.backend.to_string()))
    }

    fn flip(&mut self, key: &BackendKey, up: bool) {
        tracing::info!(route = %key.route, backend = %key.backend, up, "backend health changed");
        if up {
            self.down_since.remove(key);
        } else {
            self.down_since.entry(key.clone()).or_insert_with(Instant::now);
        }
        // Maintenance overrides checks: a backend in maintenance stays out.
        if !self.in_maintenance(key) {
            self.broadcast(ControlMsg::Health { key: key.clone(), up });
        }
        // A down backend is probed on its own faster schedule.
        if let Some(tx) = &self.targets {
            let _ = tx.send(ProbeCmd::Health { key: key.clone(), down: !up });
        }
    }

    /// Starts applying a validated `change` (which made `next`): its
    /// change-log record, or a full snapshot, goes to the persister thread
    /// (the answer comes back in `on_persisted`); without a state file,
    /// straight to swapping it in.
    fn commit(&mut self, next: State, change: &Change, origin: Origin) {
        let Some(tx) = &self.persist_tx else {
            self.pending = Some(Pending { next: Some(Box::new(next)), origin, stage: Stage::Persisting });
            self.on_persisted(Ok(()));
            return;
        };
        let record = control::state::log_record(change, &next).filter(|_| self.log.1);
        let job = match record.map(|r| statefile::encode_record(&r)) {
            Some(Ok(line)) => {
                self.log.0 += 1;
                Ok(statefile::Job::Append(line))
            }
            Some(Err(e)) => Err(e),
            None => {
                self.log = (0, true);
                Ok(statefile::Job::Snapshot(Box::new(next.clone())))
            }
        };
        let mut sent = job.and_then(|j| tx.send(j).map_err(|_| std::io::Error::other("the persister thread is gone")));
        if sent.is_ok() && self.log.0 >= statefile::COMPACT_EVERY {
            self.log.0 = 0;
            let compact = statefile::Job::Compact(Box::new(next.clone()));
            sent = tx.send(compact).map_err(|_| std::io::Error::other("the persister thread is gone"));
        }
        self.pending = Some(Pending { next: Some(Box::new(next)), origin, stage: Stage::Persisting });
        if let Err(e) = sent {
            self.on_persisted(Err(e));
        }
    }

    /// The state file write finished: on success the change is swapped in
    /// and, once any new backend names are resolved, published.
    fn on_persisted(&mut self, result: std::io::Result<()>) {
        let Some(mut p) = self.pending.take() else { return };
        if let Err(e) = result {
            // Start over from a full snapshot with the next change.
            self.log = (0, false);
            if let Some(path) = &self.state_file {
                tracing::error!(path = %path.display(), error = %e, "state file write failed: change refused");
            }
            let reply = AdminReply::json(
                500,
                &serde_json::json!({"error": "persistFailed", "field": null, "message": e.to_string()}),
            );
            self.answer(p.origin, Err(reply));
            return;
        }
        if let Some(next) = p.next.take() {
            self.state = *next;
        }
        let (new_names, version) = if self.same_names() {
            (false, None)
        } else {
            let names = self.names();
            let new_names = names.iter().any(|n| !self.names_sent.1.contains(n));
            (new_names, self.send_names(names))
        };
        match (new_names, version) {
            (true, Some(version)) => {
                p.stage = Stage::Resolving { version, until: Instant::now() + RESOLVE_WAIT };
                self.pending = Some(p);
            }
            _ => self.publish_change(p.origin),
        }
    }

    /// Sends the current backend names to the resolver; returns the
    /// list's number when it changed (an answer for it will come).
    fn send_names(&mut self, names: Vec<(String, u16)>) -> Option<u64> {
        if names == self.names_sent.1 {
            return None;
        }
        let tx = self.names_tx.as_ref()?;
        let version = self.names_sent.0 + 1;
        tx.send((version, names.clone())).ok()?;
        self.names_sent = (version, names);
        Some(version)
    }

    /// The resolver answered for list `version` (or the wait ran out):
    /// a change waiting for it is published.
    fn on_resolved(&mut self, version: u64, addrs: Vec<(String, u16, SocketAddr)>) {
        let changed = addrs != self.resolved;
        self.resolved = addrs;
        if let Some(Pending { stage: Stage::Resolving { version: want, .. }, .. }) = &self.pending {
            if version >= *want {
                if let Some(p) = self.pending.take() {
                    self.publish_change(p.origin);
                }
                return;
            }
        }
        if changed && self.pending.is_none() {
            tracing::info!("backend addresses changed: publishing");
            if let Err(e) = self.publish() {
                tracing::warn!(error = %e, "publish after re-resolution");
            }
            if let Some(tx) = &self.targets {
                let _ = tx.send(ProbeCmd::Targets(self.probe_targets()));
            }
        }
    }

    /// A change waiting on names past its deadline is published anyway.
    fn resolve_timeout(&mut self) {
        if let Some(Pending { stage: Stage::Resolving { until, .. }, .. }) = &self.pending {
            if *until <= Instant::now() {
                tracing::warn!("backend names did not resolve in time: publishing (those backends stay down)");
                if let Some(p) = self.pending.take() {
                    self.publish_change(p.origin);
                }
            }
        }
    }

    /// Publishes the swapped-in state to every worker and the prober, then
    /// answers whoever asked.
    fn publish_change(&mut self, origin: Origin) {
        let result = self.publish();
        // Probes follow the routes.
        if let Some(tx) = &self.targets {
            let _ = tx.send(ProbeCmd::Targets(self.probe_targets()));
        }
        let result = match result {
            Ok(()) => Ok(()),
            Err(PublishError::NotAcked { workers, generation }) => Err(AdminReply::json(
                503,
                &serde_json::json!({"error": "notAcked", "workers": workers, "generation": generation,
                    "message": "the change is committed; these workers have not applied it yet"}),
            )),
            Err(PublishError::Failed(r)) => {
                Err(AdminReply::json(503, &serde_json::json!({"error": "workerFailed", "field": null, "message": r})))
            }
        };
        self.answer(origin, result);
    }

    /// Answers the API call (or logs the reload) a change came from.
    fn answer(&mut self, origin: Origin, result: Result<(), AdminReply>) {
        match (origin, result) {
            (Origin::Api { reply, ok }, Ok(())) => {
                let _ = reply.send(ok);
            }
            (Origin::Api { reply, .. }, Err(a)) => {
                let _ = reply.send(a);
            }
            (Origin::Reload, Ok(())) => {
                tracing::info!(generation = self.generation, "config file routes applied (SIGHUP)")
            }
            (Origin::Reload, Err(a)) => {
                tracing::warn!(status = a.status, "reload: {}", String::from_utf8_lossy(&a.body))
            }
            (Origin::Acme(domain), Ok(())) => {
                tracing::info!(%domain, generation = self.generation, "ACME certificate installed")
            }
            (Origin::Acme(domain), Err(a)) => {
                let why = format!("storing the certificate failed: {}", String::from_utf8_lossy(&a.body));
                self.acme_store_failed(&domain, why);
            }
            (Origin::Cluster(revision), result) => self.cluster_applied(revision, result),
        }
    }

    fn health_json(&self) -> (u16, serde_json::Value) {
        let total = self.health.len();
        let healthy = self.health.iter().filter(|(k, h)| h.is_up() && !self.in_maintenance(k)).count();
        let ok = healthy > 0 || total == 0;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let warnings: Vec<serde_json::Value> = self
            .certificate_expiries()
            .into_iter()
            .filter(|(_, not_after)| not_after - now < EXPIRY_WARNING)
            .map(|(d, not_after)| {
                serde_json::json!({"certificate": d, "notAfter": not_after,
                    "message": format!("certificate for {d} expires in {} days", (not_after - now).max(0) / 86400)})
            })
            .collect();
        let mut body =
            serde_json::json!({"status": if ok { "healthy" } else { "unhealthy" }, "healthy": healthy, "total": total});
        if let (false, Some(m)) = (warnings.is_empty(), body.as_object_mut()) {
            m.insert("warnings".into(), serde_json::Value::Array(warnings));
        }
        (if ok { 200 } else { 503 }, body)
    }

    fn static_config(&self) -> serde_json::Value {
        let c = &self.config;
        let ms = |d: Duration| d.as_millis() as u64;
        serde_json::json!({
            "listen": c.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "workers": self.workers.len(),
            "admin": c.admin.as_ref().map(|a| serde_json::json!({"listen": a.listen.to_string(),
                "token": a.token.as_ref().map(|_| "<redacted>")})),
            "timeouts": {"connectMs": ms(c.timeouts.connect), "upstreamMs": ms(c.timeouts.upstream),
                "clientHeadMs": ms(c.timeouts.client_head), "idleMs": ms(c.timeouts.idle),
                "drainMs": ms(c.timeouts.drain), "queueMs": ms(c.timeouts.queue)},
            "limits": {"maxHeadBytes": c.limits.max_head_bytes, "maxHeaders": c.limits.max_headers,
                "maxBodyBytes": c.limits.max_body_bytes, "maxConnections": c.limits.max_connections},
            "stateFile": self.state_file.as_ref().map(|p| p.display().to_string()),
        })
    }

    /// Asks every worker for its counters and merges the answers (bounded),
    /// so totals are exact for every request completed before the call.
    /// Returns whether every worker answered.
    fn flush_stats(&mut self) -> bool {
        self.flush_id += 1;
        let id = self.flush_id;
        self.broadcast(ControlMsg::FlushStats { id });
        let mut answered = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while answered < self.workers.len() {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(WorkerEvent::Stats { worker, id: got, delta }) => {
                    let now = self.started.elapsed().as_secs();
                    self.stats.merge(worker, &delta, now);
                    if got == Some(id) {
                        answered += 1;
                    }
                }
                Ok(other) => self.on_event(other),
                Err(_) => break,
            }
        }
        let routes: Vec<String> = self.state.routes.iter().map(|r| r.key.clone()).collect();
        let backends = self.backend_keys();
        self.stats.retain(&routes, &backends);
        answered == self.workers.len()
    }

    fn backend_keys(&self) -> Vec<BackendKey> {
        self.state.routes.iter().flat_map(|r| each_backend(r).map(move |b| Self::key(r, b))).collect()
    }

    fn stats_reply(&mut self, path: &str) -> AdminReply {
        self.flush_stats();
        let now = self.started.elapsed().as_secs();
        let keys = self.backend_keys();
        let view = StateView { health: &self.health, maintenance: &self.state.maintenance };
        if path == "/metrics" {
            let mut text = self.stats.prometheus(&keys, &view);
            crate::tls::metrics(&mut text, &self.certificate_expiries());
            self.acme_metrics(&mut text);
            self.cluster_metrics(&mut text);
            return AdminReply {
                status: 200,
                body: text.into_bytes(),
                content_type: "text/plain; version=0.0.4",
                etag: None,
                headers: "",
                allow: None,
            };
        }
        match path.strip_prefix("/api/v1/stats").map(|r| r.trim_matches('/')) {
            Some("") => {
                let mut v = self.stats.json(now, &keys, &view);
                v["rejectedConnections"] =
                    serde_json::json!(self.shared.rejected_connections.load(std::sync::atomic::Ordering::Relaxed));
                AdminReply::json(200, &v)
            }
            Some(v) => match VHost::parse(v).map(|h| h.key()).filter(|k| self.state.route(k).is_some()) {
                Some(k) => AdminReply::json(200, &self.stats.route_json(&k, now, &keys, &view)),
                None => AdminReply::json(
                    404,
                    &serde_json::json!({"error": "notFound", "field": null, "message": format!("no route {v:?}")}),
                ),
            },
            None => AdminReply::json(
                404,
                &serde_json::json!({"error": "notFound", "field": null, "message": "no such path"}),
            ),
        }
    }

    fn on_admin(&mut self, call: AdminCall) {
        let r = &call.request;
        let live_view = r.path == "/metrics" || r.path == "/api/v1/stats" || r.path.starts_with("/api/v1/stats/");
        let reply = if live_view {
            if r.method == "GET" {
                let path = r.path.clone();
                self.stats_reply(&path)
            } else {
                AdminReply::not_allowed("GET")
            }
        } else if r.path == "/api/v1/info" || r.path == "/api/v1/history" {
            if r.method == "GET" {
                let body = if r.path == "/api/v1/info" { self.info_json() } else { self.stats.history_json() };
                AdminReply::json(200, &body)
            } else {
                AdminReply::not_allowed("GET")
            }
        } else if r.path == "/api/v1/cluster" {
            if r.method == "GET" {
                self.cluster_json()
            } else {
                AdminReply::not_allowed("GET")
            }
        } else if r.path == "/api/v1/upgrade" {
            if r.method != "POST" {
                AdminReply::not_allowed("POST")
            } else {
                // The main thread owns the handover: it waits for SIGUSR2,
                // blocked in every thread. Where nothing does (ringway
                // embedded in another program), the signal would kill it.
                if sigusr2_is_handled() {
                    // SAFETY: kill(2) on our own pid with a signal main waits for.
                    unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
                    AdminReply::json(202, &serde_json::json!({"upgrading": true, "pid": std::process::id()}))
                } else {
                    AdminReply::json(
                        501,
                        &serde_json::json!({"error": "notSupported", "field": null,
                            "message": "this process does not handle upgrades (not started by `ringway run`)"}),
                    )
                }
            }
        } else if r.path == "/api/v1/explain" {
            // Fresh in-flight counts, for the admission check.
            self.flush_stats();
            self.explain_reply(&r.method, &r.query)
        } else if r.path.starts_with("/api/v1/cache/") {
            let (method, path, query) = (r.method.clone(), r.path.clone(), r.query.clone());
            self.purge_reply(&method, &path, &query)
        } else if r.path == "/health" {
            if r.method == "GET" || r.method == "HEAD" {
                let (status, body) = self.health_json();
                AdminReply::json(status, &body)
            } else {
                AdminReply::not_allowed("GET, HEAD")
            }
        } else {
            // The REST API proper (its first attempt).
            return self.api_call(call, 1);
        };
        let _ = call.reply.send(reply);
    }

    /// A REST API call against the state; `attempt` counts how often a
    /// cluster write has run (it runs again after losing a race).
    fn api_call(&mut self, call: AdminCall, attempt: u32) {
        let Some(call) = self.cluster_catch_up(call, attempt) else { return };
        let r = &call.request;
        let defaults = RouteDefaults::of(&self.config);
        let static_config = self.static_config();
        // ACME's view goes only into the certificate lists.
        let lists_certificates = r.path.starts_with("/api/v1/certificates") || r.path == "/api/v1/config";
        let acme = if lists_certificates { self.acme_status() } else { None };
        let ctx = ApiContext {
            defaults: &defaults,
            static_config: &static_config,
            check_certificate: &crate::tls::check_certificate,
            static_certificates: &self.static_certs,
            acme: acme.as_ref(),
        };
        let req = ApiRequest {
            method: &r.method,
            path: &r.path,
            query: &r.query,
            body: &r.body,
            content_type: r.content_type.as_deref(),
            if_match: r.if_match.as_deref(),
        };
        let reply = match control::api::handle(&self.state, &ctx, &req) {
            Outcome::Reply(resp) => {
                let mut a = AdminReply::json(resp.status, &resp.body);
                a.etag = resp.etag;
                a.allow = resp.allow;
                a
            }
            Outcome::DryRun { next, reply } => {
                let mut body = reply.body;
                body["impact"] = self.impact(&next);
                AdminReply::json(reply.status, &body)
            }
            Outcome::Commit { .. } if self.frozen => AdminReply::json(
                503,
                &serde_json::json!({"error": "upgrading", "field": null,
                    "message": "a binary upgrade is handing over; send the change again in a moment"}),
            ),
            Outcome::Commit { change, next, reply } if self.cluster.is_some() => {
                tracing::info!(change = ?change_name(&change), based_on = self.state.generation, "api change to etcd");
                self.cluster_write(call, change, *next, reply, attempt);
                return;
            }
            Outcome::Commit { change, next, reply } => {
                tracing::info!(change = ?change_name(&change), generation = next.generation, "api change");
                let mut ok = AdminReply::json(reply.status, &reply.body);
                ok.etag = reply.etag;
                // Answered once durable, resolved and acked.
                self.commit(*next, &change, Origin::Api { reply: call.reply, ok });
                return;
            }
        };
        let _ = call.reply.send(reply);
    }

    fn on_reload(&mut self, routes: Vec<Route>) {
        if self.cluster.is_some() {
            tracing::warn!("SIGHUP in cluster mode: not applied (routes live in etcd; change them through the API)");
            return;
        }
        if self.frozen {
            tracing::warn!("SIGHUP during a binary upgrade: not applied (the new process reads the config file)");
            return;
        }
        let mut next = self.state.clone();
        let change = Change::ReplaceRoutes { routes };
        if let Err(e) = next.apply(&change) {
            tracing::warn!(error = ?e, "reload refused");
            return;
        }
        self.commit(next, &change, Origin::Reload);
    }

    fn on_event(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::PassiveFailure { key, worker } => {
                tracing::debug!(worker, backend = %key.backend, "passive failure");
                let active_checks = self.health_of(&key).map(|h| (h.interval.is_some(), h.fail_timeout));
                let Some(state) = self.health.get_mut(&key) else { return };
                if state.passive_failure().is_some() {
                    self.flip(&key, false);
                }
                if let Some((false, rest)) = active_checks {
                    self.rest_until.insert(key, Instant::now() + rest);
                }
            }
            WorkerEvent::Stats { worker, delta, .. } => {
                let now = self.started.elapsed().as_secs();
                self.stats.merge(worker, &delta, now);
            }
            WorkerEvent::Ack { .. } | WorkerEvent::Exited { .. } | WorkerEvent::Purged { .. } => {}
            WorkerEvent::Failed { worker, reason } => tracing::error!(worker, %reason, "worker failed"),
        }
    }

    fn on_probe(&mut self, r: ProbeResult) {
        let Some((rise, fall)) = self.health_of(&r.key).map(|h| (h.rise, h.fall)) else { return };
        let Some(state) = self.health.get_mut(&r.key) else { return };
        if let Some(up) = state.record(r.ok, rise, fall) {
            self.flip(&r.key, up);
        }
    }

    /// Once a second: a sample of the global totals for the dashboard.
    fn sample_history(&mut self) {
        let now = Instant::now();
        if now >= self.next_sample {
            self.stats.sample(self.started.elapsed().as_secs());
            self.next_sample = now + Duration::from_secs(1);
        }
    }

    /// `GET /api/v1/info`: what runs, since when, at which generation.
    fn info_json(&self) -> serde_json::Value {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let uptime = self.started.elapsed().as_secs();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": uptime,
            "startedAt": unix.saturating_sub(uptime),
            "workers": self.workers.len(),
            "generation": self.state.generation,
            "routes": self.state.routes.len(),
            "pid": std::process::id(),
            "cluster": self.cluster.is_some(),
        })
    }

    /// Rested backends (routes without active checks) get their trial.
    fn wake_rested(&mut self) {
        let now = Instant::now();
        let due: Vec<BackendKey> = self.rest_until.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for k in due {
            self.rest_until.remove(&k);
            if let Some(state) = self.health.get_mut(&k) {
                if state.set_up(true).is_some() {
                    self.flip(&k, true);
                }
            }
        }
    }

    /// The control loop. `ready` hears once whether the start succeeded.
    pub fn run(mut self, ready: Sender<Result<(), String>>) {
        // Blocking work runs on helper threads: names on the resolver,
        // state file writes on the persister.
        let (names_tx, names_rx) = crossbeam_channel::unbounded();
        let (resolved_tx, resolved_rx) = crossbeam_channel::unbounded();
        self.names_tx = Some(names_tx);
        let resolver =
            std::thread::Builder::new().name("ringway-resolver".into()).spawn(move || resolver(names_rx, resolved_tx));
        if let Err(e) = &resolver {
            tracing::error!(error = %e, "resolver did not start");
        }
        let (persisted_tx, persisted_rx) = crossbeam_channel::unbounded();
        if let Some(path) = self.state_file.clone() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let based = self.log.1;
            let spawned = std::thread::Builder::new()
                .name("ringway-persist".into())
                .spawn(move || statefile::persister(path, based, rx, persisted_tx));
            if let Err(e) = spawned {
                let _ = ready.send(Err(format!("state file writer: {e}")));
                return;
            }
            if !based {
                // A snapshot of the starting state, written while the API
                // is idle, so that even the first change only appends (if
                // it fails, that change is refused and the next writes a
                // snapshot itself).
                let _ = tx.send(statefile::Job::Compact(Box::new(self.state.clone())));
                self.log = (0, true);
            }
            self.persist_tx = Some(tx);
        }
        // Cluster mode: etcd's config, when it answers within dialMs (else
        // this node starts from its cache and catches up once it does).
        let mut cluster_rx = crossbeam_channel::never();
        if let Some(config) = self.config.cluster.clone() {
            match cluster::start(&config, &self.state) {
                Ok((side, events)) => (self.cluster, cluster_rx) = (Some(side), events),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
            self.cluster_first_load(&cluster_rx, config.dial + Duration::from_millis(500));
        }
        // The first answer comes before any traffic (bounded: a name that
        // has not resolved by then leaves its backend down until it does).
        if let Some(version) = self.send_names(self.names()) {
            let deadline = Instant::now() + START_RESOLVE_WAIT;
            while let Ok((v, addrs)) = resolved_rx.recv_deadline(deadline) {
                self.resolved = addrs;
                if v >= version {
                    break;
                }
            }
        }
        if let Err(e) = self.publish() {
            let _ = ready.send(Err(e.to_string()));
            self.broadcast(ControlMsg::Shutdown { drain: Duration::ZERO });
            return;
        }
        release_free_memory();
        let (target_tx, target_rx) = crate::worker::inbox::inbox();
        let (probe_tx, probe_rx) = crossbeam_channel::unbounded();
        let _ = target_tx.send(ProbeCmd::Targets(self.probe_targets()));
        self.targets = Some(target_tx);
        // The control I/O thread: probes, and the admin listener if any.
        let (admin_tx, mut admin_rx) = crossbeam_channel::bounded::<AdminCall>(64);
        let admin = self.admin.take().map(|(listener, settings)| io::AdminSide { listener, settings, calls: admin_tx });
        if admin.is_none() {
            // No listener: a closed channel would make `select!` spin.
            admin_rx = crossbeam_channel::never();
        }
        let driver = crate::runtime::Driver::Auto;
        let spawned = std::thread::Builder::new()
            .name("ringway-control-io".into())
            .spawn(move || io::run(target_rx, probe_tx, admin, driver));
        if let Err(e) = spawned {
            let _ = ready.send(Err(format!("control I/O thread: {e}")));
            self.shutdown(&admin_rx);
            return;
        }
        let mut acme_rx = crossbeam_channel::never();
        if let Some(config) = self.config.acme.clone() {
            match acme::start(config, self.state_file.as_deref()) {
                Ok((side, events)) => (self.acme, acme_rx) = (Some(side), events),
                Err(e) => {
                    let _ = ready.send(Err(format!("ACME helper thread: {e}")));
                    self.shutdown(&admin_rx);
                    return;
                }
            }
        }
        let mut probe_rx = probe_rx;
        let mut resolved_rx = resolved_rx;
        let mut persisted_rx = persisted_rx;
        let _ = ready.send(Ok(()));
        // While a change is pending, new changes (API calls, SIGHUP) wait.
        let (no_calls, no_cmds) = (crossbeam_channel::never(), crossbeam_channel::never());
        loop {
            let resolving = match &self.pending {
                Some(Pending { stage: Stage::Resolving { until, .. }, .. }) => Some(*until),
                _ => None,
            };
            let wait = self
                .rest_until
                .values()
                .copied()
                .chain(resolving)
                .chain(Some(self.next_sample))
                .chain(self.acme.as_ref().map(|a| a.next_check))
                .chain(self.cluster_due())
                .min()
                .map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            // (A cluster write in flight does not hold calls back: reads
            // are answered meanwhile and further writes queue behind it.)
            let busy = self.pending.is_some();
            let (calls, cmds) = if busy { (&no_calls, &no_cmds) } else { (&admin_rx, &self.cmds) };
            // etcd's changes wait while a change is being published.
            let no_cluster = crossbeam_channel::never();
            let cluster_events = if self.pending.is_some() { &no_cluster } else { &cluster_rx };
            select! {
                recv(self.events) -> ev => match ev {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                },
                // A helper thread that ended closes its channel: stop
                // selecting on it (a closed channel is always ready).
                recv(probe_rx) -> r => match r {
                    Ok(r) => self.on_probe(r),
                    Err(_) => probe_rx = crossbeam_channel::never(),
                },
                recv(calls) -> call => match call {
                    Ok(call) => self.on_admin(call),
                    Err(_) => admin_rx = crossbeam_channel::never(),
                },
                recv(acme_rx) -> ev => match ev {
                    Ok(ev) => self.on_acme(ev),
                    Err(_) => acme_rx = crossbeam_channel::never(),
                },
                recv(cluster_events) -> ev => match ev {
                    Ok(ev) => self.on_cluster(ev),
                    Err(_) => {
                        cluster_rx = crossbeam_channel::never();
                        self.cluster_helper_gone();
                    }
                },
                recv(persisted_rx) -> r => match r {
                    Ok(r) => self.on_persisted(r),
                    Err(_) => {
                        persisted_rx = crossbeam_channel::never();
                        self.on_persisted(Err(std::io::Error::other("the persister thread is gone")));
                    }
                },
                recv(resolved_rx) -> r => match r {
                    Ok((version, addrs)) => self.on_resolved(version, addrs),
                    Err(_) => {
                        resolved_rx = crossbeam_channel::never();
                        self.on_resolved(u64::MAX, self.resolved.clone());
                    }
                },
                recv(cmds) -> cmd => match cmd {
                    Ok(ControlCmd::Reload(routes)) => self.on_reload(routes),
                    Ok(ControlCmd::Freeze { on, done }) => {
                        // (Commands wait while a change is pending: none is
                        // now.) A freeze nobody waits for any more (the
                        // upgrade gave up) is not kept.
                        let waited = done.send(()).is_ok();
                        self.frozen = on && waited;
                    }
                    Ok(ControlCmd::Shutdown) | Err(_) => break,
                },
                default(wait) => {},
            }
            self.wake_rested();
            self.sample_history();
            self.acme_tick();
            self.cluster_tick();
            self.resolve_timeout();
        }
        self.flush_cache(true);
        self.targets = None;
        self.acme = None;
        self.names_tx = None;
        self.persist_tx = None;
        self.shutdown(&admin_rx);
    }

    /// Drains the workers. API calls that arrive meanwhile (accepted before
    /// the listener closed, or, after an upgrade, by this process's copy of
    /// it) are answered 503 at once rather than left waiting for the
    /// drain: after an upgrade, the new process serves the API.
    fn shutdown(&mut self, admin: &crossbeam_channel::Receiver<AdminCall>) {
        let drain = self.config.timeouts.drain;
        self.broadcast(ControlMsg::Shutdown { drain });
        let deadline = Instant::now() + drain + Duration::from_secs(2);
        let mut left = self.workers.len();
        let mut admin = admin.clone();
        while left > 0 {
            select! {
                recv(self.events) -> ev => match ev {
                    Ok(WorkerEvent::Exited { .. }) => left -= 1,
                    Ok(_) => {}
                    Err(_) => break,
                },
                recv(admin) -> call => match call {
                    Ok(call) => {
                        let reply = AdminReply::error(503, "shuttingDown", "this process is shutting down");
                        let _ = call.reply.send(reply);
                    }
                    Err(_) => admin = crossbeam_channel::never(),
                },
                default(deadline.saturating_duration_since(Instant::now())) => break,
            }
        }
    }
}

/// How often backend names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Hands the heap's free pages back to the system (glibc keeps them):
/// after start, what parsing the config and building every table left
/// behind (megabytes with 10,000 routes) would otherwise stay resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of every arena to the
    // system; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves names (blocking). A name that does not resolve is left out:
/// its backend is down until it does.
fn resolve(names: &[(String, u16)]) -> Vec<(String, u16, SocketAddr)> {
    let mut out = Vec::new();
    for (host, port) in names {
        match (host.as_str(), *port).to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => out.push((host.clone(), *port, a)),
                None => tracing::warn!(host = %host, "backend name resolves to nothing: down"),
            },
            Err(e) => tracing::warn!(host = %host, error = %e, "backend name does not resolve: down"),
        }
    }
    out
}

/// Backend names (host, port) to resolve, numbered.
type NameList = (u64, Vec<(String, u16)>);
/// The resolver's answer for a numbered list: the names that resolved.
type Resolved = (u64, Vec<(String, u16, SocketAddr)>);

/// How long the start waits for the first resolution.
const START_RESOLVE_WAIT: Duration = Duration::from_secs(5);

/// The resolver thread (the control side's blocking helper for DNS): a new
/// name list is resolved at once and answered with its number; the
/// current list is resolved again every `RESOLVE_EVERY`.
fn resolver(names: Receiver<NameList>, out: Sender<Resolved>) {
    let mut current: NameList = (0, Vec::new());
    loop {
        match names.recv_timeout(RESOLVE_EVERY) {
            Ok(n) => current = n,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if current.1.is_empty() => continue,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if out.send((current.0, resolve(&current.1))).is_err() {
            return;
        }
    }
}

fn change_name(c: &Change) -> &'static str {
    match c {
        Change::PutRoute { create: true, .. } => "createRoute",
        Change::PutRoute { .. } => "replaceRoute",
        Change::DeleteRoute { .. } => "deleteRoute",
        Change::AddBackend { .. } => "addBackend",
        Change::DeleteBackend { .. } => "deleteBackend",
        Change::Maintenance { .. } => "maintenance",
        Change::PutCertificate { .. } => "putCertificate",
        Change::DeleteCertificate { .. } => "deleteCertificate",
        Change::ReplaceRoutes { .. } => "replaceRoutes",
    }
}

/// The backend states the stats view reports.
struct StateView<'a> {
    health: &'a HashMap<BackendKey, HealthState>,
    maintenance: &'a std::collections::BTreeSet<(String, String)>,
}

impl control::stats::BackendState for StateView<'_> {
    fn state_of(&self, key: &BackendKey) -> &'static str {
        if self.maintenance.contains(&(key.route.to_string(), key.backend.to_string())) {
            "maintenance"
        } else if self.health.get(key).is_some_and(|h| !h.is_up()) {
            "down"
        } else {
            "up"
        }
    }
}
