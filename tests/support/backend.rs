//! Scripted backends: `Backend` (what a backend does: respond, echo, chunk,
//! stay silent, hang up, tunnel a WebSocket…), `BackendHandle` (a running
//! one on 127.0.0.1 that records every `SeenRequest`), and helpers around
//! them (`is_probe`, `counts`, `refused_port`).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::client::{header_of, parse_head_lines, read_chunked};
use super::{find, hash, json, pattern, Value};

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
    r.all("user-agent").iter().any(|v| v == "ringway-health" || v.starts_with("ringway-health/"))
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
        self.start_on(0)
    }

    /// Starts on a given loopback port (0: any), e.g. to restart a stopped
    /// backend where ringway expects it.
    pub fn start_on(self, port: u16) -> BackendHandle {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
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

    /// Requests read and not yet answered, now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
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

/// Counts how many of `backends` saw each request, keyed by backend name.
pub fn counts(backends: &[&BackendHandle]) -> HashMap<String, usize> {
    backends.iter().map(|b| (b.name().to_string(), b.request_count())).collect()
}
