//! Faults and hostile load: a backend SIGKILLed under load and restarted,
//! a backend that never answers, a graceful drain with 50 requests in
//! flight, API churn under load, slowloris clients, aborted uploads (fd and
//! buffer leaks) and 20,000 held connections (memory, admission).
//!
//! The tests here take turns (`serial()`): several hold hundreds or
//! thousands of sockets, and the timing numbers they print mean something
//! only when they do not share the two cores with each other.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the tests of this file one at a time (a failed one does not block the rest).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// GET /api/v1/stats, which must answer 200.
fn stats(rw: &Ringway) -> Value {
    rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json
}

/// Polls the stats until `ok` holds (at most `within`); returns the last stats seen.
fn stats_until(rw: &Ringway, within: Duration, ok: impl Fn(&Value) -> bool) -> (bool, Value) {
    let deadline = Instant::now() + within;
    loop {
        let s = stats(rw);
        if ok(&s) {
            return (true, s);
        }
        if Instant::now() >= deadline {
            return (false, s);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A field of /proc/PID/status in kB (`VmRSS`, `VmHWM`).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// How many fds the process has open.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// The `p`th percentile of `sorted`.
fn pct(sorted: &[Duration], p: usize) -> Duration {
    assert!(!sorted.is_empty(), "no samples");
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// One GET for `host`: on the kept-alive connection in `keep` when `reuse`
/// (opened on demand, dropped after an error), else on a fresh connection
/// with `Connection: close`. The response, or what went wrong.
fn one_get(
    addr: SocketAddr,
    keep: &mut Option<Client>,
    reuse: bool,
    host: &str,
    path: &str,
) -> Result<Response, String> {
    if reuse {
        if keep.is_none() {
            *keep = Some(Client::try_connect(addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?);
        }
        let c = keep.as_mut().unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = c.try_send(req.as_bytes()).and_then(|_| c.read_response(false));
        if r.is_err() {
            *keep = None;
        }
        r.map_err(|e| format!("keep-alive: {e}"))
    } else {
        let mut c = Client::try_connect(addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        c.try_send(req.as_bytes()).and_then(|_| c.read_response(false)).map_err(|e| format!("fresh: {e}"))
    }
}

/// GETs for `host`, alternating a kept-alive connection and fresh ones,
/// at least `n` and for at least `min_time` (at most 20,000 or 30 s); the
/// latencies of the 200s, sorted, and every failure.
fn timed_gets(addr: SocketAddr, host: &str, n: usize, min_time: Duration) -> (Vec<Duration>, Vec<String>) {
    let mut keep = None;
    let mut took = Vec::new();
    let mut failures = Vec::new();
    let start = Instant::now();
    for i in 0..20_000 {
        let elapsed = start.elapsed();
        if (i >= n && elapsed >= min_time) || elapsed >= Duration::from_secs(30) || failures.len() >= 20 {
            break;
        }
        let t0 = Instant::now();
        match one_get(addr, &mut keep, i % 2 == 0, host, &format!("/timed/{i}")) {
            Ok(r) if r.status == 200 => took.push(t0.elapsed()),
            Ok(r) => failures.push(format!("request {i}: status {}", r.status)),
            Err(e) => failures.push(format!("request {i}: {e}")),
        }
    }
    took.sort();
    (took, failures)
}

/// Load on `host` from `threads` threads (even ones keep-alive, odd ones a
/// fresh connection per request) until `stop`, at most `max_each` requests
/// or `max_time` each. Each response's `x-backend` is counted in `seen`.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    handles: Vec<thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(addr: SocketAddr, host: &str, threads: usize, seen: Arc<Mutex<Vec<String>>>) -> Load {
        const MAX_EACH: usize = 50_000;
        const MAX_TIME: Duration = Duration::from_secs(40);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, done, seen, host) = (stop.clone(), done.clone(), seen.clone(), host.to_string());
                thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut keep = None;
                    let mut ok = 0;
                    let mut failures = Vec::new();
                    for i in 0..MAX_EACH {
                        if stop.load(Ordering::SeqCst) || t0.elapsed() >= MAX_TIME || failures.len() >= 20 {
                            break;
                        }
                        match one_get(addr, &mut keep, t % 2 == 0, &host, &format!("/load/{t}/{i}")) {
                            Ok(r) if r.status == 200 => {
                                ok += 1;
                                seen.lock().unwrap().push(r.header("x-backend").unwrap_or("-").to_string());
                            }
                            Ok(r) => failures.push(format!("thread {t} request {i}: status {}\n{}", r.status, r.head)),
                            Err(e) => failures.push(format!("thread {t} request {i}: {e}")),
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load { stop, done, handles }
    }

    /// Requests finished so far (any outcome).
    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Blocks until `n` more requests finished than now (at most `within`); whether they did.
    fn wait_more(&self, n: usize, within: Duration) -> bool {
        let target = self.done() + n;
        let deadline = Instant::now() + within;
        while self.done() < target {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops the load; (requests answered 200, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut ok = 0;
        let mut failures = Vec::new();
        for h in self.handles {
            let (n, f) = h.join().expect("load thread");
            ok += n;
            failures.extend(f);
        }
        (ok, failures)
    }
}

/// Raises this process's RLIMIT_NOFILE (soft and hard; ringway inherits it)
/// to `want`; returns the soft limit in force afterwards.
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < want {
            let up = libc::rlimit { rlim_cur: want, rlim_max: want.max(rl.rlim_max) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) != 0 {
                eprintln!(
                    "setrlimit(NOFILE, {want}) failed ({}); raising the soft limit to the hard one only",
                    std::io::Error::last_os_error()
                );
                let soft = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
                libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
    }
    rl.rlim_cur
}

// ---------------------------------------------------------------------------
// A backend in its own process (python3 http.server), to SIGKILL
// ---------------------------------------------------------------------------

const PY_BACKEND: &str = r#"
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"py"
        self.send_response(200)
        self.send_header("x-backend", "py")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True
s = S(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// A python3 ThreadingHTTPServer on a loopback port answering
/// `200 py` with `x-backend: py`; SIGKILLed on `kill()` or drop.
struct PyBackend {
    child: Child,
    port: u16,
}

impl PyBackend {
    /// Starts it on `port` and waits (at most 10 s) until it listens.
    fn start(port: u16) -> PyBackend {
        let mut child = Command::new("python3")
            .args(["-c", PY_BACKEND, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 (needed for a backend in its own process)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                let _ = tx.send(l);
            }
        });
        let mut py = PyBackend { child, port };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l == "ready" => py,
            other => {
                py.kill();
                panic!("python3 backend on port {port} did not start: {other:?}");
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn config(&self) -> Value {
        json!({"id": "py", "hostname": "127.0.0.1", "port": self.port})
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// 1. A backend SIGKILLed under load, then restarted
// ---------------------------------------------------------------------------

#[test]
fn sigkilled_backend_under_load_fails_no_get_and_is_back_within_3s_of_restart() {
    let _serial = serial();
    let port = refused_port();
    let mut py = PyBackend::start(port);
    let ok = Backend::respond(200, "ok").named("ok").start();
    let mut r = route("*", "ROUND_ROBIN", vec![py.config(), ok.config()]);
    r["health"] = json!({"intervalMs": 1000, "downIntervalMs": 100, "rise": 2, "fall": 2, "timeoutMs": 500});
    let rw = Ringway::start_workers(config(vec![r]), 2);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let py_count = || seen.lock().unwrap().iter().filter(|b| *b == "py").count();
    let load = Load::start(rw.addr(), "x", 4, seen.clone());

    // Under load, py serves its share; then it is SIGKILLed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while py_count() < 50 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let before_kill = py_count();
    assert!(before_kill >= 50, "py served only {before_kill} requests in 10 s of load before the kill");
    py.kill();
    let killed = Instant::now();
    let done_at_kill = load.done();
    assert!(load.wait_more(400, Duration::from_secs(15)), "load stalled after the kill: {} requests", load.done());
    let after_kill = load.done() - done_at_kill;

    // Restarted on the same port: traffic returns to it.
    let py_before_restart = py_count();
    let _py2 = PyBackend::start(port);
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    while py_count() == py_before_restart && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    let back_after = restarted.elapsed();
    let back = py_count() > py_before_restart;
    // Some more load with py back in.
    let _ = load.wait_more(200, Duration::from_secs(10));
    let (total, failures) = load.finish();
    eprintln!(
        "sigkill: {total} GETs answered 200 ({before_kill} by py before the kill, {after_kill} requests while it was \
         dead for {:?}); py back {back_after:?} after its restart",
        restarted - killed
    );
    assert!(failures.is_empty(), "failed GETs around the SIGKILL and restart: {failures:#?}");
    assert!(back, "no request reached the restarted backend within 10 s");
    assert!(back_after < Duration::from_secs(3), "the restarted backend got traffic only after {back_after:?}");
}

// ---------------------------------------------------------------------------
// 2. A backend that accepts and never answers
// ---------------------------------------------------------------------------

#[test]
fn silent_backend_costs_at_most_one_timeout_per_worker() {
    let _serial = serial();
    const WORKERS: usize = 2;
    let silent = Backend::silent().named("silent").start();
    let ok = Backend::respond(200, "ok").named("ok").start();
    // Active checks off: only the timeout itself may take the silent backend out.
    let cfg = set(catch_all("ROUND_ROBIN", &[&silent, &ok]), "timeouts", "upstreamMs", json!(300));
    let cfg = set(cfg, "health", "failTimeoutMs", json!(600000));
    let rw = Ringway::start_workers(with_admin(cfg, None), WORKERS);
    let addr = rw.addr();

    let mut statuses = Vec::new();
    let mut slow = 0;
    let mut note = |r: Result<Response, String>, took: Duration, statuses: &mut Vec<String>| {
        if took >= Duration::from_millis(250) {
            slow += 1;
        }
        statuses.push(match r {
            Ok(r) => r.status.to_string(),
            Err(e) => e,
        });
    };
    // Sequential requests on fresh connections (spread over the workers by
    // SO_REUSEPORT) and on one kept-alive connection.
    let mut keep = None;
    for i in 0..40 {
        let t0 = Instant::now();
        let r = one_get(addr, &mut keep, i % 4 == 3, "x", &format!("/seq/{i}"));
        note(r, t0.elapsed(), &mut statuses);
    }
    // Then a concurrent burst.
    let burst: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut keep = None;
                (0..10)
                    .map(|i| {
                        let t0 = Instant::now();
                        (one_get(addr, &mut keep, i % 2 == 0, "x", &format!("/burst/{t}/{i}")), t0.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in burst {
        for (r, took) in h.join().expect("burst thread") {
            note(r, took, &mut statuses);
        }
    }
    let s = stats(&rw);
    let to_silent = silent.proxied_count();
    let n504 = statuses.iter().filter(|s| *s == "504").count();
    eprintln!(
        "silent: {} requests, {to_silent} reached the silent backend, {n504} answered 504, {slow} took >= 250 ms; \
         stats errors.timeouts {} errors.504 {}",
        statuses.len(),
        s["errors"]["timeouts"],
        s["errors"]["504"]
    );
    let bad: Vec<&String> = statuses.iter().filter(|s| *s != "200" && *s != "504").collect();
    assert!(bad.is_empty(), "answers other than 200 or 504: {bad:?}");
    assert!(to_silent >= 1, "the silent backend was never tried: nothing was exercised");
    assert!(to_silent <= WORKERS, "{to_silent} requests went to the silent backend with {WORKERS} workers");
    assert!(n504 <= WORKERS, "{n504} answers were 504 with {WORKERS} workers");
    let timeouts = s["errors"]["timeouts"].as_u64().unwrap_or_else(|| panic!("no errors.timeouts in {s}"));
    assert!(timeouts <= WORKERS as u64, "{timeouts} timed-out attempts with {WORKERS} workers");
}

// ---------------------------------------------------------------------------
// 3. Graceful drain with 50 slow requests in flight
// ---------------------------------------------------------------------------

#[test]
fn sigterm_with_50_slow_requests_in_flight_completes_them_all_and_exits_zero_within_drain() {
    let _serial = serial();
    const N: usize = 50;
    const DRAIN: Duration = Duration::from_millis(6000);
    let b = Backend::respond(200, "slow").delayed(Duration::from_millis(3000)).start();
    let cfg = set(catch_all("ROUND_ROBIN", &[&b]), "timeouts", "drainMs", json!(DRAIN.as_millis() as u64));
    let mut rw = Ringway::start_workers(cfg, 2);
    let addr = rw.addr();
    let clients: Vec<_> = (0..N)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Client::try_connect(addr, IO_TIMEOUT).map_err(|e| format!("client {i}: connect: {e}"))?;
                c.try_send(format!("GET /slow/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .and_then(|_| c.read_response(false))
                    .map(|r| (r.status, r.text()))
                    .map_err(|e| format!("client {i}: {e}"))
            })
        })
        .collect();
    // Every request is at the backend, none answered yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.in_flight() < N && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let in_flight = b.in_flight();
    let t0 = Instant::now();
    rw.terminate();
    let exit = rw.wait_exit(DRAIN + Duration::from_secs(5));
    let exit_took = t0.elapsed();
    let answers: Vec<Result<(u16, String), String>> =
        clients.into_iter().map(|h| h.join().expect("client thread")).collect();
    let good = answers.iter().filter(|a| matches!(a, Ok((200, t)) if t == "slow")).count();
    eprintln!("drain: {in_flight} in flight at SIGTERM; {good}/{N} answered 200; exit {exit:?} after {exit_took:?}");
    assert_eq!(in_flight, N, "not every request reached the backend before SIGTERM (max {})", b.max_in_flight());
    let bad: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok((200, t)) if t == "slow")).collect();
    assert!(bad.is_empty(), "requests in flight at SIGTERM that did not complete with 200: {bad:?}");
    let status = exit.unwrap_or_else(|| panic!("ringway still running {exit_took:?} after SIGTERM"));
    assert!(status.success(), "exit status {status:?}; log:\n{}", rw.log());
    assert!(exit_took < DRAIN, "exit took {exit_took:?}, drainMs is {DRAIN:?}");
}

// ---------------------------------------------------------------------------
// 4. Churn over the API under load on an untouched route
// ---------------------------------------------------------------------------

#[test]
fn a_hundred_api_changes_never_fail_a_request_on_an_untouched_route() {
    let _serial = serial();
    let s1 = Backend::respond(200, "s1").named("s1").start();
    let s2 = Backend::respond(200, "s2").named("s2").start();
    let c1 = Backend::respond(200, "c1").named("c1").start();
    let c2 = Backend::respond(200, "c2").named("c2").start();
    let rw = Ringway::start_workers(
        with_admin(config(vec![route("stable.test", "ROUND_ROBIN", vec![s1.config(), s2.config()])]), None),
        2,
    );
    let addr = rw.addr();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let load = Load::start(addr, "stable.test", 4, seen.clone());
    assert!(load.wait_more(20, Duration::from_secs(10)), "load did not start");

    let api = rw.api();
    let t0 = Instant::now();
    let mut changes = 0;
    let mut churn_checked = 0;
    for i in 0..25 {
        let vhost = format!("churn-{i}.test");
        let body = json!({"vHost": vhost, "strategy": "ROUND_ROBIN",
                          "backends": [{"hostname": "127.0.0.1", "port": c1.port()}]});
        api.post("/api/v1/routes", &body).expect(201, &format!("POST route {vhost}"));
        let r = api
            .post(&format!("/api/v1/routes/{vhost}/backends"), &json!({"hostname": "127.0.0.1", "port": c2.port()}))
            .expect(201, &format!("POST a backend to {vhost}"));
        let id = r.json["id"].as_str().unwrap_or_else(|| panic!("no id assigned: {}", r.json)).to_string();
        if i % 5 == 0 {
            let r = get(addr, &vhost, "/churned");
            assert_eq!(r.status, 200, "the churned route {vhost} right after its changes:\n{}", r.head);
            churn_checked += 1;
        }
        api.delete(&format!("/api/v1/routes/{vhost}/backends/{id}")).expect(204, "DELETE the backend");
        api.delete(&format!("/api/v1/routes/{vhost}")).expect(204, &format!("DELETE route {vhost}"));
        changes += 4;
    }
    let changes_took = t0.elapsed();
    let _ = load.wait_more(100, Duration::from_secs(5));
    let (total, failures) = load.finish();
    eprintln!("churn: {changes} changes in {changes_took:?}; {total} requests on stable.test during them");
    assert_eq!(changes, 100);
    assert!(failures.is_empty(), "stable.test failed during {changes} API changes: {failures:#?}");
    assert!(total >= 100, "only {total} requests on stable.test in all");
    assert_eq!(s1.proxied_count() + s2.proxied_count(), total);
    assert_eq!(churn_checked, 5);
    assert_eq!(api.vhosts(), vec!["stable.test".to_string()]);
}

// ---------------------------------------------------------------------------
// Slow partial heads, held open by threads with non-blocking sockets
// ---------------------------------------------------------------------------

/// The head slow clients send a byte at a time: never finished.
fn slow_head_byte(i: usize) -> u8 {
    const START: &[u8] = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    START.get(i).copied().unwrap_or(b'a')
}

/// `count` connections, spread over `threads` threads, each writing one
/// more byte of a never-ending head every `every`, until stopped; then
/// closed. Connecting stops at `connect_by`.
struct SlowClients {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    connecting: Arc<AtomicUsize>,
    handles: Vec<thread::JoinHandle<SlowReport>>,
}

#[derive(Default, Debug)]
struct SlowReport {
    held: usize,
    connect_errors: Vec<String>,
    /// Writes that failed (the peer closed) while held.
    closed_by_peer: usize,
}

impl SlowClients {
    fn start(addr: SocketAddr, count: usize, threads: usize, every: Duration, connect_by: Instant) -> SlowClients {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let connecting = Arc::new(AtomicUsize::new(threads));
        let handles = (0..threads)
            .map(|t| {
                let n = count / threads + usize::from(t < count % threads);
                let (stop, connected, connecting) = (stop.clone(), connected.clone(), connecting.clone());
                thread::spawn(move || {
                    let mut rep = SlowReport::default();
                    let mut socks: Vec<Option<TcpStream>> = Vec::with_capacity(n);
                    while socks.len() < n && Instant::now() < connect_by && !stop.load(Ordering::SeqCst) {
                        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                            Ok(s) => {
                                let _ = s.set_nonblocking(true);
                                let _ = (&s).write(&[slow_head_byte(0)]);
                                socks.push(Some(s));
                                connected.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                rep.connect_errors.push(e.to_string());
                                if rep.connect_errors.len() >= 20 {
                                    break;
                                }
                            }
                        }
                    }
                    connecting.fetch_sub(1, Ordering::SeqCst);
                    rep.held = socks.len();
                    let mut pos = 1;
                    let mut next = Instant::now() + every;
                    // Bounded: a forgotten stop ends this after two minutes.
                    let give_up = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                        if Instant::now() < next {
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        next += every;
                        let byte = [slow_head_byte(pos)];
                        pos += 1;
                        for slot in socks.iter_mut() {
                            if let Some(s) = slot {
                                match s.write(&byte) {
                                    Ok(_) => {}
                                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                                    Err(_) => {
                                        rep.closed_by_peer += 1;
                                        *slot = None;
                                    }
                                }
                            }
                        }
                    }
                    drop(socks);
                    rep
                })
            })
            .collect();
        SlowClients { stop, connected, connecting, handles }
    }

    fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Waits until every thread stopped connecting (bounded by `connect_by` + 5 s).
    fn wait_connected(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.connecting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes every connection; what the threads saw.
    fn release(self) -> SlowReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = SlowReport::default();
        for h in self.handles {
            let r = h.join().expect("slow client thread");
            all.held += r.held;
            all.closed_by_peer += r.closed_by_peer;
            all.connect_errors.extend(r.connect_errors);
        }
        all
    }
}

// ---------------------------------------------------------------------------
// 5. 1,000 slowloris connections
// ---------------------------------------------------------------------------

#[test]
fn slowloris_connections_do_not_starve_normal_clients() {
    let _serial = serial();
    const SLOW: usize = 1000;
    const REQUESTS: usize = 300;
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start_workers(with_admin(catch_all("ROUND_ROBIN", &[&b]), None), 2);
    let addr = rw.addr();

    let (quiet, quiet_failures) = timed_gets(addr, "x", REQUESTS, Duration::from_secs(2));
    assert!(quiet_failures.is_empty(), "without slowloris: {quiet_failures:?}");

    let slow = SlowClients::start(addr, SLOW, 2, Duration::from_millis(200), Instant::now() + Duration::from_secs(20));
    slow.wait_connected(Duration::from_secs(25));
    let (held, s) = stats_until(&rw, Duration::from_secs(10), |s| s["openConnections"].as_u64() >= Some(SLOW as u64));
    let (loaded, loaded_failures) = timed_gets(addr, "x", REQUESTS, Duration::from_secs(2));
    let s_after = stats(&rw);
    let report = slow.release();
    eprintln!(
        "slowloris: without {SLOW} slow connections p50 {:?} p99 {:?} max {:?} ({} requests); with them p50 {:?} \
         p99 {:?} max {:?} ({} requests; {} slow connections held, ringway saw {} open, buffers {}, {} closed by ringway while dripping)",
        pct(&quiet, 50),
        pct(&quiet, 99),
        quiet.last().unwrap(),
        quiet.len(),
        pct(&loaded, 50),
        pct(&loaded, 99),
        loaded.last().unwrap(),
        loaded.len(),
        report.held,
        s["openConnections"],
        s_after["buffers"],
        report.closed_by_peer
    );
    assert!(report.connect_errors.is_empty(), "slowloris connects failed: {:?}", report.connect_errors);
    assert_eq!(report.held, SLOW);
    assert!(held, "ringway never held the {SLOW} slow connections at once: {}", s["openConnections"]);
    assert!(loaded_failures.is_empty(), "normal clients failed under slowloris: {loaded_failures:?}");
    assert!(loaded.len() >= REQUESTS, "only {} requests", loaded.len());
    assert!(pct(&loaded, 99) < Duration::from_secs(2), "p99 {:?} under slowloris", pct(&loaded, 99));
}

// ---------------------------------------------------------------------------
// 6. Aborted 8 MiB uploads leak nothing
// ---------------------------------------------------------------------------

#[test]
fn aborted_uploads_leak_no_fds_buffers_or_connections() {
    let _serial = serial();
    const ABORTS: usize = 50;
    const SLACK: usize = 4;
    let b = Backend::echo().start();
    let rw = Ringway::start_workers(with_admin(catch_all("ROUND_ROBIN", &[&b]), None), 2);
    let addr = rw.addr();
    assert_eq!(get(addr, "x", "/warm").status, 200);
    let (_, s0) = stats_until(&rw, Duration::from_secs(5), |s| s["openConnections"] == 0);
    let baseline = fd_count(rw.pid());

    let chunk = pattern(64 * 1024);
    let sizes = [0usize, 16 << 10, 256 << 10, 1 << 20, 3 << 20];
    let mut sent_total = 0;
    let mut write_errors = 0;
    let mut peak = baseline;
    for i in 0..ABORTS {
        let mut c = Client::connect(addr);
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 8388608\r\n\r\n");
        let want = sizes[i % sizes.len()];
        let mut sent = 0;
        while sent < want {
            let n = chunk.len().min(want - sent);
            if c.try_send(&chunk[..n]).is_err() {
                write_errors += 1;
                break;
            }
            sent += n;
        }
        sent_total += sent;
        if i % 10 == 5 {
            peak = peak.max(fd_count(rw.pid()));
        }
        if i % 2 == 1 {
            // A reset instead of a FIN.
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
        }
        drop(c);
    }
    // Ringway still serves, on connections upstream that carry no leftovers.
    let mut after = Vec::new();
    for i in 0..10 {
        let r = get(addr, "x", &format!("/after/{i}"));
        after.push(r.status);
        assert!(r.text().starts_with(&format!("method GET\ntarget /after/{i}\n")), "answer {i}:\n{}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = fd_count(rw.pid());
    while fds > baseline + SLACK && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        fds = fd_count(rw.pid());
    }
    let (settled, s) =
        stats_until(&rw, Duration::from_secs(10), |s| s["openConnections"] == 0 && s["buffers"]["inUse"] == 0);
    eprintln!(
        "aborted uploads: {ABORTS} aborted after {} MiB in all ({write_errors} writes refused); ringway fds baseline \
         {baseline}, mid-run {peak}, after {fds}; backend saw {} connections; stats before {{open {}, buffers {}}} \
         after {{open {}, buffers {}, upstreamIdle {}}}",
        sent_total >> 20,
        b.connections(),
        s0["openConnections"],
        s0["buffers"],
        s["openConnections"],
        s["buffers"],
        s["upstreamIdleConnections"]
    );
    assert!(after.iter().all(|s| *s == 200), "after the aborts: {after:?}");
    assert!(fds <= baseline + SLACK, "ringway holds {fds} fds after the aborts, {baseline} before");
    assert!(settled, "stats did not come back to no connections and no buffers in use: {s}");
}

// ---------------------------------------------------------------------------
// 7. 20,000 connections dripping a byte a second
// ---------------------------------------------------------------------------

#[test]
fn twenty_thousand_slow_connections_keep_memory_bounded_and_normal_clients_served() {
    let _serial = serial();
    const WANT: usize = 20_000;
    const HEADROOM: usize = 20;
    // Buffer sets each worker keeps however idle (MIN_POOLED_BUFS, 8), for two workers.
    const MIN_POOLED: u64 = 16;
    let limit = raise_nofile(65536) as usize;
    // Both this process and ringway (which inherits the limit) need one fd
    // per connection, plus a few hundred for everything else.
    let count = WANT.min(limit.saturating_sub(400));
    if count < WANT {
        eprintln!("overload: RLIMIT_NOFILE is {limit} and cannot be raised: holding {count} connections, not {WANT}");
    }
    assert!(count >= 1000, "RLIMIT_NOFILE {limit} leaves room for only {count} connections");
    let b = Backend::respond(200, "ok").start();
    let cfg = set(catch_all("ROUND_ROBIN", &[&b]), "limits", "maxConnections", json!(count + HEADROOM));
    // Slow heads are held for the whole test, not closed at the head deadline.
    let cfg = set(cfg, "timeouts", "clientHeadMs", json!(300_000));
    let rw = Ringway::start_workers(with_admin(cfg, None), 2);
    let addr = rw.addr();
    let pid = rw.pid();
    let rss_idle = proc_status_kb(pid, "VmRSS");
    let (quiet, quiet_failures) = timed_gets(addr, "x", 100, Duration::from_secs(2));
    assert!(quiet_failures.is_empty(), "before the overload: {quiet_failures:?}");

    let t0 = Instant::now();
    let slow = SlowClients::start(addr, count, 4, Duration::from_secs(1), t0 + Duration::from_secs(40));
    slow.wait_connected(Duration::from_secs(45));
    let connect_took = t0.elapsed();
    let connected = slow.connected();
    let (held, s_held) =
        stats_until(&rw, Duration::from_secs(20), |s| s["openConnections"].as_u64() >= Some(count as u64));
    let rss_held = proc_status_kb(pid, "VmRSS");

    // Normal clients while they drip.
    let (loaded, loaded_failures) = timed_gets(addr, "x", 100, Duration::from_secs(2));

    // Over the limit: each extra connection is refused explicitly (closed at
    // once or answered), never left hanging.
    let mut kept = Vec::new();
    let (mut answered, mut closed, mut hung) = (0, 0, Vec::new());
    for i in 0..HEADROOM * 3 {
        let Ok(mut c) = Client::try_connect(addr, Duration::from_secs(5)) else {
            closed += 1;
            continue;
        };
        c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.try_send(format!("GET /extra/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        match c.read_response(false) {
            Ok(r) => {
                answered += 1;
                if r.status == 200 {
                    kept.push(c);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => hung.push(i),
            Err(_) => closed += 1,
        }
    }
    let s_extra = stats(&rw);
    let rss_peak = proc_status_kb(pid, "VmHWM");
    drop(kept);

    let report = slow.release();
    let (released, s_released) = stats_until(&rw, Duration::from_secs(30), |s| s["openConnections"] == 0);
    let rss_released = proc_status_kb(pid, "VmRSS");
    // The buffer pool follows the load down (about two seconds later).
    let (trimmed, s_trimmed) = stats_until(&rw, Duration::from_secs(15), |s| {
        s["buffers"]["inUse"] == 0 && s["buffers"]["pooled"].as_u64().is_some_and(|n| n <= MIN_POOLED)
    });
    let rss_trimmed = proc_status_kb(pid, "VmRSS");
    eprintln!(
        "overload: {connected} slow connections connected in {connect_took:?} ({} connect errors: {:?}); ringway \
         saw {} open; VmRSS idle {} MiB, holding them {} MiB, peak (VmHWM) {} MiB, at release {} MiB \
         (open {}, buffers {}), after the pool's trim {} MiB (buffers {}); {} closed by ringway while held",
        report.connect_errors.len(),
        report.connect_errors.iter().take(3).collect::<Vec<_>>(),
        s_held["openConnections"],
        rss_idle >> 10,
        rss_held >> 10,
        rss_peak >> 10,
        rss_released >> 10,
        s_released["openConnections"],
        s_released["buffers"],
        rss_trimmed >> 10,
        s_trimmed["buffers"],
        report.closed_by_peer
    );
    if !loaded.is_empty() {
        eprintln!(
            "overload: normal clients p50 {:?} p99 {:?} (before: p50 {:?} p99 {:?}); over the limit: {answered} \
             answered, {closed} closed, {} hung; rejectedConnections {}",
            pct(&loaded, 50),
            pct(&loaded, 99),
            pct(&quiet, 50),
            pct(&quiet, 99),
            hung.len(),
            s_extra["rejectedConnections"]
        );
    }
    assert_eq!(connected, count, "only {connected} of {count} slow connections were made");
    assert!(held, "ringway never held the {count} connections at once: {}", s_held["openConnections"]);
    assert!(rss_held < 512 << 10, "ringway's VmRSS holding {count} connections: {} MiB", rss_held >> 10);
    assert!(rss_peak < 512 << 10, "ringway's peak VmRSS: {} MiB", rss_peak >> 10);
    assert!(loaded_failures.is_empty(), "normal clients failed during the overload: {loaded_failures:?}");
    assert!(pct(&loaded, 99) < Duration::from_secs(2), "normal clients' p99 {:?} under overload", pct(&loaded, 99));
    assert!(hung.is_empty(), "connections over maxConnections got neither an answer nor a close: {hung:?}");
    assert!(closed >= HEADROOM, "only {closed} of {} connections over the limit were refused", HEADROOM * 3);
    let rejected = s_extra["rejectedConnections"].as_u64().unwrap_or(0);
    assert!(rejected >= closed as u64, "rejectedConnections {rejected}, yet {closed} connections were refused");
    assert!(released, "ringway still counts open connections after they all closed: {s_released}");
    assert!(trimmed, "the buffer pool kept its peak after the connections closed: {}", s_trimmed["buffers"]);
}
