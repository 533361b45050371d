//! Cluster mode on the control thread: API writes become etcd
//! transactions, and the config keys' changes (from the etcd helper's
//! watch) are applied through the same swap → publish → ack path as a
//! local change. The etcd side itself is `etcd.rs` (built with the
//! `cluster` feature).
//!
//! An API write: validated against this node's state, sent to etcd with
//! the revision that state reflects (the transaction fails if a key it
//! touches, or the write marker, changed since); answered once this
//! node's workers have applied the revision it made (read-your-writes),
//! or, with `?wait=cluster`, once every registered node has. A write that
//! lost a race without `If-Match` is run again after this node caught up
//! (bounded); with `If-Match` it gets 412. One write is in flight at a
//! time; reads are answered meanwhile and further writes queue (bounded).

use std::time::{Duration, Instant};

use control::api::ApiResponse;
use control::cluster::Layout;
use control::model::RouteDefaults;
use control::state::{Change, State};
use serde_json::{json, Value};

use super::admin::{AdminCall, AdminReply};
use super::{Controller, Origin, Pending, Stage};

#[cfg(feature = "cluster")]
mod etcd;
mod messages;

use messages::{ClusterCmd, ClusterEvent, NodeInfo, WriteResult};

/// Attempts of a write that keeps losing races (without `If-Match`).
const MAX_ATTEMPTS: u32 = 5;
/// How long a committed write waits for this node to apply it.
const APPLY_BOUND: Duration = Duration::from_secs(10);
/// The local cache (the state file) is rewritten at most this often.
const CACHE_EVERY: Duration = Duration::from_secs(1);
/// How long a write naming a revision no node reports yet waits for it.
const CATCH_UP_BOUND: Duration = Duration::from_secs(1);
/// Writes waiting behind the one in flight, at most.
const MAX_QUEUED: usize = 64;
/// Operations per write (etcd takes 128 per transaction; the marker and
/// the compares come on top).
const MAX_OPS: usize = 120;

/// Where an API write stands.
enum WriteStage {
    /// Sent to etcd.
    Sent,
    /// Committed at this revision; waiting for this node to apply it.
    Applying(i64),
    /// Applied here; waiting for every node (`?wait=cluster`).
    Waiting(i64),
    /// Lost a race; run again once this node applied this revision.
    Retry(i64),
    /// Names (If-Match) a revision this node has not applied yet: run
    /// once it has, or at the deadline (then a stale tag gets its 412).
    CatchUp(i64),
}

/// The API write in flight (one at a time, like local changes).
pub(super) struct ClusterWrite {
    id: u64,
    call: AdminCall,
    reply: ApiResponse,
    stage: WriteStage,
    attempts: u32,
    wait_cluster: bool,
    until: Instant,
}

/// The control thread's view of the cluster.
pub(super) struct ClusterSide {
    tx: tokio::sync::mpsc::UnboundedSender<ClusterCmd>,
    layout: Layout,
    connected: bool,
    last_error: Option<String>,
    nodes: Vec<NodeInfo>,
    write: Option<ClusterWrite>,
    /// Writes waiting for the one in flight (run again when their turn
    /// comes: validated against the state as it is then), with their
    /// attempt.
    queued: std::collections::VecDeque<(AdminCall, u32)>,
    next_id: u64,
    /// The state changed since the cache was last written, and when it was.
    cache: (bool, Instant),
}

/// `If-Match: "N"` (one tag, weak or strong): N.
fn single_tag(if_match: Option<&str>) -> Option<i64> {
    let t = if_match?.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

fn unavailable(why: &str) -> AdminReply {
    AdminReply::json(
        503,
        &json!({"error": "clusterUnavailable", "field": null,
            "message": format!("{why}; changes are refused until etcd answers (this node serves its last config)")}),
    )
}

/// Starts the etcd helper (or says why it cannot run).
pub(super) fn start(
    config: &control::model::Cluster,
    state: &State,
) -> Result<(ClusterSide, crossbeam_channel::Receiver<ClusterEvent>), String> {
    let layout = Layout::new(&config.prefix);
    let seed = control::cluster::seed(&layout, state);
    let (tx, rx) = spawn(config, seed)?;
    let side = ClusterSide {
        tx,
        layout,
        connected: false,
        last_error: None,
        nodes: Vec::new(),
        write: None,
        queued: std::collections::VecDeque::new(),
        next_id: 0,
        cache: (false, Instant::now()),
    };
    Ok((side, rx))
}

type Spawned = (tokio::sync::mpsc::UnboundedSender<ClusterCmd>, crossbeam_channel::Receiver<ClusterEvent>);

#[cfg(feature = "cluster")]
fn spawn(config: &control::model::Cluster, seed: Vec<(String, String)>) -> Result<Spawned, String> {
    etcd::start(config.clone(), seed).map_err(|e| format!("etcd helper thread: {e}"))
}

#[cfg(not(feature = "cluster"))]
fn spawn(_: &control::model::Cluster, _: Vec<(String, String)>) -> Result<Spawned, String> {
    Err("cluster mode is not in this build (cargo build --features cluster)".into())
}

impl Controller {
    /// A validated API change in cluster mode (its `attempt`): to etcd,
    /// or behind the write in flight.
    pub(super) fn cluster_write(
        &mut self,
        call: AdminCall,
        change: Change,
        next: State,
        reply: ApiResponse,
        attempt: u32,
    ) {
        let Some(side) = self.cluster.as_mut() else { return };
        if side.write.is_some() {
            if side.queued.len() >= MAX_QUEUED {
                let busy = json!({"error": "busy", "field": null,
                    "message": format!("{MAX_QUEUED} changes are already waiting for etcd; send it again in a moment")});
                let _ = call.reply.send(AdminReply::json(503, &busy));
            } else {
                side.queued.push_back((call, attempt));
            }
            return;
        }
        // (Checked by the API handler already: anything but `cluster` is local.)
        let wait = control::api::wait_cluster(&call.request.query).unwrap_or(false);
        if !side.connected {
            let why = side.last_error.clone().unwrap_or_else(|| "etcd is not connected yet".into());
            let _ = call.reply.send(unavailable(&why));
            return;
        }
        let Some((ops, keys)) = control::cluster::ops(&side.layout, &change, &self.state, &next) else {
            let _ = call.reply.send(unavailable("this change cannot be written to etcd"));
            return;
        };
        if ops.len() + keys.len() > MAX_OPS {
            let message = format!(
                "this change needs {} etcd operations in one transaction (at most {MAX_OPS}): make it in smaller steps",
                ops.len() + keys.len()
            );
            let _ = call
                .reply
                .send(AdminReply::json(413, &json!({"error": "tooLarge", "field": null, "message": message})));
            return;
        }
        let strict = control::api::names_etags(call.request.if_match.as_deref());
        side.next_id += 1;
        let id = side.next_id;
        let based_on = self.state.generation as i64;
        let _ = side.tx.send(ClusterCmd::Write { id, ops, keys, based_on, strict });
        let until = Instant::now() + APPLY_BOUND;
        let stage = WriteStage::Sent;
        side.write = Some(ClusterWrite { id, call, reply, stage, attempts: attempt, wait_cluster: wait, until });
    }

    /// A write whose If-Match names a revision this node has not applied
    /// yet but another node has (the client read it there, through a
    /// balancer): it waits until this node catches up, then runs — not a
    /// 412 for a tag that is newer, not stale. `Some(call)`: nothing to
    /// wait for, run it now.
    pub(super) fn cluster_catch_up(&mut self, call: AdminCall, attempt: u32) -> Option<AdminCall> {
        let generation = self.state.generation as i64;
        let Some(side) = self.cluster.as_mut() else { return Some(call) };
        let write = matches!(call.request.method.as_str(), "POST" | "PUT" | "DELETE") && attempt == 1;
        let Some(tag) = single_tag(call.request.if_match.as_deref()).filter(|_| write) else { return Some(call) };
        if tag <= generation {
            return Some(call);
        }
        // A node reports having applied it: wait as for any write; else
        // (maybe not even a revision yet) briefly.
        let known = side.nodes.iter().map(|n| n.revision).max().unwrap_or(0);
        let bound = if tag <= known { APPLY_BOUND } else { CATCH_UP_BOUND };
        if side.write.is_some() {
            if side.queued.len() < MAX_QUEUED {
                side.queued.push_back((call, attempt));
                return None;
            }
            return Some(call);
        }
        let until = Instant::now() + bound;
        let reply = ApiResponse::json(200, Value::Null);
        let stage = WriteStage::CatchUp(tag);
        side.write = Some(ClusterWrite { id: 0, call, reply, stage, attempts: attempt, wait_cluster: false, until });
        None
    }

    /// Runs queued writes until one is in flight (or none is left).
    fn next_write(&mut self) {
        loop {
            let Some(side) = self.cluster.as_mut() else { return };
            if side.write.is_some() {
                return;
            }
            let Some((call, attempt)) = side.queued.pop_front() else { return };
            self.api_call(call, attempt);
        }
    }

    /// The etcd helper thread ended (it never should): writes are refused
    /// from now on, and say why.
    pub(super) fn cluster_helper_gone(&mut self) {
        tracing::error!("cluster: the etcd helper thread is gone; API writes are refused");
        if let Some(side) = self.cluster.as_mut() {
            side.connected = false;
            side.last_error = Some("the etcd helper thread ended (see the log); restart ringway".into());
        }
        self.finish_write(unavailable("the etcd helper thread ended"));
    }

    /// Something came from the etcd helper.
    pub(super) fn on_cluster(&mut self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Loaded { kvs, revision } => {
                let next = self.cluster_load(&kvs, revision);
                self.install(next, revision);
            }
            ClusterEvent::Changes { events, revision } => {
                let next = self.cluster_changes(events, revision);
                self.install(next, revision);
            }
            ClusterEvent::Written { id, result } => self.on_written(id, result),
            ClusterEvent::Link { connected, error } => {
                if let Some(side) = self.cluster.as_mut() {
                    side.connected = connected;
                    side.last_error = error;
                    if connected {
                        // Whatever this node holds, the others may ask about.
                        let _ = side.tx.send(ClusterCmd::Applied(self.state.generation as i64));
                    }
                }
            }
            ClusterEvent::Nodes(nodes) => {
                if let Some(side) = self.cluster.as_mut() {
                    side.nodes = nodes;
                }
            }
            ClusterEvent::Waited { id, applied, laggards } => self.on_waited(id, applied, laggards),
        }
    }

    /// At start: waits (bounded) for etcd's config and takes it before
    /// the first publish; without an answer, the cache it started from
    /// serves until the helper connects.
    pub(super) fn cluster_first_load(&mut self, events: &crossbeam_channel::Receiver<ClusterEvent>, bound: Duration) {
        let deadline = Instant::now() + bound;
        while let Ok(ev) = events.recv_deadline(deadline) {
            match ev {
                ClusterEvent::Loaded { kvs, revision } => {
                    self.state = self.cluster_load(&kvs, revision);
                    if let Some(side) = self.cluster.as_mut() {
                        side.cache.0 = true;
                    }
                    return;
                }
                ClusterEvent::Link { connected: false, error } => {
                    tracing::warn!(
                        error = error.as_deref().unwrap_or(""),
                        "cluster: etcd unreachable at start; serving the local cache"
                    );
                    if let Some(side) = self.cluster.as_mut() {
                        side.last_error = error;
                    }
                    return;
                }
                other => self.on_cluster(other),
            }
        }
        tracing::warn!("cluster: etcd did not answer at start; serving the local cache");
    }

    /// The state every config key describes (a full load).
    pub(super) fn cluster_load(&self, kvs: &[(String, Vec<u8>)], revision: i64) -> State {
        let loaded = self.with_cluster_context(|cx| {
            control::cluster::load(&self.state, cx, kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        });
        let Some((mut next, bad)) = loaded else { return self.state.clone() };
        for (key, error) in bad {
            tracing::warn!(%key, %error, "cluster: a key in etcd does not validate: left out");
        }
        next.generation = revision.max(0) as u64;
        tracing::info!(routes = next.routes.len(), revision, "cluster: loaded the config from etcd");
        next
    }

    fn cluster_changes(&self, events: Vec<(String, Option<Vec<u8>>)>, revision: i64) -> State {
        let mut next = self.state.clone();
        self.with_cluster_context(|cx| {
            for (key, value) in events {
                if let Err(error) = control::cluster::apply(&mut next, cx, &key, value.as_deref()) {
                    tracing::warn!(%key, %error, "cluster: a change from etcd does not validate: not applied");
                }
            }
        });
        next.generation = next.generation.max(revision.max(0) as u64);
        next
    }

    /// Runs `f` with what applying etcd's keys needs (`None` outside
    /// cluster mode).
    fn with_cluster_context<R>(&self, f: impl FnOnce(&control::cluster::Context<'_>) -> R) -> Option<R> {
        let side = self.cluster.as_ref()?;
        let defaults = RouteDefaults::of(&self.config);
        let check_certificate = &crate::tls::check_certificate;
        Some(f(&control::cluster::Context { layout: &side.layout, defaults: &defaults, check_certificate }))
    }

    /// Swaps in a state from etcd and publishes it (through the same path
    /// as a local change: names resolved, workers acked).
    fn install(&mut self, next: State, revision: i64) {
        self.pending =
            Some(Pending { next: Some(Box::new(next)), origin: Origin::Cluster(revision), stage: Stage::Persisting });
        self.on_persisted(Ok(()));
    }

    /// This node's workers hold `revision` (or failed to ack it).
    pub(super) fn cluster_applied(&mut self, revision: i64, result: Result<(), AdminReply>) {
        if let Err(a) = &result {
            tracing::warn!(status = a.status, revision, "cluster: a change was not acked by every worker");
        }
        let Some(side) = self.cluster.as_mut() else { return };
        let _ = side.tx.send(ClusterCmd::Applied(revision));
        side.cache.0 = true;
        // A write whose revision this was: its workers did not all apply
        // it, and the client hears so (as a local write's would).
        let failed = matches!(side.write, Some(ClusterWrite { stage: WriteStage::Applying(r), .. }) if r <= revision);
        match result {
            Err(a) if failed => self.finish_write(a),
            _ => self.advance_write(),
        }
    }

    fn on_written(&mut self, id: u64, result: WriteResult) {
        let Some(side) = self.cluster.as_mut() else { return };
        let Some(w) = side.write.as_mut().filter(|w| w.id == id) else { return };
        match result {
            WriteResult::Committed(revision) => w.stage = WriteStage::Applying(revision),
            WriteResult::Conflict(revision) => {
                if control::api::names_etags(w.call.request.if_match.as_deref()) {
                    let current = self.state.generation;
                    self.finish_write(AdminReply::json(
                        412,
                        &json!({"error": "preconditionFailed", "field": null,
                            "message": format!("If-Match is stale: another node changed the config (revision {revision}); the current ETag is \"{}\" once this node catches up", current.max(revision as u64))}),
                    ));
                    return;
                }
                if w.attempts >= MAX_ATTEMPTS {
                    self.finish_write(AdminReply::json(
                        409,
                        &json!({"error": "conflict", "field": null,
                            "message": format!("the change lost {MAX_ATTEMPTS} races with writes on other nodes; send it again")}),
                    ));
                    return;
                }
                w.stage = WriteStage::Retry(revision);
            }
            WriteResult::Unavailable(why) => {
                side.connected = false;
                side.last_error = Some(why.clone());
                self.finish_write(unavailable(&why));
                return;
            }
            WriteResult::Refused(why) => {
                let refused = json!({"error": "etcdRefused", "field": null, "message": why});
                self.finish_write(AdminReply::json(502, &refused));
                return;
            }
        }
        self.advance_write();
    }

    /// Moves the write in flight on as far as this node's state allows.
    fn advance_write(&mut self) {
        let applied = self.state.generation as i64;
        let Some(side) = self.cluster.as_mut() else { return };
        let Some(w) = side.write.as_mut() else { return };
        match w.stage {
            WriteStage::Applying(revision) if applied >= revision && w.wait_cluster => {
                w.stage = WriteStage::Waiting(revision);
                let _ = side.tx.send(ClusterCmd::Wait { id: w.id, revision });
            }
            WriteStage::Applying(revision) if applied >= revision => {
                let reply = ok_reply(&w.reply, revision, None);
                self.finish_write(reply);
            }
            WriteStage::Retry(revision) | WriteStage::CatchUp(revision) if applied >= revision => {
                // Run the request (again) against the state it named or lost to.
                if let Some(w) = side.write.take() {
                    self.api_call(w.call, w.attempts + 1);
                    self.next_write();
                }
            }
            _ => {}
        }
    }

    fn on_waited(&mut self, id: u64, applied: Vec<String>, laggards: Vec<String>) {
        let Some(w) = self.cluster.as_ref().and_then(|s| s.write.as_ref()).filter(|w| w.id == id) else { return };
        let WriteStage::Waiting(revision) = w.stage else { return };
        let cluster = json!({"revision": revision, "applied": applied, "laggards": laggards});
        let reply = ok_reply(&w.reply, revision, Some(cluster));
        self.finish_write(reply);
    }

    fn finish_write(&mut self, reply: AdminReply) {
        if let Some(w) = self.cluster.as_mut().and_then(|s| s.write.take()) {
            let _ = w.call.reply.send(reply);
        }
        self.next_write();
    }

    /// Bounds the write in flight, and keeps the local cache fresh.
    pub(super) fn cluster_tick(&mut self) {
        let Some(side) = self.cluster.as_mut() else { return };
        if let Some(w) = side.write.as_ref().filter(|w| w.until <= Instant::now()) {
            if let WriteStage::CatchUp(_) = w.stage {
                // Run it as it stands: a tag still ahead is stale here (412).
                if let Some(w) = side.write.take() {
                    self.api_call(w.call, w.attempts + 1);
                    self.next_write();
                }
                self.flush_cache(false);
                return;
            }
            let reply = match w.stage {
                // Applied here; etcd did not say who else has.
                WriteStage::Waiting(r) => {
                    let unknown = json!({"revision": r, "applied": [], "laggards": ["(unknown: etcd did not answer)"]});
                    ok_reply(&w.reply, r, Some(unknown))
                }
                WriteStage::Applying(r) => AdminReply::json(
                    503,
                    &json!({"error": "notApplied", "field": null,
                        "message": format!("committed to etcd at revision {r}; this node has not applied it yet")}),
                ),
                WriteStage::Retry(_) => AdminReply::json(
                    503,
                    &json!({"error": "notApplied", "field": null,
                        "message": "the change lost a race and this node has not caught up in time; send it again"}),
                ),
                WriteStage::Sent | WriteStage::CatchUp(_) => unavailable("etcd did not answer in time"),
            };
            self.finish_write(reply);
        }
        self.flush_cache(false);
    }

    /// Writes the state file (the cache a node starts from when etcd is
    /// unreachable) when it is stale: at most once a second, or now.
    pub(super) fn flush_cache(&mut self, now: bool) {
        let Some(side) = self.cluster.as_mut() else { return };
        let (dirty, last) = side.cache;
        if !dirty || (!now && last.elapsed() < CACHE_EVERY) {
            return;
        }
        side.cache = (false, Instant::now());
        if let Some(tx) = &self.persist_tx {
            let _ = tx.send(super::statefile::Job::Compact(Box::new(self.state.clone())));
        }
    }

    /// When the next cache write or write bound is due.
    pub(super) fn cluster_due(&self) -> Option<Instant> {
        let side = self.cluster.as_ref()?;
        let cache = side.cache.0.then(|| side.cache.1 + CACHE_EVERY);
        let write = side.write.as_ref().map(|w| w.until);
        cache.into_iter().chain(write).min()
    }

    /// `GET /api/v1/cluster`.
    pub(super) fn cluster_json(&self) -> AdminReply {
        let Some(side) = &self.cluster else {
            return AdminReply::json(
                404,
                &json!({"error": "notFound", "field": null,
                    "message": "cluster mode is off (no \"cluster\" in the config)"}),
            );
        };
        let Some(c) = &self.config.cluster else { return AdminReply::json(500, &json!({})) };
        let nodes: Vec<Value> = side
            .nodes
            .iter()
            .map(|n| {
                json!({"nodeId": n.id, "revision": n.revision, "version": n.version,
                    "heartbeatAt": n.heartbeat_at, "pid": n.pid, "self": n.id == c.node_id})
            })
            .collect();
        let mut r = AdminReply::json(
            200,
            &json!({
                "nodeId": c.node_id,
                "connected": side.connected,
                "revision": self.state.generation,
                "lastError": side.last_error,
                "etcd": {"endpoints": c.endpoints, "prefix": c.prefix},
                "nodes": nodes,
            }),
        );
        r.etag = Some(self.state.generation);
        r
    }

    /// Cluster gauges for `/metrics`.
    pub(super) fn cluster_metrics(&self, out: &mut String) {
        let Some(side) = &self.cluster else { return };
        out.push_str("# HELP ringway_cluster_connected Whether this node's link to etcd is up.\n");
        out.push_str("# TYPE ringway_cluster_connected gauge\n");
        out.push_str(&format!("ringway_cluster_connected {}\n", u8::from(side.connected)));
        out.push_str("# HELP ringway_cluster_revision The etcd revision of the config this node serves.\n");
        out.push_str("# TYPE ringway_cluster_revision gauge\n");
        out.push_str(&format!("ringway_cluster_revision {}\n", self.state.generation));
        out.push_str("# HELP ringway_cluster_nodes Nodes registered in etcd.\n");
        out.push_str("# TYPE ringway_cluster_nodes gauge\n");
        out.push_str(&format!("ringway_cluster_nodes {}\n", side.nodes.len()));
    }
}

/// The write's answer: its body (plus the cluster wait's outcome; a 204
/// becomes a 200 with it), with the etcd revision as its ETag.
fn ok_reply(reply: &ApiResponse, revision: i64, cluster: Option<Value>) -> AdminReply {
    let mut r = match cluster {
        None => AdminReply::json(reply.status, &reply.body),
        Some(c) => match reply.body.clone() {
            Value::Object(mut m) => {
                m.insert("cluster".into(), c);
                AdminReply::json(reply.status, &Value::Object(m))
            }
            _ => AdminReply::json(200, &json!({"cluster": c})),
        },
    };
    r.etag = Some(revision.max(0) as u64);
    r
}
