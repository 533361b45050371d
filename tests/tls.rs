//! TLS termination, end to end: HTTPS through curl, certificates by SNI
//! (config file, routes' `ssl`, the admin API), versions and ALPN, broken
//! and stalled handshakes, certificate expiry in /metrics and /health,
//! autoHttps redirects, hostHeader, WebSocket over TLS, and TLS to
//! backends. The TLS clients are the `openssl` and `curl` command lines
//! (see support/tls.rs); every one of them is killed after a timeout.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// `config(routes)` plus a TLS listener on a free loopback port serving
/// `certs` (entries from `cert_file` / `cert_pem`).
fn tls_config(routes: Vec<Value>, certs: Vec<Value>) -> Value {
    let mut cfg = config(routes);
    cfg["tls"] = json!({"listen": ["127.0.0.1:0"], "certificates": certs});
    cfg
}

/// A config-file certificate naming `leaf`'s files.
fn cert_file(leaf: &Issued, default: bool) -> Value {
    json!({"cert": leaf.cert_path, "key": leaf.key_path, "default": default})
}

/// A config-file certificate with `leaf`'s PEM text inline.
fn cert_pem(leaf: &Issued, default: bool) -> Value {
    json!({"cert": leaf.cert_pem, "key": leaf.key_pem, "default": default})
}

/// A catch-all route over `b`.
fn any_route(b: &BackendHandle) -> Value {
    route("*", "ROUND_ROBIN", vec![b.config()])
}

/// The TLS listener's port.
fn tls_port(rw: &Ringway) -> u16 {
    rw.tls_addr().expect("ringway runs no TLS listener (no tls= on its listening line)").port()
}

/// A handshake with SNI `sni` (`None`: none sent) and `extra` s_client
/// arguments; nothing is sent after it.
fn handshake(rw: &Ringway, sni: Option<&str>, extra: &[&str]) -> SClient {
    s_client(tls_port(rw), sni, extra, b"")
}

/// The serial of the certificate ringway presents for `sni`; panics when
/// the handshake fails.
fn presented_serial(rw: &Ringway, sni: Option<&str>) -> String {
    let s = handshake(rw, sni, &[]);
    assert!(s.handshake_ok(), "no handshake for SNI {sni:?}:\n{}\n{}", s.stdout, s.stderr);
    s.leaf().expect("no certificate presented").serial
}

/// `POST /api/v1/certificates` for `domain` with `leaf`'s PEM.
fn post_cert(api: &Api, domain: &str, leaf: &Issued) -> ApiReply {
    api.post("/api/v1/certificates", &json!({"domain": domain, "cert": leaf.cert_pem, "key": leaf.key_pem}))
}

/// `GET /api/v1/certificates`, which must answer 200 with an array.
fn listed_certs(api: &Api) -> Value {
    let r = api.get("/api/v1/certificates").expect(200, "GET /api/v1/certificates");
    assert!(r.json.is_array(), "not an array: {}", r.json);
    r.json
}

/// A plain GET on the admin listener (for the text answers, e.g. /metrics).
fn admin_text(rw: &Ringway, path: &str) -> String {
    let r = get(rw.admin_addr(), &rw.admin_addr().to_string(), path);
    assert_eq!(r.status, 200, "GET {path}:\n{}{}", r.head, r.text());
    r.text()
}

/// A raw TCP connection to `addr` with a short read timeout.
fn raw_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads until the peer closes (EOF or reset) within `within`: `Ok` with
/// the bytes it sent first, or `Err` with them when it is still open.
fn read_to_close(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(got);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut tmp) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(got),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok(got),
        }
    }
}

/// Whether `s` is still open and silent: a read finds nothing for 100 ms.
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut tmp = [0u8; 64];
    matches!(s.read(&mut tmp), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Whether `bytes` are nothing but TLS alert records (content type 21).
fn only_alerts(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 5 || rest[0] != 0x15 {
            return false;
        }
        let len = 5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest.len() < len {
            return false;
        }
        rest = &rest[len..];
    }
    true
}

/// A TLS byte stream through `openssl s_client -quiet`: what is written
/// goes to ringway encrypted, what ringway sends comes out decrypted.
/// The process is killed on drop.
struct TlsPipe {
    child: Child,
    /// `None` once handed to a writer thread (`send_in_background`).
    stdin: Option<ChildStdin>,
    from: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    /// Everything s_client wrote to stderr so far.
    stderr: Arc<std::sync::Mutex<String>>,
}

impl TlsPipe {
    fn open(port: u16, sni: &str) -> TlsPipe {
        TlsPipe::open_with(port, sni, &["-quiet", "-nocommands"])
    }

    /// With other s_client options than `-quiet -nocommands` (without
    /// `-quiet`, its stdout also carries the session details).
    fn open_with(port: u16, sni: &str, options: &[&str]) -> TlsPipe {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_client");
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        thread::spawn(move || {
            let mut tmp = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut tmp) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&tmp[..n]));
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let (tx, from) = mpsc::channel();
        thread::spawn(move || {
            let mut tmp = [0u8; 16 * 1024];
            while let Ok(n) = stdout.read(&mut tmp) {
                if n == 0 || tx.send(tmp[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TlsPipe { child, stdin: Some(stdin), from, buf: Vec::new(), stderr }
    }

    /// Waits (at most `within`) until s_client's stderr holds `needle`
    /// `times` times.
    fn wait_stderr(&self, needle: &str, times: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if text.matches(needle).count() >= times {
                return;
            }
            assert!(Instant::now() < deadline, "s_client's stderr has {needle:?} fewer than {times} times:\n{text}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin was handed to a writer thread");
        stdin.write_all(bytes).and_then(|_| stdin.flush()).expect("write to s_client");
    }

    /// Writes `data` from a thread of its own (so that reading can go on
    /// meanwhile); stdin is closed after it.
    fn send_in_background(&mut self, data: Vec<u8>) -> thread::JoinHandle<std::io::Result<()>> {
        let mut stdin = self.stdin.take().expect("stdin was handed to a writer thread");
        thread::spawn(move || stdin.write_all(&data).and_then(|_| stdin.flush()))
    }

    /// Reads until `n` bytes arrived (within `within`); takes them.
    fn take(&mut self, n: usize, within: Duration) -> Vec<u8> {
        self.fill(within, |b| b.len() >= n);
        self.buf.drain(..n).collect()
    }

    /// Reads until `needle` arrived (within `within`); takes up to its end.
    fn take_through(&mut self, needle: &[u8], within: Duration) -> Vec<u8> {
        self.fill(within, |b| b.windows(needle.len()).any(|w| w == needle));
        let end = self.buf.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len();
        self.buf.drain(..end).collect()
    }

    fn fill(&mut self, within: Duration, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.buf) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(bytes) => self.buf.extend_from_slice(&bytes),
                Err(_) => {
                    panic!("s_client: not there within {within:?}; got so far {:?}", String::from_utf8_lossy(&self.buf))
                }
            }
        }
    }

    /// Reads one response with a Content-Length body: (head, body).
    fn response(&mut self, within: Duration) -> (String, Vec<u8>) {
        let head = String::from_utf8_lossy(&self.take_through(b"\r\n\r\n", within)).to_string();
        let len = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
            .map(|(_, v)| v.trim().parse::<usize>().unwrap_or_else(|_| panic!("bad Content-Length in {head}")))
            .unwrap_or_else(|| panic!("no Content-Length in {head}"));
        let body = self.take(len, within);
        (head, body)
    }

    /// Whether ringway ends the stream (s_client's output ends) within
    /// `within`, with no further bytes.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(bytes) => self.buf.extend_from_slice(&bytes),
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.buf.is_empty(),
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

impl Drop for TlsPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server -www` on a free loopback port serving `default`, and
/// `by_sni` to clients that send SNI `sni`; killed on drop.
struct TlsBackend {
    child: Child,
    port: u16,
}

impl TlsBackend {
    fn start(default: &Issued, sni: &str, by_sni: &Issued) -> TlsBackend {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(&default.cert_path)
            .arg("-key")
            .arg(&default.key_path)
            .args(["-servername", sni, "-cert2"])
            .arg(&by_sni.cert_path)
            .arg("-key2")
            .arg(&by_sni.key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Only the ACCEPT line matters; keep draining the rest.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("ACCEPT ") {
                        break a.rsplit(':').next().unwrap().parse().unwrap();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("openssl s_server printed no ACCEPT line");
                }
            }
        };
        TlsBackend { child, port }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// 1. HTTPS through curl
// ---------------------------------------------------------------------------

#[test]
fn https_request_reaches_the_backend_marked_https() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "a").named("a").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));

    let r = curl_https_with(tls_port(&rw), "a.test", "/hello?x=1", ca.ca_path(), &["-H", "X-Forwarded-Proto: http"]);
    assert_eq!((r.exit_code, r.status), (0, 200), "curl: {}", r.stderr);
    assert_eq!(r.text(), "a");
    assert_eq!(r.header("x-backend"), Some("a"), "{:?}", r.headers);

    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/hello?x=1");
    assert_eq!(seen[0].all("host"), [format!("a.test:{}", tls_port(&rw))], "{}", seen[0].head);
    assert_eq!(
        seen[0].all("x-forwarded-proto"),
        ["https"],
        "the client's X-Forwarded-Proto survived:\n{}",
        seen[0].head
    );

    // Plain HTTP on the same ringway still says http.
    assert_eq!(get(rw.addr(), "a.test", "/plain").status, 200);
    assert_eq!(b.requests()[1].all("x-forwarded-proto"), ["http"]);
}

#[test]
fn https_keep_alive_serves_two_requests_on_one_connection() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "a").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));
    let port = tls_port(&rw);

    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = |p: &str| format!("https://a.test:{port}{p}");
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--http1.1", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(ca.ca_path())
        .args(["-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n"])
        .args([url("/one"), url("/two")]);
    let out = run_tool(&mut cmd, b"", TOOL_TIMEOUT);
    assert!(out.success(), "curl ({:?}): {}", out.exit_code, out.stderr);
    assert_eq!(out.stdout_text(), "200 1\n200 0\n", "status and new connections per request");
    let targets: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/one", "/two"]);
}

// ---------------------------------------------------------------------------
// 1b. What a TLS connection carries: bodies, pipelining, resumed sessions,
//     the access log
// ---------------------------------------------------------------------------

#[test]
fn ten_mib_bodies_cross_tls_intact_both_ways() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["up.test", "down.test", "chunks.test"]);
    let echo = Backend::echo().start();
    let len = 10 << 20;
    let large = Backend::large(len).start();
    let chunks = Backend::chunked(&["alpha-", "beta-", "gamma"]).start();
    let routes = vec![
        route("up.test", "ROUND_ROBIN", vec![echo.config()]),
        route("down.test", "ROUND_ROBIN", vec![large.config()]),
        route("chunks.test", "ROUND_ROBIN", vec![chunks.config()]),
    ];
    let rw = Ringway::start(tls_config(routes, vec![cert_file(&leaf, true)]));
    let port = tls_port(&rw);

    let dir = TempDir::new("upload");
    let body = pattern(len);
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let extra = ["--data-binary", data.as_str(), "-H", "Content-Type: application/octet-stream"];
    let r = curl_https_with(port, "up.test", "/upload", ca.ca_path(), &extra);
    assert_eq!((r.exit_code, r.status), (0, 200), "upload: {}", r.stderr);
    assert!(r.text().contains(&format!("body-len {len}\nbody-hash {}\n", hash(&body))), "echo: {}", r.text());
    assert_eq!(hash(&echo.requests()[0].body), hash(&body));

    let r = curl_https(port, "down.test", "/big", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (0, 200), "download: {}", r.stderr);
    assert_eq!(r.body.len(), len);
    assert_eq!(hash(&r.body), hash(&pattern(len)));

    let r = curl_https(port, "chunks.test", "/", ca.ca_path());
    assert_eq!((r.exit_code, r.status, r.text().as_str()), (0, 200, "alpha-beta-gamma"), "chunked: {}", r.stderr);
}

#[test]
fn request_heads_over_many_tls_records_arrive_whole_and_over_limit_heads_get_431() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));
    let port = tls_port(&rw);

    // 40 KB of header: three TLS records, several reads.
    let big: String = pattern(40_000).iter().map(|&c| char::from(b'a' + c % 26)).collect();
    let header = format!("X-Big: {big}");
    let r = curl_https_with(port, "a.test", "/big-head", ca.ca_path(), &["-H", &header]);
    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(b.requests()[0].all("x-big"), std::slice::from_ref(&big), "the header did not arrive intact");

    // Over the 64 KiB default limit.
    let huge = format!("X-Huge: {}", "h".repeat(70_000));
    let r = curl_https_with(port, "a.test", "/huge-head", ca.ca_path(), &["-H", &huge]);
    assert_eq!(r.status, 431, "curl {}: {}", r.exit_code, r.stderr);
    assert_eq!(b.request_count(), 1);
}

#[test]
fn pipelined_and_idle_requests_on_one_tls_connection() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::echo().start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));

    let mut c = TlsPipe::open(tls_port(&rw), "a.test");
    // Three requests in one write: after the first, the other two wait as
    // plaintext inside the TLS state while the socket shows nothing new.
    c.send(b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /3 HTTP/1.1\r\nHost: a.test\r\n\r\n");
    for i in 1..=3 {
        let (head, body) = c.response(Duration::from_secs(5));
        assert!(head.starts_with("HTTP/1.1 200"), "response {i}: {head}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(&format!("target /{i}\n")), "response {i} out of order: {text}");
    }
    // Idle for a while, then one more that closes the connection.
    thread::sleep(Duration::from_millis(300));
    c.send(b"GET /4 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    let (head, body) = c.response(Duration::from_secs(5));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("target /4\n"));
    assert!(c.closed_within(Duration::from_secs(3)), "still open after Connection: close");
    assert_eq!(b.request_count(), 4);
}

#[test]
fn key_updates_mid_connection_keep_it_working() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::echo().start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));

    // s_client's command letters: a line "K" sends a KeyUpdate that asks
    // ringway to update its keys too, "k" one that does not.
    let mut c = TlsPipe::open_with(tls_port(&rw), "a.test", &["-tls1_3"]);
    for (i, command) in ["K\n", "k\n", "K\n"].iter().enumerate() {
        c.send(format!("GET /{i} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
        c.take_through(b"HTTP/1.1 200", Duration::from_secs(5));
        c.take_through(format!("target /{i}\n").as_bytes(), Duration::from_secs(5));
        c.send(command.as_bytes());
        c.wait_stderr("KEYUPDATE", i + 1, Duration::from_secs(5));
    }
    c.send(b"GET /last HTTP/1.1\r\nHost: a.test\r\n\r\n");
    c.take_through(b"HTTP/1.1 200", Duration::from_secs(5));
    c.take_through(b"target /last\n", Duration::from_secs(5));
    assert_eq!(b.request_count(), 4);
}

#[test]
fn tls_sessions_resume_on_any_worker() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start_workers(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]), 2);
    let dir = TempDir::new("sessions");
    let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    for version in ["-tls1_3", "-tls1_2"] {
        let session = dir.join(&format!("session{version}"));
        let session = session.to_str().unwrap();
        // -ign_eof: s_client stays until ringway closes, reading the ticket.
        let s = handshake_with(&rw, &[version, "-ign_eof", "-sess_out", session], request);
        assert!(s.handshake_ok() && s.stdout.contains("HTTP/1.1 200"), "{version}: {}\n{}", s.stdout, s.stderr);
        assert!(std::path::Path::new(session).exists(), "{version}: no session saved:\n{}", s.stderr);
        for i in 0..6 {
            let s = handshake_with(&rw, &[version, "-ign_eof", "-sess_in", session], request);
            assert!(s.stdout.contains("HTTP/1.1 200"), "{version} resumption {i}: {}\n{}", s.stdout, s.stderr);
            assert!(s.stdout.contains("\nReused, "), "{version} resumption {i} was a full handshake:\n{}", s.stdout);
        }
    }
}

/// A handshake with SNI a.test, then `stdin`.
fn handshake_with(rw: &Ringway, extra: &[&str], stdin: &[u8]) -> SClient {
    s_client(tls_port(rw), Some("a.test"), extra, stdin)
}

#[test]
fn access_log_names_tls_version_and_sni() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let dir = TempDir::new("access");
    let log_path = dir.join("access.log");
    let mut cfg = tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    cfg["accessLog"] = json!({"path": log_path});
    let rw = Ringway::start(cfg);

    let r = curl_https_with(tls_port(&rw), "a.test", "/tls12", ca.ca_path(), &["--tls-max", "1.2"]);
    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    let r = curl_https(tls_port(&rw), "a.test", "/tls13", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert_eq!(get(rw.addr(), "a.test", "/plain").status, 200);

    // Lines reach the file within a flush period or so (read while ringway
    // runs: see access_log_lines_reach_the_file_before_ringway_exits).
    let lines = wait_for_log_lines(&log_path, 3, Duration::from_secs(3));
    let line = |path: &str| -> &Value {
        lines.iter().find(|l| l["path"] == path).unwrap_or_else(|| panic!("no line for {path} in {lines:?}"))
    };
    let l = line("/tls12");
    assert_eq!((&l["tls"], &l["sni"]), (&json!("TLSv1.2"), &json!("a.test")), "{l}");
    let l = line("/tls13");
    assert_eq!((&l["tls"], &l["sni"]), (&json!("TLSv1.3"), &json!("a.test")), "{l}");
    assert!(line("/plain").get("tls").is_none(), "{lines:?}");
}

/// The access log's lines as JSON, once it holds at least `n` (within `within`).
fn wait_for_log_lines(path: &std::path::Path, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the access log has {} lines, not {n}, after {within:?}:\n{text}",
            text.lines().count()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Regression check for lines lost at exit: workers hand their last batch
/// to the access-log writer thread when they drain, and ringway must not
/// exit before that thread has written it. The log here is a FIFO that is
/// read only from 500 ms after SIGTERM, so the writer is still busy when
/// the workers are done.
#[test]
fn access_log_lines_reach_the_file_before_ringway_exits() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let dir = TempDir::new("fifo");
    let fifo = dir.join("access.log");
    let made = run_tool(Command::new("mkfifo").arg(&fifo), b"", TOOL_TIMEOUT);
    assert!(made.success(), "mkfifo: {}", made.stderr);
    let (go, wait) = mpsc::channel::<()>();
    let reader_path = fifo.clone();
    let reader = thread::spawn(move || {
        // Opens once ringway opens its end; reads to EOF (ringway gone).
        let mut f = std::fs::File::open(&reader_path).expect("open the FIFO");
        let _ = wait.recv_timeout(Duration::from_secs(30));
        thread::sleep(Duration::from_millis(500));
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        text
    });
    let mut cfg = tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    cfg["accessLog"] = json!({"path": fifo});
    let mut rw = Ringway::start(cfg);

    // 1,000 requests pipelined on one TLS connection: more log than a pipe holds.
    const N: usize = 1_000;
    let mut c = TlsPipe::open(tls_port(&rw), "a.test");
    let requests: String = (0..N).map(|i| format!("GET /bulk/{i} HTTP/1.1\r\nHost: a.test\r\n\r\n")).collect();
    c.send(requests.as_bytes());
    for i in 0..N {
        let (head, _) = c.response(Duration::from_secs(5));
        assert!(head.starts_with("HTTP/1.1 200"), "response {i}: {head}");
    }
    drop(c);
    rw.terminate();
    let _ = go.send(());
    let exit = rw.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "ringway did not exit cleanly: {exit:?}");
    let text = reader.join().expect("FIFO reader");
    let logged = text.lines().filter(|l| l.contains("\"/bulk/")).count();
    assert_eq!(logged, N, "access log lines written before exit (of {} bytes read)", text.len());
}

// ---------------------------------------------------------------------------
// 2. SNI
// ---------------------------------------------------------------------------

#[test]
fn sni_picks_the_exact_then_the_wildcard_then_the_default_certificate() {
    let ca = TestCa::new();
    let cert_a = ca.issue(&["a.test"]);
    let cert_b = ca.issue(&["*.w.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&cert_a, false), cert_pem(&cert_b, true)]));

    let s = handshake(&rw, Some("a.test"), &["-CAfile", ca.ca_path().to_str().unwrap()]);
    assert!(s.handshake_ok(), "{}\n{}", s.stdout, s.stderr);
    assert_eq!(s.verify_code, Some(0), "{}", s.stdout);
    let leaf = s.leaf().unwrap();
    assert_eq!((leaf.serial.as_str(), leaf.sans.as_slice()), (cert_a.serial.as_str(), &["a.test".to_string()][..]));

    assert_eq!(presented_serial(&rw, Some("x.w.test")), cert_b.serial, "SNI x.w.test");
    assert_eq!(presented_serial(&rw, Some("X.W.Test")), cert_b.serial, "SNI X.W.Test (case)");
    assert_eq!(presented_serial(&rw, Some("nomatch.test")), cert_b.serial, "SNI nomatch.test gets the default");
    assert_eq!(presented_serial(&rw, Some("y.x.w.test")), cert_b.serial, "two labels: not the wildcard, the default");
    assert_eq!(presented_serial(&rw, None), cert_b.serial, "no SNI gets the default");
}

#[test]
fn sni_that_matches_nothing_without_a_default_is_refused_with_unrecognized_name() {
    let ca = TestCa::new();
    let cert_a = ca.issue(&["a.test"]);
    let cert_b = ca.issue(&["*.w.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw =
        Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&cert_a, false), cert_file(&cert_b, false)]));

    assert_eq!(presented_serial(&rw, Some("a.test")), cert_a.serial);
    assert_eq!(presented_serial(&rw, Some("q.w.test")), cert_b.serial);

    let s = handshake(&rw, Some("nomatch.test"), &[]);
    assert!(!s.handshake_ok(), "a handshake for an unserved name completed:\n{}", s.stdout);
    assert!(s.peer_certs.is_empty(), "a certificate was presented for an unserved name");
    assert!(
        s.stderr.contains("unrecognized name") || s.stderr.contains("alert number 112"),
        "no unrecognized_name alert in s_client's stderr:\n{}",
        s.stderr
    );
    let s = handshake(&rw, None, &[]);
    assert!(!s.handshake_ok(), "a handshake without SNI and without a default completed:\n{}", s.stdout);
    // The listener keeps serving.
    assert_eq!(presented_serial(&rw, Some("a.test")), cert_a.serial);
}

// ---------------------------------------------------------------------------
// 3. Versions and ALPN
// ---------------------------------------------------------------------------

#[test]
fn tls12_and_tls13_are_served_tls11_is_not() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));

    let s = handshake(&rw, Some("a.test"), &["-tls1_2"]);
    assert_eq!(s.protocol.as_deref(), Some("TLSv1.2"), "{}\n{}", s.stdout, s.stderr);
    let s = handshake(&rw, Some("a.test"), &["-tls1_3"]);
    assert_eq!(s.protocol.as_deref(), Some("TLSv1.3"), "{}\n{}", s.stdout, s.stderr);
    // s_client may refuse TLS 1.1 itself at the default security level;
    // either way no handshake may complete.
    let s = handshake(&rw, Some("a.test"), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!s.handshake_ok(), "a TLS 1.1 handshake completed: {:?}\n{}", s.protocol, s.stdout);

    let r = curl_https_with(tls_port(&rw), "a.test", "/", ca.ca_path(), &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!((r.exit_code, r.status), (0, 200), "curl over TLS 1.2: {}", r.stderr);
}

#[test]
fn min_version_13_refuses_tls12() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let mut cfg = tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    cfg["tls"]["minVersion"] = json!("1.3");
    let rw = Ringway::start(cfg);

    let s = handshake(&rw, Some("a.test"), &["-tls1_2"]);
    assert!(!s.handshake_ok(), "a TLS 1.2 handshake completed with minVersion 1.3: {:?}\n{}", s.protocol, s.stdout);
    let s = handshake(&rw, Some("a.test"), &["-tls1_3"]);
    assert_eq!(s.protocol.as_deref(), Some("TLSv1.3"), "{}\n{}", s.stdout, s.stderr);
}

#[test]
fn alpn_offers_h2_first_and_http11_and_h2_can_be_turned_off() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));
    let s = handshake(&rw, Some("a.test"), &["-alpn", "h2,http/1.1"]);
    assert!(s.handshake_ok(), "{}\n{}", s.stdout, s.stderr);
    assert_eq!(s.alpn.as_deref(), Some("h2"), "{}", s.stdout);
    let s = handshake(&rw, Some("a.test"), &["-alpn", "http/1.1"]);
    assert_eq!(s.alpn.as_deref(), Some("http/1.1"), "{}", s.stdout);
    let r = curl_https_with(tls_port(&rw), "a.test", "/", ca.ca_path(), &["--http2"]);
    assert_eq!((r.exit_code, r.status, r.http_version.as_str()), (0, 200, "2"), "curl --http2: {}", r.stderr);

    // "http2": {"enabled": false}: HTTP/1.1 only; a client offering only h2
    // gets no ALPN protocol rather than h2.
    let mut cfg = tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    cfg["http2"] = json!({"enabled": false});
    let rw = Ringway::start(cfg);
    let s = handshake(&rw, Some("a.test"), &["-alpn", "h2,http/1.1"]);
    assert_eq!(s.alpn.as_deref(), Some("http/1.1"), "{}", s.stdout);
    let s = handshake(&rw, Some("a.test"), &["-alpn", "h2"]);
    assert_ne!(s.alpn.as_deref(), Some("h2"), "h2 negotiated:\n{}", s.stdout);
    let r = curl_https_with(tls_port(&rw), "a.test", "/", ca.ca_path(), &["--http2"]);
    assert_eq!((r.exit_code, r.status, r.http_version.as_str()), (0, 200, "1.1"), "curl --http2: {}", r.stderr);
}

// ---------------------------------------------------------------------------
// 4. Bad input on the TLS port
// ---------------------------------------------------------------------------

/// A ringway with a TLS listener whose handshakes may last `handshake_ms`.
fn tls_ringway(ca: &TestCa, b: &BackendHandle, handshake_ms: u64) -> Ringway {
    let leaf = ca.issue(&["a.test"]);
    let mut cfg = tls_config(vec![any_route(b)], vec![cert_file(&leaf, true)]);
    cfg["tls"]["handshakeMs"] = json!(handshake_ms);
    Ringway::start(cfg)
}

/// The first bytes of a ClientHello whose record claims 512 bytes.
const TRUNCATED_CLIENT_HELLO: [u8; 20] =
    [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[test]
fn plain_http_on_the_tls_port_is_closed() {
    let ca = TestCa::new();
    let b = Backend::respond(200, "ok").start();
    let rw = tls_ringway(&ca, &b, 10_000);
    let mut s = raw_connect(rw.tls_addr().unwrap());
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    match read_to_close(&mut s, Duration::from_secs(3)) {
        Ok(got) => assert!(only_alerts(&got), "answered plain HTTP with {:?}", String::from_utf8_lossy(&got)),
        Err(got) => panic!("still open 3 s after a plain HTTP request (sent {got:?})"),
    }
    assert_eq!(b.request_count(), 0);
}

#[test]
fn garbage_on_the_tls_port_is_closed() {
    let ca = TestCa::new();
    let b = Backend::respond(200, "ok").start();
    let rw = tls_ringway(&ca, &b, 10_000);
    for garbage in [
        &b"\x00\x01\x02\x03\xff\xfe\xfd garbage garbage garbage\r\n\r\n"[..],
        &[0x16, 0x00, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5],
    ] {
        let mut s = raw_connect(rw.tls_addr().unwrap());
        s.write_all(garbage).unwrap();
        match read_to_close(&mut s, Duration::from_secs(3)) {
            Ok(got) => assert!(only_alerts(&got), "answered {garbage:?} with {got:?}"),
            Err(got) => panic!("still open 3 s after {garbage:?} (sent {got:?})"),
        }
    }
    // And it still serves.
    assert!(handshake(&rw, Some("a.test"), &[]).handshake_ok());
}

#[test]
fn silent_and_truncated_handshakes_are_closed_after_handshake_ms() {
    let ca = TestCa::new();
    let b = Backend::respond(200, "ok").start();
    let rw = tls_ringway(&ca, &b, 300);
    let t0 = Instant::now();
    let mut silent = raw_connect(rw.tls_addr().unwrap());
    let mut truncated = raw_connect(rw.tls_addr().unwrap());
    truncated.write_all(&TRUNCATED_CLIENT_HELLO).unwrap();
    for (what, s) in [("silent", &mut silent), ("truncated ClientHello", &mut truncated)] {
        match read_to_close(s, Duration::from_secs(3)) {
            Ok(got) => assert!(only_alerts(&got), "{what}: got {got:?}"),
            Err(_) => panic!("{what}: still open {:?} after connecting (handshakeMs 300)", t0.elapsed()),
        }
    }
    assert!(t0.elapsed() >= Duration::from_millis(250), "closed after {:?}, before handshakeMs", t0.elapsed());

    // A client that drips its ClientHello a byte at a time does not get
    // more time: handshakeMs bounds the whole handshake, not each read.
    let t0 = Instant::now();
    let mut drip = raw_connect(rw.tls_addr().unwrap());
    let mut closed = false;
    for &byte in TRUNCATED_CLIENT_HELLO.iter().cycle().take(40) {
        if drip.write_all(&[byte]).is_err() || !still_open(&mut drip) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripping handshake was still open after {:?} (handshakeMs 300)", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(1_500), "a dripping handshake lasted {:?}", t0.elapsed());
}

#[test]
fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let ca = TestCa::new();
    let b = Backend::respond(200, "served").start();
    let rw = tls_ringway(&ca, &b, 1_500);
    let t0 = Instant::now();
    let mut silent = raw_connect(rw.tls_addr().unwrap());
    let mut truncated = raw_connect(rw.tls_addr().unwrap());
    truncated.write_all(&TRUNCATED_CLIENT_HELLO).unwrap();
    // One worker: the stalled handshakes must not block it.
    for i in 0..3 {
        let r = curl_https(tls_port(&rw), "a.test", &format!("/{i}"), ca.ca_path());
        assert_eq!((r.exit_code, r.status, r.text().as_str()), (0, 200, "served"), "curl {i}: {}", r.stderr);
    }
    assert_eq!(get(rw.addr(), "a.test", "/plain").status, 200);
    if t0.elapsed() < Duration::from_millis(1_200) {
        assert!(still_open(&mut silent), "the silent connection was closed before handshakeMs");
        assert!(still_open(&mut truncated), "the truncated handshake was closed before handshakeMs");
    }
    for (what, s) in [("silent", &mut silent), ("truncated ClientHello", &mut truncated)] {
        assert!(read_to_close(s, Duration::from_secs(4)).is_ok(), "{what}: still open after {:?}", t0.elapsed());
    }
}

// ---------------------------------------------------------------------------
// 5. Certificates through the admin API
// ---------------------------------------------------------------------------

#[test]
fn api_certificates_are_served_at_once_listed_without_keys_and_deleted() {
    let ca = TestCa::new();
    let cert_a = ca.issue(&["a.test"]);
    let default = ca.issue(&["default.test"]);
    let api_leaf = ca.issue(&["api.test"]);
    let b = Backend::respond(200, "ok").start();
    let cfg = tls_config(vec![any_route(&b)], vec![cert_file(&cert_a, false), cert_file(&default, true)]);
    let rw = Ringway::start(with_admin(cfg, None));
    let api = rw.api();
    assert_eq!(presented_serial(&rw, Some("api.test")), default.serial, "before the POST");

    let r = post_cert(&api, "api.test", &api_leaf).expect(201, "POST /api/v1/certificates");
    assert_eq!(r.json["domain"], "api.test", "{}", r.json);
    assert_eq!(presented_serial(&rw, Some("api.test")), api_leaf.serial, "the handshake right after the POST");
    let r = curl_https(tls_port(&rw), "api.test", "/", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (0, 200), "curl verifying api.test: {}", r.stderr);

    // Listed: API and config certificates, never a key.
    let listed = api.get("/api/v1/certificates").expect(200, "GET /api/v1/certificates");
    assert!(!listed.response.text().contains("PRIVATE KEY"), "a key in the listing: {}", listed.response.text());
    let list = listed.json.as_array().unwrap_or_else(|| panic!("not an array: {}", listed.json)).clone();
    for c in &list {
        assert!(c.get("key").is_none(), "a key field in the listing: {c}");
    }
    let find = |domain: &str| -> Value {
        list.iter().find(|c| c["domain"] == domain).cloned().unwrap_or_else(|| panic!("{domain} not listed: {list:?}"))
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let e = find("api.test");
    assert_eq!(e["sans"], json!(["api.test"]), "{e}");
    assert_eq!(e["default"], false, "{e}");
    assert!(e["issuer"].as_str().is_some_and(|i| i.contains("ringway test CA")), "{e}");
    let not_after = e["notAfter"].as_i64().unwrap_or_else(|| panic!("notAfter is not a number: {e}"));
    assert!((not_after - (now + 30 * 86_400)).abs() < 3_600, "notAfter {not_after}, now {now}: {e}");
    let e = find("default.test");
    assert_eq!((e["default"].clone(), e["sans"].clone()), (json!(true), json!(["default.test"])), "{e}");
    assert_eq!(find("a.test")["default"], false);

    // An API certificate beats the config file's for the same name; its
    // deletion brings the config file's back.
    let newer_a = ca.issue(&["a.test"]);
    post_cert(&api, "a.test", &newer_a).expect(201, "POST a certificate for a.test");
    assert_eq!(presented_serial(&rw, Some("a.test")), newer_a.serial, "the API certificate for a.test");
    api.delete("/api/v1/certificates/a.test").expect(204, "DELETE a.test");
    assert_eq!(presented_serial(&rw, Some("a.test")), cert_a.serial, "the config certificate after DELETE");

    // Delete: the next handshake falls back to the default.
    let r = api.delete("/api/v1/certificates/api.test").expect(204, "DELETE /api/v1/certificates/api.test");
    assert!(r.response.body.is_empty(), "204 with a body: {}", r.response.text());
    assert_eq!(presented_serial(&rw, Some("api.test")), default.serial, "the handshake right after the DELETE");
    assert!(listed_certs(&api).as_array().unwrap().iter().all(|c| c["domain"] != "api.test"), "still listed");
}

#[test]
fn api_refuses_bad_certificates_naming_the_field_and_changes_nothing() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(tls_config(vec![any_route(&b)], vec![cert_file(&default, true)]), None));
    let api = rw.api();
    let kept = ca.issue(&["api.test"]);
    post_cert(&api, "api.test", &kept).expect(201, "POST a good certificate");
    let before = listed_certs(&api);

    let expired = ca.issue_with_validity(&["api.test"], -10, 5);
    let not_yet = ca.issue_with_validity(&["api.test"], 1, 30);
    let other = ca.issue(&["api.test"]);
    let fresh = ca.issue(&["api.test"]);
    let garbage = "-----BEGIN CERTIFICATE-----\nthis is not base64 !!!\n-----END CERTIFICATE-----\n";
    let cases: Vec<(&str, Value, &str)> = vec![
        ("an expired certificate", json!({"cert": expired.cert_pem, "key": expired.key_pem}), "cert"),
        ("a certificate not valid yet", json!({"cert": not_yet.cert_pem, "key": not_yet.key_pem}), "cert"),
        ("a key that does not match", json!({"cert": fresh.cert_pem, "key": other.key_pem}), "key"),
        ("garbage PEM", json!({"cert": garbage, "key": fresh.key_pem}), "cert"),
        ("no PEM at all", json!({"cert": "hello", "key": fresh.key_pem}), "cert"),
        ("a key that is not a key", json!({"cert": fresh.cert_pem, "key": "hello"}), "key"),
        (
            "a chain out of order",
            json!({"cert": format!("{}{}", fresh.ca_pem, fresh.cert_pem), "key": fresh.key_pem}),
            "cert",
        ),
    ];
    for (what, mut body, field) in cases {
        body["domain"] = json!("api.test");
        let r = api.post("/api/v1/certificates", &body).expect(400, what);
        assert_eq!(r.field(), Some(field), "{what}: {}", r.json);
        assert_eq!(listed_certs(&api), before, "{what} changed the listing");
    }
    let r = post_cert(&api, "not a domain!", &fresh).expect(400, "a bad domain");
    assert_eq!(r.field(), Some("domain"), "{}", r.json);
    assert_eq!(listed_certs(&api), before);
    assert_eq!(presented_serial(&rw, Some("api.test")), kept.serial, "the refused POSTs changed what is served");

    // The leaf followed by its issuer is a chain in order.
    let chained =
        json!({"domain": "api.test", "cert": format!("{}{}", fresh.cert_pem, fresh.ca_pem), "key": fresh.key_pem});
    api.post("/api/v1/certificates", &chained).expect(201, "leaf then CA");
    let s = handshake(&rw, Some("api.test"), &[]);
    assert_eq!(s.peer_certs.len(), 2, "the chain was not presented whole:\n{}", s.stdout);
    assert_eq!(s.leaf().unwrap().serial, fresh.serial);
}

#[test]
fn api_certificates_reach_every_worker_and_survive_a_restart() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let api_leaf = ca.issue(&["api.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let b = Backend::respond(200, "ok").start();
    let dir = TempDir::new("certstate");
    let cfg_path = dir.join("edge.json");
    let cfg = with_admin(tls_config(vec![any_route(&b)], vec![cert_file(&default, true)]), None);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    let mut rw = Ringway::start_at(&cfg_path, 2, &[]);
    let api = rw.api();
    post_cert(&api, "api.test", &api_leaf).expect(201, "POST api.test");
    post_cert(&api, "*.wild.test", &wild).expect(201, "POST *.wild.test");
    // New connections spread over both workers: every one sees them.
    for i in 0..8 {
        assert_eq!(presented_serial(&rw, Some("api.test")), api_leaf.serial, "handshake {i}");
        assert_eq!(presented_serial(&rw, Some(&format!("h{i}.wild.test"))), wild.serial, "handshake {i}");
    }
    let r = api.delete("/api/v1/certificates/nothing.test");
    assert_eq!(r.status, 404, "DELETE an unknown certificate: {}", r.json);
    let listed = listed_certs(&api);
    rw.stop();

    // Restart: the API's certificates are back (from the state file).
    let mut rw = Ringway::start_at(&cfg_path, 2, &[]);
    assert_eq!(listed_certs(&rw.api()), listed, "the listing after a restart");
    assert_eq!(presented_serial(&rw, Some("api.test")), api_leaf.serial, "after a restart");
    assert_eq!(presented_serial(&rw, Some("x.wild.test")), wild.serial, "after a restart");
    rw.stop();
}

// ---------------------------------------------------------------------------
// 6. Swapping certificates under load
// ---------------------------------------------------------------------------

#[test]
fn certificate_swaps_under_load_fail_no_handshake() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(tls_config(vec![any_route(&b)], vec![cert_file(&default, true)]), None));
    let api = rw.api();
    let first = ca.issue(&["api.test"]);
    let swaps: Vec<Issued> = (0..20).map(|_| ca.issue(&["api.test"])).collect();
    post_cert(&api, "api.test", &first).expect(201, "POST the first certificate");

    // Full handshakes, each verifying api.test against the test CA, until
    // told to stop (at most 400 or 8 s).
    let port = tls_port(&rw);
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let (d, n, ca_path) = (done.clone(), count.clone(), ca.ca_path().to_str().unwrap().to_string());
    let known: Vec<String> = std::iter::once(&first).chain(&swaps).map(|c| c.cert_pem.trim().to_string()).collect();
    let client = thread::spawn(move || {
        let t0 = Instant::now();
        let mut failures = Vec::new();
        while !d.load(Ordering::SeqCst) && n.load(Ordering::SeqCst) < 400 && t0.elapsed() < Duration::from_secs(8) {
            let args = ["-CAfile", &ca_path, "-verify_hostname", "api.test", "-verify_return_error"];
            let s = s_client(port, Some("api.test"), &args, b"");
            let leaf = s.leaf_pem().map(|p| p.trim().to_string());
            if !s.handshake_ok() || s.verify_code != Some(0) || !leaf.as_ref().is_some_and(|l| known.contains(l)) {
                failures.push(format!(
                    "handshake {}: {:?} verify {:?}\n{}",
                    n.load(Ordering::SeqCst),
                    s.protocol,
                    s.verify_code,
                    s.stderr
                ));
            }
            n.fetch_add(1, Ordering::SeqCst);
        }
        failures
    });
    // One POST per couple of handshakes.
    for (i, c) in swaps.iter().enumerate() {
        post_cert(&api, "api.test", c).expect(201, &format!("POST certificate {i}"));
        let at = count.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(2);
        while count.load(Ordering::SeqCst) < at + 2 && Instant::now() < until && !client.is_finished() {
            thread::sleep(Duration::from_millis(5));
        }
    }
    done.store(true, Ordering::SeqCst);
    let failures = client.join().expect("the handshake loop panicked");
    let handshakes = count.load(Ordering::SeqCst);
    assert!(failures.is_empty(), "{} of {handshakes} handshakes failed:\n{}", failures.len(), failures.join("\n"));
    assert!(handshakes >= 20, "only {handshakes} handshakes ran during the swaps");
    assert_eq!(presented_serial(&rw, Some("api.test")), swaps.last().unwrap().serial, "after the last swap");
}

// ---------------------------------------------------------------------------
// 7. Expiry in /metrics and /health
// ---------------------------------------------------------------------------

#[test]
fn metrics_export_every_certificate_expiry() {
    let ca = TestCa::new();
    let cert_a = ca.issue(&["a.test", "*.w.test"]);
    let api_leaf = ca.issue(&["api.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(tls_config(vec![any_route(&b)], vec![cert_file(&cert_a, true)]), None));
    post_cert(&rw.api(), "api.test", &api_leaf).expect(201, "POST api.test");

    let text = admin_text(&rw, "/metrics");
    let value = |domain: &str| -> i64 {
        let prefix = format!("ringway_certificate_not_after_seconds{{domain=\"{domain}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
        line[prefix.len()..].trim().parse().unwrap_or_else(|_| panic!("not a number: {line}"))
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for domain in ["a.test", "api.test"] {
        let v = value(domain);
        assert!((v - (now + 30 * 86_400)).abs() < 3_600, "{domain}: {v}, now {now}");
    }
    assert!(text.contains("# TYPE ringway_certificate_not_after_seconds gauge"), "{text}");
}

#[test]
fn health_warns_of_certificates_expiring_within_14_days() {
    let ca = TestCa::new();
    let long = ca.issue(&["long.test"]);
    let short = ca.issue_with_validity(&["short.test"], 0, 5);
    let b = Backend::respond(200, "ok").start();

    let rw = Ringway::start(with_admin(tls_config(vec![any_route(&b)], vec![cert_file(&long, true)]), None));
    let api = rw.api();
    let h = api.get("/health").json;
    assert!(h.get("warnings").is_none(), "warnings with only a 30-day certificate: {h}");

    // One from the API expiring in 5 days.
    post_cert(&api, "soon.test", &ca.issue_with_validity(&["soon.test"], 0, 5)).expect(201, "POST soon.test");
    let h = api.get("/health").json;
    let warnings = h["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {h}"));
    assert_eq!(warnings.len(), 1, "{h}");
    assert_eq!(warnings[0]["certificate"], "soon.test", "{h}");
    assert!(h.to_string().contains("soon.test"), "{h}");
    api.delete("/api/v1/certificates/soon.test").expect(204, "DELETE soon.test");
    let h = api.get("/health").json;
    assert!(h.get("warnings").is_none(), "warnings after the DELETE: {h}");
    drop(rw);

    // One from the config file.
    let rw = Ringway::start(with_admin(
        tls_config(vec![any_route(&b)], vec![cert_file(&long, true), cert_pem(&short, false)]),
        None,
    ));
    let h = rw.api().get("/health").json;
    let warnings = h["warnings"].as_array().unwrap_or_else(|| panic!("no warnings: {h}"));
    assert_eq!(warnings.len(), 1, "{h}");
    assert_eq!(warnings[0]["certificate"], "short.test", "{h}");
}

/// A route's own certificate is served like the others, so its expiry is
/// exported and warned of like theirs (the metric's help text: "When a
/// served certificate expires").
#[test]
fn route_ssl_certificates_count_in_metrics_and_health() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let own = ca.issue_with_validity(&["own.test"], 0, 5);
    let b = Backend::respond(200, "ok").start();
    let mut r = route("own.test", "ROUND_ROBIN", vec![b.config()]);
    r["ssl"] = json!({"cert": own.cert_pem, "key": own.key_pem});
    let rw = Ringway::start(with_admin(tls_config(vec![r], vec![cert_file(&default, true)]), None));
    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial, "the route's certificate is served");

    let text = admin_text(&rw, "/metrics");
    assert!(
        text.contains("ringway_certificate_not_after_seconds{domain=\"own.test\"}"),
        "no expiry for the route's certificate in /metrics:\n{}",
        text.lines().filter(|l| l.contains("certificate")).collect::<Vec<_>>().join("\n")
    );
    let h = rw.api().get("/health").json;
    assert!(
        h["warnings"].as_array().is_some_and(|w| w.iter().any(|w| w["certificate"] == "own.test")),
        "no warning for the route's certificate, which expires in 5 days: {h}"
    );
}

// ---------------------------------------------------------------------------
// 8. autoHttps
// ---------------------------------------------------------------------------

#[test]
fn auto_https_redirects_plain_requests_to_the_tls_port() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["secure.test"]);
    let b = Backend::respond(200, "secure").start();
    let mut r = route("secure.test", "ROUND_ROBIN", vec![b.config()]);
    r["autoHttps"] = json!(true);
    let rw = Ringway::start(tls_config(vec![r], vec![cert_file(&leaf, true)]));
    let port = tls_port(&rw);

    let mut c = Client::connect(rw.addr());
    let resp = c.get("secure.test", "/p/a?x=1%20");
    assert_eq!(resp.status, 308, "{}{}", resp.head, resp.text());
    assert_eq!(
        resp.header("location"),
        Some(format!("https://secure.test:{port}/p/a?x=1%20").as_str()),
        "{}",
        resp.head
    );
    // The client's port is not the TLS port.
    let resp = c.get("secure.test:8080", "/");
    assert_eq!(resp.status, 308, "{}", resp.head);
    assert_eq!(resp.header("location"), Some(format!("https://secure.test:{port}/").as_str()), "{}", resp.head);
    // Absolute-form: the authority and path come from the request line.
    c.send(b"GET http://secure.test/abs?q=1 HTTP/1.1\r\nHost: ignored.test\r\n\r\n");
    let resp = c.response();
    assert_eq!(resp.status, 308, "{}", resp.head);
    assert_eq!(resp.header("location"), Some(format!("https://secure.test:{port}/abs?q=1").as_str()), "{}", resp.head);
    // HEAD: no body; a POST's body is consumed, and the connection still
    // frames the next request correctly.
    c.send(b"HEAD /h HTTP/1.1\r\nHost: secure.test\r\n\r\n");
    let resp = c.head_response();
    assert_eq!(resp.status, 308, "{}", resp.head);
    assert_eq!(resp.header("location"), Some(format!("https://secure.test:{port}/h").as_str()), "{}", resp.head);
    c.send(b"POST /form HTTP/1.1\r\nHost: secure.test\r\nContent-Length: 5\r\n\r\nhello");
    let resp = c.response();
    assert_eq!(resp.status, 308, "{}", resp.head);
    assert_eq!(resp.header("location"), Some(format!("https://secure.test:{port}/form").as_str()), "{}", resp.head);
    let resp = c.get("secure.test", "/after-post");
    assert_eq!(resp.status, 308, "the request after a redirected POST:\n{}{}", resp.head, resp.text());
    assert_eq!(resp.header("location"), Some(format!("https://secure.test:{port}/after-post").as_str()));
    assert_eq!(b.request_count(), 0, "the backend saw a plain request");

    let r = curl_https(port, "secure.test", "/p/a?x=1%20", ca.ca_path());
    assert_eq!((r.exit_code, r.status, r.text().as_str()), (0, 200, "secure"), "over TLS: {}", r.stderr);
    assert_eq!(b.requests()[0].target, "/p/a?x=1%20");
}

#[test]
fn auto_https_without_a_covering_certificate_is_refused() {
    let ca = TestCa::new();
    let other = ca.issue(&["other.test"]);
    let b = Backend::respond(200, "ok").start();

    // In the config file: ringway does not start.
    let mut r = route("secure.test", "ROUND_ROBIN", vec![b.config()]);
    r["autoHttps"] = json!(true);
    let path = write_config(&tls_config(vec![r], vec![cert_file(&other, true)]));
    let started = Ringway::try_start_at(&path, 1, "warn", &[]);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(state_file_of(&path));
    match started {
        Ok(_) => panic!("ringway started with autoHttps on a vHost no certificate serves"),
        Err(f) => {
            assert!(f.status.is_some_and(|s| !s.success()), "{:?}", f.status);
            assert!(f.stderr.contains("routes[0].autoHttps"), "the error does not name the field:\n{}", f.stderr);
        }
    }

    // Through the API: 400 naming autoHttps; a covered vHost is fine.
    let rw = Ringway::start(with_admin(tls_config(vec![], vec![cert_file(&other, true)]), None));
    let api = rw.api();
    let body = json!({"vHost": "secure.test", "strategy": "ROUND_ROBIN", "autoHttps": true, "backends": [b.config()]});
    let r = api.post("/api/v1/routes", &body).expect(400, "autoHttps for an uncovered vHost");
    assert_eq!(r.field(), Some("autoHttps"), "{}", r.json);
    assert!(api.routes().is_empty());
    let body = json!({"vHost": "other.test", "strategy": "ROUND_ROBIN", "autoHttps": true, "backends": [b.config()]});
    api.post("/api/v1/routes", &body).expect(201, "autoHttps for a covered vHost");
    let resp = get(rw.addr(), "other.test", "/");
    assert_eq!(resp.status, 308, "{}", resp.head);
}

#[test]
fn the_last_certificate_of_an_auto_https_route_cannot_be_deleted() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let api_cert = ca.issue(&["secure.test"]);
    let b = Backend::respond(200, "ok").start();
    let rw = Ringway::start(with_admin(tls_config(vec![], vec![cert_file(&default, true)]), None));
    let api = rw.api();
    post_cert(&api, "secure.test", &api_cert).expect(201, "POST the certificate");
    let body = json!({"vHost": "secure.test", "strategy": "ROUND_ROBIN", "autoHttps": true, "backends": [b.config()]});
    api.post("/api/v1/routes", &body).expect(201, "autoHttps route");

    let r = api.delete("/api/v1/certificates/secure.test").expect(409, "DELETE its only certificate");
    assert_eq!(r.field(), Some("domain"), "{}", r.json);
    assert_eq!(presented_serial(&rw, Some("secure.test")), api_cert.serial, "still served");
    assert_eq!(get(rw.addr(), "secure.test", "/").status, 308, "still redirecting");

    api.delete("/api/v1/routes/secure.test").expect(204, "DELETE the route");
    api.delete("/api/v1/certificates/secure.test").expect(204, "then the certificate");
}

// ---------------------------------------------------------------------------
// 9. A route's own certificate
// ---------------------------------------------------------------------------

#[test]
fn route_ssl_serves_its_own_certificate_and_hides_the_key() {
    let ca = TestCa::new();
    // The config file's default also names own.test: the route's own wins.
    let default = ca.issue(&["default.test", "own.test"]);
    let own = ca.issue(&["own.test"]);
    let b = Backend::respond(200, "own").start();
    let mut r = route("own.test", "ROUND_ROBIN", vec![b.config()]);
    r["ssl"] = json!({"cert": own.cert_pem, "key": own.key_pem});
    let rw = Ringway::start(with_admin(tls_config(vec![r], vec![cert_file(&default, true)]), None));

    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial);
    assert_eq!(presented_serial(&rw, Some("else.test")), default.serial);
    let resp = curl_https(tls_port(&rw), "own.test", "/", ca.ca_path());
    assert_eq!((resp.exit_code, resp.status, resp.text().as_str()), (0, 200, "own"), "{}", resp.stderr);

    let api = rw.api();
    let routes = api.get("/api/v1/routes").expect(200, "GET /api/v1/routes");
    assert!(!routes.response.text().contains("PRIVATE KEY"), "a key in the routes: {}", routes.response.text());
    let ssl = &routes.json[0]["ssl"];
    assert_eq!(ssl["key"], "<redacted>", "{}", routes.json);
    assert_eq!(ssl["cert"].as_str().map(str::trim), Some(own.cert_pem.trim()), "{}", routes.json);
    let one = api.get("/api/v1/routes/own.test").expect(200, "GET /api/v1/routes/own.test");
    assert_eq!(one.json["ssl"]["key"], "<redacted>", "{}", one.json);
    let (_, cfg) = api.config();
    assert!(!cfg.to_string().contains("PRIVATE KEY"), "a key in GET /api/v1/config: {cfg}");
}

#[test]
fn route_ssl_through_the_api_round_trips_and_yields_to_api_certificates() {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let own = ca.issue(&["own.test"]);
    let b = Backend::respond(200, "own").start();
    let rw = Ringway::start(with_admin(tls_config(vec![], vec![cert_file(&default, true)]), None));
    let api = rw.api();

    let body =
        json!({"vHost": "own.test", "backends": [b.config()], "ssl": {"cert": own.cert_pem, "key": own.key_pem}});
    let r = api.post("/api/v1/routes", &body).expect(201, "POST a route with ssl");
    assert_eq!(r.json["ssl"]["key"], "<redacted>", "{}", r.json);
    assert!(!r.response.text().contains("PRIVATE KEY"), "{}", r.response.text());
    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial, "right after the POST");

    // What GET shows can be PUT back unchanged: the stored key stays.
    let shown = api.get("/api/v1/routes/own.test").expect(200, "GET the route").json;
    api.put("/api/v1/routes/own.test", &shown).expect(200, "PUT back what GET showed");
    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial, "after the round trip");
    let resp = curl_https(tls_port(&rw), "own.test", "/", ca.ca_path());
    assert_eq!((resp.exit_code, resp.status), (0, 200), "{}", resp.stderr);

    // A bad ssl is refused naming the field, and changes nothing.
    let other = ca.issue(&["own.test"]);
    let mut bad = shown.clone();
    bad["ssl"] = json!({"cert": own.cert_pem, "key": other.key_pem});
    let r = api.put("/api/v1/routes/own.test", &bad).expect(400, "PUT ssl with a key that does not match");
    assert_eq!(r.field(), Some("ssl.key"), "{}", r.json);
    let expired = ca.issue_with_validity(&["own.test"], -10, 5);
    bad["ssl"] = json!({"cert": expired.cert_pem, "key": expired.key_pem});
    let r = api.put("/api/v1/routes/own.test", &bad).expect(400, "PUT ssl with an expired certificate");
    assert_eq!(r.field(), Some("ssl.cert"), "{}", r.json);
    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial, "after the refused PUTs");

    // An API certificate beats the route's; without it the route's is back.
    post_cert(&api, "own.test", &other).expect(201, "POST a certificate for own.test");
    assert_eq!(presented_serial(&rw, Some("own.test")), other.serial, "the API certificate beats the route's");
    api.delete("/api/v1/certificates/own.test").expect(204, "DELETE it");
    assert_eq!(presented_serial(&rw, Some("own.test")), own.serial, "the route's again");

    // Deleting the route takes its certificate away.
    api.delete("/api/v1/routes/own.test").expect(204, "DELETE the route");
    assert_eq!(presented_serial(&rw, Some("own.test")), default.serial, "after the route is gone");
}

// ---------------------------------------------------------------------------
// 10. WebSocket over TLS
// ---------------------------------------------------------------------------

/// A WebSocket backend behind a TLS route, and a TLS client upgraded to it
/// on `path` (the 101 head already read and checked).
fn upgraded_over_tls(path: &str) -> (TestCa, BackendHandle, Ringway, TlsPipe, String) {
    let ca = TestCa::new();
    let leaf = ca.issue(&["ws.test"]);
    let b = Backend::websocket().start();
    let rw = Ringway::start(tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]));
    let mut ws = TlsPipe::open(tls_port(&rw), "ws.test");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    ws.send(req.as_bytes());
    let head = String::from_utf8_lossy(&ws.take_through(b"\r\n\r\n", Duration::from_secs(5))).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (ca, b, rw, ws, head)
}

#[test]
fn websocket_upgrade_over_tls_tunnels_frames() {
    let (_ca, b, _rw, mut ws, head) = upgraded_over_tls("/chat");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    // A masked text frame "Hello" (RFC 6455 §5.7); the backend echoes bytes.
    let hello = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    for frame in [&hello[..], b"\x82\x83\x00\x00\x00\x00\x00\xff\x10"] {
        ws.send(frame);
        assert_eq!(ws.take(frame.len(), Duration::from_secs(5)), frame);
    }
    let seen = b.requests();
    assert_eq!(seen[0].header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(seen[0].all("x-forwarded-proto"), ["https"], "{}", seen[0].head);
}

#[test]
fn websocket_over_tls_carries_megabytes_both_ways_at_once() {
    let (_ca, _b, _rw, mut ws, _head) = upgraded_over_tls("/bulk");
    // The backend echoes while it reads, so both directions are full at
    // once; s_client's output is drained by its own thread.
    let len = 4 << 20;
    let data = pattern(len);
    let writer = ws.send_in_background(data);
    let echoed = ws.take(len, Duration::from_secs(10));
    assert!(writer.join().unwrap().is_ok(), "writing to s_client failed");
    assert_eq!(echoed.len(), len);
    assert_eq!(hash(&echoed), hash(&pattern(len)), "the echoed bytes differ");
}

// ---------------------------------------------------------------------------
// 11. hostHeader
// ---------------------------------------------------------------------------

#[test]
fn host_header_client_backend_or_literal() {
    let b = Backend::respond(200, "ok").start();
    let mut by_backend = route("backend.test", "ROUND_ROBIN", vec![b.config()]);
    by_backend["hostHeader"] = json!("backend");
    let mut literal = route("literal.test", "ROUND_ROBIN", vec![b.config()]);
    literal["hostHeader"] = json!("svc.internal");
    // A rule's backends need ids of their own within the route.
    let rule_backend = json!({"id": "rule", "hostname": "127.0.0.1", "port": b.port()});
    literal["paths"] = json!([{"prefix": "/api", "hostHeader": "api.internal:8443", "backends": [rule_backend]}]);
    let mut client = route("client.test", "ROUND_ROBIN", vec![b.config()]);
    client["paths"] = json!([{"prefix": "/be", "hostHeader": "backend", "backends": [rule_backend]}]);
    let rw = Ringway::start(config(vec![by_backend, literal, client]));

    let mut c = Client::connect(rw.addr());
    let send = |c: &mut Client, host: &str, path: &str, extra: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes());
        assert_eq!(c.response().status, 200, "Host {host} {path}");
        b.requests().pop().unwrap()
    };
    let backend_host = format!("127.0.0.1:{}", b.port());

    let r = send(&mut c, "backend.test", "/", "X-Forwarded-Host: evil.test\r\n");
    assert_eq!(r.all("host"), std::slice::from_ref(&backend_host), "{}", r.head);
    assert_eq!(r.all("x-forwarded-host"), ["backend.test"], "{}", r.head);

    let r = send(&mut c, "literal.test:8080", "/x", "");
    assert_eq!(r.all("host"), ["svc.internal"], "{}", r.head);
    assert_eq!(r.all("x-forwarded-host"), ["literal.test:8080"], "{}", r.head);

    let r = send(&mut c, "literal.test", "/api/y", "");
    assert_eq!(r.all("host"), ["api.internal:8443"], "paths[] hostHeader: {}", r.head);
    assert_eq!(r.all("x-forwarded-host"), ["literal.test"], "{}", r.head);

    let r = send(&mut c, "Client.Test:81", "/", "");
    assert_eq!(r.all("host"), ["Client.Test:81"], "{}", r.head);
    assert!(r.all("x-forwarded-host").is_empty(), "X-Forwarded-Host added by default: {}", r.head);

    let r = send(&mut c, "client.test", "/be/z", "");
    assert_eq!(r.all("host"), [backend_host], "paths[] hostHeader backend: {}", r.head);
    assert_eq!(r.all("x-forwarded-host"), ["client.test"], "{}", r.head);
}

// ---------------------------------------------------------------------------
// 12. TLS to backends
// ---------------------------------------------------------------------------

#[test]
fn tls_backends_are_verified_against_their_ca_file() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let listener_cert = ca.issue(&["good.test"]);
    let backend_cert = ca.issue(&["backend.test"]);
    let wrong_name = ca.issue(&["wrong.test"]);
    // SNI backend.test gets backend.test's certificate, else wrong.test's.
    let tb = TlsBackend::start(&wrong_name, "backend.test", &backend_cert);
    let tls_backend = |extra: Value| {
        let mut b = json!({"hostname": "127.0.0.1", "port": tb.port, "tls": true});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let ca_file = ca.ca_path().to_str().unwrap();
    let routes = vec![
        route("good.test", "ROUND_ROBIN", vec![tls_backend(json!({"sni": "backend.test", "caFile": ca_file}))]),
        route(
            "stranger.test",
            "ROUND_ROBIN",
            vec![tls_backend(json!({"sni": "backend.test", "caFile": stranger.ca_path().to_str().unwrap()}))],
        ),
        route("nosni.test", "ROUND_ROBIN", vec![tls_backend(json!({"caFile": ca_file}))]),
        route("skip.test", "ROUND_ROBIN", vec![tls_backend(json!({"insecureSkipVerify": true}))]),
    ];
    let rw = Ringway::start(tls_config(routes, vec![cert_file(&listener_cert, true)]));

    let r = get(rw.addr(), "good.test", "/");
    assert_eq!(r.status, 200, "caFile + sni:\n{}{}", r.head, r.text());
    assert!(r.text().contains("s_server"), "not s_server's page: {}", r.text());
    let r = curl_https(tls_port(&rw), "good.test", "/", ca.ca_path());
    assert_eq!((r.exit_code, r.status), (0, 200), "TLS on both sides: {}", r.stderr);

    let r = get(rw.addr(), "stranger.test", "/");
    assert_eq!(r.status, 502, "a backend certificate from an untrusted CA:\n{}{}", r.head, r.text());
    let r = get(rw.addr(), "nosni.test", "/");
    assert_eq!(r.status, 502, "a backend certificate for another name (no sni):\n{}{}", r.head, r.text());
    let r = get(rw.addr(), "skip.test", "/");
    assert_eq!(r.status, 200, "insecureSkipVerify:\n{}{}", r.head, r.text());
}

#[test]
fn active_health_checks_reach_tls_backends_with_their_tls_settings() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let listener_cert = ca.issue(&["good.test"]);
    let backend_cert = ca.issue(&["backend.test"]);
    let tb = TlsBackend::start(&backend_cert, "backend.test", &backend_cert);
    let probed = |vhost: &str, ca_path: &std::path::Path| {
        let b = json!({"id": "tb", "hostname": "127.0.0.1", "port": tb.port, "tls": true, "sni": "backend.test",
                       "caFile": ca_path.to_str().unwrap()});
        let mut r = route(vhost, "ROUND_ROBIN", vec![b]);
        r["health"] = json!({"intervalMs": 100, "timeoutMs": 1000, "rise": 1, "fall": 1});
        r
    };
    let routes = vec![probed("good.test", ca.ca_path()), probed("stranger.test", stranger.ca_path())];
    let rw = Ringway::start(with_admin(tls_config(routes, vec![cert_file(&listener_cert, true)]), None));
    let api = rw.api();
    // Probes over TLS: the backend verified with the right CA stays up; the
    // one verified with a stranger's CA fails its probes and goes down.
    let state = |vhost: &str| {
        let s = api.get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
        let e = s["backends"].as_array().and_then(|bs| bs.iter().find(|e| e["route"] == vhost).cloned());
        e.map(|e| e["state"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while state("stranger.test") != "down" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state("stranger.test"), "down", "probes with an untrusted CA must fail");
    assert_eq!(state("good.test"), "up", "probes with the right CA must pass");
    assert_eq!(get(rw.addr(), "good.test", "/").status, 200);
    assert_eq!(get(rw.addr(), "stranger.test", "/").status, 503, "no healthy backend");
}

#[test]
fn a_pooled_plain_connection_is_never_used_for_a_tls_backend() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["plain.test"]);
    // One plain HTTP backend, reached by two routes: one plain, one that
    // asks for TLS (whose handshake must fail against it).
    let b = Backend::respond(200, "plain").start();
    let as_tls =
        json!({"id": "as-tls", "hostname": "127.0.0.1", "port": b.port(), "tls": true, "insecureSkipVerify": true});
    let routes =
        vec![route("plain.test", "ROUND_ROBIN", vec![b.config()]), route("tls.test", "ROUND_ROBIN", vec![as_tls])];
    let rw = Ringway::start(tls_config(routes, vec![cert_file(&leaf, true)]));

    let mut c = Client::connect(rw.addr());
    assert_eq!(c.get("plain.test", "/pooled").status, 200);
    // The plain connection is idle in ringway's pool now.
    // The backend never answers the ClientHello: a failed or timed-out
    // handshake, never a plaintext request.
    let r = get(rw.addr(), "tls.test", "/must-not-arrive");
    assert!(matches!(r.status, 502 | 504), "a TLS backend answered over plain HTTP:\n{}{}", r.head, r.text());
    let targets: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/pooled"], "a request for the TLS backend went out in plaintext");
    assert_eq!(c.get("plain.test", "/again").status, 200);
}

// ---------------------------------------------------------------------------
// 13. ringway check
// ---------------------------------------------------------------------------

#[test]
fn check_names_a_missing_certificate_file() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::respond(200, "ok").start();
    let missing = ca.dir().join("no-such-cert.pem");
    let cfg = tls_config(
        vec![any_route(&b)],
        vec![json!({"cert": missing, "key": leaf.key_path, "default": true}), cert_file(&leaf, false)],
    );
    let (code, stderr) = ringway_check(&cfg);
    assert_ne!(code, 0, "check passed a missing certificate file:\n{stderr}");
    assert!(stderr.contains("tls.certificates[0].cert"), "the field is not named:\n{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "the path is not named:\n{stderr}");

    let good = tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    let (code, stderr) = ringway_check(&good);
    assert_eq!(code, 0, "check refused a good TLS config:\n{stderr}");
}

#[test]
fn check_names_the_field_of_every_tls_mistake() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let other = ca.issue(&["a.test"]);
    let expired = ca.issue_with_validity(&["a.test"], -10, 5);
    let b = Backend::respond(200, "ok").start();
    let good = || tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true)]);
    let missing_key = ca.dir().join("no-such-key.pem");

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut c = good();
    c["tls"]["certificates"][0]["key"] = json!(missing_key);
    cases.push(("a missing key file", c, "tls.certificates[0].key"));
    let mut c = good();
    c["tls"]["certificates"][0]["key"] = json!(other.key_pem);
    cases.push(("a key that does not match", c, "tls.certificates[0].key"));
    cases.push((
        "an expired certificate",
        tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true), cert_file(&expired, false)]),
        "tls.certificates[1].cert",
    ));
    let mut c = good();
    c["tls"]["minVersion"] = json!("1.1");
    cases.push(("minVersion 1.1", c, "tls.minVersion"));
    cases.push(("a TLS listener without certificates", tls_config(vec![any_route(&b)], vec![]), "tls.certificates"));
    cases.push((
        "two defaults",
        tls_config(vec![any_route(&b)], vec![cert_file(&leaf, true), cert_file(&other, true)]),
        "tls.certificates",
    ));
    let mut c = config(vec![any_route(&b)]);
    c["routes"][0]["autoHttps"] = json!(true);
    cases.push(("autoHttps without a TLS listener", c, "routes[0].autoHttps"));
    let mut c = good();
    c["routes"][0]["backends"][0]["sni"] = json!("x.test");
    cases.push(("sni without tls", c, "routes[0].backends[0].sni"));
    let mut c = good();
    c["routes"][0]["ssl"] = json!({"cert": leaf.cert_pem, "key": other.key_pem});
    cases.push(("a route ssl key that does not match", c, "routes[0].ssl.key"));
    let mut c = good();
    c["routes"][0]["hostHeader"] = json!("not a host");
    cases.push(("a bad hostHeader", c, "routes[0].hostHeader"));

    for (what, cfg, field) in cases {
        let (code, stderr) = ringway_check(&cfg);
        assert_ne!(code, 0, "check passed {what}:\n{stderr}");
        assert!(stderr.contains(field), "{what}: {field} is not named:\n{stderr}");
    }
}
