//! Fixtures for ringway's integration tests: scripted backends, a running
//! ringway process, and a raw HTTP/1.1 client. Everything is std::net +
//! threads on 127.0.0.1, and every blocking read has a timeout.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// How long any single socket read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Hashing and deterministic data
// ---------------------------------------------------------------------------

/// FNV-1a 64 of `data`, as 16 hex digits.
pub fn hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// `len` deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// A request as a backend saw it
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The raw head, request line to the final CRLFCRLF.
    pub head: String,
    pub method: String,
    /// The request target, byte for byte.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// The body bytes exactly as they arrived (chunked framing included).
    pub raw_body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl SeenRequest {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    /// The single value of `name`; panics when it appears more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} appears {} times in:\n{}", all.len(), self.head);
        all.into_iter().next()
    }
}

fn parse_head_lines(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    (first, headers)
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads from `s` into `buf` until `buf` holds at least `need` bytes.
fn fill(s: &mut impl Read, buf: &mut Vec<u8>, need: usize) -> std::io::Result<()> {
    let mut tmp = [0u8; 64 * 1024];
    while buf.len() < need {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "eof"));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Ok(())
}

/// Reads until `buf` contains `needle`; returns the index just after it.
fn fill_until(s: &mut impl Read, buf: &mut Vec<u8>, needle: &[u8], from: usize) -> std::io::Result<usize> {
    let mut tmp = [0u8; 64 * 1024];
    loop {
        if buf.len() >= from + needle.len() {
            if let Some(i) = find(&buf[from..], needle) {
                return Ok(from + i + needle.len());
            }
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "eof"));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A decoded chunked body, the raw bytes it used, and its trailers.
type Dechunked = (Vec<u8>, usize, Vec<(String, String)>);

/// Decodes a chunked body starting at `buf[0]`, reading more as needed.
/// Returns (decoded, raw length consumed, trailers).
fn read_chunked(s: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Dechunked> {
    let bad = |m: &str| std::io::Error::new(ErrorKind::InvalidData, m.to_string());
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let line_end = fill_until(s, buf, b"\r\n", pos)?;
        let line = String::from_utf8_lossy(&buf[pos..line_end - 2]).to_string();
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_txt, 16).map_err(|_| bad("bad chunk size"))?;
        pos = line_end;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let end = fill_until(s, buf, b"\r\n", pos)?;
                let l = String::from_utf8_lossy(&buf[pos..end - 2]).to_string();
                pos = end;
                if l.is_empty() {
                    return Ok((out, pos, trailers));
                }
                if let Some((n, v)) = l.split_once(':') {
                    trailers.push((n.to_string(), v.trim().to_string()));
                }
            }
        }
        fill(s, buf, pos + size + 2)?;
        out.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Kind {
    Respond {
        status: u16,
        body: Vec<u8>,
    },
    /// Like `Respond`, with a status that can change while running.
    Switch {
        status: Arc<AtomicU16>,
        body: Vec<u8>,
    },
    Echo,
    Chunked(Vec<Vec<u8>>),
    Large(usize),
    Silent,
    /// Reads the request, then closes without answering.
    Hangup,
    WebSocket,
}

/// A backend to be started: `Backend::respond(200, "a").start()`.
pub struct Backend {
    kind: Kind,
    delay: Duration,
    name: String,
}

struct Shared {
    requests: Mutex<Vec<SeenRequest>>,
    seen: Condvar,
    connections: AtomicUsize,
    stopped: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
    /// Requests read and not yet answered.
    in_flight: AtomicUsize,
    /// The most `in_flight` ever was.
    max_in_flight: AtomicUsize,
}

/// Counts one request as in flight until dropped (just before the answer is written).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(sh: &'a Shared) -> InFlight<'a> {
        let now = sh.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        sh.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(sh)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether `r` is one of ringway's active health probes.
pub fn is_probe(r: &SeenRequest) -> bool {
    r.all("user-agent").iter().any(|v| v == "ringway-health")
}

/// A running backend; stopped (listener and every connection closed) on
/// `stop()` or drop.
pub struct BackendHandle {
    addr: SocketAddr,
    name: String,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Backend {
    fn new(kind: Kind) -> Backend {
        Backend { kind, delay: Duration::ZERO, name: String::new() }
    }

    /// Answers every request with `status` and `body` (keep-alive, Content-Length).
    pub fn respond(status: u16, body: &str) -> Backend {
        Backend::new(Kind::Respond { status, body: body.as_bytes().to_vec() })
    }

    /// Answers every request with the status currently in `status` and `body`.
    pub fn switchable(status: Arc<AtomicU16>, body: &str) -> Backend {
        Backend::new(Kind::Switch { status, body: body.as_bytes().to_vec() })
    }

    /// Answers 200 with a text body describing the request:
    /// `method M`, `target T`, `body-len N`, `body-hash H`, then `NAME: VALUE` lines.
    pub fn echo() -> Backend {
        Backend::new(Kind::Echo)
    }

    /// Answers 200 with `Transfer-Encoding: chunked`, one chunk per piece.
    pub fn chunked(pieces: &[&str]) -> Backend {
        Backend::new(Kind::Chunked(pieces.iter().map(|p| p.as_bytes().to_vec()).collect()))
    }

    /// Answers 200 with `len` bytes of `pattern(len)`.
    pub fn large(len: usize) -> Backend {
        Backend::new(Kind::Large(len))
    }

    /// Accepts and reads, never answers.
    pub fn silent() -> Backend {
        Backend::new(Kind::Silent)
    }

    /// Reads one request, then closes the connection without a byte of answer.
    pub fn hangup() -> Backend {
        Backend::new(Kind::Hangup)
    }

    /// On `Upgrade: websocket` answers 101 and echoes raw bytes.
    pub fn websocket() -> Backend {
        Backend::new(Kind::WebSocket)
    }

    /// Waits this long before answering each request.
    pub fn delayed(mut self, d: Duration) -> Backend {
        self.delay = d;
        self
    }

    /// Names the backend; its responses carry `x-backend: NAME`.
    pub fn named(mut self, name: &str) -> Backend {
        self.name = name.to_string();
        self
    }

    pub fn start(self) -> BackendHandle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            seen: Condvar::new(),
            connections: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let name = if self.name.is_empty() { addr.to_string() } else { self.name.clone() };
        let sh = shared.clone();
        let kind = self.kind.clone();
        let delay = self.delay;
        let nm = name.clone();
        let accept = thread::spawn(move || {
            while !sh.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        sh.connections.fetch_add(1, Ordering::SeqCst);
                        if let Ok(c) = s.try_clone() {
                            sh.streams.lock().unwrap().push(c);
                        }
                        let (sh2, kind2, nm2) = (sh.clone(), kind.clone(), nm.clone());
                        thread::spawn(move || serve_conn(s, &sh2, &kind2, delay, &nm2));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            // Listener dropped here: further connects are refused.
        });
        BackendHandle { addr, name, shared, accept: Some(accept) }
    }
}

fn serve_conn(mut s: TcpStream, sh: &Shared, kind: &Kind, delay: Duration, name: &str) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    // Reads with the short timeout, re-checking the stop flag.
    let mut read_some = |s: &mut TcpStream, buf: &mut Vec<u8>| -> bool {
        loop {
            if sh.stopped.load(Ordering::SeqCst) {
                return false;
            }
            match s.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                Err(_) => return false,
            }
        }
    };
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_some(&mut s, &mut buf) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let (line, headers) = parse_head_lines(&head[..head.len() - 4]);
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        buf.drain(..head_end);
        // Body.
        let (body, raw_body, trailers) =
            if header_of(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
                let mut r = StopRead { s: &mut s, sh };
                match read_chunked(&mut r, &mut buf) {
                    Ok((body, used, trailers)) => {
                        let raw = buf.drain(..used).collect();
                        (body, raw, trailers)
                    }
                    Err(_) => return,
                }
            } else {
                let n: usize = header_of(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while buf.len() < n {
                    if !read_some(&mut s, &mut buf) {
                        return;
                    }
                }
                let body: Vec<u8> = buf.drain(..n).collect();
                (body.clone(), body, Vec::new())
            };
        let seen =
            SeenRequest { head, method: method.clone(), target: target.clone(), headers, body, raw_body, trailers };
        let upgrade = header_of(&seen.headers, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        {
            let mut reqs = sh.requests.lock().unwrap();
            reqs.push(seen.clone());
            sh.seen.notify_all();
        }
        let flight = InFlight::enter(sh);
        if !delay.is_zero() {
            let until = Instant::now() + delay;
            while Instant::now() < until && !sh.stopped.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5).min(until.saturating_duration_since(Instant::now())));
            }
        }
        let head_only = method == "HEAD";
        let base = |status: u16, extra: &str| {
            format!("HTTP/1.1 {status} {}\r\nx-backend: {name}\r\n{extra}", reason(status)).into_bytes()
        };
        let out: Vec<u8> = match kind {
            Kind::Silent => {
                // Keep reading (and discarding) until stopped or closed.
                while read_some(&mut s, &mut buf) {
                    buf.clear();
                }
                return;
            }
            Kind::Hangup => {
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
            Kind::Respond { status, body } => {
                let mut o = if *status == 204 || (100..200).contains(status) {
                    base(*status, "\r\n")
                } else {
                    base(*status, &format!("content-length: {}\r\n\r\n", body.len()))
                };
                if !head_only && *status != 204 && *status != 304 {
                    o.extend_from_slice(body);
                }
                o
            }
            Kind::Switch { status, body } => {
                let status = status.load(Ordering::SeqCst);
                let mut o = base(status, &format!("content-length: {}\r\n\r\n", body.len()));
                if !head_only {
                    o.extend_from_slice(body);
                }
                o
            }
            Kind::Echo => {
                let mut text = format!(
                    "method {}\ntarget {}\nbody-len {}\nbody-hash {}\n",
                    seen.method,
                    seen.target,
                    seen.body.len(),
                    hash(&seen.body)
                );
                for (n, v) in &seen.headers {
                    text.push_str(&format!("{n}: {v}\n"));
                }
                let mut o = base(200, &format!("content-type: text/plain\r\ncontent-length: {}\r\n\r\n", text.len()));
                if !head_only {
                    o.extend_from_slice(text.as_bytes());
                }
                o
            }
            Kind::Chunked(pieces) => {
                let mut o = base(200, "transfer-encoding: chunked\r\n\r\n");
                if !head_only {
                    for p in pieces.iter().filter(|p| !p.is_empty()) {
                        o.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                        o.extend_from_slice(p);
                        o.extend_from_slice(b"\r\n");
                    }
                    o.extend_from_slice(b"0\r\n\r\n");
                }
                o
            }
            Kind::Large(len) => {
                let mut o = base(200, &format!("content-length: {len}\r\n\r\n"));
                if !head_only {
                    o.extend_from_slice(&pattern(*len));
                }
                o
            }
            Kind::WebSocket => {
                if !upgrade {
                    base(426, "content-length: 0\r\n\r\n")
                } else {
                    let o = base(101, "upgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
                    if s.write_all(&o).is_err() {
                        return;
                    }
                    // Echo raw bytes (including any already buffered).
                    if !buf.is_empty() && s.write_all(&buf).is_err() {
                        return;
                    }
                    buf.clear();
                    while read_some(&mut s, &mut buf) {
                        if s.write_all(&buf).is_err() {
                            return;
                        }
                        buf.clear();
                    }
                    return;
                }
            }
        };
        drop(flight);
        if s.write_all(&out).is_err() {
            return;
        }
        if header_of(&seen.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            let _ = s.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A reader that retries timeouts until the backend is stopped.
struct StopRead<'a> {
    s: &'a mut TcpStream,
    sh: &'a Shared,
}

impl Read for StopRead<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.sh.stopped.load(Ordering::SeqCst) {
                return Ok(0);
            }
            match self.s.read(b) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                other => return other,
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        426 => "Upgrade Required",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

impl BackendHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Requests seen so far that were not ringway's health probes.
    pub fn proxied_count(&self) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|r| !is_probe(r)).count()
    }

    /// The most requests this backend ever held at once (read, not yet answered).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Blocks until at least `n` requests were seen; panics after `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.shared.requests.lock().unwrap();
        while reqs.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "backend {} saw {} requests, expected {n} within {timeout:?}",
                self.name,
                reqs.len()
            );
            reqs = self.shared.seen.wait_timeout(reqs, left).unwrap().0;
        }
    }

    /// Closes the listener and every connection.
    pub fn stop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// This backend as a config entry.
    pub fn config(&self) -> Value {
        json!({"id": self.name, "hostname": "127.0.0.1", "port": self.port()})
    }

    /// This backend as a config entry with a weight.
    pub fn weighted(&self, weight: u32) -> Value {
        json!({"id": self.name, "hostname": "127.0.0.1", "port": self.port(), "weight": weight})
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Config helpers
// ---------------------------------------------------------------------------

/// A route on `vhost` with `strategy` over `backends` (config entries).
pub fn route(vhost: &str, strategy: &str, backends: Vec<Value>) -> Value {
    json!({"vHost": vhost, "strategy": strategy, "backends": backends})
}

/// A full config around `routes`: port 0, active health checks off.
pub fn config(routes: Vec<Value>) -> Value {
    json!({
        "listen": ["127.0.0.1:0"],
        "health": {"intervalMs": 0},
        "timeouts": {"connectMs": 1000, "upstreamMs": 10000, "drainMs": 5000},
        "routes": routes,
    })
}

/// One catch-all route over `backends`.
pub fn catch_all(strategy: &str, backends: &[&BackendHandle]) -> Value {
    config(vec![route("*", strategy, backends.iter().map(|b| b.config()).collect())])
}

/// Sets `cfg[section][key] = value`, creating the section.
pub fn set(mut cfg: Value, section: &str, key: &str, value: Value) -> Value {
    let obj = cfg.as_object_mut().unwrap();
    let sec = obj.entry(section.to_string()).or_insert_with(|| json!({}));
    sec.as_object_mut().unwrap().insert(key.to_string(), value);
    cfg
}

/// `cfg` with an admin listener on a free loopback port (and `token`, if any).
pub fn with_admin(mut cfg: Value, token: Option<&str>) -> Value {
    let mut admin = json!({"listen": "127.0.0.1:0"});
    if let Some(t) = token {
        admin["token"] = json!(t);
    }
    cfg["admin"] = admin;
    cfg
}

// ---------------------------------------------------------------------------
// The ringway process
// ---------------------------------------------------------------------------

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A unique file path in the temp dir.
pub fn temp_path(tag: &str, ext: &str) -> std::path::PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    std::env::temp_dir().join(format!("ringway-test-{}-{tag}-{n}-{nanos}.{ext}", std::process::id()))
}

/// Writes `cfg` to a fresh temp file.
pub fn write_config(cfg: &Value) -> std::path::PathBuf {
    let path = temp_path("config", "json");
    std::fs::write(&path, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    path
}

pub fn ringway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

pub struct Ringway {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    config_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
    /// Whether the config file (and the state file beside it) is ours to delete.
    owns_config: bool,
    exited: Option<ExitStatus>,
}

/// Why ringway did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, when it exited (within the wait).
    pub status: Option<ExitStatus>,
    /// Its stderr.
    pub stderr: String,
}

/// Where ringway keeps the state file for `config_path` when the config
/// names none: `NAME.json` → `NAME.state.json`, beside it.
pub fn state_file_of(config_path: &std::path::Path) -> std::path::PathBuf {
    let stem = config_path.file_stem().unwrap().to_string_lossy().into_owned();
    config_path.with_file_name(format!("{stem}.state.json"))
}

impl Ringway {
    /// Starts ringway with one worker (deterministic balancing).
    pub fn start(cfg: Value) -> Ringway {
        Ringway::start_workers(cfg, 1)
    }

    /// Starts ringway and waits (at most 20 s) for its `listening` line.
    pub fn start_workers(cfg: Value, workers: usize) -> Ringway {
        Ringway::start_logging(cfg, workers, "warn")
    }

    /// `start_workers` with `RINGWAY_LOG` set to `level` (see `log()`).
    pub fn start_logging(cfg: Value, workers: usize, level: &str) -> Ringway {
        let config_path = write_config(&cfg);
        let mut rw = Ringway::try_start_at(&config_path, workers, level, &[])
            .unwrap_or_else(|f| panic!("ringway did not start ({:?}); stderr:\n{}", f.status, f.stderr));
        rw.owns_config = true;
        rw
    }

    /// Starts ringway on an existing config file (left in place on drop,
    /// as is its state file), with extra `run` arguments such as
    /// `--reset-state`.
    pub fn start_at(config_path: &std::path::Path, workers: usize, extra: &[&str]) -> Ringway {
        Ringway::try_start_at(config_path, workers, "warn", extra)
            .unwrap_or_else(|f| panic!("ringway did not start ({:?}); stderr:\n{}", f.status, f.stderr))
    }

    /// Like `start_at`, but a ringway that exits (or prints no `listening`
    /// line within 20 s) is an `Err` with its exit status and stderr.
    pub fn try_start_at(
        config_path: &std::path::Path,
        workers: usize,
        level: &str,
        extra: &[&str],
    ) -> Result<Ringway, StartFailure> {
        let log_path = temp_path("log", "txt");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(ringway_bin())
            .args(["run", "--config"])
            .arg(config_path)
            .args(["--workers", &workers.to_string()])
            .args(extra)
            .env("RINGWAY_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            // Nobody listens any more: keep draining.
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let fail = |child: &mut Child, log_path: &std::path::Path| {
            // Stdout closed (it exited) or the deadline passed: collect the
            // exit status within 5 s, else kill it.
            let until = Instant::now() + Duration::from_secs(5);
            let mut status = None;
            while Instant::now() < until {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let stderr = std::fs::read_to_string(log_path).unwrap_or_default();
            let _ = std::fs::remove_file(log_path);
            StartFailure { status, stderr }
        };
        let (addr, admin) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening proxy=") {
                        let mut words = rest.split(' ');
                        let proxy = words.next().unwrap_or("");
                        let a = proxy.split(',').next().unwrap();
                        let a = a.parse::<SocketAddr>().unwrap_or_else(|_| panic!("bad listening line {line:?}"));
                        let admin = words.find_map(|w| w.strip_prefix("admin=")).and_then(|w| {
                            if w == "-" {
                                None
                            } else {
                                Some(w.parse::<SocketAddr>().unwrap_or_else(|_| panic!("bad listening line {line:?}")))
                            }
                        });
                        break (a, admin);
                    }
                }
                Err(_) => return Err(fail(&mut child, &log_path)),
            }
        };
        Ok(Ringway {
            child,
            addr,
            admin,
            config_path: config_path.to_path_buf(),
            log_path,
            owns_config: false,
            exited: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address; panics when the config has none.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("ringway runs no admin listener (no `admin` in the config)")
    }

    /// A client for the admin API, without a token.
    pub fn api(&self) -> Api {
        Api::new(self.admin_addr())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ringway's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) to this process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
    }

    /// SIGTERM, then waits (10 s) for a clean exit; panics otherwise.
    pub fn stop(&mut self) {
        self.terminate();
        let exit = self.wait_exit(Duration::from_secs(10));
        assert!(exit.is_some_and(|s| s.success()), "ringway did not exit cleanly after SIGTERM: {exit:?}");
    }

    /// Waits for the process to exit; `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Ringway {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.terminate();
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if self.owns_config {
            let state = state_file_of(&self.config_path);
            let tmp = state.with_file_name(format!(".{}.tmp", state.file_name().unwrap().to_string_lossy()));
            let _ = std::fs::remove_file(&state);
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&self.config_path);
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// A fresh directory in the temp dir, removed with everything in it on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = temp_path(tag, "d");
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringway check --config` on `cfg`; returns (exit code, stderr).
pub fn ringway_check(cfg: &Value) -> (i32, String) {
    let path = write_config(cfg);
    let out = Command::new(ringway_bin()).args(["check", "--config"]).arg(&path).output().expect("run ringway check");
    let _ = std::fs::remove_file(&path);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

// ---------------------------------------------------------------------------
// Raw HTTP client
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The raw head, status line to the final CRLFCRLF.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the response was chunked.
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// One client connection with exact-byte control.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Client { stream, buf: Vec::new() }
    }

    /// Writes exactly `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> &mut Client {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to ringway: {e}"));
        self
    }

    /// Writes `bytes`, ignoring errors (the peer may already have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response to a non-HEAD request.
    pub fn response(&mut self) -> Response {
        self.read_response(false).unwrap_or_else(|e| panic!("reading response: {e}"))
    }

    /// Reads one response to a HEAD request (no body).
    pub fn head_response(&mut self) -> Response {
        self.read_response(true).unwrap_or_else(|e| panic!("reading response: {e}"))
    }

    /// Reads one response; `head_request` means no body follows.
    pub fn read_response(&mut self, head_request: bool) -> std::io::Result<Response> {
        let end = fill_until(&mut self.stream, &mut self.buf, b"\r\n\r\n", 0)?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end);
        let (line, headers) = parse_head_lines(&head[..head.len() - 4]);
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
        let te = header_of(&headers, "transfer-encoding").map(|v| v.to_ascii_lowercase());
        let chunked = te.as_deref().is_some_and(|v| v.contains("chunked"));
        let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else if chunked {
            let (body, used, _) = read_chunked(&mut self.stream, &mut self.buf)?;
            self.buf.drain(..used);
            body
        } else if let Some(n) = header_of(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
            fill(&mut self.stream, &mut self.buf, n)?;
            self.buf.drain(..n).collect()
        } else {
            // Until close.
            let mut rest = std::mem::take(&mut self.buf);
            self.stream.read_to_end(&mut rest)?;
            rest
        };
        Ok(Response { status, head, headers, body, chunked })
    }

    /// Reads exactly `n` raw bytes (e.g. from a tunnel).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        fill(&mut self.stream, &mut self.buf, n).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        self.buf.drain(..n).collect()
    }

    /// Whether the peer closes (read returns 0 or a reset) within `within`,
    /// with no further bytes.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        r
    }

    /// GET `path` with `host`, keep-alive.
    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        self.response()
    }
}

/// One GET on a fresh connection (`Connection: close`).
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    c.response()
}

/// One raw exchange on a fresh connection.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response()
}

/// Counts how many of `backends` saw each request, keyed by backend name.
pub fn counts(backends: &[&BackendHandle]) -> HashMap<String, usize> {
    backends.iter().map(|b| (b.name().to_string(), b.request_count())).collect()
}

// ---------------------------------------------------------------------------
// Admin API client (JSON over HTTP/1.1, one connection per call)
// ---------------------------------------------------------------------------

/// An admin API answer.
#[derive(Clone, Debug)]
pub struct ApiReply {
    pub status: u16,
    /// The body as JSON (`Null` when empty).
    pub json: Value,
    /// The ETag header, verbatim.
    pub etag: Option<String>,
    pub response: Response,
}

impl ApiReply {
    /// The `error` code of an error body.
    pub fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    /// The `field` of an error body.
    pub fn field(&self) -> Option<&str> {
        self.json["field"].as_str()
    }

    /// Panics with the exchange unless the status is `status`.
    pub fn expect(self, status: u16, what: &str) -> ApiReply {
        assert_eq!(self.status, status, "{what}: {}{}", self.response.head, self.response.text());
        self
    }
}

/// A client for ringway's admin API.
#[derive(Clone, Debug)]
pub struct Api {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { addr, token: None }
    }

    pub fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    /// One request on a fresh connection. `headers` override the defaults
    /// (`Host: ADDR`, the bearer token); `body` is sent as
    /// `Content-Type: application/json` unless `headers` name another.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> ApiReply {
        let named = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !named("host") {
            req.push_str(&format!("Host: {}\r\n", self.addr));
        }
        if let (Some(t), false) = (&self.token, named("authorization")) {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !named("content-type") {
                req.push_str("Content-Type: application/json\r\n");
            }
            if !named("content-length") {
                req.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        } else if matches!(method, "POST" | "PUT" | "PATCH") && !named("content-length") {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        let mut c = Client::connect(self.addr);
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        c.send(&bytes);
        let response =
            c.read_response(method == "HEAD").unwrap_or_else(|e| panic!("{method} {path}: reading the answer: {e}"));
        let json = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or_else(|e| {
                panic!("{method} {path}: answer is not JSON ({e}):\n{}{}", response.head, response.text())
            })
        };
        let etag = response.header("etag").map(str::to_string);
        ApiReply { status: response.status, json, etag, response }
    }

    /// A JSON request (`body` serialised) with extra headers.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> ApiReply {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.raw(method, path, headers, bytes.as_deref())
    }

    pub fn get(&self, path: &str) -> ApiReply {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &Value) -> ApiReply {
        self.call("POST", path, &[], Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> ApiReply {
        self.call("PUT", path, &[], Some(body))
    }

    pub fn delete(&self, path: &str) -> ApiReply {
        self.call("DELETE", path, &[], None)
    }

    /// The current routes (GET /api/v1/routes), which must answer 200.
    pub fn routes(&self) -> Vec<Value> {
        let r = self.get("/api/v1/routes").expect(200, "GET /api/v1/routes");
        r.json.as_array().unwrap_or_else(|| panic!("GET /api/v1/routes is not an array: {}", r.json)).clone()
    }

    /// The vHosts of the current routes, in order.
    pub fn vhosts(&self) -> Vec<String> {
        self.routes().iter().map(|r| r["vHost"].as_str().unwrap_or("?").to_string()).collect()
    }

    /// GET /api/v1/config, which must answer 200 with an ETag.
    pub fn config(&self) -> (String, Value) {
        let r = self.get("/api/v1/config").expect(200, "GET /api/v1/config");
        let etag = r.etag.clone().unwrap_or_else(|| panic!("GET /api/v1/config has no ETag:\n{}", r.response.head));
        (etag, r.json)
    }
}
