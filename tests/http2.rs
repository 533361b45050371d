//! HTTP/2 from clients, end to end with real clients: curl over TLS (ALPN
//! h2) and over h2c with prior knowledge, h2load with 100 streams on one
//! connection, nghttp, and the raw frame client of support/h2raw.rs where
//! exact frames matter. Each stream must reach the HTTP/1.1 backend as an
//! ordinary request (Host from :authority, no connection-specific fields,
//! cookie crumbs joined, bodies and trailers intact both ways), answers
//! without bodies must carry none, a backend failing mid-body must show as
//! a reset, and the connection's own timers (idle, handshake, drain) must
//! close it as configured.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// `cfg` with h2c (prior knowledge) on its plain listeners.
fn h2c(cfg: Value) -> Value {
    set(cfg, "http2", "h2c", json!(true))
}

/// A catch-all over `b`, with h2c.
fn h2c_catch_all(b: &BackendHandle) -> Value {
    h2c(catch_all("ROUND_ROBIN", &[b]))
}

/// `cfg[http2][key] = value` for several keys.
fn http2(mut cfg: Value, settings: &[(&str, Value)]) -> Value {
    for (k, v) in settings {
        cfg = set(cfg, "http2", k, v.clone());
    }
    cfg
}

/// Headers that must never reach a backend from an HTTP/2 client.
const CONNECTION_SPECIFIC: &[&str] = &["keep-alive", "proxy-connection", "upgrade", "expect", "http2-settings"];

/// Panics when `seen` carries a connection-specific field, a `te` other
/// than `trailers`, or any value containing one of `tokens` (values the
/// client sent in connection-specific fields).
fn assert_no_connection_fields(seen: &SeenRequest, tokens: &[&str]) {
    for (n, v) in &seen.headers {
        let lower = n.to_ascii_lowercase();
        assert!(!CONNECTION_SPECIFIC.contains(&lower.as_str()), "{n}: {v} reached the backend:\n{}", seen.head);
        if lower == "te" {
            assert!(v.eq_ignore_ascii_case("trailers"), "te: {v} reached the backend:\n{}", seen.head);
        }
        for t in tokens {
            assert!(!v.contains(t), "the client's {t:?} reached the backend in {n}: {v}:\n{}", seen.head);
        }
    }
}

/// A TLS listener on a free port serving `leaf` as the default certificate.
fn with_tls(mut cfg: Value, leaf: &Issued) -> Value {
    cfg["tls"] = json!({
        "listen": ["127.0.0.1:0"],
        "certificates": [{"cert": leaf.cert_path, "key": leaf.key_path, "default": true}],
    });
    cfg
}

/// A backend that answers every request with the raw bytes `answer` and
/// then closes the connection (so `answer` may end mid-body). Records each
/// request head.
struct Scripted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(answer: Vec<u8>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (stop2, heads2) = (stop.clone(), heads.clone());
        let answer = Arc::new(answer);
        let accept = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let (stop3, heads3, answer) = (stop2.clone(), heads2.clone(), answer.clone());
                        thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = Vec::new();
                            let mut tmp = [0u8; 16 * 1024];
                            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                                if stop3.load(Ordering::SeqCst) {
                                    return;
                                }
                                match s.read(&mut tmp) {
                                    Ok(0) => return,
                                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                                    Err(_) => return,
                                }
                            }
                            heads3.lock().unwrap().push(String::from_utf8_lossy(&buf).to_string());
                            let _ = s.write_all(&answer);
                            let _ = s.shutdown(Shutdown::Both);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Scripted { addr, stop, heads, accept: Some(accept) }
    }

    fn config(&self) -> Value {
        json!({"id": format!("scripted-{}", self.addr.port()), "hostname": "127.0.0.1", "port": self.addr.port()})
    }

    fn requests(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A ringway over one scripted backend, h2c on.
fn scripted_ringway(answer: &[u8]) -> (Scripted, Ringway) {
    let s = Scripted::start(answer.to_vec());
    let rw = Ringway::start(h2c(config(vec![route("*", "ROUND_ROBIN", vec![s.config()])])));
    (s, rw)
}

// ---------------------------------------------------------------------------
// Real clients: curl over TLS and h2c, HTTP/1.1 on the same port
// ---------------------------------------------------------------------------

#[test]
fn curl_gets_200_over_tls_and_h2c_and_the_backend_sees_host_and_no_connection_fields() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["a.test"]);
    let b = Backend::echo().start();
    let rw = Ringway::start(with_tls(h2c_catch_all(&b), &leaf));
    let tls_port = rw.tls_addr().expect("no TLS listener").port();
    // Connection-specific fields a client might try: HTTP/2 forbids them,
    // so they must not come out the other side in any form.
    let sneaky = [
        "-H",
        "Connection: x-conn-token",
        "-H",
        "Keep-Alive: x-ka-token",
        "-H",
        "Proxy-Connection: x-pc-token",
        "-H",
        "Upgrade: x-up-token",
        "-H",
        "TE: x-te-token",
        "-H",
        "x-ordinary: kept",
    ];
    let tokens = ["x-conn-token", "x-ka-token", "x-pc-token", "x-up-token", "x-te-token"];

    let mut extra = vec!["--http2"];
    extra.extend_from_slice(&sneaky);
    let r = curl_https_with(tls_port, "a.test", "/over/tls?q=1", ca.ca_path(), &extra);
    assert_eq!((r.exit_code, r.status, r.http_version.as_str()), (0, 200, "2"), "curl --http2 over TLS: {}", r.stderr);
    let seen = b.requests();
    assert_eq!(seen.len(), 1, "one request reached the backend");
    let s = &seen[0];
    assert_eq!(s.target, "/over/tls?q=1", "{}", s.head);
    assert_eq!(s.header("host").as_deref(), Some(format!("a.test:{tls_port}").as_str()), "{}", s.head);
    assert_eq!(s.header("x-ordinary").as_deref(), Some("kept"), "{}", s.head);
    assert_no_connection_fields(s, &tokens);

    let mut extra = Vec::new();
    extra.extend_from_slice(&sneaky);
    let port = rw.addr().port();
    let r = curl_h2c(port, "h2c.test", "/over/h2c", &extra);
    assert_eq!((r.exit_code, r.status, r.http_version.as_str()), (0, 200, "2"), "curl h2c: {}", r.stderr);
    assert!(r.text().contains("target /over/h2c"), "{}", r.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    let s = &seen[1];
    assert_eq!(s.header("host").as_deref(), Some(format!("h2c.test:{port}").as_str()), "{}", s.head);
    assert_no_connection_fields(s, &tokens);
    eprintln!("backend saw over h2c:\n{}", s.head);

    // HTTP/1.1 on the same (h2c) port still works, keep-alive included.
    let mut c = Client::connect(rw.addr());
    for i in 0..3 {
        let r = c.get("h1.test", &format!("/h1/{i}"));
        assert_eq!(r.status, 200, "HTTP/1.1 request {i} on the h2c port:\n{}", r.head);
        assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
        assert!(r.text().contains(&format!("target /h1/{i}")), "{}", r.text());
    }
    // And plain curl (HTTP/1.1 by default) too.
    let out = run_tool(
        std::process::Command::new("curl").args([
            "-q",
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            &format!("http://127.0.0.1:{port}/plain"),
        ]),
        b"",
        TOOL_TIMEOUT,
    );
    assert_eq!(out.stdout_text(), "200 1.1", "curl HTTP/1.1 on the h2c port: {}", out.stderr);
    assert_eq!(b.request_count(), 6);
}

#[test]
fn raw_client_fields_are_translated_for_the_backend() {
    let b = Backend::echo().start();
    let rw = Ringway::start(h2c_catch_all(&b));
    let mut c = H2Client::handshake(rw.addr(), &[]);
    // Cookie crumbs, Expect, TE: trailers, an ordinary field.
    let id = c.request(
        "GET",
        "/fields",
        "crumbs.test",
        &[
            ("cookie", "a=1"),
            ("x-one", "1"),
            ("cookie", "b=2"),
            ("cookie", "c=3"),
            ("expect", "100-continue"),
            ("te", "trailers"),
        ],
        true,
    );
    let r = c.response(id, IO_TIMEOUT);
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.ended, "{}", r.summary());
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    eprintln!("backend saw:\n{}", s.head);
    assert_eq!(s.all("cookie"), vec!["a=1; b=2; c=3".to_string()], "cookie crumbs joined into one field:\n{}", s.head);
    assert_eq!(s.header("host").as_deref(), Some("crumbs.test"), "{}", s.head);
    assert_eq!(s.header("x-one").as_deref(), Some("1"), "{}", s.head);
    assert_no_connection_fields(s, &["100-continue"]);

    // A request carrying a connection-specific field is malformed in
    // HTTP/2: the stream is reset and nothing reaches the backend; the
    // connection goes on serving.
    for (name, value) in [("connection", "keep-alive"), ("transfer-encoding", "chunked"), ("te", "gzip")] {
        let id = c.request("GET", "/bad", "crumbs.test", &[(name, value)], true);
        let r = c.response(id, IO_TIMEOUT);
        assert!(r.reset.is_some() || r.status >= 400, "{name}: {value}: {}", r.summary());
        assert!(r.status < 200 || r.status >= 400, "{name}: {value} answered {}", r.summary());
    }
    let id = c.get("/after", "crumbs.test");
    let r = c.response(id, IO_TIMEOUT);
    assert_eq!(r.status, 200, "the connection still serves: {}", r.summary());
    assert_eq!(b.request_count(), 2, "no malformed request reached the backend");
}

// ---------------------------------------------------------------------------
// Many streams on one connection
// ---------------------------------------------------------------------------

#[test]
fn h2load_100_streams_at_once_on_one_connection_all_succeed() {
    let b = Backend::respond(200, "many").delayed(Duration::from_millis(300)).start();
    let rw = Ringway::start(h2c_catch_all(&b));
    let url = format!("http://127.0.0.1:{}/many", rw.addr().port());
    let t = Instant::now();
    let (out, s) = h2load(&["-c1", "-m100", "-n100", &url], Duration::from_secs(60));
    eprintln!("h2load -c1 -m100 -n100: {s:?} in {:?}; backend max in flight {}", t.elapsed(), b.max_in_flight());
    assert!(out.success(), "h2load failed ({:?}):\n{}\n{}", out.exit_code, out.stdout_text(), out.stderr);
    assert_eq!((s.done, s.succeeded, s.s2xx), (100, 100, 100), "{}", out.stdout_text());
    assert_eq!(b.proxied_count(), 100);
    // The streams really ran at once (each backend answer takes 300 ms).
    assert!(b.max_in_flight() >= 20, "only {} requests at the backend at once", b.max_in_flight());
}

#[test]
fn a_small_max_concurrent_streams_still_answers_every_stream() {
    // A client may send requests before the server's SETTINGS reach it
    // (RFC 9113 3.4), so it can exceed a limit it has not seen yet: those
    // streams must be refused with REFUSED_STREAM (safe to retry: they never
    // reached a backend), and a client that retries gets every answer.
    const N: usize = 100;
    let b = Backend::respond(200, "few").delayed(Duration::from_millis(30)).start();
    let rw = Ringway::start(http2(h2c_catch_all(&b), &[("maxConcurrentStreams", json!(4))]));

    // Raw client: 100 HEADERS in the first write, before reading anything.
    let mut c = H2Client::start(rw.addr(), &[]);
    let mut burst = Vec::new();
    let mut ids = Vec::new();
    for i in 0..N {
        let id = c.next_stream_id();
        push_frame(
            &mut burst,
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &request_block("GET", &format!("/{i}"), "mcs.test", &[]),
        );
        ids.push(id);
    }
    c.send_raw(&burst);
    let first = c.responses(&ids, Duration::from_secs(30));
    let ok: Vec<u32> = ids.iter().copied().filter(|id| first[id].status == 200 && first[id].ended).collect();
    let refused: Vec<u32> = ids.iter().copied().filter(|id| first[id].reset == Some(REFUSED_STREAM)).collect();
    let other: Vec<String> = ids
        .iter()
        .filter(|id| !ok.contains(id) && !refused.contains(id))
        .map(|id| format!("stream {id}: {}", first[id].summary()))
        .collect();
    eprintln!("100 streams at once against maxConcurrentStreams 4: {} answered, {} refused", ok.len(), refused.len());
    assert!(other.is_empty(), "streams neither answered nor refused (retryably): {other:#?}");
    assert!(ok.len() >= 4, "only {} streams answered", ok.len());
    assert_eq!(b.proxied_count(), ok.len(), "a refused stream reached the backend");
    assert!(c.got_settings, "no SETTINGS from the server");
    // Retry the refused ones, at most 4 open at once (now that the client
    // knows the limit), on the same connection.
    let mut answered = ok.len();
    for batch in refused.chunks(4) {
        let retry: Vec<u32> = batch.iter().map(|_| c.get("/retry", "mcs.test")).collect();
        let rs = c.responses(&retry, Duration::from_secs(10));
        for id in &retry {
            assert_eq!(rs[id].status, 200, "retried stream {id}: {}", rs[id].summary());
            answered += 1;
        }
    }
    assert_eq!(answered, N);
    assert_eq!(b.proxied_count(), N, "every request reached the backend exactly once");
    assert!(
        b.max_in_flight() <= 4,
        "{} requests at the backend at once with maxConcurrentStreams 4",
        b.max_in_flight()
    );

    // h2load -m100 does the same but does not retry refused streams: each
    // of its 100 is either a 2xx or a refused stream that never reached the
    // backend, and the limit holds.
    let before = b.proxied_count();
    let url = format!("http://127.0.0.1:{}/few", rw.addr().port());
    let (out, s) = h2load(&["-c1", "-m100", "-n100", &url], Duration::from_secs(60));
    eprintln!("h2load -m100 against maxConcurrentStreams 4: {s:?}; backend max in flight {}", b.max_in_flight());
    assert_eq!(s.done, 100, "{}\n{}", out.stdout_text(), out.stderr);
    assert_eq!(s.succeeded + s.errored, 100, "{}", out.stdout_text());
    assert!(s.succeeded >= 4 && s.s2xx == s.succeeded, "{}", out.stdout_text());
    assert_eq!(b.proxied_count() - before, s.succeeded as usize, "only the answered streams reached the backend");
    assert!(
        b.max_in_flight() <= 4,
        "{} requests at the backend at once with maxConcurrentStreams 4",
        b.max_in_flight()
    );
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

#[test]
fn five_mib_uploads_arrive_intact_with_and_without_content_length() {
    const LEN: usize = 5 << 20;
    let data = pattern(LEN);
    let want = hash(&data);
    let b = Backend::echo().start();
    let rw = Ringway::start(h2c_catch_all(&b));

    // curl: a Content-Length upload.
    let dir = TempDir::new("upload");
    let file = dir.join("body.bin");
    std::fs::write(&file, &data).unwrap();
    let at = format!("@{}", file.display());
    let r = curl_h2c(rw.addr().port(), "up.test", "/sized", &["--data-binary", &at, "-H", "content-type: x/y"]);
    assert_eq!((r.exit_code, r.status, r.http_version.as_str()), (0, 200, "2"), "curl upload: {}", r.stderr);
    assert!(r.text().contains(&format!("body-len {LEN}\n")), "{}", r.text());
    let seen = b.requests();
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.header("content-length").as_deref(), Some(LEN.to_string().as_str()), "{}", s.head);
    assert_eq!(s.header("transfer-encoding"), None, "{}", s.head);
    assert_eq!((s.body.len(), hash(&s.body)), (LEN, want.clone()), "the sized upload as the backend saw it");

    // Raw client: no Content-Length (the backend gets it chunked), with
    // trailers, sent under the server's flow control.
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let id = c.request("POST", "/chunked", "up.test", &[("x-kind", "raw")], false);
    c.send_body(id, &data, false, Duration::from_secs(30));
    c.send_trailers(id, &[("x-upload-hash", &want), ("x-upload-len", &LEN.to_string())]);
    let r = c.response(id, Duration::from_secs(30));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.text().contains(&format!("body-len {LEN}\n")), "{}", r.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    let s = &seen[1];
    assert_eq!(s.header("transfer-encoding").as_deref(), Some("chunked"), "{}", s.head);
    assert_eq!(s.header("content-length"), None, "{}", s.head);
    assert_eq!((s.body.len(), hash(&s.body)), (LEN, want.clone()), "the chunked upload as the backend saw it");
    assert_eq!(
        s.trailers,
        vec![("x-upload-hash".to_string(), want.clone()), ("x-upload-len".to_string(), LEN.to_string())],
        "request trailers reach the backend"
    );
}

#[test]
fn a_64_mib_download_read_slowly_arrives_intact_and_ringway_stays_small() {
    const LEN: usize = 64 << 20;
    // Bytes per second the client reads at, at most.
    const RATE: f64 = 48.0 * 1024.0 * 1024.0;
    let b = Backend::large(LEN).start();
    let rw = Ringway::start(h2c_catch_all(&b));
    let pid = rw.pid();
    let expected = pattern(LEN);
    // Warm up (buffers, pools), then the baseline.
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let r = get(rw.addr(), "big.test", "/warm-up-h1");
    assert_eq!(r.status, 200);
    let baseline = rss_kb(pid);

    let id = c.get("/big", "big.test");
    let t = Instant::now();
    let mut got = 0usize;
    let mut mismatches = 0usize;
    let mut peak = baseline;
    let mut next_sample = 0usize;
    let mut paused = false;
    let r = c.response_with(id, Duration::from_secs(120), |d| {
        if expected.get(got..got + d.len()) != Some(d) {
            mismatches += 1;
        }
        got += d.len();
        if got >= next_sample {
            peak = peak.max(rss_kb(pid));
            next_sample = got + (1 << 20);
        }
        // A reader slower than the backend: a cap on the rate, and one
        // long pause halfway (the backend keeps writing meanwhile).
        if !paused && got >= LEN / 2 {
            paused = true;
            thread::sleep(Duration::from_millis(1500));
            peak = peak.max(rss_kb(pid));
        }
        let due = Duration::from_secs_f64(got as f64 / RATE);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            thread::sleep(wait);
        }
    });
    let took = t.elapsed();
    let after = rss_kb(pid);
    eprintln!(
        "64 MiB over one stream in {took:?} ({:.1} MiB/s), {} DATA frames; ringway RSS baseline {} KiB, peak {} KiB \
         (+{} KiB), after {} KiB",
        got as f64 / took.as_secs_f64() / 1048576.0,
        r.data_frames,
        baseline,
        peak,
        peak.saturating_sub(baseline),
        after
    );
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(r.ended && r.reset.is_none(), "{}", r.summary());
    assert_eq!(got, LEN, "{}", r.summary());
    assert_eq!(mismatches, 0, "{mismatches} DATA frames differ from what the backend sent");
    // Half the body buffered would show as 32 MiB: the flow-controlled
    // path holds a window's worth, a few MiB at most.
    assert!(
        peak.saturating_sub(baseline) < 24 * 1024,
        "ringway's RSS grew by {} KiB during a slowly read 64 MiB download",
        peak.saturating_sub(baseline)
    );
}

#[test]
fn head_204_and_304_answers_carry_no_body() {
    let ok = Backend::respond(200, "hello").start();
    let no_content = Backend::respond(204, "").start();
    let not_modified = Backend::respond(304, "not-sent").start();
    let rw = Ringway::start(h2c(config(vec![
        route("head.test", "ROUND_ROBIN", vec![ok.config()]),
        route("nc.test", "ROUND_ROBIN", vec![no_content.config()]),
        route("nm.test", "ROUND_ROBIN", vec![not_modified.config()]),
    ])));
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let cases = [("HEAD", "head.test", 200), ("GET", "nc.test", 204), ("GET", "nm.test", 304)];
    for (method, host, status) in cases {
        let id = c.request(method, "/", host, &[], true);
        let r = c.response(id, IO_TIMEOUT);
        eprintln!("{method} {host}: {}", r.summary());
        assert_eq!(r.status, status, "{method} {host}: {}", r.summary());
        assert!(r.ended && r.reset.is_none(), "{method} {host}: {}", r.summary());
        assert_eq!(r.body_len, 0, "{method} {host}: a body came: {}", r.summary());
    }
    // The same GET (not HEAD) gets the body, so HEAD's lack of one is real.
    let id = c.get("/", "head.test");
    let r = c.response(id, IO_TIMEOUT);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{}", r.summary());
    assert_eq!(ok.requests()[0].method, "HEAD", "the backend got HEAD");
}

// ---------------------------------------------------------------------------
// Trailers, failures mid-body
// ---------------------------------------------------------------------------

#[test]
fn response_trailers_from_a_chunked_backend_reach_the_client() {
    let answer =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum, x-count\r\nconnection: close\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\nx-count: 2\r\n\r\n";
    let (s, rw) = scripted_ringway(answer);
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let id = c.get("/trailers", "t.test");
    let r = c.response(id, IO_TIMEOUT);
    eprintln!("{}", r.summary());
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.text(), "hello world");
    assert!(r.ended, "{}", r.summary());
    assert_eq!(r.trailer("x-checksum"), Some("abc123"), "{}", r.summary());
    assert_eq!(r.trailer("x-count"), Some("2"), "{}", r.summary());
    assert_eq!(r.header("transfer-encoding"), None, "{}", r.summary());

    // nghttp sees them too.
    let url = format!("http://127.0.0.1:{}/trailers", rw.addr().port());
    let out = nghttp(&["-v", "-n", &url], TOOL_TIMEOUT);
    let text = out.stdout_text();
    assert!(out.success(), "nghttp ({:?}): {}\n{}", out.exit_code, text, out.stderr);
    assert!(text.contains("x-checksum: abc123"), "nghttp -v shows no trailer:\n{text}");
    assert_eq!(s.requests(), 2);
}

#[test]
fn a_backend_dying_mid_body_resets_the_stream() {
    const CL: usize = 1 << 20;
    let mut sized = format!("HTTP/1.1 200 OK\r\ncontent-length: {CL}\r\n\r\n").into_bytes();
    sized.extend_from_slice(&pattern(300 * 1024));
    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"4000\r\n");
        chunked.extend_from_slice(&[b'c'; 0x4000]);
        chunked.extend_from_slice(b"\r\n");
    }
    for (what, answer) in [("content-length", sized), ("chunked", chunked)] {
        let (s, rw) = scripted_ringway(&answer);
        let mut c = H2Client::handshake(rw.addr(), &[]);
        let id = c.get("/dies", "d.test");
        let r = c.response(id, Duration::from_secs(20));
        eprintln!("{what} backend dying mid-body: {}", r.summary());
        assert!(!r.timed_out && r.closed.is_none(), "{what}: {}", r.summary());
        assert!(!r.ended, "{what}: the stream ended cleanly as if complete: {}", r.summary());
        assert!(r.reset.is_some(), "{what}: no RST_STREAM: {}", r.summary());
        assert!(r.body_len < answer.len(), "{what}: {}", r.summary());
        // Only the stream is reset: the connection carries the next one.
        let id = c.get("/dies-again", "d.test");
        let r = c.response(id, Duration::from_secs(20));
        assert!(r.reset.is_some() && r.closed.is_none(), "{what}, second stream: {}", r.summary());

        // curl says so too (non-zero exit, not a clean transfer).
        let r = curl_h2c(rw.addr().port(), "d.test", "/dies", &[]);
        eprintln!("curl: exit {} status {} body {} bytes: {}", r.exit_code, r.status, r.body.len(), r.stderr.trim());
        assert_ne!(r.exit_code, 0, "{what}: curl saw a clean transfer of {} bytes", r.body.len());
        assert_eq!(s.requests(), 3, "{what}");
    }
}

// ---------------------------------------------------------------------------
// Connection lifetime: drain, idle, handshake
// ---------------------------------------------------------------------------

#[test]
fn sigterm_sends_goaway_and_the_in_flight_stream_completes() {
    let b = Backend::respond(200, "slow-answer").delayed(Duration::from_millis(2500)).start();
    let mut rw = Ringway::start(h2c_catch_all(&b));
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let id = c.get("/slow", "drain.test");
    b.wait_for_requests(1, IO_TIMEOUT);
    let t = Instant::now();
    rw.terminate();
    // The GOAWAY comes first (at once), then the stream's answer.
    let mut frames = Vec::new();
    let goaway = loop {
        let f = c.read_frame(Duration::from_secs(5)).unwrap_or_else(|e| panic!("no GOAWAY after SIGTERM: {e:?}"));
        frames.push(f.describe());
        if f.kind == GOAWAY {
            break f;
        }
        assert!(f.stream != id, "the stream's answer came before any GOAWAY: {frames:?}");
    };
    eprintln!("GOAWAY {:?} after SIGTERM: {}", t.elapsed(), goaway.describe());
    assert_eq!(goaway.error_code(), NO_ERROR, "{}", goaway.describe());
    assert!(goaway.last_stream() >= id, "the in-flight stream is not covered: {}", goaway.describe());
    let r = c.response(id, Duration::from_secs(10));
    assert_eq!((r.status, r.text().as_str()), (200, "slow-answer"), "{}", r.summary());
    assert!(r.ended && r.reset.is_none(), "{}", r.summary());
    let (rest, end) = c.drain_until_closed(Duration::from_secs(10));
    assert!(matches!(end, ReadEnd::Closed(_)), "the connection stayed open: {end:?}");
    eprintln!("after the answer: {:?}, then {end:?}", rest.iter().map(Frame::describe).collect::<Vec<_>>());
    let exit = rw.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "ringway did not exit cleanly: {exit:?}");
}

#[test]
fn a_connection_without_streams_gets_goaway_after_idle_ms() {
    const IDLE: Duration = Duration::from_millis(1500);
    let b = Backend::respond(200, "i").start();
    let rw = Ringway::start(http2(h2c_catch_all(&b), &[("idleMs", json!(IDLE.as_millis() as u64))]));

    // Two connections: one never opens a stream, one idles after a request.
    let start_a = Instant::now();
    let mut a = H2Client::handshake(rw.addr(), &[]);
    let mut bc = H2Client::handshake(rw.addr(), &[]);
    let id = bc.get("/once", "idle.test");
    let r = bc.response(id, IO_TIMEOUT);
    assert_eq!(r.status, 200, "{}", r.summary());
    let start_b = Instant::now();

    for (name, c, started, last) in [("no streams", &mut a, start_a, 0), ("after one request", &mut bc, start_b, id)] {
        let f = c.goaway_within(IDLE + Duration::from_secs(8)).unwrap_or_else(|e| panic!("{name}: no GOAWAY: {e:?}"));
        let after = started.elapsed();
        eprintln!("{name}: {} after {after:?} (idleMs {IDLE:?})", f.describe());
        assert_eq!(f.error_code(), NO_ERROR, "{name}: {}", f.describe());
        assert!(after >= IDLE - Duration::from_millis(100), "{name}: GOAWAY after only {after:?}");
        let (rest, end) = c.drain_until_closed(Duration::from_secs(8));
        assert!(matches!(end, ReadEnd::Closed(_)), "{name}: still open after GOAWAY: {end:?}");
        // The final GOAWAY names the last stream really processed.
        let fin = rest.iter().rev().find(|f| f.kind == GOAWAY).unwrap_or(&f);
        assert_eq!(fin.last_stream(), last, "{name}: {}", fin.describe());
    }
    // A graceful GOAWAY comes in two (RFC 9113 6.8): last stream 2^31-1
    // first, then the real last stream; never more.
    assert!((1..=2).contains(&a.counts[GOAWAY as usize]), "{} GOAWAYs", a.counts[GOAWAY as usize]);
}

#[test]
fn the_handshake_deadline_closes_silent_and_partial_clients() {
    const HANDSHAKE: Duration = Duration::from_millis(1000);
    // A silent connection on a plain listener is not known to be HTTP/2
    // yet: it is governed by the HTTP/1.1 head deadline, set apart here.
    const CLIENT_HEAD: Duration = Duration::from_millis(6000);
    let b = Backend::respond(200, "h").start();
    let mut cfg = http2(h2c_catch_all(&b), &[("handshakeMs", json!(HANDSHAKE.as_millis() as u64))]);
    cfg = set(cfg, "timeouts", "clientHeadMs", json!(CLIENT_HEAD.as_millis() as u64));
    let rw = Ringway::start(cfg);

    let cases: [(&str, &[u8], Duration); 4] = [
        ("part of the preface", b"PRI * HTTP/2.0\r\n", HANDSHAKE),
        ("the preface, no SETTINGS", PREFACE, HANDSHAKE),
        ("the preface and half a SETTINGS frame", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04", HANDSHAKE),
        ("nothing", b"", CLIENT_HEAD),
    ];
    let handles: Vec<_> = cases
        .iter()
        .map(|(name, bytes, deadline)| {
            let (name, bytes, deadline, addr) = (name.to_string(), bytes.to_vec(), *deadline, rw.addr());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let t = Instant::now();
                c.send(&bytes);
                // Whatever the server sends (its SETTINGS, a GOAWAY) is
                // read; the question is when it closes.
                let mut buf = [0u8; 4096];
                c.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let limit = deadline + Duration::from_secs(4);
                let closed = loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => break Some(t.elapsed()),
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break Some(t.elapsed()),
                    }
                    if t.elapsed() > limit {
                        break None;
                    }
                };
                (name, deadline, closed)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (name, deadline, closed) = h.join().unwrap();
        eprintln!("{name}: closed after {closed:?} (deadline {deadline:?})");
        match closed {
            Some(t) if t >= deadline - Duration::from_millis(100) => {}
            Some(t) => failures.push(format!("{name}: closed after {t:?}, before its deadline {deadline:?}")),
            None => failures
                .push(format!("{name}: still open {:?} after its deadline {deadline:?}", Duration::from_secs(4))),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The listener still serves.
    let mut c = H2Client::handshake(rw.addr(), &[]);
    let id = c.get("/", "hs.test");
    assert_eq!(c.response(id, IO_TIMEOUT).status, 200);
}

/// A client that writes every byte on its own (partial frames; over TLS,
/// partial records) and idles between requests is served: the connection's
/// reads wait for readiness between trickles and decrypt what arrives.
#[test]
fn a_client_trickling_bytes_one_at_a_time_is_served_over_tls_and_h2c() {
    const TRICKLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/trickle.py");
    let ca = TestCa::new();
    let leaf = ca.issue(&["trickle.test"]);
    let b = Backend::respond(200, "trickled").start();
    let rw = Ringway::start(with_tls(h2c_catch_all(&b), &leaf));
    let tls = rw.tls_addr().expect("no TLS listener");
    let ca_path = ca.ca_path().to_string_lossy().to_string();
    for (addr, mode, ca_file) in [(tls, "tls", ca_path.as_str()), (rw.addr(), "h2c", "-")] {
        let out = run_tool(
            std::process::Command::new("python3").args([
                TRICKLE,
                &addr.to_string(),
                mode,
                "trickle.test",
                ca_file,
                "3",
            ]),
            b"",
            Duration::from_secs(60),
        );
        let stdout = out.stdout_text();
        assert!(out.success(), "{mode}: {stdout}\n{}", out.stderr);
        assert_eq!(stdout.lines().filter(|l| l.contains("status 200")).count(), 3, "{mode}: {stdout}");
    }
    assert_eq!(b.request_count(), 6, "every trickled request reached the backend once");
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

#[test]
fn h2_requests_show_up_in_stats() {
    let b = Backend::respond(200, "s").start();
    let rw = Ringway::start(with_admin(h2c_catch_all(&b), None));
    let total = |rw: &Ringway| -> u64 {
        let s = rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
        s["requests"]["total"].as_u64().unwrap_or_else(|| panic!("no requests.total: {s}"))
    };
    let before = total(&rw);
    let mut c = H2Client::handshake(rw.addr(), &[]);
    for i in 0..7 {
        let id = c.get(&format!("/{i}"), "stats.test");
        assert_eq!(c.response(id, IO_TIMEOUT).status, 200);
    }
    let r = curl_h2c(rw.addr().port(), "stats.test", "/curl", &[]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{}", r.stderr);
    let after = total(&rw);
    let s = rw.api().get("/api/v1/stats").expect(200, "GET /api/v1/stats").json;
    eprintln!("requests.total {before} -> {after}; stats: {s}");
    assert_eq!(after - before, 8, "8 requests over HTTP/2");
}
