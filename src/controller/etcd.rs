//! Cluster mode's etcd side: a helper thread with a current-thread tokio
//! runtime running etcd-client (a maintained etcd v3 gRPC client). Workers
//! never see it; the control thread exchanges messages with it only:
//! writes in (as transactions), and out the config keys' changes (a full
//! load, then the watch's events), the link's state, the other nodes'
//! registrations and answers to cluster-wide waits.
//!
//! A session: connect, load the config prefix (or resume the watch from
//! the last revision seen, without a reload), register this node under a
//! lease, watch the config and node prefixes. When the link breaks, the
//! control thread hears it, writes are refused, and the session starts
//! again after a backoff (100 ms doubling to 2 s); a watch whose revision
//! was compacted away triggers one full load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use control::cluster::{KvOp, Layout};
use control::model::Cluster;
use crossbeam_channel::Sender;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::cluster::{ClusterCmd, ClusterEvent, NodeInfo, WriteResult};

/// A node's registration lives this long without a keep-alive.
const LEASE_TTL: i64 = 10;
/// How often the lease is kept alive and the registration refreshed.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Keys per seeding transaction (etcd's default limit is 128 operations).
const SEED_CHUNK: usize = 100;
/// The longest wait between sessions.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Starts the helper thread: commands go in on the first value, events
/// come out on the second. `seed` is written when the prefix was never
/// written (the first node of a cluster brings its routes).
pub(super) fn start(
    config: Cluster,
    seed: Vec<(String, String)>,
) -> std::io::Result<(UnboundedSender<ClusterCmd>, crossbeam_channel::Receiver<ClusterEvent>)> {
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new().name("ringway-etcd".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match rt {
            Ok(rt) => rt.block_on(Helper::new(config, seed, cmd_rx, ev_tx).run()),
            Err(e) => tracing::error!(error = %e, "cluster: no runtime for the etcd client"),
        }
    })?;
    Ok((cmd_tx, ev_rx))
}

/// Why a session ended.
enum End {
    /// The control thread is gone: stop.
    Shutdown,
    /// The link broke (or the watch fell behind a compaction): retry.
    Broken(String),
}

impl From<etcd_client::Error> for End {
    fn from(e: etcd_client::Error) -> End {
        End::Broken(describe(&e))
    }
}

/// An etcd client error in a line an operator can read: the gRPC status
/// message and, below it, the cause that started it (`Connection refused`,
/// a TLS certificate error), without the transport's type dump.
fn describe(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else { return e.to_string() };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut deepest = None;
    while let Some(c) = cause {
        deepest = Some(c.to_string());
        cause = c.source();
    }
    match deepest {
        Some(d) if !status.message().contains(&d) => format!("{}: {d}", status.message()),
        _ => status.message().to_string(),
    }
}

struct Helper {
    config: Cluster,
    layout: Layout,
    seed: Vec<(String, String)>,
    cmds: UnboundedReceiver<ClusterCmd>,
    out: Sender<ClusterEvent>,
    /// Every config revision up to this one has been passed on (`None`:
    /// load the whole prefix first).
    seen: Option<i64>,
    /// The config revision this node's workers have applied.
    applied: i64,
    /// Registered nodes, by id.
    nodes: BTreeMap<String, NodeInfo>,
    /// Cluster-wide waits: id, revision, deadline.
    waits: Vec<(u64, i64, Instant)>,
}

/// How long a cluster-wide wait lasts before it names the laggards.
pub(super) const WAIT_BOUND: Duration = Duration::from_secs(5);

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Helper {
    fn new(
        config: Cluster,
        seed: Vec<(String, String)>,
        cmds: UnboundedReceiver<ClusterCmd>,
        out: Sender<ClusterEvent>,
    ) -> Helper {
        let layout = Layout::new(&config.prefix);
        Helper { config, layout, seed, cmds, out, seen: None, applied: 0, nodes: BTreeMap::new(), waits: Vec::new() }
    }

    fn send(&self, ev: ClusterEvent) {
        let _ = self.out.send(ev);
    }

    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut last_why: Option<String> = None;
        loop {
            let started = Instant::now();
            let why = match self.session().await {
                End::Shutdown => return,
                End::Broken(why) => why,
            };
            // One warning per outage (and per new reason), not per retry.
            if last_why.as_deref() != Some(why.as_str()) {
                tracing::warn!(error = %why, endpoints = ?self.config.endpoints, "cluster: etcd link down; serving the last config");
            }
            last_why = Some(why.clone());
            self.send(ClusterEvent::Link { connected: false, error: Some(format!("etcd: {why}")) });
            self.nodes.clear();
            self.send(ClusterEvent::Nodes(Vec::new()));
            if started.elapsed() > Duration::from_secs(10) {
                // The session lasted: this is a new outage.
                backoff = Duration::from_millis(100);
                last_why = None;
            }
            if !self.pause(backoff, &why).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Waits out a backoff, refusing writes meanwhile; `false`: shut down.
    async fn pause(&mut self, backoff: Duration, why: &str) -> bool {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.cmds.recv() => match cmd {
                    None => return false,
                    Some(ClusterCmd::Write { id, .. }) => {
                        self.send(ClusterEvent::Written { id, result: WriteResult::Unavailable(format!("etcd: {why}")) })
                    }
                    Some(ClusterCmd::Applied(r)) => self.applied = self.applied.max(r),
                    Some(ClusterCmd::Wait { id, .. }) => {
                        self.send(ClusterEvent::Waited { id, applied: Vec::new(), laggards: vec!["(etcd unreachable)".into()] })
                    }
                },
            }
        }
    }

    async fn connect(&self) -> Result<Client, End> {
        let c = &self.config;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(c.dial)
            .with_timeout(c.dial)
            .with_keep_alive(Duration::from_secs(2), c.dial)
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &c.auth {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(ca) = &c.ca_file {
            let pem = std::fs::read(ca).map_err(|e| End::Broken(format!("caFile {}: {e}", ca.display())))?;
            opts =
                opts.with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem)));
        }
        let connect = Client::connect(&c.endpoints, Some(opts));
        match tokio::time::timeout(c.dial, connect).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(End::Broken(format!("no answer within {} ms", c.dial.as_millis()))),
        }
    }

    /// Loads the config prefix (seeding it when it was never written) and
    /// passes it on; returns the revision to watch from.
    async fn load(&mut self, client: &mut Client) -> Result<i64, End> {
        let prefix = self.layout.config_prefix();
        let mut resp = client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        if resp.kvs().is_empty() {
            // Only if the marker was never written: the first node brings
            // its routes; later nodes (and an emptied cluster) do not.
            // etcd takes at most 128 operations per transaction: the first
            // claims the marker, the rest follow in chunks.
            let marker = self.layout.marker();
            let mut chunks = self.seed.chunks(SEED_CHUNK);
            let mut puts = vec![TxnOp::put(marker.as_str(), self.config.node_id.as_str(), None)];
            puts.extend(chunks.next().into_iter().flatten().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)));
            let txn = Txn::new().when([Compare::version(marker.as_str(), CompareOp::Equal, 0)]).and_then(puts);
            if client.txn(txn).await?.succeeded() {
                for chunk in chunks {
                    let puts: Vec<TxnOp> =
                        chunk.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)).collect();
                    client.txn(Txn::new().and_then(puts)).await?;
                }
                tracing::info!(keys = self.seed.len(), prefix = %prefix, "cluster: seeded etcd with this node's state");
            }
            resp = client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        }
        let header = resp.header().map_or(0, |h| h.revision());
        let revision = resp.kvs().iter().map(|kv| kv.mod_revision()).max().unwrap_or(0);
        let kvs =
            resp.take_kvs().into_iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec()));
        self.send(ClusterEvent::Loaded { kvs: kvs.collect(), revision });
        Ok(header)
    }

    fn node_value(&self) -> String {
        serde_json::json!({
            "nodeId": self.config.node_id,
            "revision": self.applied,
            "version": env!("CARGO_PKG_VERSION"),
            "heartbeatAt": unix_now(),
            "pid": std::process::id(),
        })
        .to_string()
    }

    async fn register(&self, client: &mut Client, lease: i64) -> Result<(), End> {
        let key = self.layout.node(&self.config.node_id);
        client.put(key, self.node_value(), Some(PutOptions::new().with_lease(lease))).await?;
        Ok(())
    }

    fn node_changed(&mut self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        let Some(id) = key.strip_prefix(&self.layout.nodes_prefix()) else { return };
        let id = control::api::percent_decode(id).unwrap_or_else(|| id.to_string());
        match value.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) {
            Some(v) => {
                let info = NodeInfo {
                    id: id.clone(),
                    revision: v.get("revision").and_then(serde_json::Value::as_i64).unwrap_or(0),
                    version: v.get("version").and_then(serde_json::Value::as_str).unwrap_or("").to_string(),
                    heartbeat_at: v.get("heartbeatAt").and_then(serde_json::Value::as_u64).unwrap_or(0),
                    pid: v.get("pid").and_then(serde_json::Value::as_u64).unwrap_or(0),
                };
                self.nodes.insert(id, info);
            }
            None => {
                self.nodes.remove(&id);
            }
        }
    }

    /// Answers the waits every node has caught up with, and those past
    /// their deadline (naming the laggards).
    fn settle_waits(&mut self) {
        let now = Instant::now();
        let nodes = &self.nodes;
        let mut done = Vec::new();
        self.waits.retain(|&(id, revision, until)| {
            let all = nodes.values().all(|n| n.revision >= revision);
            if all || until <= now {
                let (applied, laggards): (Vec<&NodeInfo>, Vec<&NodeInfo>) =
                    nodes.values().partition(|n| n.revision >= revision);
                let names = |v: Vec<&NodeInfo>| v.into_iter().map(|n| n.id.clone()).collect::<Vec<_>>();
                done.push(ClusterEvent::Waited { id, applied: names(applied), laggards: names(laggards) });
                false
            } else {
                true
            }
        });
        for ev in done {
            self.send(ev);
        }
    }

    async fn write(
        &self,
        client: &mut Client,
        ops: Vec<KvOp>,
        keys: Vec<String>,
        based_on: i64,
        strict: bool,
    ) -> WriteResult {
        let marker = self.layout.marker();
        let after = based_on + 1;
        let mut when = vec![Compare::mod_revision(marker.as_str(), CompareOp::Less, after)];
        when.extend(keys.iter().map(|k| Compare::mod_revision(k.as_str(), CompareOp::Less, after)));
        if strict {
            // If-Match: nothing under the config prefix changed since.
            when.push(Compare::mod_revision(self.layout.config_prefix(), CompareOp::Less, after).with_prefix());
        }
        let mut then: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                KvOp::Put(k, v) => TxnOp::put(k.as_str(), v.as_str(), None),
                KvOp::Delete(k) => TxnOp::delete(k.as_str(), None),
                KvOp::DeletePrefix(p) => TxnOp::delete(p.as_str(), Some(DeleteOptions::new().with_prefix())),
            })
            .collect();
        then.push(TxnOp::put(marker.as_str(), self.config.node_id.as_str(), None));
        // On a conflict: the newest revision among what was compared.
        let mut or_else = vec![TxnOp::get(marker.as_str(), None)];
        or_else.extend(keys.iter().map(|k| TxnOp::get(k.as_str(), None)));
        let txn = Txn::new().when(when).and_then(then).or_else(or_else);
        match client.txn(txn).await {
            Err(e) => WriteResult::Unavailable(format!("etcd: {}", describe(&e))),
            Ok(r) if r.succeeded() => WriteResult::Committed(r.header().map_or(0, |h| h.revision())),
            Ok(r) => {
                let newest = r
                    .op_responses()
                    .iter()
                    .filter_map(|op| match op {
                        TxnOpResponse::Get(g) => g.kvs().iter().map(|kv| kv.mod_revision()).max(),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(based_on);
                WriteResult::Conflict(newest)
            }
        }
    }

    async fn session(&mut self) -> End {
        match self.serve().await {
            Ok(()) => End::Shutdown,
            Err(e) => e,
        }
    }

    async fn serve(&mut self) -> Result<(), End> {
        let mut client = self.connect().await?;
        let from = match self.seen {
            Some(seen) => seen,
            None => self.load(&mut client).await?,
        };
        let lease = client.lease_grant(LEASE_TTL, None).await?.id();
        let (mut keeper, mut alive) = client.lease_keep_alive(lease).await?;
        self.register(&mut client, lease).await?;
        let nodes_prefix = self.layout.nodes_prefix();
        let nodes = client.get(nodes_prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        self.nodes.clear();
        for kv in nodes.kvs() {
            self.node_changed(kv.key(), Some(kv.value()));
        }
        let nodes_rev = nodes.header().map_or(0, |h| h.revision());
        let watch_config = WatchOptions::new().with_prefix().with_start_revision(from + 1).with_progress_notify();
        let mut config_watch = client.watch(self.layout.config_prefix(), Some(watch_config)).await?;
        let watch_nodes = WatchOptions::new().with_prefix().with_start_revision(nodes_rev + 1);
        let mut nodes_watch = client.watch(nodes_prefix.as_str(), Some(watch_nodes)).await?;
        self.seen = Some(from);
        self.send(ClusterEvent::Link { connected: true, error: None });
        self.send(ClusterEvent::Nodes(self.nodes.values().cloned().collect()));
        tracing::info!(endpoints = ?self.config.endpoints, revision = from, "cluster: watching etcd");
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut next_heartbeat = Instant::now() + HEARTBEAT;
        loop {
            tokio::select! {
                m = config_watch.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the config watch ended".into()))?;
                    if resp.compact_revision() > 0 || resp.canceled() {
                        // Behind a compaction: one full load next session.
                        self.seen = None;
                        return Err(End::Broken(format!("watch canceled ({}); reloading", resp.cancel_reason())));
                    }
                    let mut revision = 0;
                    let events: Vec<(String, Option<Vec<u8>>)> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            revision = revision.max(kv.mod_revision());
                            let value = (e.event_type() == EventType::Put).then(|| kv.value().to_vec());
                            Some((String::from_utf8_lossy(kv.key()).into_owned(), value))
                        })
                        .collect();
                    if resp.created() {
                        // The watch's confirmation: its header holds etcd's
                        // current revision, and the events up to it are
                        // still to come (not a progress notice).
                    } else if events.is_empty() {
                        // A progress notice: nothing up to its revision is missing.
                        if let Some(h) = resp.header() {
                            self.seen = Some(self.seen.unwrap_or(0).max(h.revision()));
                        }
                    } else {
                        self.seen = Some(self.seen.unwrap_or(0).max(revision));
                        self.send(ClusterEvent::Changes { events, revision });
                    }
                }
                m = nodes_watch.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the nodes watch ended".into()))?;
                    for e in resp.events() {
                        if let Some(kv) = e.kv() {
                            let value = (e.event_type() == EventType::Put).then(|| kv.value());
                            self.node_changed(kv.key(), value);
                        }
                    }
                    self.send(ClusterEvent::Nodes(self.nodes.values().cloned().collect()));
                    self.settle_waits();
                }
                m = alive.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the lease keep-alive ended".into()))?;
                    if resp.ttl() <= 0 {
                        return Err(End::Broken("this node's lease expired".into()));
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    None => return Ok(()),
                    Some(ClusterCmd::Write { id, ops, keys, based_on, strict }) => {
                        let result = self.write(&mut client, ops, keys, based_on, strict).await;
                        let broken = matches!(&result, WriteResult::Unavailable(_));
                        let why = if let WriteResult::Unavailable(w) = &result { w.clone() } else { String::new() };
                        self.send(ClusterEvent::Written { id, result });
                        if broken {
                            return Err(End::Broken(why));
                        }
                    }
                    Some(ClusterCmd::Applied(r)) => {
                        self.applied = self.applied.max(r);
                        self.register(&mut client, lease).await?;
                    }
                    Some(ClusterCmd::Wait { id, revision }) => {
                        self.waits.push((id, revision, Instant::now() + WAIT_BOUND));
                        self.settle_waits();
                    }
                },
                _ = tick.tick() => {
                    if Instant::now() >= next_heartbeat {
                        next_heartbeat = Instant::now() + HEARTBEAT;
                        keeper.keep_alive().await?;
                        self.register(&mut client, lease).await?;
                    }
                    self.settle_waits();
                }
            }
        }
    }
}
