#![cfg(feature = "cluster")]
//! Cluster mode: several ringway nodes share routes, backends, maintenance
//! flags and certificates through etcd (a real `/usr/bin/etcd` per test, on
//! free loopback ports, with its own data dir and key prefix). Proven here:
//!
//! - a route added through one node's API serves on that node at once
//!   (read-your-writes) and on every other node within a bounded wait;
//!   `?wait=cluster` answers once every live node applied the write, naming
//!   them, so the others serve it without polling; every node reports the
//!   same ETag (the etcd revision of the last config change) and lists the
//!   same members in `GET /api/v1/cluster`;
//! - two writes racing on two nodes with the same `If-Match` give exactly
//!   one 2xx and one 412, round after round; a write without `If-Match`
//!   right after succeeds; an ETag read on one node is good on another at
//!   once (that node waits until it has applied it), and a tag no node
//!   has reached still gets 412;
//! - 9,000 routes (5.5 MB of JSON) are seeded in chunks by the first node
//!   and loaded in pages by the next;
//! - a binary upgrade of a node keeps it in the cluster: the new process
//!   is listed with its pid, serves without a failed request and its
//!   writes reach the others;
//! - with etcd down every node keeps serving its last config, refuses API
//!   writes (503 `clusterUnavailable`, naming etcd) and says so in
//!   `GET /api/v1/cluster` and `/metrics`; once etcd is back, a change made
//!   straight in etcd (etcdctl) reaches every node and writes work again;
//! - a node cut off from etcd (a TCP relay between them, cut) keeps serving
//!   its old routes, a `?wait=cluster` write on another node answers after
//!   the bounded wait naming it as a laggard, and it catches up with every
//!   change made meanwhile once the relay heals, ending at the same ETag;
//! - a node restarted while etcd is down starts from its local cache (the
//!   state file) and serves what the API had added;
//! - a node cut off while etcd is compacted past what it last saw reloads
//!   the whole config exactly once when it is healed (one more
//!   `loaded the config from etcd` line), ends at the others' routes and
//!   ETag, and changes flow both ways afterwards with no further reload;
//! - with etcd authentication on, a node with the right username and
//!   password seeds, takes writes and registers (its keys are in etcd); a
//!   node with a wrong password still starts on its config file's routes,
//!   names the authentication failure in `GET /api/v1/cluster`'s
//!   `lastError` and its log, refuses writes (503 `clusterUnavailable`)
//!   and leaves nothing in etcd; the good node authenticates again after
//!   etcd restarts;
//! - with etcd serving TLS only, under a certificate from a private CA,
//!   nodes given that CA (`caFile`) connect, take writes and see each
//!   other's; a node trusting another CA gets no link and says so;
//! - a node cut off again right after its watch resumed (before the
//!   resumed watch delivered what changed meanwhile) still gets every
//!   change made while it was away.
//!
//! Everything listens on 127.0.0.1; every wait is a bounded poll that
//! panics with the nodes' logs; measured times go to stderr.

mod support;
use support::*;

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// etcd's administrator, once a test turns authentication on.
const ROOT_USER: &str = "root";
const ROOT_PASSWORD: &str = "rootpw";
/// What a node logs on each full load of the config prefix.
const FULL_LOAD: &str = "cluster: loaded the config from etcd";
/// The pause between two tries of a bounded poll.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// etcd
// ---------------------------------------------------------------------------

/// Two distinct free loopback ports (bound together, then released).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// A one-member etcd on free loopback ports, its data dir and log in a
/// temp dir. Killed (SIGKILL) and its dir removed on drop.
struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    /// Holds `data/` and `etcd.log` (appended to across restarts).
    dir: TempDir,
    /// TLS on the client URLs: the private CA and the certificate (for
    /// 127.0.0.1) it signed for etcd.
    tls: Option<(TestCa, Issued)>,
    /// `user:password` etcdctl authenticates as (once auth is enabled).
    user: Option<String>,
}

impl Etcd {
    /// Starts etcd (plain http) and waits (20 s at most) until it answers.
    fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// Starts etcd serving its clients over TLS only (`https://`), with a
    /// certificate for IP 127.0.0.1 from a fresh private CA (`ca_path()`).
    fn start_tls() -> Etcd {
        let t0 = Instant::now();
        let ca = TestCa::new();
        let cert = ca.issue(&["127.0.0.1"]);
        eprintln!("private CA and etcd's certificate made in {:?}", t0.elapsed());
        Etcd::start_with(Some((ca, cert)))
    }

    fn start_with(tls: Option<(TestCa, Issued)>) -> Etcd {
        let (client_port, peer_port) = free_ports();
        let mut etcd = Etcd { child: None, client_port, peer_port, dir: TempDir::new("etcd"), tls, user: None };
        etcd.spawn();
        etcd
    }

    /// The client URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA that signed etcd's certificate (PEM file); panics without TLS.
    fn ca_path(&self) -> PathBuf {
        let (ca, _) = self.tls.as_ref().expect("this etcd runs without TLS");
        ca.ca_path().to_path_buf()
    }

    /// The client address (what a relay forwards to).
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last lines etcd logged.
    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(self.log_path()).unwrap_or_default(), 4000)
    }

    /// Starts the process on this etcd's ports and data dir, then waits for it.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd runs already");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("etcd log");
        let log_err = log.try_clone().expect("etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let cluster = format!("default={peer}");
        let child = Command::new(ETCD)
            .args(["--name", "default"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", client.as_str(), "--advertise-client-urls", client.as_str()])
            .args(["--listen-peer-urls", peer.as_str(), "--initial-advertise-peer-urls", peer.as_str()])
            .args(["--initial-cluster", cluster.as_str()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(self.tls.iter().flat_map(|(_, cert)| {
                [
                    OsStr::new("--cert-file"),
                    cert.cert_path.as_os_str(),
                    OsStr::new("--key-file"),
                    cert.key_path.as_os_str(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls `etcdctl endpoint health` until it passes (20 s at most).
    fn wait_ready(&mut self) {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(20);
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("etcd exited ({status}) before it was ready; its log:\n{}", self.log_tail());
            }
            let last = match self.try_etcdctl(&["endpoint", "health"]) {
                Ok(_) => {
                    eprintln!("etcd ready on {} after {:?}", self.endpoint(), t0.elapsed());
                    return;
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("etcd not ready within 20 s ({last}); its log:\n{}", self.log_tail());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and waits for the process.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills etcd if it runs, then starts it again on the same ports and
    /// data dir (what it held is still there).
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs etcdctl (API v3) against this etcd, as `user` once auth is
    /// on: its stdout, or why it failed.
    fn try_etcdctl(&self, args: &[&str]) -> Result<String, String> {
        self.try_etcdctl_as(self.user.as_deref(), args)
    }

    /// Runs etcdctl (API v3) against this etcd as `user` (`name:password`;
    /// `None`: no credentials), trusting its CA when it runs TLS: its
    /// stdout, or why it failed.
    fn try_etcdctl_as(&self, user: Option<&str>, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(ETCDCTL);
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.endpoint());
        if self.tls.is_some() {
            cmd.arg("--cacert").arg(self.ca_path());
        }
        if let Some(user) = user {
            cmd.args(["--user", user]);
        }
        let out = cmd
            .args(["--dial-timeout", "1s", "--command-timeout", "3s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {ETCDCTL}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("etcdctl {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Runs etcdctl (API v3) against this etcd; its stdout. Panics (with
    /// etcdctl's stderr) when it fails.
    fn etcdctl(&self, args: &[&str]) -> String {
        self.try_etcdctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// etcd's current revision (`etcdctl endpoint status -w json`).
    fn revision(&self) -> u64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("endpoint status {out:?}: {e}"));
        status[0]["Status"]["header"]["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("no revision in the endpoint status: {status}"))
    }

    /// Turns authentication on: a `root` user (etcdctl authenticates as it
    /// from then on), and `user:password` with read-write access to every
    /// key under `prefix/` and nothing else.
    fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        let under = format!("{prefix}/");
        self.etcdctl(&["user", "add", &format!("{ROOT_USER}:{ROOT_PASSWORD}")]);
        self.etcdctl(&["user", "add", &format!("{user}:{password}")]);
        self.etcdctl(&["role", "add", "rw"]);
        self.etcdctl(&["role", "grant-permission", "rw", "--prefix=true", "readwrite", &under]);
        self.etcdctl(&["user", "grant-role", user, "rw"]);
        self.etcdctl(&["auth", "enable"]);
        self.user = Some(format!("{ROOT_USER}:{ROOT_PASSWORD}"));
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        // `dir` (data and log) goes with the TempDir.
    }
}

// ---------------------------------------------------------------------------
// A TCP relay, to partition one node from etcd
// ---------------------------------------------------------------------------

struct RelayShared {
    target: SocketAddr,
    /// While set, connections are accepted and closed at once.
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every relayed connection (clones), to close them on a cut.
    streams: Mutex<Vec<TcpStream>>,
}

/// Forwards every connection made to `addr()` to a target, byte for byte,
/// until `cut()`: then every relayed connection is closed and new ones are
/// accepted and closed at once, until `heal()`. Every read has a timeout;
/// the threads end on a cut, a close, or drop.
struct Relay {
    addr: SocketAddr,
    shared: Arc<RelayShared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(RelayShared {
            target,
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            while !sh.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    // Cut: accept, and close at once.
                    Ok((client, _)) if sh.cut.load(Ordering::SeqCst) => drop(client),
                    Ok((client, _)) => relay_connection(&sh, client),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay { addr, shared, accept: Some(accept) }
    }

    /// Where to connect instead of the target.
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones (accepted and
    /// closed at once) until `heal()`.
    fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Relays new connections again.
    fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Connects `client` to the relay's target and pumps both ways (a thread
/// each); on failure, or when a cut came in between, closes `client`.
fn relay_connection(sh: &Arc<RelayShared>, client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect_timeout(&sh.target, Duration::from_secs(2)) else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone());
    let (Ok(c1), Ok(u1), Ok(c2), Ok(u2)) = clones else { return };
    {
        let mut streams = sh.streams.lock().unwrap();
        // A cut between the accept and now: this one goes too.
        if sh.cut.load(Ordering::SeqCst) {
            return;
        }
        streams.push(c1);
        streams.push(u1);
    }
    let (a, b) = (sh.clone(), sh.clone());
    thread::spawn(move || pump(client, upstream, &a));
    thread::spawn(move || pump(u2, c2, &b));
}

/// Copies `from` to `to` until either closes, the relay is cut or stopped;
/// then closes both. Reads time out every 200 ms to look at the flags.
fn pump(mut from: TcpStream, mut to: TcpStream, sh: &RelayShared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = to.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 16 * 1024];
    while !sh.stopped.load(Ordering::SeqCst) && !sh.cut.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// A ringway config in cluster mode: `routes`, an admin listener, and
/// `cluster` pointing at `endpoint` under `prefix` as node `node_id`.
fn node_config(routes: Vec<Value>, endpoint: &str, prefix: &str, node_id: &str) -> Value {
    let mut cfg = with_admin(config(routes), None);
    cfg["cluster"] = json!({
        "etcd": {"endpoints": [endpoint], "prefix": prefix, "dialMs": 2000},
        "nodeId": node_id,
    });
    cfg
}

/// `node_config` with more `cluster.etcd` settings (`username`,
/// `password`, `caFile`, …) from the object `etcd`.
fn node_config_with(routes: Vec<Value>, endpoint: &str, prefix: &str, node_id: &str, etcd: Value) -> Value {
    let mut cfg = node_config(routes, endpoint, prefix, node_id);
    for (k, v) in etcd.as_object().expect("cluster.etcd settings: an object") {
        cfg["cluster"]["etcd"][k] = v.clone();
    }
    cfg
}

/// One ringway node: its config file (in the test's temp dir, its state
/// file — the local cache — beside it) and the process, while it runs.
struct Node {
    id: String,
    config_path: PathBuf,
    rw: Option<Ringway>,
}

impl Node {
    /// Writes `cfg` to `dir/ID.json` and starts ringway on it (one worker).
    fn start(dir: &TempDir, id: &str, cfg: &Value) -> Node {
        let config_path = dir.join(&format!("{id}.json"));
        std::fs::write(&config_path, serde_json::to_string_pretty(cfg).unwrap()).expect("write the node's config");
        let mut node = Node { id: id.to_string(), config_path, rw: None };
        node.run();
        node
    }

    /// Starts ringway on this node's config file; waits (20 s at most) for
    /// its `listening` line.
    fn run(&mut self) {
        assert!(self.rw.is_none(), "node {} runs already", self.id);
        let t0 = Instant::now();
        let rw = Ringway::try_start_at(&self.config_path, 1, "info", &[])
            .unwrap_or_else(|f| panic!("node {} did not start ({:?}); its log:\n{}", self.id, f.status, f.stderr));
        eprintln!(
            "node {} listening after {:?} (proxy {}, admin {})",
            self.id,
            t0.elapsed(),
            rw.addr(),
            rw.admin_addr()
        );
        self.rw = Some(rw);
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(&mut self) {
        if let Some(mut rw) = self.rw.take() {
            rw.stop();
        }
    }

    fn rw(&self) -> &Ringway {
        self.rw.as_ref().unwrap_or_else(|| panic!("node {} is not running", self.id))
    }

    /// The proxy listener.
    fn addr(&self) -> SocketAddr {
        self.rw().addr()
    }

    fn api(&self) -> Api {
        self.rw().api()
    }

    /// Its stderr so far (empty when stopped).
    fn log(&self) -> String {
        self.rw.as_ref().map(Ringway::log).unwrap_or_default()
    }
}

/// The last `max` bytes of `s` (from a char boundary).
fn tail(s: &str, max: usize) -> String {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// The ends of the nodes' logs, for a failure message.
fn logs(nodes: &[&Node]) -> String {
    nodes.iter().map(|n| format!("\n--- node {} log (end) ---\n{}", n.id, tail(&n.log(), 6000))).collect()
}

/// Polls `probe` every 20 ms until it is `Ok`; after `timeout`, panics
/// with `what`, the last `Err` and the nodes' logs.
fn wait_for<T>(what: &str, timeout: Duration, nodes: &[&Node], mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}; last: {last}{}", logs(nodes));
        }
        thread::sleep(POLL);
    }
}

/// One proxied GET on a fresh connection; an `Err` instead of a panic
/// when the connection fails.
fn try_get(addr: SocketAddr, host: &str, path: &str) -> Result<Response, String> {
    let mut c = Client::try_connect(addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    c.try_send(req.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    c.read_response(false).map_err(|e| format!("read from {addr}: {e}"))
}

/// Whether `node` proxies `host` to the backend that answers `body`: `Ok`,
/// or what it did instead.
fn serves(node: &Node, host: &str, body: &str) -> Result<(), String> {
    let r = try_get(node.addr(), host, "/")?;
    if r.status == 200 && r.text() == body {
        Ok(())
    } else {
        Err(format!("node {} GET Host {host}: {} {:?}", node.id, r.status, r.text()))
    }
}

/// Panics (with the node's log) unless `node` serves `host` with `body` now.
fn assert_serves(node: &Node, host: &str, body: &str) {
    if let Err(e) = serves(node, host, body) {
        panic!("{e}{}", logs(&[node]));
    }
}

/// How many full loads of the config prefix `log` records.
fn full_loads(log: &str) -> usize {
    log.matches(FULL_LOAD).count()
}

/// The node's log lines from byte `from` on that mention the cluster.
fn cluster_lines(node: &Node, from: usize) -> Vec<String> {
    let log = node.log();
    log.get(from..).unwrap_or("").lines().filter(|l| l.contains("cluster:")).map(str::to_string).collect()
}

/// Panics unless `node` answers `host` with 404 (no such route there).
fn assert_unrouted(node: &Node, host: &str) {
    let r = get(node.addr(), host, "/");
    assert_eq!(r.status, 404, "node {} should have no route {host}:\n{}{}{}", node.id, r.head, r.text(), logs(&[node]));
}

/// `count` proxied GETs of `host` on fresh connections: the failures.
fn traffic(node: &Node, host: &str, body: &str, count: usize) -> Vec<String> {
    (0..count).filter_map(|i| serves(node, host, body).err().map(|e| format!("request {i}: {e}"))).collect()
}

/// The node's config ETag, verbatim: GET /api/v1/routes's, or GET
/// /api/v1/config's when the routes list carries none.
fn etag(node: &Node) -> String {
    let r = node.api().get("/api/v1/routes").expect(200, &format!("GET /api/v1/routes on node {}", node.id));
    match r.etag {
        Some(t) => t,
        None => node.api().config().0,
    }
}

/// The revision in an ETag (`"12"` → 12).
fn etag_num(tag: &str) -> u64 {
    let t = tag.trim().trim_start_matches("W/").trim_matches('"');
    t.parse().unwrap_or_else(|_| panic!("ETag {tag:?} is not a quoted number"))
}

/// The ETag of a write's answer, as a revision.
fn write_revision(r: &ApiReply) -> u64 {
    etag_num(r.etag.as_deref().unwrap_or_else(|| panic!("the write's answer has no ETag:\n{}", r.response.head)))
}

/// The node's route vHosts, sorted (etcd hands them out by key, the API
/// in whatever order they came).
fn sorted_vhosts(node: &Node) -> Vec<String> {
    let mut v = node.api().vhosts();
    v.sort();
    v
}

/// `GET /api/v1/cluster`, which must answer 200.
fn cluster(node: &Node) -> Value {
    node.api().get("/api/v1/cluster").expect(200, &format!("GET /api/v1/cluster on node {}", node.id)).json
}

/// The node ids a `GET /api/v1/cluster` lists, sorted.
fn node_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["nodeId"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Waits (10 s) until every node is connected to etcd and lists every
/// node as a member.
fn wait_formed(nodes: &[&Node]) {
    let t0 = Instant::now();
    let mut want: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    want.sort();
    for n in nodes {
        wait_for(&format!("node {} connected and listing {want:?}", n.id), Duration::from_secs(10), nodes, || {
            let s = cluster(n);
            if s["connected"].as_bool() == Some(true) && node_ids(&s) == want {
                Ok(())
            } else {
                Err(s.to_string())
            }
        });
    }
    eprintln!("cluster {want:?} formed after {:?}", t0.elapsed());
}

/// Waits (`timeout`) until `node` reports `connected` as `connected`; its
/// `GET /api/v1/cluster` then.
fn wait_connected(node: &Node, connected: bool, timeout: Duration) -> Value {
    wait_for(&format!("node {} reports connected:{connected}", node.id), timeout, &[node], || {
        let s = cluster(node);
        if s["connected"].as_bool() == Some(connected) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
}

/// A sample's value in the node's `/metrics` (unlabelled, or its first
/// labelled series).
fn metric(node: &Node, name: &str) -> Option<f64> {
    let admin = node.rw().admin_addr();
    let text = get(admin, &admin.to_string(), "/metrics").text();
    let labelled = format!("{name}{{");
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let (key, value) = (words.next()?, words.next()?);
        if key == name || key.starts_with(&labelled) {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// A write to `node` refused because etcd is out of reach: 503
/// `clusterUnavailable`, with a message naming etcd.
fn assert_write_refused(node: &Node, host: &str, backend: &BackendHandle) {
    let t0 = Instant::now();
    let r = node.api().post("/api/v1/routes", &route(host, "ROUND_ROBIN", vec![backend.config()]));
    let took = t0.elapsed();
    assert_eq!(
        r.status,
        503,
        "node {}: a write without etcd:\n{}{}{}",
        node.id,
        r.response.head,
        r.response.text(),
        logs(&[node])
    );
    assert_eq!(r.error(), Some("clusterUnavailable"), "node {}: {}", node.id, r.json);
    let message = r.json["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(message.contains("etcd"), "node {}: the message should name etcd: {}", node.id, r.json);
    eprintln!("node {}: a write without etcd answered 503 in {took:?}", node.id);
}

/// POSTs new routes to `node` until one is taken (201); a 503 (etcd not
/// reached again yet) is retried, for `timeout` at most. Returns the vHost
/// that was added.
fn write_until_taken(node: &Node, tag: &str, backend: &BackendHandle, timeout: Duration) -> String {
    let t0 = Instant::now();
    let mut attempt = 0;
    let host = wait_for(&format!("node {} takes API writes again", node.id), timeout, &[node], || {
        attempt += 1;
        let host = format!("{tag}-{}-{attempt}.test", node.id);
        let r = node.api().post("/api/v1/routes", &route(&host, "ROUND_ROBIN", vec![backend.config()]));
        match r.status {
            201 => Ok(host),
            503 => Err(r.response.text()),
            s => panic!("node {}: POST {host}: unexpected {s}:\n{}{}", node.id, r.response.text(), logs(&[node])),
        }
    });
    eprintln!("node {} takes writes again after {:?} ({attempt} attempts)", node.id, t0.elapsed());
    host
}

// ---------------------------------------------------------------------------
// 1. Convergence
// ---------------------------------------------------------------------------

#[test]
fn route_added_on_one_node_serves_on_every_node() {
    let etcd = Etcd::start();
    let dir = TempDir::new("cluster-converge");
    let prefix = "/ringway/converge";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let b_backend = Backend::respond(200, "b").named("b").start();
    let w_backend = Backend::respond(200, "w").named("w").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| Node::start(&dir, id, &node_config(routes.clone(), &etcd.endpoint(), prefix, id)))
        .collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_formed(&all);
    for n in &all {
        assert_serves(n, "seed.test", "seed");
    }
    // Node a seeded etcd with the config file's route.
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/seed.test"), "--print-value-only"]);
    assert!(stored.contains("seed.test"), "etcd holds no seed.test route: {stored:?}");

    // A write on a serves on a as soon as it is answered.
    let t0 = Instant::now();
    let r = a
        .api()
        .post("/api/v1/routes", &route("b.test", "ROUND_ROBIN", vec![b_backend.config()]))
        .expect(201, "POST b.test on node a");
    let answered = t0.elapsed();
    let first = write_revision(&r);
    assert_serves(a, "b.test", "b");
    // ...and on b and c within a bounded wait.
    for n in [b, c] {
        wait_for(&format!("node {} serves b.test", n.id), Duration::from_secs(5), &all, || serves(n, "b.test", "b"));
        eprintln!("node {} serves b.test {:?} after the write was sent (answered in {answered:?})", n.id, t0.elapsed());
    }

    // ?wait=cluster on b: answered once every node applied it.
    let t0 = Instant::now();
    let r = b
        .api()
        .post("/api/v1/routes?wait=cluster", &route("w.test", "ROUND_ROBIN", vec![w_backend.config()]))
        .expect(201, "POST w.test?wait=cluster on node b");
    eprintln!("POST ?wait=cluster answered in {:?}: {}", t0.elapsed(), r.json["cluster"]);
    let revision = write_revision(&r);
    assert!(revision > first, "the second write's ETag {revision} is not past the first's {first}");
    let report = &r.json["cluster"];
    let mut applied: Vec<String> = report["applied"]
        .as_array()
        .unwrap_or_else(|| panic!("no cluster.applied in {}", r.json))
        .iter()
        .map(|v| v.as_str().unwrap_or("?").to_string())
        .collect();
    applied.sort();
    assert_eq!(applied, vec!["a".to_string(), "b".into(), "c".into()], "cluster report: {report}");
    assert_eq!(report["laggards"].as_array().map(Vec::len), Some(0), "cluster report: {report}");
    assert_eq!(report["revision"].as_u64(), Some(revision), "cluster report: {report}");
    // No polling: every node applied it before the answer.
    assert_serves(a, "w.test", "w");
    assert_serves(c, "w.test", "w");

    // c lists all three at one revision, at least the write's.
    let status = wait_for("node c lists three nodes at one revision", Duration::from_secs(5), &all, || {
        let s = cluster(c);
        let revisions: Vec<u64> = s["nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["revision"].as_u64()).collect())
            .unwrap_or_default();
        let same = revisions.len() == 3 && revisions.iter().all(|r| *r == revisions[0] && *r >= revision);
        if node_ids(&s) == ["a", "b", "c"] && same {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(status["nodeId"], "c", "{status}");
    assert_eq!(status["connected"], true, "{status}");
    assert!(status["revision"].as_u64().is_some_and(|r| r >= revision), "{status}");
    assert_eq!(status["etcd"]["prefix"], prefix, "{status}");
    assert_eq!(status["etcd"]["endpoints"], json!([etcd.endpoint()]), "{status}");
    let members = status["nodes"].as_array().unwrap();
    let selves: Vec<&Value> = members.iter().filter(|n| n["self"] == true).collect();
    assert_eq!(selves.len(), 1, "exactly one member is self: {status}");
    assert_eq!(selves[0]["nodeId"], "c", "{status}");
    assert_eq!(selves[0]["pid"].as_u64(), Some(u64::from(c.rw().pid())), "{status}");
    for m in members {
        assert_eq!(m["version"], env!("CARGO_PKG_VERSION"), "{status}");
        assert!(m["heartbeatAt"].as_u64().is_some_and(|t| t > 1_600_000_000), "{status}");
        assert!(m["pid"].as_u64().is_some(), "{status}");
    }
    // The operator's view: `ringway ctl cluster` on c.
    let ctl = std::process::Command::new(ringway_bin())
        .args(["ctl", "--admin", &c.rw().admin_addr().to_string(), "cluster"])
        .output()
        .expect("ringway ctl");
    let table = String::from_utf8_lossy(&ctl.stdout);
    assert!(ctl.status.success(), "ctl cluster: {table}{}", String::from_utf8_lossy(&ctl.stderr));
    assert!(table.contains("node c ") && table.contains("connected"), "ctl cluster:\n{table}");
    assert!(table.contains("c (this)") && table.contains("\na ") && table.contains("\nb "), "ctl cluster:\n{table}");

    // Every node: the same ETag and the same routes.
    let tags = wait_for("every node at one ETag", Duration::from_secs(5), &all, || {
        let tags: Vec<String> = all.iter().map(|n| etag(n)).collect();
        if tags.iter().all(|t| *t == tags[0]) {
            Ok(tags)
        } else {
            Err(format!("{tags:?}"))
        }
    });
    assert!(etag_num(&tags[0]) >= revision, "ETag {} is behind the write's {revision}", tags[0]);
    let want = vec!["b.test".to_string(), "seed.test".into(), "w.test".into()];
    for n in &all {
        assert_eq!(sorted_vhosts(n), want, "node {}", n.id);
    }
    // The dashboard's cluster card, in a real browser.
    dashboard_shows_the_cluster(c, &["a", "b", "c"]);
}

/// Runs tests/dashboard/cluster.mjs (Chromium via playwright-core, both
/// installed by scripts/test.sh) against `node`'s dashboard.
fn dashboard_shows_the_cluster(node: &Node, ids: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard");
    assert!(
        std::path::Path::new(&format!("{dir}/node_modules/playwright-core")).exists(),
        "playwright-core is not installed in tests/dashboard (scripts/test.sh installs it)"
    );
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is not installed (scripts/test.sh installs it)");
    let out = std::process::Command::new("timeout")
        .args(["60", "node", &format!("{dir}/cluster.mjs")])
        .env("ADMIN", format!("http://{}", node.rw().admin_addr()))
        .env("NODES", ids.join(","))
        .env("SELF", &node.id)
        .env("CHROMIUM", chromium)
        .output()
        .expect("node tests/dashboard/cluster.mjs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the dashboard's cluster card:\n{text}");
    eprint!("{text}");
}

// ---------------------------------------------------------------------------
// 2. Racing writes
// ---------------------------------------------------------------------------

/// An ETag read on one node is good on another at once (a client behind
/// an admin balancer): a write there naming it waits until that node has
/// applied it, then succeeds — never a 412 for a tag that is newer, not
/// stale. 20 rounds of "write on a, then at once on b with a's ETag".
#[test]
fn an_etag_from_one_node_is_good_on_another_at_once() {
    const ROUNDS: usize = 20;
    let etcd = Etcd::start();
    let dir = TempDir::new("cluster-catchup");
    let prefix = "/ringway/catchup";
    let backend = Backend::respond(200, "k").named("k").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![backend.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let b = Node::start(&dir, "b", &node_config(routes, &etcd.endpoint(), prefix, "b"));
    wait_formed(&[&a, &b]);
    for round in 0..ROUNDS {
        let on_a = a
            .api()
            .post("/api/v1/routes", &route(&format!("a{round}.test"), "ROUND_ROBIN", vec![backend.config()]))
            .expect(201, "POST on a");
        let tag = on_a.etag.clone().expect("a write's ETag");
        let r = b.api().call(
            "POST",
            "/api/v1/routes",
            &[("If-Match", tag.as_str())],
            Some(&route(&format!("b{round}.test"), "ROUND_ROBIN", vec![backend.config()])),
        );
        assert_eq!(r.status, 201, "round {round}: If-Match {tag} (read on a) on b: {}{}", r.json, logs(&[&a, &b]));
    }
    eprintln!("{ROUNDS} writes on b with the ETag just read on a: all 201");
    // A tag no node has reached is still refused, after a short wait.
    let t0 = Instant::now();
    let r = b.api().call(
        "POST",
        "/api/v1/routes",
        &[("If-Match", "\"999999\"")],
        Some(&route("never.test", "ROUND_ROBIN", vec![backend.config()])),
    );
    assert_eq!(r.status, 412, "a tag from the future: {}", r.json);
    eprintln!("a tag no node has reached: 412 after {:?}", t0.elapsed());
}

#[test]
fn racing_writes_on_two_nodes_get_one_success_and_one_412() {
    const ROUNDS: usize = 5;
    let etcd = Etcd::start();
    let dir = TempDir::new("cluster-race");
    let prefix = "/ringway/race";
    let backend = Backend::respond(200, "r").named("r").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![backend.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let b = Node::start(&dir, "b", &node_config(routes, &etcd.endpoint(), prefix, "b"));
    let all = [&a, &b];
    wait_formed(&all);

    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let tag = wait_for("both nodes at one ETag", Duration::from_secs(5), &all, || {
            let (x, y) = (etag(&a), etag(&b));
            if x == y {
                Ok(x)
            } else {
                Err(format!("a {x}, b {y}"))
            }
        });
        // Both POST a different route with the same If-Match, at once.
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = all
            .iter()
            .map(|n| {
                let (api, barrier, tag) = (n.api(), barrier.clone(), tag.clone());
                let body = route(&format!("race-{}-{round}.test", n.id), "ROUND_ROBIN", vec![backend.config()]);
                thread::spawn(move || {
                    barrier.wait();
                    let r = api.call("POST", "/api/v1/routes", &[("If-Match", tag.as_str())], Some(&body));
                    (r.status, r.error().map(str::to_string), r.response.text())
                })
            })
            .collect();
        let results: Vec<(u16, Option<String>, String)> =
            racers.into_iter().map(|h| h.join().expect("a racing writer panicked")).collect();
        let won: Vec<usize> = (0..2).filter(|&i| (200..300).contains(&results[i].0)).collect();
        let lost: Vec<usize> = (0..2).filter(|&i| results[i].0 == 412).collect();
        assert!(
            won.len() == 1 && lost.len() == 1,
            "round {round}, If-Match {tag}: want one 2xx and one 412; a: {:?}, b: {:?}{}",
            results[0],
            results[1],
            logs(&all)
        );
        assert_eq!(results[lost[0]].1.as_deref(), Some("preconditionFailed"), "round {round}: {:?}", results[lost[0]]);
        wins[won[0]] += 1;
        let (winner, loser) = (all[won[0]], all[lost[0]]);

        // A write without If-Match on b right after succeeds.
        let after = format!("after-{round}.test");
        b.api()
            .post("/api/v1/routes", &route(&after, "ROUND_ROBIN", vec![backend.config()]))
            .expect(201, &format!("round {round}: POST {after} without If-Match on node b"));

        // Every node ends with the winner's route, never the loser's.
        let (win_host, lose_host) =
            (format!("race-{}-{round}.test", winner.id), format!("race-{}-{round}.test", loser.id));
        for n in all {
            for host in [&win_host, &after] {
                wait_for(&format!("node {} serves {host}", n.id), Duration::from_secs(5), &all, || {
                    serves(n, host, "r")
                });
            }
        }
        for n in all {
            assert_unrouted(n, &lose_host);
            assert!(!sorted_vhosts(n).contains(&lose_host), "node {} lists the loser's route {lose_host}", n.id);
        }
    }
    eprintln!("{ROUNDS} races on one If-Match: node a won {}, node b won {}", wins[0], wins[1]);
    let key = format!("{prefix}/config/routes/");
    let keys = etcd.etcdctl(&["get", "--prefix", &key, "--keys-only"]);
    assert_eq!(keys.lines().filter(|l| l.contains("/race-")).count(), ROUNDS, "race routes in etcd:\n{keys}");
}

// ---------------------------------------------------------------------------
// 3. etcd down
// ---------------------------------------------------------------------------

#[test]
fn etcd_down_keeps_serving_and_refuses_writes_then_catches_up() {
    let mut etcd = Etcd::start();
    let dir = TempDir::new("cluster-etcd-down");
    let prefix = "/ringway/down";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let c_backend = Backend::respond(200, "c").named("c").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let b = Node::start(&dir, "b", &node_config(routes, &etcd.endpoint(), prefix, "b"));
    let all = [&a, &b];
    wait_formed(&all);
    for n in all {
        assert_eq!(metric(n, "ringway_cluster_connected"), Some(1.0), "node {}", n.id);
        let revision = metric(n, "ringway_cluster_revision");
        assert!(revision.is_some_and(|r| r >= 1.0), "node {}: ringway_cluster_revision {revision:?}", n.id);
    }

    etcd.kill();
    let killed = Instant::now();
    for n in all {
        let failures = traffic(n, "seed.test", "seed", 50);
        assert!(failures.is_empty(), "node {} with etcd just killed: {failures:?}{}", n.id, logs(&[n]));
    }
    for n in all {
        assert_write_refused(n, "refused.test", &c_backend);
    }
    for n in all {
        let s = wait_connected(n, false, Duration::from_secs(15));
        assert!(s["lastError"].as_str().is_some_and(|e| !e.is_empty()), "node {}: no lastError: {s}", n.id);
        assert_eq!(metric(n, "ringway_cluster_connected"), Some(0.0), "node {}", n.id);
    }
    eprintln!("both nodes report connected:false {:?} after etcd was killed", killed.elapsed());
    // Still serving, knowing etcd is gone.
    for n in all {
        let failures = traffic(n, "seed.test", "seed", 50);
        assert!(failures.is_empty(), "node {} disconnected from etcd: {failures:?}{}", n.id, logs(&[n]));
        assert_unrouted(n, "refused.test");
    }

    // etcd returns; a route put straight into etcd reaches both nodes.
    etcd.restart();
    let back = Instant::now();
    let key = format!("{prefix}/config/routes/c.test");
    let value = route("c.test", "ROUND_ROBIN", vec![c_backend.config()]).to_string();
    etcd.etcdctl(&["put", &key, &value]);
    for n in all {
        wait_for(&format!("node {} serves c.test put by etcdctl", n.id), Duration::from_secs(30), &all, || {
            serves(n, "c.test", "c")
        });
        eprintln!("node {} serves c.test {:?} after etcd came back", n.id, back.elapsed());
    }
    // API writes work again (retried while the reconnect is under way).
    for n in all {
        let host = write_until_taken(n, "back", &c_backend, Duration::from_secs(20));
        assert_serves(n, &host, "c");
    }
    for n in all {
        wait_connected(n, true, Duration::from_secs(10));
        assert_eq!(metric(n, "ringway_cluster_connected"), Some(1.0), "node {}", n.id);
    }
    // The refused write was never applied anywhere, nor stored.
    for n in all {
        assert_unrouted(n, "refused.test");
    }
    let refused = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/refused.test"), "--print-value-only"]);
    assert!(refused.trim().is_empty(), "the refused write reached etcd: {refused:?}");
    let tags = wait_for("both nodes at one ETag", Duration::from_secs(5), &all, || {
        let (x, y) = (etag(&a), etag(&b));
        if x == y {
            Ok(x)
        } else {
            Err(format!("a {x}, b {y}"))
        }
    });
    let revision = metric(&a, "ringway_cluster_revision");
    assert!(
        revision.is_some_and(|r| r >= etag_num(&tags) as f64),
        "ringway_cluster_revision {revision:?} is behind the ETag {tags}"
    );
}

// ---------------------------------------------------------------------------
// 4. A partitioned node
// ---------------------------------------------------------------------------

#[test]
fn partitioned_node_catches_up_when_healed() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.addr());
    let dir = TempDir::new("cluster-partition");
    let prefix = "/ringway/partition";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let d = Backend::respond(200, "d").named("d").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let c = Node::start(&dir, "c", &node_config(routes, &format!("http://{}", relay.addr()), prefix, "c"));
    let all = [&a, &c];
    wait_formed(&all);
    let before = etag(&c);
    assert_eq!(before, etag(&a), "one ETag before the partition");

    relay.cut();
    let cut = Instant::now();
    for host in ["d1.test", "d2.test", "d3.test"] {
        a.api()
            .post("/api/v1/routes", &route(host, "ROUND_ROBIN", vec![d.config()]))
            .expect(201, &format!("POST {host} on node a"));
    }
    a.api().delete("/api/v1/routes/d2.test").expect(204, "DELETE d2.test on node a");
    // ?wait=cluster with c cut off (its registration lives on until its
    // lease ends): answered after the bounded wait, naming c.
    let t0 = Instant::now();
    let (api, d4) = (a.api(), route("d4.test", "ROUND_ROBIN", vec![d.config()]));
    let write = thread::spawn(move || api.post("/api/v1/routes?wait=cluster", &d4));
    // Meanwhile the node answers reads (the write does not hold them).
    thread::sleep(Duration::from_millis(500));
    let t1 = Instant::now();
    a.api().get("/api/v1/info").expect(200, "GET /api/v1/info during the write");
    let read = t1.elapsed();
    assert!(read < Duration::from_secs(1), "a read waited {read:?} behind the write");
    let r = write.join().expect("the write's thread").expect(201, "POST d4.test?wait=cluster on node a");
    let waited = t0.elapsed();
    eprintln!("a read during the waiting write answered in {read:?}");
    assert_eq!(r.json["cluster"]["laggards"], json!(["c"]), "{}", r.json);
    assert_eq!(r.json["cluster"]["applied"], json!(["a"]), "{}", r.json);
    assert!(waited >= Duration::from_secs(4), "answered after {waited:?}, before the bounded wait");
    eprintln!("?wait=cluster with c cut off answered after {waited:?}, naming c");
    let a_tag = etag(&a);
    assert!(etag_num(&a_tag) > etag_num(&before), "a's ETag {a_tag} did not move past {before}");
    assert_serves(&a, "d1.test", "d");
    assert_serves(&a, "d3.test", "d");
    assert_unrouted(&a, "d2.test");

    // Cut off, c keeps serving what it had, and has seen none of it.
    let failures = traffic(&c, "seed.test", "seed", 20);
    assert!(failures.is_empty(), "node c cut off from etcd: {failures:?}{}", logs(&[&c]));
    assert_unrouted(&c, "d1.test");
    assert_eq!(etag(&c), before, "node c moved while cut off");
    assert_write_refused(&c, "cut.test", &d);
    eprintln!("3 changes and a delete made on a during the partition ({:?} cut)", cut.elapsed());

    relay.heal();
    let healed = Instant::now();
    let want = sorted_vhosts(&a);
    assert_eq!(want, vec!["d1.test".to_string(), "d3.test".into(), "d4.test".into(), "seed.test".into()]);
    wait_for("node c has a's routes after the heal", Duration::from_secs(20), &all, || {
        let got = sorted_vhosts(&c);
        if got == want {
            Ok(())
        } else {
            Err(format!("c has {got:?}, a has {want:?}"))
        }
    });
    eprintln!("node c caught up {:?} after the heal", healed.elapsed());
    assert_serves(&c, "d1.test", "d");
    assert_serves(&c, "d3.test", "d");
    assert_unrouted(&c, "d2.test");
    assert_unrouted(&c, "cut.test");
    wait_for("node c at a's ETag", Duration::from_secs(5), &all, || {
        let got = etag(&c);
        if got == a_tag {
            Ok(())
        } else {
            Err(format!("c {got}, a {a_tag}"))
        }
    });
    assert_eq!(etag(&a), a_tag, "node a moved meanwhile");
}

// ---------------------------------------------------------------------------
// 5. Restart from the local cache
// ---------------------------------------------------------------------------

#[test]
fn node_restarted_while_etcd_is_down_starts_from_its_cache() {
    let mut etcd = Etcd::start();
    let dir = TempDir::new("cluster-cache");
    let prefix = "/ringway/cache";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let added = Backend::respond(200, "api").named("api").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let mut a = Node::start(&dir, "a", &node_config(routes, &etcd.endpoint(), prefix, "a"));
    wait_formed(&[&a]);
    a.api()
        .post("/api/v1/routes", &route("api.test", "ROUND_ROBIN", vec![added.config()]))
        .expect(201, "POST api.test on node a");
    assert_serves(&a, "api.test", "api");
    let tag = etag(&a);
    // The cache may be written a moment after the change (it is a cache):
    // wait (bounded) until it holds the route, state file or its journal.
    let cache = state_file_of(&a.config_path);
    let journal = cache.with_file_name(format!("{}.log", cache.file_name().unwrap().to_string_lossy()));
    wait_for("the local cache holds api.test", Duration::from_secs(5), &[&a], || {
        let text = std::fs::read_to_string(&cache).unwrap_or_default()
            + &std::fs::read_to_string(&journal).unwrap_or_default();
        if text.contains("api.test") {
            Ok(())
        } else {
            Err(format!("{} does not name api.test yet", cache.display()))
        }
    });
    a.stop();
    assert!(cache.exists(), "no local cache at {}", cache.display());

    etcd.kill();
    let t0 = Instant::now();
    a.run();
    eprintln!("node a restarted with etcd down: listening after {:?}", t0.elapsed());
    assert_serves(&a, "api.test", "api");
    assert_serves(&a, "seed.test", "seed");
    assert_eq!(etag(&a), tag, "the cache's ETag");
    wait_connected(&a, false, Duration::from_secs(10));
    assert_write_refused(&a, "refused.test", &added);

    // etcd back: the node reconnects and takes writes again.
    etcd.restart();
    let host = write_until_taken(&a, "back", &added, Duration::from_secs(20));
    assert_serves(&a, &host, "api");
    assert_serves(&a, "api.test", "api");
    wait_connected(&a, true, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// 6. Behind a compaction
// ---------------------------------------------------------------------------

#[test]
fn a_node_behind_a_compaction_reloads_once_and_catches_up() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.addr());
    let dir = TempDir::new("cluster-compaction");
    let prefix = "/ringway/compaction";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let e = Backend::respond(200, "e").named("e").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let c = Node::start(&dir, "c", &node_config(routes, &format!("http://{}", relay.addr()), prefix, "c"));
    let all = [&a, &c];
    wait_formed(&all);
    let before = etag(&c);
    assert_eq!(before, etag(&a), "one ETag before the partition");
    let loads_before = full_loads(&c.log());
    assert!(loads_before >= 1, "node c never logged {FULL_LOAD:?}{}", logs(&[&c]));

    relay.cut();
    let cut = Instant::now();
    wait_connected(&c, false, Duration::from_secs(10));
    eprintln!("node c reports connected:false {:?} after the cut", cut.elapsed());
    for host in ["e1.test", "e2.test", "e3.test"] {
        a.api()
            .post("/api/v1/routes", &route(host, "ROUND_ROBIN", vec![e.config()]))
            .expect(201, &format!("POST {host} on node a"));
    }
    a.api().delete("/api/v1/routes/e2.test").expect(204, "DELETE e2.test on node a");
    let a_tag = etag(&a);
    assert!(etag_num(&a_tag) > etag_num(&before), "a's ETag {a_tag} did not move past {before}");

    // Compact etcd at its current revision: what c last saw is gone.
    let revision = etcd.revision();
    assert!(revision >= etag_num(&a_tag), "etcd's revision {revision} is behind a's ETag {a_tag}");
    let t0 = Instant::now();
    etcd.etcdctl(&["compact", &revision.to_string()]);
    eprintln!("etcd compacted at revision {revision} in {:?} (node c last saw {before})", t0.elapsed());
    let seed_key = format!("{prefix}/config/routes/seed.test");
    let old = etcd.try_etcdctl(&["get", &seed_key, "--rev", &etag_num(&before).to_string()]);
    assert!(
        old.as_ref().is_err_and(|e| e.contains("compacted")),
        "reading at c's revision {before} after the compaction: {old:?}"
    );

    // Still cut off: c serves what it had, at its old ETag, no reload yet.
    assert_serves(&c, "seed.test", "seed");
    assert_unrouted(&c, "e1.test");
    assert_eq!(etag(&c), before, "node c moved while cut off");
    assert_eq!(full_loads(&c.log()), loads_before, "node c reloaded while cut off{}", logs(&[&c]));

    let mark = c.log().len();
    relay.heal();
    let healed = Instant::now();
    let want = sorted_vhosts(&a);
    assert_eq!(want, vec!["e1.test".to_string(), "e3.test".into(), "seed.test".into()]);
    wait_for("node c has a's routes after the heal", Duration::from_secs(20), &all, || {
        let got = sorted_vhosts(&c);
        if got == want {
            Ok(())
        } else {
            Err(format!("c has {got:?}, a has {want:?}"))
        }
    });
    eprintln!("node c caught up {:?} after the heal", healed.elapsed());
    wait_for("node c at a's ETag", Duration::from_secs(5), &all, || {
        let got = etag(&c);
        if got == a_tag {
            Ok(())
        } else {
            Err(format!("c {got}, a {a_tag}"))
        }
    });
    wait_connected(&c, true, Duration::from_secs(10));
    assert_serves(&c, "e1.test", "e");
    assert_serves(&c, "e3.test", "e");
    assert_unrouted(&c, "e2.test");
    let after_heal = cluster_lines(&c, mark);
    eprintln!("node c after the heal ({:?}):\n  {}", healed.elapsed(), after_heal.join("\n  "));
    let loads = full_loads(&c.log());
    assert_eq!(
        loads,
        loads_before + 1,
        "node c: {loads} full loads after the heal, {loads_before} before; want exactly one more{}",
        logs(&[&c])
    );

    // The watch goes on from the reload: changes flow both ways, and no
    // second reload comes of them.
    let t0 = Instant::now();
    a.api()
        .post("/api/v1/routes", &route("after-a.test", "ROUND_ROBIN", vec![e.config()]))
        .expect(201, "POST after-a.test on node a");
    wait_for("node c serves after-a.test", Duration::from_secs(5), &all, || serves(&c, "after-a.test", "e"));
    eprintln!("after the reload, a change on a served on c {:?} after it was sent", t0.elapsed());
    let t0 = Instant::now();
    c.api()
        .post("/api/v1/routes", &route("after-c.test", "ROUND_ROBIN", vec![e.config()]))
        .expect(201, "POST after-c.test on node c");
    wait_for("node a serves after-c.test", Duration::from_secs(5), &all, || serves(&a, "after-c.test", "e"));
    eprintln!("after the reload, a change on c served on a {:?} after it was sent", t0.elapsed());
    wait_for("both nodes at one ETag", Duration::from_secs(5), &all, || {
        let (x, y) = (etag(&a), etag(&c));
        if x == y {
            Ok(())
        } else {
            Err(format!("a {x}, c {y}"))
        }
    });
    assert_eq!(full_loads(&c.log()), loads_before + 1, "node c reloaded again{}", logs(&[&c]));
}

// ---------------------------------------------------------------------------
// 7. etcd authentication
// ---------------------------------------------------------------------------

#[test]
fn etcd_auth_is_used_and_a_wrong_password_is_named() {
    let mut etcd = Etcd::start();
    let prefix = "/ringway/auth";
    let t0 = Instant::now();
    etcd.enable_auth("ringway", "pw", prefix);
    eprintln!("etcd auth enabled in {:?}", t0.elapsed());
    // Auth is on: nothing without credentials, and ringway's user only
    // under its prefix.
    let anonymous = etcd.try_etcdctl_as(None, &["get", "--prefix", &format!("{prefix}/")]);
    assert!(anonymous.is_err(), "etcd answered a read without credentials: {anonymous:?}");
    let outside = etcd.try_etcdctl_as(Some("ringway:pw"), &["put", "/elsewhere", "x"]);
    assert!(
        outside.as_ref().is_err_and(|e| e.contains("permission denied")),
        "ringway's user wrote outside its prefix: {outside:?}"
    );

    let dir = TempDir::new("cluster-auth");
    let seed = Backend::respond(200, "seed").named("seed").start();
    let api = Backend::respond(200, "api").named("api").start();
    let own = Backend::respond(200, "own").named("own").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let credentials = json!({"username": "ringway", "password": "pw"});
    let good = Node::start(&dir, "good", &node_config_with(routes, &etcd.endpoint(), prefix, "good", credentials));
    wait_formed(&[&good]);
    assert_serves(&good, "seed.test", "seed");
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/seed.test"), "--print-value-only"]);
    assert!(stored.contains("seed.test"), "node good did not seed etcd: {stored:?}");
    let t0 = Instant::now();
    good.api()
        .post("/api/v1/routes", &route("api.test", "ROUND_ROBIN", vec![api.config()]))
        .expect(201, "POST api.test on node good");
    eprintln!("node good: a write through authenticated etcd answered in {:?}", t0.elapsed());
    assert_serves(&good, "api.test", "api");
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/api.test"), "--print-value-only"]);
    assert!(stored.contains("api.test"), "etcd holds no api.test route: {stored:?}");
    let registered = etcd.etcdctl(&["get", &format!("{prefix}/nodes/good"), "--print-value-only"]);
    assert!(registered.contains("\"good\""), "node good is not registered in etcd: {registered:?}");

    // The wrong password: the node starts on its config file's routes,
    // and says why it has no etcd.
    let wrong = json!({"username": "ringway", "password": "not-pw"});
    let own_routes = vec![route("own.test", "ROUND_ROBIN", vec![own.config()])];
    let bad = Node::start(&dir, "bad", &node_config_with(own_routes, &etcd.endpoint(), prefix, "bad", wrong));
    let started = Instant::now();
    assert_serves(&bad, "own.test", "own");
    assert_unrouted(&bad, "api.test");
    let status = wait_for("node bad names the authentication failure", Duration::from_secs(15), &[&bad], || {
        let s = cluster(&bad);
        let error = s["lastError"].as_str().unwrap_or_default().to_ascii_lowercase();
        if s["connected"] == false && error.contains("auth") {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    eprintln!("node bad: lastError {} ({:?} after it started)", status["lastError"], started.elapsed());
    assert_eq!(metric(&bad, "ringway_cluster_connected"), Some(0.0), "node bad");
    assert_write_refused(&bad, "refused.test", &api);
    assert!(
        bad.log().to_ascii_lowercase().contains("authentication failed"),
        "node bad's log does not name the authentication failure{}",
        logs(&[&bad])
    );
    assert_serves(&bad, "own.test", "own");

    // Nothing of the bad node reached etcd or the good node.
    let keys = etcd.etcdctl(&["get", "--prefix", &format!("{prefix}/"), "--keys-only"]);
    assert!(!keys.contains("own.test") && !keys.contains("refused.test"), "etcd keys:\n{keys}");
    assert!(!keys.contains("/nodes/bad"), "node bad registered in etcd:\n{keys}");
    assert_eq!(node_ids(&cluster(&good)), ["good"], "node good's members");
    assert_unrouted(&good, "own.test");
    assert_eq!(cluster(&good)["connected"], true, "node good");

    // etcd's auth tokens do not outlive it: after a restart the good node
    // authenticates again and takes writes.
    etcd.restart();
    let host = write_until_taken(&good, "restarted", &api, Duration::from_secs(20));
    assert_serves(&good, &host, "api");
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/{host}"), "--print-value-only"]);
    assert!(stored.contains(&host), "etcd holds no {host} route: {stored:?}");
    wait_connected(&good, true, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// 8. etcd over TLS
// ---------------------------------------------------------------------------

#[test]
fn etcd_over_tls_with_a_private_ca() {
    let etcd = Etcd::start_tls();
    assert!(etcd.endpoint().starts_with("https://"), "{}", etcd.endpoint());
    let ca = etcd.ca_path();
    let ca_file = ca.to_str().expect("a UTF-8 temp path").to_string();
    let dir = TempDir::new("cluster-tls");
    let prefix = "/ringway/tls";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let t_backend = Backend::respond(200, "t").named("t").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let trust = json!({"caFile": ca_file});
    let a = Node::start(&dir, "a", &node_config_with(routes.clone(), &etcd.endpoint(), prefix, "a", trust.clone()));
    let b = Node::start(&dir, "b", &node_config_with(routes.clone(), &etcd.endpoint(), prefix, "b", trust));
    let all = [&a, &b];
    wait_formed(&all);
    let status = cluster(&a);
    assert_eq!(status["etcd"]["endpoints"], json!([etcd.endpoint()]), "{status}");
    assert_eq!(metric(&a, "ringway_cluster_connected"), Some(1.0), "node a");

    let t0 = Instant::now();
    a.api()
        .post("/api/v1/routes", &route("tls.test", "ROUND_ROBIN", vec![t_backend.config()]))
        .expect(201, "POST tls.test on node a");
    let answered = t0.elapsed();
    assert_serves(&a, "tls.test", "t");
    wait_for("node b serves tls.test", Duration::from_secs(5), &all, || serves(&b, "tls.test", "t"));
    eprintln!("over TLS: the write answered in {answered:?}, node b served it {:?} after it was sent", t0.elapsed());
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/tls.test"), "--print-value-only"]);
    assert!(stored.contains("tls.test"), "etcd holds no tls.test route: {stored:?}");
    wait_for("both nodes at one ETag", Duration::from_secs(5), &all, || {
        let (x, y) = (etag(&a), etag(&b));
        if x == y {
            Ok(())
        } else {
            Err(format!("a {x}, b {y}"))
        }
    });

    // The CA is what makes it work: a node trusting another CA gets no link.
    let other = TestCa::new();
    let stranger = json!({"caFile": other.ca_path().to_str().expect("a UTF-8 temp path")});
    let n = Node::start(&dir, "n", &node_config_with(routes, &etcd.endpoint(), prefix, "n", stranger));
    let status = wait_for("node n (another CA) reports why it has no etcd", Duration::from_secs(15), &[&n], || {
        let s = cluster(&n);
        if s["connected"] == false && s["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    eprintln!("node n (trusting another CA): lastError {}", status["lastError"]);
    assert_unrouted(&n, "tls.test");
    assert_write_refused(&n, "refused.test", &t_backend);
    assert_eq!(node_ids(&cluster(&a)), ["a", "b"], "node a's members");
}

// ---------------------------------------------------------------------------
// 9. Cut off again right after the watch resumed
// ---------------------------------------------------------------------------

/// A node healed and cut off again at once, before its resumed watch
/// delivered what changed meanwhile, still gets those changes once
/// healed for good. Each round: cut c, add a route on a, heal, cut again
/// as soon as c logs `cluster: watching etcd`, wait until c reports
/// `connected: false`, heal; c must then serve the route.
#[test]
fn a_node_cut_off_right_after_its_watch_resumed_misses_no_change() {
    const ROUNDS: usize = 5;
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.addr());
    let dir = TempDir::new("cluster-recut");
    let prefix = "/ringway/recut";
    let seed = Backend::respond(200, "seed").named("seed").start();
    let r = Backend::respond(200, "r").named("r").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![seed.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let c = Node::start(&dir, "c", &node_config(routes, &format!("http://{}", relay.addr()), prefix, "c"));
    let all = [&a, &c];
    wait_formed(&all);
    let watching = || c.log().matches("cluster: watching etcd").count();
    for round in 0..ROUNDS {
        relay.cut();
        wait_connected(&c, false, Duration::from_secs(10));
        let host = format!("recut-{round}.test");
        a.api()
            .post("/api/v1/routes", &route(&host, "ROUND_ROBIN", vec![r.config()]))
            .expect(201, &format!("POST {host} on node a"));
        let sessions = watching();
        relay.heal();
        wait_for("node c watching etcd again", Duration::from_secs(10), &all, || {
            if watching() > sessions {
                Ok(())
            } else {
                Err(format!("{sessions} `watching etcd` lines"))
            }
        });
        relay.cut();
        let early = serves(&c, &host, "r").is_ok();
        wait_connected(&c, false, Duration::from_secs(10));
        relay.heal();
        let healed = Instant::now();
        wait_for(&format!("round {round}: node c serves {host}"), Duration::from_secs(10), &all, || {
            serves(&c, &host, "r")
        });
        eprintln!(
            "round {round}: node c serves {host} {:?} after the last heal (had it before the re-cut: {early})",
            healed.elapsed()
        );
    }
    wait_for("both nodes at one ETag", Duration::from_secs(5), &all, || {
        let (x, y) = (etag(&a), etag(&c));
        if x == y {
            Ok(())
        } else {
            Err(format!("a {x}, c {y}"))
        }
    });
    assert_eq!(sorted_vhosts(&c), sorted_vhosts(&a), "node c's routes");
}

// ---------------------------------------------------------------------------
// Many routes
// ---------------------------------------------------------------------------

/// A first node with 9,000 routes (about 5 MB of JSON) seeds etcd (in chunks: etcd takes 128
/// operations and 1.5 MiB per transaction), and a second node loads them
/// all (in pages: one answer of that size would pass the client's 4 MiB
/// message limit) and serves the last one; a write still goes through.
#[test]
fn nine_thousand_routes_are_seeded_and_loaded_in_pieces() {
    const ROUTES: usize = 9_000;
    let etcd = Etcd::start();
    let dir = TempDir::new("cluster-many");
    let prefix = "/ringway/many";
    let backend = Backend::respond(200, "m").named("m").start();
    let routes: Vec<Value> =
        (0..ROUTES).map(|i| route(&format!("r{i}.many.test"), "ROUND_ROBIN", vec![backend.config()])).collect();
    let t0 = Instant::now();
    let a = Node::start(&dir, "a", &node_config(routes, &etcd.endpoint(), prefix, "a"));
    let b = Node::start(&dir, "b", &node_config(Vec::new(), &etcd.endpoint(), prefix, "b"));
    wait_formed(&[&a, &b]);
    eprintln!("{ROUTES} routes seeded by a and loaded by b in {:?}", t0.elapsed());
    let stored = etcd.etcdctl(&["get", &format!("{prefix}/config/routes/"), "--prefix", "--keys-only"]);
    assert_eq!(stored.lines().filter(|l| !l.is_empty()).count(), ROUTES, "routes in etcd");
    assert_serves(&b, &format!("r{}.many.test", ROUTES - 1), "m");
    assert_eq!(b.api().get("/api/v1/info").json["routes"].as_u64(), Some(ROUTES as u64));
    let bytes = b.api().get("/api/v1/routes").response.body.len();
    eprintln!("the routes as JSON: {bytes} bytes (etcd-client reads at most 4 MiB per answer by default)");
    let host = "late.many.test";
    b.api().post("/api/v1/routes", &route(host, "ROUND_ROBIN", vec![backend.config()])).expect(201, "POST on b");
    assert_serves(&b, host, "m");
    wait_for("node a has b's route", Duration::from_secs(10), &[&a, &b], || {
        let r = get(a.rw().addr(), host, "/");
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{}", r.status))
        }
    });
}

// ---------------------------------------------------------------------------
// Binary upgrade
// ---------------------------------------------------------------------------

/// Stops a process that is not our child (an upgrade's new process) when
/// the test ends, however it ends.
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
    }
}

/// A binary upgrade of a node in cluster mode (`POST /api/v1/upgrade`):
/// the new process takes over the etcd side — the other node lists it
/// with its new pid (the old one's registration, revoked as it leaves, is
/// written again) — serves on the same sockets without a failed request,
/// and its writes reach the other node.
#[test]
fn a_binary_upgrade_keeps_the_node_in_the_cluster() {
    let etcd = Etcd::start();
    let dir = TempDir::new("cluster-upgrade");
    let prefix = "/ringway/upgrade";
    let backend = Backend::respond(200, "u").named("u").start();
    let routes = vec![route("seed.test", "ROUND_ROBIN", vec![backend.config()])];
    let a = Node::start(&dir, "a", &node_config(routes.clone(), &etcd.endpoint(), prefix, "a"));
    let b = Node::start(&dir, "b", &node_config(routes, &etcd.endpoint(), prefix, "b"));
    wait_formed(&[&a, &b]);
    let old = u64::from(b.rw().pid());
    let t0 = Instant::now();
    b.api().post("/api/v1/upgrade", &json!({})).expect(202, "POST /api/v1/upgrade on b");
    let new = wait_for("b's new process answers", Duration::from_secs(40), &[&b], || {
        // A call the old process took as it went away may go unanswered.
        let info = b.api().try_raw("GET", "/api/v1/info", &[], None)?.json;
        match info["pid"].as_u64() {
            Some(pid) if pid != old => Ok(pid),
            other => Err(format!("pid {other:?}")),
        }
    });
    let _stop = KillOnDrop(new);
    eprintln!("b upgraded (pid {old} -> {new}) in {:?}", t0.elapsed());
    let failures = traffic(&b, "seed.test", "u", 20);
    assert!(failures.is_empty(), "node b after its upgrade: {failures:?}{}", logs(&[&b]));
    wait_for("a lists b with its new pid", Duration::from_secs(20), &[&a, &b], || {
        let s = cluster(&a);
        let pid = s["nodes"].as_array().and_then(|n| n.iter().find(|m| m["nodeId"] == "b")).map(|m| m["pid"].clone());
        if pid == Some(json!(new)) {
            Ok(())
        } else {
            Err(format!("b's registration: pid {pid:?}; {s}"))
        }
    });
    let s = cluster(&b);
    assert_eq!(s["connected"], true, "b's new process: {s}");
    b.api()
        .post("/api/v1/routes", &route("after.test", "ROUND_ROBIN", vec![backend.config()]))
        .expect(201, "POST on b");
    assert_serves(&b, "after.test", "u");
    wait_for("a serves b's route", Duration::from_secs(10), &[&a, &b], || serves(&a, "after.test", "u"));
}
