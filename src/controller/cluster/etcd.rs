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
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::messages::{ClusterCmd, ClusterEvent, NodeInfo, WriteResult};

/// A node's registration lives this long without a keep-alive.
const LEASE_TTL: i64 = 10;
/// How often the lease is kept alive (no etcd revision: free).
const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// How often the registration's `heartbeatAt` is rewritten (each rewrite
/// is an etcd revision, kept until etcd compacts: not every keep-alive).
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Keys and bytes per seeding transaction (etcd takes 128 operations and
/// 1.5 MiB per request by default).
const SEED_CHUNK: (usize, usize) = (100, 1 << 20);
/// Keys per page of a full load.
const LOAD_PAGE: i64 = 500;
/// Largest gRPC message read (a watch catching up can carry many
/// revisions at once; etcd-client's default is 4 MiB).
const MAX_MESSAGE: usize = 256 << 20;
/// The longest wait between sessions.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a cluster-wide wait lasts before it names the laggards.
const WAIT_BOUND: Duration = Duration::from_secs(5);

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

/// Whether an error says the link is down (rather than that etcd refused
/// this one request: too large, not permitted, …).
fn is_link_error(e: &etcd_client::Error) -> bool {
    match e {
        // gRPC codes: CANCELLED 1, UNKNOWN 2, DEADLINE_EXCEEDED 4,
        // UNAVAILABLE 14, UNAUTHENTICATED 16 (a token that expired).
        etcd_client::Error::GRpcStatus(s) => matches!(s.code() as i32, 1 | 2 | 4 | 14 | 16),
        _ => true,
    }
}

/// The first key after every key starting with `prefix`.
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Helper {
    config: Cluster,
    layout: Layout,
    /// Written to a prefix never written (emptied once a load succeeded).
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

/// What a session holds while it runs.
struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    alive: LeaseKeepAliveStream,
    config_watch: WatchStream,
    nodes_watch: WatchStream,
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
            opts = opts.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
        }
        if let Some(ca) = &c.ca_file {
            let pem = std::fs::read(ca).map_err(|e| End::Broken(format!("caFile {}: {e}", ca.display())))?;
            opts =
                opts.with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(pem)));
        } else if c.endpoints.iter().any(|e| e.starts_with("https://")) {
            opts = opts.with_tls(etcd_client::TlsOptions::new().with_native_roots());
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
        let (mut kvs, mut header) = self.get_all(client).await?;
        let has = |kvs: &[(String, Vec<u8>, i64)], key: &str| kvs.iter().any(|(k, _, _)| k == key);
        // A prefix never written, or a seeding that was cut off, is
        // (re)seeded; a prefix someone wrote otherwise is left alone.
        let (marker, seeding) = (self.layout.marker(), self.layout.seeding());
        if !has(&kvs, &marker) && (kvs.is_empty() || has(&kvs, &seeding)) && !self.seed.is_empty() {
            self.write_seed(client).await?;
            (kvs, header) = self.get_all(client).await?;
        }
        let revision = kvs.iter().map(|(_, _, r)| *r).max().unwrap_or(0);
        let kvs = kvs.into_iter().map(|(k, v, _)| (k, v)).collect();
        self.send(ClusterEvent::Loaded { kvs, revision });
        self.seed = Vec::new();
        Ok(header)
    }

    /// Every key under the config prefix, in pages read at one revision:
    /// (key, value, mod revision), and that revision.
    async fn get_all(&self, client: &mut Client) -> Result<(Vec<(String, Vec<u8>, i64)>, i64), End> {
        let prefix = self.layout.config_prefix();
        let end = range_end(&prefix);
        let mut from = prefix.into_bytes();
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(LOAD_PAGE);
            if at > 0 {
                opts = opts.with_revision(at);
            }
            let resp = client.get(from.clone(), Some(opts)).await?;
            if at == 0 {
                at = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                out.push((String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec(), kv.mod_revision()));
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, at)),
            }
        }
    }

    /// Writes the seed in chunks, each only while the marker is absent;
    /// the marker comes last, so a seeding cut off is resumed next time
    /// (`_seeding` says one was under way).
    async fn write_seed(&self, client: &mut Client) -> Result<(), End> {
        let (marker, seeding) = (self.layout.marker(), self.layout.seeding());
        let mut chunks: Vec<Vec<TxnOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for (k, v) in &self.seed {
            let full =
                chunks.last().is_some_and(|c| c.len() >= SEED_CHUNK.0 || bytes + k.len() + v.len() > SEED_CHUNK.1);
            if full {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += k.len() + v.len();
            if let Some(c) = chunks.last_mut() {
                c.push(TxnOp::put(k.as_str(), v.as_str(), None));
            }
        }
        let last = chunks.len() - 1;
        if last > 0 {
            chunks[0].push(TxnOp::put(seeding.as_str(), self.config.node_id.as_str(), None));
            chunks[last].push(TxnOp::delete(seeding.as_str(), None));
        }
        chunks[last].push(TxnOp::put(marker.as_str(), self.config.node_id.as_str(), None));
        for chunk in chunks {
            let txn = Txn::new().when([Compare::version(marker.as_str(), CompareOp::Equal, 0)]).and_then(chunk);
            if !client.txn(txn).await?.succeeded() {
                return Ok(()); // another node finished seeding
            }
        }
        tracing::info!(keys = self.seed.len(), prefix = %self.layout.config_prefix(), "cluster: seeded etcd with this node's state");
        Ok(())
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

    async fn register(&self, s: &mut Session) -> Result<(), End> {
        let key = self.layout.node(&self.config.node_id);
        s.client.put(key, self.node_value(), Some(PutOptions::new().with_lease(s.lease))).await?;
        Ok(())
    }

    /// A registration changed; `true` when it was this node's, deleted
    /// (another process with our id — an upgrade's old one — revoked it).
    fn node_changed(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let key = String::from_utf8_lossy(key);
        let Some(id) = key.strip_prefix(&self.layout.nodes_prefix()) else { return false };
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
                false
            }
            None => {
                self.nodes.remove(&id);
                id == self.config.node_id
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
            Err(e) if is_link_error(&e) => WriteResult::Unavailable(format!("etcd: {}", describe(&e))),
            Err(e) => WriteResult::Refused(format!("etcd refused the write: {}", describe(&e))),
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
        let mut s = match self.open().await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let end = self.serve(&mut s).await;
        if matches!(end, End::Shutdown) {
            // Leave the cluster now rather than when the lease runs out
            // (bounded: a shutdown does not wait on etcd).
            let _ = tokio::time::timeout(Duration::from_secs(1), s.client.lease_revoke(s.lease)).await;
        }
        end
    }

    /// Connects, loads (or resumes), registers and starts both watches.
    async fn open(&mut self) -> Result<Session, End> {
        let mut client = self.connect().await?;
        let from = match self.seen {
            Some(seen) => seen,
            None => self.load(&mut client).await?,
        };
        let lease = client.lease_grant(LEASE_TTL, None).await?.id();
        let (keeper, alive) = client.lease_keep_alive(lease).await?;
        let nodes_prefix = self.layout.nodes_prefix();
        let nodes = client.get(nodes_prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        self.nodes.clear();
        for kv in nodes.kvs() {
            self.node_changed(kv.key(), Some(kv.value()));
        }
        let nodes_rev = nodes.header().map_or(0, |h| h.revision());
        let mut watcher = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let watch_config = WatchOptions::new().with_prefix().with_start_revision(from + 1).with_progress_notify();
        let config_watch = watcher.watch(self.layout.config_prefix(), Some(watch_config)).await?;
        let watch_nodes = WatchOptions::new().with_prefix().with_start_revision(nodes_rev + 1);
        let nodes_watch = watcher.watch(nodes_prefix.as_str(), Some(watch_nodes)).await?;
        let mut s = Session { client, lease, keeper, alive, config_watch, nodes_watch };
        self.register(&mut s).await?;
        self.seen = Some(from);
        self.send(ClusterEvent::Link { connected: true, error: None });
        self.send(ClusterEvent::Nodes(self.nodes.values().cloned().collect()));
        tracing::info!(endpoints = ?self.config.endpoints, revision = from, "cluster: watching etcd");
        Ok(s)
    }

    /// The config watch's answer: its events go to the control thread.
    fn on_config(&mut self, resp: WatchResponse) -> Result<(), End> {
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
            // The watch's confirmation: its header holds etcd's current
            // revision, and the events up to it are still to come (not a
            // progress notice).
        } else if events.is_empty() {
            // A progress notice: nothing up to its revision is missing.
            if let Some(h) = resp.header() {
                self.seen = Some(self.seen.unwrap_or(0).max(h.revision()));
            }
        } else {
            self.seen = Some(self.seen.unwrap_or(0).max(revision));
            self.send(ClusterEvent::Changes { events, revision });
        }
        Ok(())
    }

    /// The nodes watch's answer; `true` when this node's registration
    /// must be written again.
    fn on_nodes(&mut self, resp: WatchResponse) -> bool {
        let mut lost = false;
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                let value = (e.event_type() == EventType::Put).then(|| kv.value());
                lost |= self.node_changed(kv.key(), value);
            }
        }
        self.send(ClusterEvent::Nodes(self.nodes.values().cloned().collect()));
        self.settle_waits();
        lost
    }

    async fn serve(&mut self, s: &mut Session) -> End {
        match self.serve_loop(s).await {
            Ok(()) => End::Shutdown,
            Err(e) => e,
        }
    }

    async fn serve_loop(&mut self, s: &mut Session) -> Result<(), End> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut next_keep_alive = Instant::now() + KEEP_ALIVE;
        let mut next_heartbeat = Instant::now() + HEARTBEAT;
        loop {
            tokio::select! {
                m = s.config_watch.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the config watch ended".into()))?;
                    self.on_config(resp)?;
                }
                m = s.nodes_watch.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the nodes watch ended".into()))?;
                    if self.on_nodes(resp) {
                        self.register(s).await?;
                    }
                }
                m = s.alive.message() => {
                    let resp = m?.ok_or_else(|| End::Broken("the lease keep-alive ended".into()))?;
                    if resp.ttl() <= 0 {
                        return Err(End::Broken("this node's lease expired".into()));
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    None => return Ok(()),
                    Some(ClusterCmd::Write { id, ops, keys, based_on, strict }) => {
                        let result = self.write(&mut s.client, ops, keys, based_on, strict).await;
                        let broken = if let WriteResult::Unavailable(w) = &result { Some(w.clone()) } else { None };
                        self.send(ClusterEvent::Written { id, result });
                        if let Some(why) = broken {
                            return Err(End::Broken(why));
                        }
                    }
                    Some(ClusterCmd::Applied(r)) => {
                        self.applied = self.applied.max(r);
                        self.register(s).await?;
                    }
                    Some(ClusterCmd::Wait { id, revision }) => {
                        self.waits.push((id, revision, Instant::now() + WAIT_BOUND));
                        self.settle_waits();
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now >= next_keep_alive {
                        next_keep_alive = now + KEEP_ALIVE;
                        s.keeper.keep_alive().await?;
                    }
                    if now >= next_heartbeat {
                        next_heartbeat = now + HEARTBEAT;
                        self.register(s).await?;
                    }
                    self.settle_waits();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::range_end;

    #[test]
    fn range_ends_follow_every_key_of_the_prefix() {
        assert_eq!(range_end("/rw/config/"), b"/rw/config0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(range_end(""), vec![0]);
    }
}
